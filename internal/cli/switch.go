package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

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
instead. For ha-aws, it is the cluster's admin credentials, with the server
at the load balancer's public address.`,
	}, func(typ string) *cobra.Command {
		var f refFlags
		var path string
		var static bool
		c := &cobra.Command{
			Use:     typ + " --name NAME --region REGION",
			Short:   fmt.Sprintf("Merge an %s cluster into a kubeconfig", typ),
			Example: fmt.Sprintf("  kforge switch %s --name demo --region us-east-1 && kubectl get nodes", typ),
			Args:    cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				ref, err := f.ref(typ)
				if err != nil {
					return err
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
				self, err := os.Executable()
				if err != nil {
					return fmt.Errorf("find the kforge binary for the exec plugin: %w", err)
				}
				if s, err := filepath.EvalSymlinks(self); err == nil {
					self = s
				}
				entry, err := p.Kubeconfig(cmd.Context(), c, lifecycle.KubeconfigOptions{KforgePath: self, StaticToken: static})
				if err != nil {
					return err
				}
				kc := kubeconfig.Path(path)
				if err := kubeconfig.Merge(kc, entry); err != nil {
					return err
				}
				fprintf(a.Stdout, "%s\n", entry.Context)
				fprintf(a.Stderr, "Merged %s into %s and made it the current context.\n", ref, kc)
				if static {
					fprintf(a.Stderr, "The embedded token expires in 15 minutes; run this again then, or drop --static-token.\n")
				}
				return nil
			},
		}
		f.register(c.Flags())
		c.Flags().StringVar(&path, "kubeconfig", "", "kubeconfig file to merge into (default: first file of $KUBECONFIG, else ~/.kube/config)")
		if typ == spec.TypeEKS {
			c.Flags().BoolVar(&static, "static-token", false, "embed a token valid 15 minutes instead of running 'kforge token' on each kubectl call")
		}
		return c
	})
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
