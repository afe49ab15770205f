package cli

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/spf13/cobra"

	"github.com/kforge/kforge/internal/artifacts"
	"github.com/kforge/kforge/internal/cost"
	"github.com/kforge/kforge/internal/engine"
	"github.com/kforge/kforge/internal/lifecycle"
	"github.com/kforge/kforge/internal/spec"
	"github.com/kforge/kforge/internal/state"
)

func (a *App) createCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "create <type>",
		Short: "Create a cluster (aws: managed EKS; ha-aws: self-managed HA on EC2)",
		Long: `Create a cluster. The type is aws (managed EKS) or ha-aws (self-managed HA).

Progress goes to stderr. A create that stops (Ctrl-C, a crash, an AWS error)
continues where it stopped when you run the same command again; it never
makes a second copy of anything. --dry-run prints the plan and makes no AWS
call.`,
	}
	c.AddCommand(a.createEKSCommand(), a.createHACommand())
	return c
}

// createFlags are the flags every create has.
type createFlags struct {
	refFlags
	dryRun        bool
	skipPreflight bool
	output        string
}

func (f *createFlags) register(c *cobra.Command) {
	f.refFlags.register(c.Flags())
	c.Flags().BoolVar(&f.dryRun, "dry-run", false, "print the plan (what would be created, in order) and make no AWS call; needs no credentials")
	c.Flags().BoolVar(&f.skipPreflight, "skip-preflight", false, "create without running the checks of 'kforge preflight' first (not recommended)")
	addOutputFlag(c, &f.output)
}

func (a *App) createEKSCommand() *cobra.Command {
	var f createFlags
	s := spec.Spec{}
	c := &cobra.Command{
		Use:   "aws --name NAME --region REGION",
		Short: "Create a managed EKS cluster",
		Long: `Create a managed EKS cluster: unless --vpc-id is given, a VPC with DNS
hostnames and support, public subnets in two availability zones, an internet
gateway and a route table; the IAM roles kforge-<name>-cp-role (trusted by
eks.amazonaws.com) and kforge-<name>-wp-role (trusted by ec2.amazonaws.com);
the EKS cluster, waited on until ACTIVE (EKS takes 10-15 minutes); and a
managed node group of --nodes nodes of --node-size.

With --vpc-id, kforge checks that the VPC has DNS hostnames and DNS support
and never modifies it; --subnet-ids picks its subnets (else kforge adds its
own subnets in free address ranges of the VPC).`,
		Example: `  kforge create aws --name demo --region us-east-1 --dry-run
  kforge create aws --name demo --region us-east-1 --nodes 3 --node-size t3.large --k8s-version 1.33
  kforge create aws --name demo --region us-east-1 --vpc-id vpc-0abc --subnet-ids subnet-1a,subnet-1b`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s.Ref = spec.Ref{Type: spec.TypeEKS, Name: f.name, Region: f.region}
			return a.create(cmd.Context(), s, f)
		},
	}
	f.register(c)
	eksSpecFlags(c.Flags(), &s)
	return c
}

func (a *App) createHACommand() *cobra.Command {
	var f createFlags
	s := spec.Spec{}
	c := &cobra.Command{
		Use:   "ha-aws --name NAME --region REGION",
		Short: "Create a self-managed, highly available cluster on EC2",
		Long: `Create a self-managed, highly available cluster on EC2 VMs: a VPC (or
subnets of kforge's own in --vpc-id), security groups per role, IAM instance
profiles, etcd VMs (TLS, PKI made by kforge), one HAProxy load balancer in
front of the control planes, control-plane VMs and worker VMs, bootstrapped
over SSH with k3s or kubeadm.

kforge makes an SSH key pair per cluster and pins each VM's host key (it
hands the VM its key in cloud-init). With --ssh-jump user@host:port it
reaches the VMs' private addresses through that host, like ssh -J; the jump
host's own key must be in ~/.ssh/known_hosts.`,
		Example: `  kforge create ha-aws --name prod --region eu-west-1 --dry-run
  kforge create ha-aws --name prod --region eu-west-1 --bootstrap kubeadm --control-planes 3 --workers 2 --etcd 3 --ssh-cidr 203.0.113.7/32
  kforge create ha-aws --name prod --region eu-west-1 --etcd-backups s3://acme-backups/etcd --backup-every 6h --backup-keep 28`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s.Ref = spec.Ref{Type: spec.TypeHA, Name: f.name, Region: f.region}
			if cmd.Flags().Changed("ssh-sessions") {
				if err := spec.CheckSSHSessions(s.SSHSessions); err != nil {
					return err
				}
			}
			if !cmd.Flags().Changed("ssh-cidr") && !f.dryRun {
				fprintf(a.Stderr, "Warning: --ssh-cidr not given: port 22 of the VMs is open to 0.0.0.0/0. Pass --ssh-cidr <your address>/32 to restrict it.\n")
			}
			return a.create(cmd.Context(), s, f)
		},
	}
	f.register(c)
	fl := c.Flags()
	haSpecFlags(fl, &s)
	fl.StringVar(&s.SSHCIDR, "ssh-cidr", spec.DefaultSSHCIDR, "who may reach port 22 of the VMs")
	sshTimeoutFlag(fl, &s.SSHTimeout)
	sshSessionsFlag(fl, &s.SSHSessions)
	jumpFlags(fl, &s.SSHJump, &s.SSHJumpKey, "reach the VMs through this SSH server (user@host:port), at their private addresses", "private key file for --ssh-jump (default: the cluster's key)")
	return c
}

// create runs or plans a create.
func (a *App) create(ctx context.Context, s spec.Spec, f createFlags) error {
	if err := checkOutput(f.output); err != nil {
		return err
	}
	s.Artifacts = absArtifacts(s.Artifacts)
	s = s.WithBackupDefaults()
	if err := validate(s); err != nil {
		return err
	}
	if f.dryRun {
		return a.plan(ctx, s, f.output)
	}
	if err := a.checkSettings(ctx, s); err != nil {
		return err
	}
	// One AWS configuration for the preflight and the steps: they share
	// connections, and the steps reuse the preflight's look-ups.
	cfg, source, err := a.awsConfig(ctx, s.Region)
	if err != nil {
		return err
	}
	var c *state.Cluster
	var p lifecycle.Provider
	// The checks before a create report what failed themselves (the
	// preflight's checklist, the provider's refusal), not as retries in
	// the progress: a failing preflight would show the retries of the
	// provider's checks that run beside it.
	outer := ctx
	err = a.operateWith(ctx, s.Ref, "create", &cfg, func(ctx context.Context, r *lifecycle.Runner, prov lifecycle.Provider) (err error) {
		p = prov
		// The preflight and the provider's own checks of a new cluster
		// only read, and neither needs the other's answers: they run at
		// once, and Create takes the provider's answer (or checks under
		// the lock if the cluster's state changed meanwhile). The checks
		// have a provider of their own, whose warnings are held until the
		// preflight has passed: a failed preflight is the whole story.
		held := &heldOutput{}
		checker, err := a.checkProvider(s.Ref, cfg, held)
		if err != nil {
			return err
		}
		defer closeProvider(checker)
		ahead := r.StartCheck(outer, checker, s)
		defer ahead.Stop()
		// Nothing is made before the preflight ends: the first Ctrl-C
		// cancels it rather than waiting for it.
		pctx, cancel := a.untilStop(outer)
		err = a.preflightGate(pctx, s, f.skipPreflight, cfg, source)
		cancel()
		if err != nil {
			return err
		}
		held.release(a.Stderr)
		fprintf(a.Stderr, "Creating %s (state: %s)\n", s.Ref, r.Store.Location())
		c, err = r.Create(ctx, prov, s, ahead)
		return err
	})
	if err != nil {
		return err
	}
	return a.printCreated(p, c, f.output)
}

// checkSettings refuses, before any AWS call (but reading a state store
// in S3), a create that would change a setting of the existing cluster of
// the same name that a create cannot change, naming each setting with its
// old and new values. Runner.Create checks again under the cluster's lock.
func (a *App) checkSettings(ctx context.Context, s spec.Spec) error {
	store, err := a.openStore(ctx)
	if err != nil {
		return err
	}
	c, err := store.Get(ctx, s.Ref)
	switch {
	case errors.Is(err, state.ErrNotFound):
		return nil
	case err != nil:
		return err
	}
	return lifecycle.ChangedSettings(c, s)
}

// checkProvider returns a provider of the cluster's type, for the checks
// that run beside the preflight, whose warnings go to log.
func (a *App) checkProvider(ref spec.Ref, cfg aws.Config, log io.Writer) (lifecycle.Provider, error) {
	f := a.Providers[ref.Type]
	if f == nil {
		return nil, spec.Usagef("unknown cluster type %q: use one of %s", ref.Type, strings.Join(spec.Types, ", "))
	}
	home, err := a.Home()
	if err != nil {
		return nil, err
	}
	return f(lifecycle.Env{AWS: cfg, Home: home, Log: log}), nil
}

// heldOutput keeps what is written to it until release, then passes it
// on. It is safe for concurrent use.
type heldOutput struct {
	mu  sync.Mutex
	buf bytes.Buffer
	out io.Writer
}

func (h *heldOutput) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.out != nil {
		return h.out.Write(p)
	}
	return h.buf.Write(p)
}

// release writes what was held to out, and sends later writes there.
func (h *heldOutput) release(out io.Writer) {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, _ = h.buf.WriteTo(out)
	h.out = out
}

// untilStop returns a context that also ends when the user asks the
// running operation to stop (the first Ctrl-C), for work before anything
// is made, which has nothing to finish or save.
func (a *App) untilStop(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-a.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

func (a *App) printCreated(p lifecycle.Provider, c *state.Cluster, output string) error {
	info := describe(p, c)
	if output == outputJSON {
		return writeJSON(a.Stdout, info)
	}
	fprintf(a.Stderr, "\n%s is running.\n", c.Ref())
	writeInfo(a.Stdout, info)
	fprintf(a.Stderr, "\nNext: kforge switch %s   # then: kubectl get nodes\n", c.Ref().Args())
	return nil
}

// plan prints the steps a create would run, without AWS.
func (a *App) plan(ctx context.Context, s spec.Spec, output string) error {
	p, err := a.offlineProvider(s.Type)
	if err != nil {
		return err
	}
	r := &lifecycle.Runner{}
	// A local store shows which steps a previous run did; a store in S3
	// is not read, as a dry run makes no AWS call.
	if raw, err := a.stateURL(); err == nil && !strings.HasPrefix(raw, "s3://") {
		if store, err := a.openStore(ctx); err == nil {
			r.Store = store
		}
	}
	plan, err := r.Plan(ctx, p, s)
	if err != nil {
		return err
	}
	review := p.Review(s)
	estimate := cost.Of(s.Region, p.Cost(s), cost.Table)
	if output == outputJSON {
		return writeJSON(a.Stdout, struct {
			Cluster spec.Spec          `json:"cluster"`
			Review  []string           `json:"review"`
			Cost    cost.Estimate      `json:"cost"`
			Steps   []engine.PlanEntry `json:"steps"`
		}{s, review, estimate, plan})
	}
	fprintf(a.Stdout, "Plan for %s (%d steps; nothing is created with --dry-run):\n", s.Ref, len(plan))
	for _, line := range review {
		fprintf(a.Stdout, "  %s\n", line)
	}
	fprintf(a.Stdout, "\n")
	engine.WritePlan(a.Stdout, plan)
	fprintf(a.Stdout, "\n")
	estimate.Write(a.Stdout)
	fprintf(a.Stdout, "\nRun the same command without --dry-run to create it.\n")
	return nil
}

// absArtifacts makes an --artifacts directory absolute, so that the state
// names it wherever later commands run; a mirror URL or an invalid value
// (which the spec's validation reports) is kept as given.
func absArtifacts(v string) string {
	src, err := artifacts.ParseSource(v)
	if err != nil || src.Dir == "" {
		return v
	}
	return src.Dir
}
