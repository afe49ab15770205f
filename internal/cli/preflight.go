package cli

import (
	"context"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/kforge/kforge/internal/etcdbackup"
	"github.com/kforge/kforge/internal/preflight"
	"github.com/kforge/kforge/internal/spec"
)

// preflightName is the cluster name preflight checks when --name is not
// given: the policy covers every kforge-* name alike.
const preflightName = "preflight"

func (a *App) preflightCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "preflight <type>",
		Short: "Check that a cluster can be created, before creating anything",
		Long: `Check, with read-only AWS calls, that a cluster can be created: the
credentials work (and whose they are); every action of 'kforge policy <type>'
is allowed (simulated with iam:SimulatePrincipalPolicy, else evaluated
locally from the caller's policies); an existing VPC has DNS hostnames and
DNS support; the region has enough availability zones; the instance types are
offered there; the image is found; the vCPU and VPC quotas leave room; and
the Kubernetes version is supported.

It prints a checklist with the fix for each failure and exits 1 if anything
fails. 'kforge create' runs the same checks first (--skip-preflight skips
them). Take the same flags as the create you plan.`,
	}
	c.AddCommand(a.preflightEKSCommand(), a.preflightHACommand())
	return c
}

func (a *App) preflightEKSCommand() *cobra.Command {
	var f refFlags
	var output string
	s := spec.Spec{}
	c := &cobra.Command{
		Use:     "aws --region REGION",
		Short:   "Check that an EKS cluster can be created",
		Example: `  kforge preflight aws --region us-east-1 --name demo --nodes 3 --node-size t3.large`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s.Ref = spec.Ref{Type: spec.TypeEKS, Name: f.name, Region: f.region}
			return a.preflight(cmd.Context(), s, output)
		},
	}
	registerPreflightRef(c.Flags(), &f)
	addOutputFlag(c, &output)
	eksSpecFlags(c.Flags(), &s)
	return c
}

func (a *App) preflightHACommand() *cobra.Command {
	var f refFlags
	var output string
	s := spec.Spec{}
	c := &cobra.Command{
		Use:     "ha-aws --region REGION",
		Short:   "Check that an ha-aws cluster can be created",
		Example: `  kforge preflight ha-aws --region eu-west-1 --name prod --bootstrap kubeadm --workers 5`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s.Ref = spec.Ref{Type: spec.TypeHA, Name: f.name, Region: f.region}
			return a.preflight(cmd.Context(), s, output)
		},
	}
	registerPreflightRef(c.Flags(), &f)
	addOutputFlag(c, &output)
	haSpecFlags(c.Flags(), &s)
	return c
}

func registerPreflightRef(fl *pflag.FlagSet, f *refFlags) {
	fl.StringVar(&f.name, "name", preflightName, "name of the cluster you plan (its IAM names and, on a resumed create, its own resources)")
	fl.StringVar(&f.region, "region", "", regionUsage)
}

// eksSpecFlags registers the shape flags of an aws cluster (create and
// preflight).
func eksSpecFlags(fl *pflag.FlagSet, s *spec.Spec) {
	fl.StringVar(&s.Version, "k8s-version", spec.DefaultEKSVersion, "Kubernetes minor version of the EKS cluster")
	alias(fl, "k8s-version", "version")
	fl.StringVar(&s.NodeSize, "node-size", spec.DefaultNodeSize, "EC2 instance type of the nodes (alias: --node-type, as eksctl names it)")
	alias(fl, "node-size", "node-type")
	fl.IntVar(&s.Nodes, "nodes", spec.DefaultNodes, "number of nodes in the managed node group")
	fl.StringVar(&s.VPCID, "vpc-id", "", "use this existing VPC (must have DNS hostnames and DNS support enabled; never modified)")
	fl.StringSliceVar(&s.SubnetIDs, "subnet-ids", nil, "with --vpc-id: subnets to use, comma-separated, in at least two availability zones")
}

// alias registers a hidden flag that sets what flag name sets: another
// name users know it by.
func alias(fl *pflag.FlagSet, name, other string) {
	f := fl.Lookup(name)
	fl.Var(f.Value, other, "alias of --"+name)
	_ = fl.MarkHidden(other)
}

// haSpecFlags registers the shape flags of an ha-aws cluster (create and
// preflight; the SSH flags are create's own).
func haSpecFlags(fl *pflag.FlagSet, s *spec.Spec) {
	fl.StringVar(&s.Bootstrap, "bootstrap", spec.BootstrapK3s, "bootstrap tool: k3s or kubeadm")
	fl.IntVar(&s.ControlPlanes, "control-planes", spec.DefaultControl, "number of control-plane VMs")
	fl.IntVar(&s.Workers, "workers", spec.DefaultWorkers, "number of worker VMs")
	fl.IntVar(&s.Etcd, "etcd", spec.DefaultEtcd, "number of etcd VMs (odd)")
	fl.StringVar(&s.CPSize, "cp-size", spec.DefaultCPSize, "EC2 instance type of the control planes")
	fl.StringVar(&s.WPSize, "wp-size", spec.DefaultWPSize, "EC2 instance type of the workers")
	fl.StringVar(&s.EtcdSize, "etcd-size", spec.DefaultEtcdSize, "EC2 instance type of the etcd VMs")
	fl.StringVar(&s.LBSize, "lb-size", spec.DefaultLBSize, "EC2 instance type of the load balancer")
	fl.StringVar(&s.K8sVersion, "k8s-version", spec.DefaultK8sVersion, "Kubernetes version")
	fl.StringVar(&s.VPCID, "vpc-id", "", "use this existing VPC (must have DNS hostnames and DNS support enabled; kforge adds its own subnets and never modifies the VPC)")
	fl.StringVar(&s.AMI, "ami", "", "AMI for every VM (default: the newest Canonical Ubuntu 24.04 LTS image for the instance type's architecture)")
	artifactFlags(fl, &s.Artifacts, &s.ImageRepository)
	fl.StringVar(&s.EtcdBackups, "etcd-backups", "", "scheduled etcd snapshots: each etcd VM gets a systemd timer, and the etcd leader stores a snapshot in this s3://bucket/prefix (SSE-S3) with its own instance profile, allowed only that prefix; the bucket must exist")
	fl.DurationVar(&s.BackupEvery, "backup-every", 0, "with --etcd-backups: the interval between two snapshots (default 6h; 15m to 744h)")
	fl.IntVar(&s.BackupKeep, "backup-keep", 0, "with --etcd-backups: how many snapshots to keep; older ones are deleted (default 28)")
	fl.BoolVar(&s.NoCloudIntegration, "no-cloud-integration", false, "leave out the AWS cloud controller manager and the EBS CSI driver: no LoadBalancer Services, no EBS volumes, nodes named after their VMs, and no cloud permissions on the VMs' roles (for clusters that run their own)")
	s.SSHCIDR = spec.DefaultSSHCIDR
}

// artifactFlags registers where the VMs get what they install (create,
// preflight and scale of ha-aws).
func artifactFlags(fl *pflag.FlagSet, src, repo *string) {
	fl.StringVar(src, "artifacts", "", "install without internet access on the VMs: a directory kforge uploads from over SSH, or an http(s) mirror with the same layout (fill one with 'kforge artifacts fetch'); default: the public upstreams")
	fl.StringVar(repo, "image-repository", "", "registry the nodes pull container images from (kubeadm's imageRepository, k3s's system-default-registry) instead of the public registries")
}

// preflight runs `kforge preflight`.
func (a *App) preflight(ctx context.Context, s spec.Spec, output string) error {
	if err := checkOutput(output); err != nil {
		return err
	}
	s = s.WithBackupDefaults()
	if err := validate(s); err != nil {
		return err
	}
	rep, err := a.runPreflight(ctx, s)
	if err != nil {
		return err
	}
	if output == outputJSON {
		if err := writeJSON(a.Stdout, struct {
			OK bool `json:"ok"`
			preflight.Report
		}{rep.OK(), rep}); err != nil {
			return err
		}
	} else {
		rep.Write(a.Stdout)
	}
	if !rep.OK() {
		return errSilent
	}
	return nil
}

func (a *App) runPreflight(ctx context.Context, s spec.Spec) (preflight.Report, error) {
	cfg, source, err := a.awsConfig(ctx, s.Region)
	if err != nil {
		return preflight.Report{}, err
	}
	facts, err := a.preflightFacts(s)
	if err != nil {
		return preflight.Report{}, err
	}
	return preflight.Run(ctx, s, preflight.Options{AWS: cfg, Source: source, Facts: facts}), nil
}

// preflightFacts asks the provider of the cluster's type what preflight
// must know of it.
func (a *App) preflightFacts(s spec.Spec) (preflight.Facts, error) {
	p, err := a.offlineProvider(s.Type)
	if err != nil {
		return preflight.Facts{}, err
	}
	return p.Preflight(s), nil
}

// preflightGate runs the preflight of a create with the create's AWS
// configuration (so that the steps reuse its look-ups). It prints the
// warnings, or the whole checklist when a check fails, on stderr; a
// failure stops the create before anything is made.
func (a *App) preflightGate(ctx context.Context, s spec.Spec, skip bool, cfg aws.Config, source string) error {
	if skip {
		fprintf(a.Stderr, "Warning: --skip-preflight: the credentials, permissions, quotas and region are not checked; a create that lacks something stops midway (run the same command again once it is fixed).\n")
		return nil
	}
	facts, err := a.preflightFacts(s)
	if err != nil {
		return err
	}
	rep := preflight.Run(ctx, s, preflight.Options{AWS: cfg, Source: source, Facts: facts})
	if !rep.OK() {
		rep.Write(a.Stderr)
		if rep.InputError() {
			// Invalid input (docs/CONTRACT.md: exit 2, nothing changed).
			return spec.Usagef("preflight refused the input above; nothing was created")
		}
		fprintf(a.Stderr, "Fix what failed, then run the same command again (or pass --skip-preflight to create anyway).\n")
		return errSilent
	}
	fprintf(a.Stderr, "Preflight passed: %d checks, %d warning(s); permissions: %s.\n", len(rep.Checks), rep.Count(preflight.Warn), rep.PermissionMethod)
	for _, c := range rep.Checks {
		if c.Status == preflight.Warn {
			fprintf(a.Stderr, "  [warn] %s: %s\n", c.Name, firstLine(c.Detail))
		}
	}
	return nil
}

func firstLine(s string) string {
	for i, r := range s {
		if r == '\n' {
			return s[:i]
		}
	}
	return s
}

// validate checks a spec before anything is done: its own checks, and the
// location of scheduled etcd snapshots as the etcd VMs will use it.
func validate(s spec.Spec) error {
	if err := s.Validate(); err != nil {
		return err
	}
	if s.EtcdBackups != "" {
		if _, err := etcdbackup.ScheduleLocation(s.EtcdBackups); err != nil {
			return err
		}
	}
	return nil
}
