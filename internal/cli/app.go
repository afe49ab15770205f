// Package cli is kforge's command line: commands and flags (cobra), the
// output formats (tables for people, -o json for scripts), progress on
// stderr, exit codes, and Ctrl-C handling. It wires the state store, the
// AWS configuration and the cluster providers together; the work itself
// lives in other packages.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/kforge/kforge/internal/awsx"
	"github.com/kforge/kforge/internal/engine"
	"github.com/kforge/kforge/internal/lifecycle"
	"github.com/kforge/kforge/internal/spec"
	"github.com/kforge/kforge/internal/sshx"
	"github.com/kforge/kforge/internal/state"
)

// Exit codes of the contract.
const (
	ExitOK     = 0
	ExitFailed = 1
	ExitUsage  = 2
)

// ProviderFactory builds a cluster type's provider. It must not call AWS:
// --dry-run builds providers with an empty configuration.
type ProviderFactory func(env lifecycle.Env) lifecycle.Provider

// Build says which build this is, for `kforge version`.
type Build struct {
	Version string
	Commit  string
}

// App holds what every command needs: standard streams, environment,
// the providers, and the state of one invocation.
type App struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Getenv reads the environment (os.Getenv in main).
	Getenv func(string) string
	// Providers maps a cluster type to its provider factory.
	Providers map[string]ProviderFactory
	Build     Build
	// Args are the command-line arguments, for the resume hint.
	Args []string

	stop       chan struct{}
	stopOnce   sync.Once
	lifecycle  atomic.Bool
	stateFlag  string
	outputFlag string
	debug      bool
}

// Main runs kforge with args (without the program name) and returns the
// exit code. SIGINT/SIGTERM first stop a lifecycle operation at the next
// safe point; a second one stops at once.
func Main(a *App) int {
	a.stop = make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		n := 0
		for range sigs {
			n++
			if n == 1 && a.lifecycle.Load() {
				fmt.Fprintln(a.Stderr, "\nstopping: waiting for running steps to finish and saving state (press Ctrl-C again to stop now)")
				a.stopOnce.Do(func() { close(a.stop) })
				continue
			}
			cancel()
		}
	}()
	return a.Execute(ctx)
}

// Execute runs the command line in a.Args and maps errors to exit codes.
func (a *App) Execute(ctx context.Context) int {
	if a.stop == nil {
		a.stop = make(chan struct{})
	}
	root := a.rootCommand()
	root.SetArgs(a.Args)
	root.SetIn(a.Stdin)
	root.SetOut(a.Stdout)
	root.SetErr(a.Stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	var ue *spec.UsageError
	switch {
	case strings.HasPrefix(err.Error(), "unknown command"):
		fmt.Fprintf(a.Stderr, "Error: %v\nRun 'kforge --help' for usage.\n", err)
		return ExitUsage
	case errors.As(err, &ue):
		fmt.Fprintf(a.Stderr, "Error: %v\n", err)
		return ExitUsage
	case errors.Is(err, errSilent):
		return ExitFailed
	default:
		fmt.Fprintf(a.Stderr, "Error: %v\n", err)
		return ExitFailed
	}
}

// errSilent marks a failure that has already been reported.
var errSilent = errors.New("failed")

func (a *App) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "kforge",
		Short: "Create, operate and delete Kubernetes clusters on AWS",
		Long: `kforge creates, operates and deletes Kubernetes clusters on AWS.

Cluster types:
  aws      managed EKS: IAM roles, an EKS cluster and a managed node group
  ha-aws   self-managed and highly available: etcd, HAProxy, control-plane and
           worker VMs on EC2, bootstrapped over SSH with k3s or kubeadm

Every create is resumable: if it stops (Ctrl-C, crash, AWS error), run the
same command again and it continues where it stopped. Every resource carries
the kforge.io/cluster tag, so delete finds everything even without state.

Without --region, kforge uses AWS_REGION, else AWS_DEFAULT_REGION, else the
region of the AWS profile in use, as the AWS CLI does.

Exit codes:
  0  success (kforge diff: the cluster is in sync)
  1  the operation failed, or was stopped; running the same command again
     continues it (kforge diff: drift found)
  2  invalid usage: a bad flag or value, missing credentials or region, or a
     request kforge refuses before changing anything

Shell completion: kforge completion bash|zsh|fish|powershell --help`,
		Example: `  kforge create aws --name demo --region us-east-1 --dry-run
  kforge create aws --name demo --region us-east-1
  kforge switch aws --name demo --region us-east-1 && kubectl get nodes
  kforge delete aws --name demo --region us-east-1 --yes`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&a.stateFlag, "state", "", "state store URL: a directory, file:///path or s3://bucket/prefix (env KFORGE_STATE; default: local store under KFORGE_HOME)")
	root.PersistentFlags().BoolVar(&a.debug, "debug", false, "print the AWS SDK's own log on stderr: its warnings, retries and requests (never credentials)")
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		return a.defaultRegion(cmd)
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return spec.Usagef("%v\nRun '%s --help' for usage.", err, c.CommandPath())
	})
	root.AddCommand(
		a.versionCommand(),
		a.credCommand(),
		a.createCommand(),
		a.getCommand(),
		a.infoCommand(),
		a.switchCommand(),
		a.tokenCommand(),
		a.scaleCommand(),
		a.upgradeCommand(),
		a.backupCommand(),
		a.restoreCommand(),
		a.deleteCommand(),
		a.diffCommand(),
		a.policyCommand(),
		a.preflightCommand(),
		a.stateCommand(),
		a.artifactsCommand(),
	)
	for _, c := range root.Commands() {
		markUsage(c)
	}
	return root
}

// markUsage makes argument errors of every command usage errors (exit 2).
func markUsage(c *cobra.Command) {
	if c.Args != nil {
		args := c.Args
		c.Args = func(cmd *cobra.Command, a []string) error {
			if err := args(cmd, a); err != nil {
				return spec.Usagef("%v\nRun '%s --help' for usage.", err, cmd.CommandPath())
			}
			return nil
		}
	}
	if c.HasSubCommands() && c.RunE == nil {
		c.RunE = func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return spec.Usagef("unknown cluster type %q for %q: use one of %s", args[0], cmd.CommandPath(), strings.Join(spec.Types, ", "))
			}
			return spec.Usagef("%q needs a cluster type: one of %s\nRun '%s --help' for usage.", cmd.CommandPath(), strings.Join(spec.Types, ", "), cmd.CommandPath())
		}
		c.Args = cobra.ArbitraryArgs
		c.FParseErrWhitelist.UnknownFlags = true
	}
	for _, sc := range c.Commands() {
		markUsage(sc)
	}
}

// Home returns KFORGE_HOME (default ~/.kforge), creating it with mode 0700.
func (a *App) Home() (string, error) {
	home := a.Getenv("KFORGE_HOME")
	if home == "" {
		h := a.Getenv("HOME")
		if h == "" {
			var err error
			if h, err = os.UserHomeDir(); err != nil {
				return "", fmt.Errorf("cannot find the home directory: set KFORGE_HOME")
			}
		}
		home = filepath.Join(h, ".kforge")
	}
	if err := os.MkdirAll(home, 0o700); err != nil {
		return "", fmt.Errorf("create KFORGE_HOME %s: %w", home, err)
	}
	return home, nil
}

// awsConfig loads the AWS configuration for a region.
func (a *App) awsConfig(ctx context.Context, region string) (aws.Config, string, error) {
	return a.loadAWS(ctx, awsx.Options{Region: region})
}

// loadAWS loads an AWS configuration with kforge's settings added to o.
func (a *App) loadAWS(ctx context.Context, o awsx.Options) (aws.Config, string, error) {
	home, err := a.Home()
	if err != nil {
		return aws.Config{}, "", err
	}
	o.Home, o.TracePath = home, a.Getenv("KFORGE_AWS_TRACE")
	if a.debug {
		o.Debug = a.Stderr
	}
	return awsx.Load(ctx, o)
}

// defaultRegion gives a command's --region, when it is left out, the
// region the AWS CLI and eksctl would use: AWS_REGION, else
// AWS_DEFAULT_REGION, else the region of the AWS profile in use. It says
// on stderr where the region came from.
func (a *App) defaultRegion(cmd *cobra.Command) error {
	f := cmd.Flags().Lookup("region")
	if f == nil || f.Changed || f.Value.String() != "" {
		return nil
	}
	region, from := awsx.EnvRegion(a.Getenv)
	if region == "" {
		r, profile, err := awsx.ProfileRegion(cmd.Context(), a.Getenv)
		if err != nil {
			return err
		}
		region, from = r, fmt.Sprintf("AWS profile %q", profile)
	}
	if region == "" {
		return nil // the command's own check says how to give one
	}
	if err := f.Value.Set(region); err != nil {
		return err
	}
	fprintf(a.Stderr, "Region %s (from %s; --region overrides it)\n", region, from)
	return nil
}

// provider returns the provider of a cluster type with a live AWS
// configuration.
func (a *App) provider(ctx context.Context, ref spec.Ref) (lifecycle.Provider, lifecycle.Env, error) {
	f := a.Providers[ref.Type]
	if f == nil {
		return nil, lifecycle.Env{}, spec.Usagef("unknown cluster type %q: use one of %s", ref.Type, strings.Join(spec.Types, ", "))
	}
	cfg, _, err := a.awsConfig(ctx, ref.Region)
	if err != nil {
		return nil, lifecycle.Env{}, err
	}
	return a.providerWith(ref, cfg)
}

// providerWith returns the provider of a cluster type with the AWS
// configuration cfg (loaded once per command, so that its clients share
// connections and look-ups).
func (a *App) providerWith(ref spec.Ref, cfg aws.Config) (lifecycle.Provider, lifecycle.Env, error) {
	f := a.Providers[ref.Type]
	if f == nil {
		return nil, lifecycle.Env{}, spec.Usagef("unknown cluster type %q: use one of %s", ref.Type, strings.Join(spec.Types, ", "))
	}
	home, err := a.Home()
	if err != nil {
		return nil, lifecycle.Env{}, err
	}
	env := lifecycle.Env{AWS: cfg, Home: home, Log: a.Stderr}
	return f(env), env, nil
}

// offlineProvider returns a provider for planning: no AWS configuration.
func (a *App) offlineProvider(typ string) (lifecycle.Provider, error) {
	f := a.Providers[typ]
	if f == nil {
		return nil, spec.Usagef("unknown cluster type %q: use one of %s", typ, strings.Join(spec.Types, ", "))
	}
	return f(lifecycle.Env{Log: a.Stderr}), nil
}

// runner returns a lifecycle runner over the store, with progress on
// stderr, marking the invocation as a lifecycle operation for Ctrl-C.
func (a *App) runner(store state.Store, p *progress) *lifecycle.Runner {
	a.lifecycle.Store(true)
	return &lifecycle.Runner{Store: store, Events: p.event, Stop: a.stop, Command: "kforge " + strings.Join(a.Args, " "),
		StepContext: awsx.WithTraceLabel}
}

// resumeHint is the command line that continues an interrupted operation.
func (a *App) resumeHint() string {
	var parts []string
	for _, arg := range a.Args {
		if strings.ContainsAny(arg, " \t'\"$") {
			arg = "'" + strings.ReplaceAll(arg, "'", `'\''`) + "'"
		}
		parts = append(parts, arg)
	}
	return "kforge " + strings.Join(parts, " ")
}

// isTerminal reports whether r is an interactive terminal.
func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// reportRunError prints a failed or interrupted operation's outcome with
// what to do next.
func (a *App) reportRunError(err error, verb string) error {
	var ee *engine.Error
	if !errors.As(err, &ee) {
		return err
	}
	if ee.Interrupted && len(ee.Failed) == 0 {
		fmt.Fprintf(a.Stderr, "\n%s stopped with %d step(s) not run; state is saved.\nResume with:\n  %s\n", verb, ee.Pending, a.resumeHint())
		return errSilent
	}
	fmt.Fprintf(a.Stderr, "\n%s failed:\n", verb)
	unsafe := 0
	for _, f := range ee.Failed {
		var de *engine.DriftError
		if errors.As(f.Err, &de) {
			unsafe++
			fmt.Fprintf(a.Stderr, "  %s (%s): kforge does not repair this itself: %s\n", f.Step, f.Title, de.Drift)
			continue
		}
		fmt.Fprintf(a.Stderr, "  %s (%s): %v\n", f.Step, f.Title, f.Err)
	}
	if unsafe == len(ee.Failed) {
		fmt.Fprintf(a.Stderr, "State is saved; nothing was deleted. Do what the message above says, then run the same command again:\n  %s\n", a.resumeHint())
		return errSilent
	}
	fmt.Fprintf(a.Stderr, "State is saved. Fix the cause, then run the same command again to continue:\n  %s\n", a.resumeHint())
	return errSilent
}

// closeProvider releases what a provider holds open (SSH connections).
func closeProvider(p lifecycle.Provider) {
	if c, ok := p.(io.Closer); ok {
		_ = c.Close()
	}
}

// operate runs a lifecycle operation (create, scale, delete) on a
// cluster: it opens the state store and the provider, shows progress and
// AWS retries on stderr, and reports a failed or interrupted run with the
// command that resumes it. A lock held by another process and invalid input
// are returned as they are.
func (a *App) operate(ctx context.Context, ref spec.Ref, verb string, op func(context.Context, *lifecycle.Runner, lifecycle.Provider) error) error {
	return a.operateWith(ctx, ref, verb, nil, op)
}

// operateWith is operate with the AWS configuration the command already
// loaded (nil: load it).
func (a *App) operateWith(ctx context.Context, ref spec.Ref, verb string, cfg *aws.Config, op func(context.Context, *lifecycle.Runner, lifecycle.Provider) error) error {
	store, err := a.openStore(ctx)
	if err != nil {
		return err
	}
	var p lifecycle.Provider
	if cfg != nil {
		p, _, err = a.providerWith(ref, *cfg)
	} else {
		p, _, err = a.provider(ctx, ref)
	}
	if err != nil {
		return err
	}
	defer closeProvider(p)
	prog := newProgress(a.Stderr)
	defer prog.close()
	err = op(awsx.WithRetryNotice(ctx, prog.retryNotice()), a.runner(store, prog), p)
	prog.close()
	if err == nil {
		return nil
	}
	var iu *state.InUseError
	var ue *spec.UsageError
	if errors.As(err, &iu) || errors.As(err, &ue) {
		return err
	}
	return a.reportRunError(err, verb)
}

// operateQuiet runs op like operate, for a look-up inside another
// command: no progress, and its error is returned for the caller to show.
func (a *App) operateQuiet(ctx context.Context, ref spec.Ref, op func(context.Context, *lifecycle.Runner, lifecycle.Provider) error) error {
	store, err := a.openStore(ctx)
	if err != nil {
		return err
	}
	p, _, err := a.provider(ctx, ref)
	if err != nil {
		return err
	}
	defer closeProvider(p)
	return op(ctx, &lifecycle.Runner{Store: store, StepContext: awsx.WithTraceLabel}, p)
}

// jumpFlags registers --ssh-jump and --ssh-jump-key.
func jumpFlags(fl *pflag.FlagSet, jump, key *string, jumpHelp, keyHelp string) {
	fl.StringVar(jump, "ssh-jump", "", jumpHelp)
	fl.StringVar(key, "ssh-jump-key", "", keyHelp)
}

// sshTimeoutFlag registers --ssh-timeout (create and scale of ha-aws).
func sshTimeoutFlag(fl *pflag.FlagSet, d *time.Duration) {
	fl.DurationVar(d, "ssh-timeout", sshx.DefaultReachTimeout, "how long to wait for each new VM to answer SSH before giving up, such as 20m")
}

// sshSessionsFlag registers --ssh-sessions (create and scale of ha-aws).
func sshSessionsFlag(fl *pflag.FlagSet, n *int) {
	fl.IntVar(n, "ssh-sessions", sshx.DefaultMaxSessions, "how many scripts kforge runs on the VMs at once, over one SSH connection to the jump host (or to each VM); lower it for a small jump host")
}

// overrideJump sets the jump host flags given to scale or delete on the
// stored spec; flags not given keep what create was given.
func overrideJump(s *spec.Spec, jump, key string) {
	if jump != "" {
		s.SSHJump = jump
	}
	if key != "" {
		s.SSHJumpKey = key
	}
}
