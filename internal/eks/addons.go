package eks

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/eks"
	ekstypes "github.com/aws/aws-sdk-go-v2/service/eks/types"

	"github.com/kforge/kforge/internal/awsx"
	"github.com/kforge/kforge/internal/engine"
	"github.com/kforge/kforge/internal/spec"
)

// Addon is an EKS managed add-on kforge installs on every cluster.
type Addon struct {
	// Name is the add-on's name in the EKS API.
	Name string
	// Why says what the cluster gets from it, for the plan.
	Why string
	// OnNodes marks an add-on whose pods run on the nodes (CoreDNS, the
	// EBS CSI controller): it is installed after the node group, which it
	// needs to become ACTIVE. The others (DaemonSets that nodes need to
	// become Ready) are installed as soon as the cluster is.
	OnNodes bool
}

// Addons are the managed add-ons of an EKS cluster, at the version EKS
// recommends for the cluster's Kubernetes version. vpc-cni, kube-proxy and
// coredns replace the self-managed copies EKS installs by itself (their
// settings are taken over); aws-ebs-csi-driver gives the cluster EBS
// volumes (its controller uses the nodes' role, which carries
// AmazonEBSCSIDriverPolicy).
var Addons = []Addon{
	{Name: "vpc-cni", Why: "pod networking (Amazon VPC CNI)"},
	{Name: "kube-proxy", Why: "Service routing on the nodes"},
	{Name: "coredns", Why: "cluster DNS", OnNodes: true},
	{Name: "aws-ebs-csi-driver", Why: "EBS volumes for PersistentVolumeClaims", OnNodes: true},
}

// AddonStepID is the step of an add-on.
func AddonStepID(name string) string { return "addon/" + name }

// AddonOut is the output of an add-on step.
type AddonOut struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	ARN     string `json:"arn,omitempty"`
	Status  string `json:"status,omitempty"`
	// K8s is the Kubernetes version the add-on's version was chosen for;
	// after an upgrade of the cluster, the add-on is updated to the
	// version EKS recommends for the new one.
	K8s string `json:"k8s,omitempty"`
}

// addonWait bounds the wait for an add-on to be ACTIVE or gone; its looks
// go from addonPollMin apart, backing off to addonPollMax.
const (
	addonWait    = 20 * time.Minute
	addonPollMin = 2 * time.Second
	addonPollMax = 20 * time.Second
)

// addAddon adds the step of add-on a, after the cluster (and the node
// group, for an add-on whose pods run on nodes).
func (p *Provider) addAddon(g *engine.Graph, s spec.Spec, a Addon, cluster engine.Ref[ClusterOut], nodegroup engine.Ref[NodegroupOut]) engine.Ref[AddonOut] {
	ref := s.Ref
	needs := engine.Needs(cluster)
	if a.OnNodes {
		needs = engine.Needs(cluster, nodegroup)
	}
	describe := &eks.DescribeAddonInput{ClusterName: aws.String(s.Name), AddonName: aws.String(a.Name)}
	// Without nodes, an add-on whose pods run on nodes cannot become
	// ACTIVE (EKS reports it DEGRADED until nodes come): that is as good
	// as it gets.
	noNodes := a.OnNodes && s.Nodes == 0
	settled := func(ad *ekstypes.Addon) bool {
		return ad.Status == ekstypes.AddonStatusActive || noNodes && ad.Status == ekstypes.AddonStatusDegraded
	}
	wait := func(ctx context.Context, r *engine.Run) (AddonOut, error) {
		got, err := p.eks.DescribeAddon(ctx, describe)
		if err != nil {
			return AddonOut{}, fmt.Errorf("look up add-on %s: %w", a.Name, err)
		}
		if !settled(got.Addon) {
			r.Waiting("waiting for add-on %s to be ACTIVE", a.Name)
			got, err = eks.NewAddonActiveWaiter(p.eks, func(o *eks.AddonActiveWaiterOptions) {
				o.MinDelay, o.MaxDelay = addonPollMin, addonPollMax
			}).WaitForOutput(ctx, describe, addonWait)
			if err != nil {
				detail := ""
				if again, derr := p.eks.DescribeAddon(ctx, describe); derr == nil {
					detail = fmt.Sprintf(" (EKS reports it %s: %s)", again.Addon.Status, addonIssues(again.Addon))
				}
				return AddonOut{}, fmt.Errorf("wait for add-on %s to be ACTIVE%s: %w", a.Name, detail, err)
			}
		}
		return addonOut(got.Addon), nil
	}
	return engine.Add(g, engine.Resource[AddonOut]{
		ID:          AddonStepID(a.Name),
		Needs:       needs,
		Title:       fmt.Sprintf("managed add-on %s: %s, at the version EKS recommends", a.Name, a.Why),
		DeleteTitle: fmt.Sprintf("managed add-on %s", a.Name),
		Find: func(ctx context.Context, _ *engine.Run, prev *AddonOut) (engine.Observation[AddonOut], error) {
			got, err := p.eks.DescribeAddon(ctx, describe)
			switch {
			case awsx.IsNotFound(err) && prev != nil:
				return engine.Gone[AddonOut]("add-on %s was removed outside kforge", a.Name), nil
			case awsx.IsNotFound(err):
				return engine.Missing[AddonOut](), nil
			case err != nil:
				return engine.Observation[AddonOut]{}, fmt.Errorf("look up add-on %s: %w", a.Name, err)
			}
			ad := got.Addon
			out := addonOut(ad)
			if prev != nil {
				out.K8s = prev.K8s
			}
			switch {
			case ad.Status == ekstypes.AddonStatusDeleting:
				return engine.Unsafe[AddonOut]("add-on %s is being removed outside kforge: wait for it to be gone, then run the command again", a.Name), nil
			case settled(ad) && out.K8s != "" && CompareVersions(out.K8s, s.Version) < 0:
				return engine.Drifted(out, "add-on %s %s was chosen for Kubernetes %s, the cluster is now %s", a.Name, out.Version, out.K8s, s.Version), nil
			case settled(ad):
				return engine.InSync(out), nil
			case ad.Status == ekstypes.AddonStatusCreateFailed || ad.Status == ekstypes.AddonStatusDegraded || ad.Status == ekstypes.AddonStatusUpdateFailed:
				return engine.Unsafe[AddonOut]("EKS reports add-on %s as %s: %s; fix the cause (`aws eks describe-addon --cluster-name %s --addon-name %s`), then run the command again",
					a.Name, ad.Status, addonIssues(ad), s.Name, a.Name), nil
			}
			return engine.Drifted(out, "add-on %s is %s", a.Name, ad.Status), nil
		},
		Create: func(ctx context.Context, r *engine.Run) (AddonOut, error) {
			c, err := cluster.Get(r)
			if err != nil {
				return AddonOut{}, err
			}
			version, err := p.addonVersion(ctx, a.Name, orElse(c.Version, s.Version))
			if err != nil {
				return AddonOut{}, err
			}
			_, err = p.eks.CreateAddon(ctx, &eks.CreateAddonInput{
				ClusterName:  aws.String(s.Name),
				AddonName:    aws.String(a.Name),
				AddonVersion: aws.String(version),
				// EKS installed its own copies of vpc-cni, kube-proxy and
				// coredns with the cluster: the add-on takes them over.
				ResolveConflicts:   ekstypes.ResolveConflictsOverwrite,
				ClientRequestToken: aws.String(r.Token()),
				Tags:               awsx.Tags(ref, a.Name),
			})
			if err != nil && !awsx.HasCode(err, "ResourceInUseException") {
				return AddonOut{}, fmt.Errorf("install add-on %s %s: %w", a.Name, version, err)
			}
			out, err := wait(ctx, r)
			out.K8s = s.Version
			return out, err
		},
		// An add-on still being installed or updated is waited for; one
		// chosen for an older Kubernetes version is then updated to the
		// version EKS recommends for the cluster's.
		Update: func(ctx context.Context, r *engine.Run, found AddonOut) (AddonOut, error) {
			out, err := wait(ctx, r)
			if err != nil || found.K8s == "" || CompareVersions(found.K8s, s.Version) >= 0 {
				out.K8s = found.K8s
				return out, err
			}
			version, err := p.addonVersion(ctx, a.Name, s.Version)
			if err != nil {
				return AddonOut{}, err
			}
			if version != out.Version {
				up, err := p.eks.UpdateAddon(ctx, &eks.UpdateAddonInput{
					ClusterName: aws.String(s.Name), AddonName: aws.String(a.Name), AddonVersion: aws.String(version),
					ResolveConflicts: ekstypes.ResolveConflictsOverwrite, ClientRequestToken: aws.String(r.Token("version", version)),
				})
				if err != nil {
					return AddonOut{}, fmt.Errorf("update add-on %s to %s: %w", a.Name, version, err)
				}
				in := &eks.DescribeUpdateInput{Name: aws.String(s.Name), AddonName: aws.String(a.Name), UpdateId: up.Update.Id}
				if err := p.waitUpdate(ctx, r, in, fmt.Sprintf("add-on %s to %s", a.Name, version), addonWait); err != nil {
					return AddonOut{}, err
				}
				if out, err = wait(ctx, r); err != nil {
					return AddonOut{}, err
				}
			}
			out.K8s = s.Version
			return out, nil
		},
		Delete: func(ctx context.Context, r *engine.Run, _ *AddonOut) error {
			return deleteEKS(ctx, r, ref, eksDelete{
				what: "add-on " + a.Name,
				describe: func(ctx context.Context) (map[string]string, bool, error) {
					got, err := p.eks.DescribeAddon(ctx, describe)
					if err != nil {
						return nil, false, err
					}
					return got.Addon.Tags, got.Addon.Status == ekstypes.AddonStatusDeleting, nil
				},
				del: func(ctx context.Context) error {
					_, err := p.eks.DeleteAddon(ctx, &eks.DeleteAddonInput{ClusterName: aws.String(s.Name), AddonName: aws.String(a.Name)})
					return err
				},
				// Someone else's add-on: EKS removes it with the cluster.
				foreign: func() error { return engine.ErrAbsent },
				wait: func(ctx context.Context) error {
					return eks.NewAddonDeletedWaiter(p.eks, func(o *eks.AddonDeletedWaiterOptions) {
						o.MinDelay, o.MaxDelay = addonPollMin, addonPollMax
					}).Wait(ctx, describe, addonWait)
				},
			})
		},
	})
}

// addonVersion returns the version of add-on name that EKS recommends for
// Kubernetes version k8s (its default version), else the newest one EKS
// offers for it.
func (p *Provider) addonVersion(ctx context.Context, name, k8s string) (string, error) {
	infos, err := awsx.Collect(ctx, eks.NewDescribeAddonVersionsPaginator(p.eks, &eks.DescribeAddonVersionsInput{
		AddonName: aws.String(name), KubernetesVersion: aws.String(k8s),
	}), func(o *eks.DescribeAddonVersionsOutput) []ekstypes.AddonInfo { return o.Addons })
	if err != nil {
		return "", fmt.Errorf("list the versions of add-on %s for Kubernetes %s: %w", name, k8s, err)
	}
	return pickAddonVersion(infos, name, k8s)
}

// pickAddonVersion picks, from DescribeAddonVersions' answer, the default
// version of add-on name for Kubernetes k8s, else the first version that
// lists k8s (EKS lists the newest first).
func pickAddonVersion(infos []ekstypes.AddonInfo, name, k8s string) (string, error) {
	first := ""
	for _, info := range infos {
		if aws.ToString(info.AddonName) != name {
			continue
		}
		for _, v := range info.AddonVersions {
			for _, c := range v.Compatibilities {
				if aws.ToString(c.ClusterVersion) != k8s {
					continue
				}
				if c.DefaultVersion {
					return aws.ToString(v.AddonVersion), nil
				}
				if first == "" {
					first = aws.ToString(v.AddonVersion)
				}
			}
		}
	}
	if first == "" {
		return "", fmt.Errorf("EKS offers no version of add-on %s for Kubernetes %s", name, k8s)
	}
	return first, nil
}

func addonOut(ad *ekstypes.Addon) AddonOut {
	return AddonOut{Name: aws.ToString(ad.AddonName), Version: aws.ToString(ad.AddonVersion), ARN: aws.ToString(ad.AddonArn), Status: string(ad.Status)}
}

func addonIssues(ad *ekstypes.Addon) string {
	if ad.Health == nil || len(ad.Health.Issues) == 0 {
		return "no details from EKS"
	}
	var parts []string
	for _, is := range ad.Health.Issues {
		parts = append(parts, fmt.Sprintf("%s: %s", is.Code, aws.ToString(is.Message)))
	}
	return strings.Join(parts, "; ")
}

func orElse(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
