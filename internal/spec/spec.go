// Package spec describes what a user asks for: which cluster (type, name,
// region) and its wanted shape (sizes, counts, versions, network choice).
// It validates input before anything touches AWS, as docs/CONTRACT.md
// fixes it (names, defaults, exit code 2 for invalid input).
package spec

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"time"

	"github.com/kforge/kforge/internal/artifacts"
)

// Cluster types, as users type them on the command line.
const (
	TypeEKS = "aws"    // managed EKS
	TypeHA  = "ha-aws" // self-managed, highly available, on EC2 VMs
)

// Types lists the cluster types kforge knows, in the order help shows them.
var Types = []string{TypeEKS, TypeHA}

// Bootstrap tools for ha-aws clusters.
const (
	BootstrapK3s     = "k3s"
	BootstrapKubeadm = "kubeadm"
)

// Defaults applied by the command line when a flag is not given.
const (
	DefaultEKSVersion = "1.33"
	DefaultNodeSize   = "t3.medium"
	DefaultNodes      = 2
	DefaultK8sVersion = "1.34"
	DefaultCPSize     = "t3.medium"
	DefaultWPSize     = "t3.medium"
	DefaultEtcdSize   = "t3.small"
	DefaultLBSize     = "t3.micro"
	DefaultControl    = 3
	DefaultWorkers    = 2
	DefaultEtcd       = 3
	DefaultSSHCIDR    = "0.0.0.0/0"
	// MinSSHTimeout is the shortest --ssh-timeout: a VM takes longer
	// than that to boot.
	MinSSHTimeout      = 10 * time.Second
	DefaultVPCCIDR     = "10.0.0.0/16"
	MaxNameLength      = 40
	MaxNodesPerCluster = 450
)

// Ref identifies one cluster: two clusters of one name in two regions are two
// clusters.
type Ref struct {
	Type   string `json:"type"`
	Name   string `json:"name"`
	Region string `json:"region"`
}

// String renders the ref the way messages name a cluster.
func (r Ref) String() string { return fmt.Sprintf("%s cluster %q in %s", r.Type, r.Name, r.Region) }

// Args renders the ref as the command-line arguments that name it.
func (r Ref) Args() string { return fmt.Sprintf("%s --name %s --region %s", r.Type, r.Name, r.Region) }

// Spec is the wanted state of a cluster. Fields that do not apply to a type
// stay zero.
type Spec struct {
	Ref

	// Network. VPCID empty means kforge creates a VPC of its own.
	VPCID     string   `json:"vpcId,omitempty"`
	SubnetIDs []string `json:"subnetIds,omitempty"`

	// aws (EKS).
	Version  string `json:"version,omitempty"`
	NodeSize string `json:"nodeSize,omitempty"`
	Nodes    int    `json:"nodes,omitempty"`

	// ha-aws.
	Bootstrap     string `json:"bootstrap,omitempty"`
	ControlPlanes int    `json:"controlPlanes,omitempty"`
	Workers       int    `json:"workers,omitempty"`
	Etcd          int    `json:"etcd,omitempty"`
	CPSize        string `json:"cpSize,omitempty"`
	WPSize        string `json:"wpSize,omitempty"`
	EtcdSize      string `json:"etcdSize,omitempty"`
	LBSize        string `json:"lbSize,omitempty"`
	K8sVersion    string `json:"k8sVersion,omitempty"`
	AMI           string `json:"ami,omitempty"`
	SSHCIDR       string `json:"sshCidr,omitempty"`
	SSHJump       string `json:"sshJump,omitempty"`
	SSHJumpKey    string `json:"sshJumpKey,omitempty"`
	// SSHTimeout bounds the wait for a VM to answer SSH (--ssh-timeout;
	// zero: 10 minutes).
	SSHTimeout time.Duration `json:"sshTimeout,omitempty"`
	// SSHSessions bounds the scripts kforge runs at once on the VMs, over
	// its one connection to each VM or to the jump host (--ssh-sessions;
	// zero: 32).
	SSHSessions int `json:"sshSessions,omitempty"`
	// Artifacts is where the VMs get what they install: "" for the public
	// upstreams, a directory kforge uploads from, or a mirror URL (see
	// package artifacts). ImageRepository, if set, is the registry the
	// nodes pull container images from.
	Artifacts       string `json:"artifacts,omitempty"`
	ImageRepository string `json:"imageRepository,omitempty"`
	// NoCloudIntegration leaves out the AWS cloud controller manager and
	// the EBS CSI driver (--no-cloud-integration): nodes keep kforge's VM
	// names, kubelets run without a cloud provider, and the VMs' roles get
	// no cloud permissions.
	NoCloudIntegration bool `json:"noCloudIntegration,omitempty"`
	// EtcdBackups is where the etcd VMs store scheduled snapshots
	// themselves (--etcd-backups s3://bucket/prefix), one every
	// BackupEvery, the last BackupKeep kept; empty: no schedule.
	EtcdBackups string        `json:"etcdBackups,omitempty"`
	BackupEvery time.Duration `json:"backupEvery,omitempty"`
	BackupKeep  int           `json:"backupKeep,omitempty"`
}

// CloudIntegration reports whether an ha-aws cluster runs the AWS cloud
// controller manager and the EBS CSI driver.
func (s Spec) CloudIntegration() bool { return s.Type == TypeHA && !s.NoCloudIntegration }

// WorkerCount is the size of the worker pool, whatever the type.
func (s Spec) WorkerCount() int {
	if s.Type == TypeEKS {
		return s.Nodes
	}
	return s.Workers
}

// UsageError is invalid input: the command changes nothing and exits 2.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// Usagef returns a UsageError with a formatted message.
func Usagef(format string, a ...any) error { return &UsageError{Msg: fmt.Sprintf(format, a...)} }

var (
	nameRE     = regexp.MustCompile(`^[a-z]([a-z0-9-]*[a-z0-9])?$`)
	regionRE   = regexp.MustCompile(`^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]+$`)
	versionRE  = regexp.MustCompile(`^1\.[0-9]{2}$`)
	k8sVerRE   = regexp.MustCompile(`^v?1\.[0-9]{2}(\.[0-9]+(\+k3s[0-9]+)?)?$`)
	instTypeRE = regexp.MustCompile(`^[a-z][a-z0-9-]*\.[a-z0-9]+$`)
	vpcRE      = regexp.MustCompile(`^vpc-[0-9a-f]{8,17}$`)
	subnetRE   = regexp.MustCompile(`^subnet-[0-9a-f]{8,17}$`)
	amiRE      = regexp.MustCompile(`^ami-[0-9a-f]{8,17}$`)
	// imageRepoRE is a registry host (with an optional port) and path.
	imageRepoRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?(/[a-z0-9]([a-z0-9._-]*[a-z0-9])?)*$`)
	jumpRE      = regexp.MustCompile(`^[a-zA-Z0-9._-]+@[^\s@:]+(:[0-9]{1,5})?$|^[a-zA-Z0-9._-]+@\[[0-9a-fA-F:]+\](:[0-9]{1,5})?$`)
)

// ValidateRef checks the type, the name and the region of a cluster (a
// region of kforge's table, see regions.go).
func ValidateRef(r Ref) error {
	switch r.Type {
	case TypeEKS, TypeHA:
	default:
		return Usagef("unknown cluster type %q: use one of %s", r.Type, strings.Join(Types, ", "))
	}
	if r.Name == "" {
		return Usagef("--name is required: 1 to %d lowercase letters, digits and '-', starting with a letter", MaxNameLength)
	}
	if len(r.Name) > MaxNameLength || !nameRE.MatchString(r.Name) {
		return Usagef("invalid cluster name %q: use 1 to %d lowercase letters, digits and '-', starting with a letter and not ending with '-'", r.Name, MaxNameLength)
	}
	return CheckRegion(r.Region)
}

// Validate checks a whole spec before any AWS call.
func (s Spec) Validate() error {
	if err := ValidateRef(s.Ref); err != nil {
		return err
	}
	if s.VPCID != "" && !vpcRE.MatchString(s.VPCID) {
		return Usagef("invalid --vpc-id %q: expected vpc- followed by hex digits", s.VPCID)
	}
	if len(s.SubnetIDs) > 0 {
		if s.VPCID == "" {
			return Usagef("--subnet-ids needs --vpc-id: name the VPC the subnets belong to")
		}
		for _, id := range s.SubnetIDs {
			if !subnetRE.MatchString(id) {
				return Usagef("invalid subnet ID %q in --subnet-ids: expected subnet- followed by hex digits", id)
			}
		}
		if s.Type == TypeEKS && len(s.SubnetIDs) < 2 {
			return Usagef("--subnet-ids needs at least two subnets in distinct availability zones (EKS requires it)")
		}
	}
	switch s.Type {
	case TypeEKS:
		if !versionRE.MatchString(s.Version) {
			return Usagef("invalid --k8s-version %q: give a Kubernetes minor version such as %s", s.Version, DefaultEKSVersion)
		}
		if err := instanceType("--node-size", s.NodeSize); err != nil {
			return err
		}
		// EKS allows a node group of zero nodes (scaled to zero).
		if err := count("--nodes", s.Nodes, 0, MaxNodesPerCluster); err != nil {
			return err
		}
	case TypeHA:
		if s.Bootstrap != BootstrapK3s && s.Bootstrap != BootstrapKubeadm {
			return Usagef("invalid --bootstrap %q: use k3s or kubeadm", s.Bootstrap)
		}
		if err := count("--control-planes", s.ControlPlanes, 1, 15); err != nil {
			return err
		}
		if err := count("--workers", s.Workers, 1, MaxNodesPerCluster); err != nil {
			return err
		}
		if err := count("--etcd", s.Etcd, 1, 9); err != nil {
			return err
		}
		if s.Etcd%2 == 0 {
			return Usagef("invalid --etcd %d: use an odd number (1, 3, 5, ...) so that etcd keeps a quorum", s.Etcd)
		}
		for _, f := range []struct{ flag, v string }{{"--cp-size", s.CPSize}, {"--wp-size", s.WPSize}, {"--etcd-size", s.EtcdSize}, {"--lb-size", s.LBSize}} {
			if err := instanceType(f.flag, f.v); err != nil {
				return err
			}
		}
		if !k8sVerRE.MatchString(s.K8sVersion) {
			return Usagef("invalid --k8s-version %q: give a Kubernetes version such as %s or 1.33.4", s.K8sVersion, DefaultK8sVersion)
		}
		if s.AMI != "" && !amiRE.MatchString(s.AMI) {
			return Usagef("invalid --ami %q: expected ami- followed by hex digits", s.AMI)
		}
		if _, err := netip.ParsePrefix(s.SSHCIDR); err != nil {
			return Usagef("invalid --ssh-cidr %q: give a CIDR such as 203.0.113.7/32", s.SSHCIDR)
		}
		if err := CheckSSHTimeout(s.SSHTimeout); err != nil {
			return err
		}
		if s.SSHSessions != 0 {
			if err := CheckSSHSessions(s.SSHSessions); err != nil {
				return err
			}
		}
		if s.SSHJump != "" && !jumpRE.MatchString(s.SSHJump) {
			return Usagef("invalid --ssh-jump %q: use user@host or user@host:port", s.SSHJump)
		}
		if _, err := artifacts.ParseSource(s.Artifacts); err != nil {
			return Usagef("invalid %v", err)
		}
		if s.ImageRepository != "" && !imageRepoRE.MatchString(s.ImageRepository) {
			return Usagef("invalid --image-repository %q: give a registry host and path such as registry.example.com/k8s", s.ImageRepository)
		}
		if err := s.checkBackups(); err != nil {
			return err
		}
	}
	return nil
}

// CheckSSHTimeout checks --ssh-timeout: zero (the default) or at least
// MinSSHTimeout.
func CheckSSHTimeout(d time.Duration) error {
	if d < 0 || d > 0 && d < MinSSHTimeout {
		return Usagef("invalid --ssh-timeout %s: give a duration of at least %s, such as 20m", d, MinSSHTimeout)
	}
	return nil
}

// CheckSSHSessions refuses an --ssh-sessions out of range.
func CheckSSHSessions(n int) error {
	if n < 1 || n > MaxSSHSessions {
		return Usagef("invalid --ssh-sessions %d: use a number from 1 to %d", n, MaxSSHSessions)
	}
	return nil
}

// MaxSSHSessions is the largest --ssh-sessions.
const MaxSSHSessions = 256

func count(flag string, n, min, max int) error {
	if n < min || n > max {
		return Usagef("invalid %s %d: use a number from %d to %d", flag, n, min, max)
	}
	return nil
}

func instanceType(flag, v string) error {
	if !instTypeRE.MatchString(v) {
		return Usagef("invalid %s %q: give an EC2 instance type such as t3.medium", flag, v)
	}
	return nil
}
