package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/kforge/kforge/internal/awsx"
	"github.com/kforge/kforge/internal/ekstoken"
	"github.com/kforge/kforge/internal/kubeconfig"
	"github.com/kforge/kforge/internal/lifecycle"
	"github.com/kforge/kforge/internal/spec"
)

func (a *App) switchCommand() *cobra.Command {
	return typeCommands(&cobra.Command{
		Use:   "switch <type>",
		Short: "Merge a cluster into a kubeconfig and make it the current context",
		Long: `Merge a cluster into a kubeconfig and make it the current context; print
the context name (kforge-<type>-<name>-<region>). Other clusters, users and
contexts in the file are kept.

The kubeconfig is --kubeconfig, else the first file of $KUBECONFIG, else
~/.kube/config (created, mode 0600, if missing).

For aws, the user runs 'kforge token' as an exec credential plugin, so the
kubeconfig never goes stale; --static-token embeds a token valid 15 minutes
instead. The plugin is this kforge binary, by its absolute path: install
kforge first ('go install ./cmd/kforge'); a binary that 'go run' built is
refused (exit 2), as Go removes it. Under a named AWS profile (AWS_PROFILE,
or --profile, which this run uses too), the plugin runs with that profile
(AWS_PROFILE in its env), as 'aws eks update-kubeconfig --profile' sets it.
For ha-aws, the user is the cluster's admin credentials, with the server at
the load balancer's public address.

-o json prints the context, the kubeconfig file, the server and, for aws,
the exec plugin's command, arguments and profile; never a token or key.`,
	}, func(typ string) *cobra.Command {
		var f refFlags
		var path, profileFlag, output string
		var static bool
		c := &cobra.Command{
			Use:     typ + " --name NAME --region REGION",
			Short:   fmt.Sprintf("Merge an %s cluster into a kubeconfig", typ),
			Example: fmt.Sprintf("  kforge switch %s --name demo --region us-east-1 && kubectl get nodes", typ),
			Args:    cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				if err := checkOutput(output); err != nil {
					return err
				}
				ref, err := f.ref(typ)
				if err != nil {
					return err
				}
				profile := ""
				if typ == spec.TypeEKS {
					if profile, err = a.switchProfile(cmd, profileFlag); err != nil {
						return err
					}
				}
				// The exec plugin's command: this binary, unless Go removes it.
				// Checked before anything is read or written.
				self, err := os.Executable()
				if err != nil {
					return fmt.Errorf("find the kforge binary for the exec plugin: %w", err)
				}
				if s, err := filepath.EvalSymlinks(self); err == nil {
					self = s
				}
				if typ == spec.TypeEKS && !static {
					if why := kubeconfig.UnstableBinary(self, a.Getenv); why != "" {
						return spec.Usagef("kubectl would run kforge at %s, but %s and Go removes it: install kforge first (go install ./cmd/kforge, or go build and put it on your PATH), then run this switch with the installed binary", self, why)
					}
				}
				c, err := a.loadCluster(cmd.Context(), ref)
				if err != nil {
					return err
				}
				var p lifecycle.Provider
				if static {
					if p, _, err = a.provider(cmd.Context(), ref); err != nil {
						return err
					}
				} else if p, err = a.offlineProvider(typ); err != nil {
					return err
				}
				entry, err := p.Kubeconfig(cmd.Context(), c, lifecycle.KubeconfigOptions{KforgePath: self, StaticToken: static, Profile: profile})
				if err != nil {
					return err
				}
				kc := kubeconfig.Path(path)
				if err := kubeconfig.Merge(kc, entry); err != nil {
					return err
				}
				if output == outputJSON {
					rep := switchReport{Context: entry.Context, Kubeconfig: kc, Server: entry.Cluster.Server}
					if x := entry.User.Exec; x != nil {
						rep.Exec = &switchExec{Command: x.Command, Args: x.Args, Profile: profile}
					}
					if err := writeJSON(a.Stdout, rep); err != nil {
						return err
					}
				} else {
					fprintf(a.Stdout, "%s\n", entry.Context)
				}
				fprintf(a.Stderr, "Merged %s into %s and made it the current context.\n", ref, kc)
				if static {
					fprintf(a.Stderr, "The embedded token expires in 15 minutes; run this again then, or drop --static-token.\n")
				}
				return nil
			},
		}
		f.register(c.Flags())
		c.Flags().StringVar(&path, "kubeconfig", "", "kubeconfig file to merge into (default: first file of $KUBECONFIG, else ~/.kube/config)")
		addOutputFlag(c, &output)
		if typ == spec.TypeEKS {
			c.Flags().BoolVar(&static, "static-token", false, "embed a token valid 15 minutes instead of running 'kforge token' on each kubectl call")
			c.Flags().StringVar(&profileFlag, "profile", "", "AWS profile kubectl's 'kforge token' runs under, recorded in the kubeconfig (default: AWS_PROFILE, if set)")
		}
		return c
	})
}

// switchReport is what `switch -o json` prints (never a token or key).
type switchReport struct {
	Context    string      `json:"context"`
	Kubeconfig string      `json:"kubeconfig"`
	Server     string      `json:"server"`
	Exec       *switchExec `json:"exec,omitempty"`
}

// switchExec is the exec credential plugin of an aws cluster's user.
type switchExec struct {
	Command string   `json:"command"`
	Args    []string `json:"args"`
	Profile string   `json:"profile,omitempty"`
}

// switchProfile returns the named AWS profile a switch records in the
// exec plugin's environment: --profile, else AWS_PROFILE (or
// AWS_DEFAULT_PROFILE), else none. --profile also applies to this run's
// own AWS calls (--static-token). A profile that the shared files do not
// have is a UsageError listing those they do.
func (a *App) switchProfile(cmd *cobra.Command, flag string) (string, error) {
	getenv := a.Getenv
	if flag != "" {
		if err := os.Setenv("AWS_PROFILE", flag); err != nil {
			return "", err
		}
		getenv = func(k string) string {
			if k == "AWS_PROFILE" {
				return flag
			}
			return a.Getenv(k)
		}
	}
	name, from := awsx.Profile(getenv)
	if from == "" {
		return "", nil
	}
	if err := awsx.CheckProfile(cmd.Context(), getenv); err != nil {
		return "", err
	}
	return name, nil
}

func (a *App) tokenCommand() *cobra.Command {
	var f refFlags
	c := &cobra.Command{
		Use:   "token --name NAME --region REGION",
		Short: "Print an EKS authentication token as an ExecCredential",
		Long: `Print an ExecCredential (client.authentication.k8s.io/v1beta1) with a token
for an EKS cluster: a presigned sts:GetCallerIdentity request bound to the
cluster's name, valid 15 minutes. kubectl runs this through the kubeconfig that
'kforge switch aws' writes. Tokens are cached (mode 0600, under KFORGE_HOME)
and reused until a minute before they expire.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ref, err := f.ref(spec.TypeEKS)
			if err != nil {
				return err
			}
			home, err := a.Home()
			if err != nil {
				return err
			}
			now := time.Now()
			cache := ekstoken.Cache{Dir: filepath.Join(home, "cache", "tokens")}
			id, err := ekstoken.Identity(a.Getenv, home)
			if err != nil {
				return err
			}
			key := ekstoken.KeyFor(ref.Name, ref.Region, id)
			tok, ok := cache.Get(key, now)
			if !ok {
				cfg, _, err := a.awsConfig(cmd.Context(), ref.Region)
				if err != nil {
					return err
				}
				if tok, err = ekstoken.Generate(cmd.Context(), cfg, ref.Name, now); err != nil {
					return err
				}
				if err := cache.Put(key, tok); err != nil {
					fprintf(a.Stderr, "Warning: could not cache the token: %v\n", err)
				}
			}
			b, err := ekstoken.ExecCredential(tok)
			if err != nil {
				return err
			}
			_, err = a.Stdout.Write(append(b, '\n'))
			return err
		},
	}
	f.register(c.Flags())
	return c
}
