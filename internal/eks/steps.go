package eks

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"regexp"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/eks"
	ekstypes "github.com/aws/aws-sdk-go-v2/service/eks/types"

	"github.com/kforge/kforge/internal/awsx"
	"github.com/kforge/kforge/internal/engine"
	"github.com/kforge/kforge/internal/iamrole"
	"github.com/kforge/kforge/internal/leftovers"
	"github.com/kforge/kforge/internal/network"
	"github.com/kforge/kforge/internal/spec"
)

// Bounds of the waits on EKS: a cluster takes 10-15 minutes, a node group
// a few; deletes are similar.
const (
	clusterWait   = 40 * time.Minute
	nodegroupWait = 30 * time.Minute
)

// ClusterOut is the output of the EKS cluster step.
type ClusterOut struct {
	Name            string `json:"name"`
	ARN             string `json:"arn"`
	Endpoint        string `json:"endpoint"`
	CAData          string `json:"caData"`
	Version         string `json:"version"`
	PlatformVersion string `json:"platformVersion,omitempty"`
}

// CA returns the cluster's certificate authority data, decoded.
func (c ClusterOut) CA() []byte {
	b, err := base64.StdEncoding.DecodeString(c.CAData)
	if err != nil {
		return []byte(c.CAData)
	}
	return b
}

// NodegroupOut is the output of the node group step.
type NodegroupOut struct {
	Name    string `json:"name"`
	ARN     string `json:"arn"`
	Desired int32  `json:"desired"`
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// ownedBy reports whether EKS tags mark the resource as ref's.
func ownedBy(tags map[string]string, ref spec.Ref) bool {
	return tags[awsx.TagCluster] == ref.Name && tags[awsx.TagRegion] == ref.Region && tags[awsx.TagType] == ref.Type
}

// eventual retries IAM's eventual consistency (a role EKS cannot assume
// yet) on top of the usual retryable errors.
func eventual(o *eks.Options) { o.Retryer = awsx.Eventual(o.Retryer, awsx.IsIAMPropagation) }

// clusterOut is what the cluster step records of an EKS cluster.
func clusterOut(c *ekstypes.Cluster) ClusterOut {
	out := ClusterOut{Name: aws.ToString(c.Name), ARN: aws.ToString(c.Arn), Endpoint: aws.ToString(c.Endpoint),
		Version: aws.ToString(c.Version), PlatformVersion: aws.ToString(c.PlatformVersion)}
	if c.CertificateAuthority != nil {
		out.CAData = aws.ToString(c.CertificateAuthority.Data)
	}
	return out
}

// addCluster adds the EKS cluster. It is found by name on every run. An
// EKS cluster deleted outside kforge is not made again: its workloads went
// with it, and an empty cluster under the same name would hide that.
func (p *Provider) addCluster(g *engine.Graph, s spec.Spec, net engine.Ref[network.Network], role engine.Ref[iamrole.Out]) engine.Ref[ClusterOut] {
	ref := s.Ref
	describe := &eks.DescribeClusterInput{Name: aws.String(s.Name)}
	waitActive := func(ctx context.Context, r *engine.Run) (ClusterOut, error) {
		r.Waiting("waiting for EKS cluster %s to be ACTIVE (EKS takes 10-15 minutes)", s.Name)
		out, err := eks.NewClusterActiveWaiter(p.eks, func(o *eks.ClusterActiveWaiterOptions) {
			o.MinDelay, o.MaxDelay = 5*time.Second, 30*time.Second
		}).WaitForOutput(ctx, describe, clusterWait)
		if err != nil {
			return ClusterOut{}, fmt.Errorf("wait for EKS cluster %s to be ACTIVE: %w", s.Name, err)
		}
		return clusterOut(out.Cluster), nil
	}
	return engine.Add(g, engine.Resource[ClusterOut]{
		ID:          StepCluster,
		Needs:       engine.Needs(net, role, engine.ID(leftovers.StepID)),
		Title:       clusterTitle(s),
		DeleteTitle: fmt.Sprintf("EKS cluster %s (EKS takes 5-10 minutes to delete it)", s.Name),
		Inputs:      struct{ Version string }{s.Version},
		Find: func(ctx context.Context, _ *engine.Run, prev *ClusterOut) (engine.Observation[ClusterOut], error) {
			got, err := p.eks.DescribeCluster(ctx, describe)
			switch {
			case awsx.IsNotFound(err) && prev != nil:
				return engine.Unsafe[ClusterOut]("EKS cluster %s was deleted outside kforge, with its workloads; kforge does not make an empty one in its place: run `kforge delete %s` to remove what is left, then create the cluster again", s.Name, ref.Args()), nil
			case awsx.IsNotFound(err):
				return engine.Missing[ClusterOut](), nil
			case err != nil:
				return engine.Observation[ClusterOut]{}, fmt.Errorf("look up EKS cluster: %w", err)
			}
			c := got.Cluster
			if !ownedBy(c.Tags, ref) {
				return engine.Unsafe[ClusterOut]("an EKS cluster named %s exists in %s but was not made by kforge for this cluster: kforge will not change it; pick another cluster name", s.Name, s.Region), nil
			}
			switch c.Status {
			case ekstypes.ClusterStatusFailed:
				return engine.Unsafe[ClusterOut]("EKS reports cluster %s as FAILED: delete it with `kforge delete %s` and create it again", s.Name, ref.Args()), nil
			case ekstypes.ClusterStatusDeleting:
				return engine.Unsafe[ClusterOut]("EKS cluster %s is being deleted: wait for it to be gone, then create it again", s.Name), nil
			case ekstypes.ClusterStatusActive:
				switch CompareVersions(aws.ToString(c.Version), s.Version) {
				case -1:
					return engine.Drifted(clusterOut(c), "EKS cluster %s runs Kubernetes %s, want %s", s.Name, aws.ToString(c.Version), s.Version), nil
				case 1:
					return engine.Unsafe[ClusterOut]("EKS cluster %s runs Kubernetes %s, newer than the %s kforge recorded: it was upgraded outside kforge, and Kubernetes cannot go back; run `kforge upgrade %s --k8s-version %s` to record it", s.Name, aws.ToString(c.Version), s.Version, ref.Args(), aws.ToString(c.Version)), nil
				}
				return engine.InSync(clusterOut(c)), nil
			}
			return engine.Drifted(clusterOut(c), "EKS cluster %s is %s", s.Name, c.Status), nil
		},
		Create: func(ctx context.Context, r *engine.Run) (ClusterOut, error) {
			net, err := net.Get(r)
			if err != nil {
				return ClusterOut{}, err
			}
			role, err := role.Get(r)
			if err != nil {
				return ClusterOut{}, err
			}
			_, err = p.eks.CreateCluster(ctx, &eks.CreateClusterInput{
				Name:    aws.String(s.Name),
				RoleArn: aws.String(role.ARN),
				Version: aws.String(s.Version),
				ResourcesVpcConfig: &ekstypes.VpcConfigRequest{
					SubnetIds:             net.SubnetIDs(),
					EndpointPublicAccess:  aws.Bool(true),
					EndpointPrivateAccess: aws.Bool(true),
				},
				AccessConfig: &ekstypes.CreateAccessConfigRequest{
					AuthenticationMode:                      ekstypes.AuthenticationModeApiAndConfigMap,
					BootstrapClusterCreatorAdminPermissions: aws.Bool(true),
				},
				ClientRequestToken: aws.String(r.Token()),
				Tags:               awsx.Tags(ref, s.Name),
			}, eventual)
			if err != nil && !awsx.HasCode(err, "ResourceInUseException") {
				return ClusterOut{}, fmt.Errorf("create EKS cluster: %w", err)
			}
			return waitActive(ctx, r)
		},
		// A cluster still being created or updated is waited for; one of
		// an older Kubernetes minor is then updated to the wanted one
		// (kforge upgrade), and waited for again.
		Update: func(ctx context.Context, r *engine.Run, _ ClusterOut) (ClusterOut, error) {
			out, err := waitActive(ctx, r)
			if err != nil || CompareVersions(out.Version, s.Version) >= 0 {
				return out, err
			}
			up, err := p.eks.UpdateClusterVersion(ctx, &eks.UpdateClusterVersionInput{
				Name: aws.String(s.Name), Version: aws.String(s.Version), ClientRequestToken: aws.String(r.Token("version", s.Version)),
			})
			if err != nil {
				return ClusterOut{}, fmt.Errorf("update EKS cluster %s to Kubernetes %s: %w", s.Name, s.Version, err)
			}
			what := fmt.Sprintf("cluster %s to Kubernetes %s (EKS takes 20-40 minutes)", s.Name, s.Version)
			if err := p.waitUpdate(ctx, r, &eks.DescribeUpdateInput{Name: aws.String(s.Name), UpdateId: up.Update.Id}, what, clusterWait); err != nil {
				return ClusterOut{}, err
			}
			return waitActive(ctx, r)
		},
		Delete: func(ctx context.Context, r *engine.Run, _ *ClusterOut) error {
			return deleteEKS(ctx, r, ref, eksDelete{
				what: "EKS cluster " + s.Name, waitNote: " (EKS takes several minutes)",
				describe: func(ctx context.Context) (map[string]string, bool, error) {
					got, err := p.eks.DescribeCluster(ctx, describe)
					if err != nil {
						return nil, false, err
					}
					return got.Cluster.Tags, got.Cluster.Status == ekstypes.ClusterStatusDeleting, nil
				},
				del: func(ctx context.Context) error {
					_, err := p.eks.DeleteCluster(ctx, &eks.DeleteClusterInput{Name: aws.String(s.Name)})
					if !awsx.HasCode(err, "ResourceInUseException") {
						return err
					}
					// A node group whose create was still on its way to EKS
					// when a kforge stopped can appear after the node group
					// step found none (the crash matrix found it): delete
					// it, then the cluster.
					if derr := p.deleteLateNodegroup(ctx, r, s); derr != nil {
						return fmt.Errorf("%w; %w", err, derr)
					}
					_, err = p.eks.DeleteCluster(ctx, &eks.DeleteClusterInput{Name: aws.String(s.Name)})
					return err
				},
				foreign: func() error {
					return fmt.Errorf("the EKS cluster named %s in %s was not made by kforge for this cluster: not deleting it", s.Name, s.Region)
				},
				wait: func(ctx context.Context) error {
					return eks.NewClusterDeletedWaiter(p.eks, func(o *eks.ClusterDeletedWaiterOptions) {
						o.MinDelay, o.MaxDelay = 5*time.Second, 30*time.Second
					}).Wait(ctx, describe, clusterWait)
				},
			})
		},
	})
}

var armFamily = regexp.MustCompile(`^[a-z]+[0-9]+g[a-z]*\.`)

// amiType picks the EKS-optimised Amazon Linux 2023 image for the
// instance type's architecture (Graviton families end in g: t4g, m7g).
func amiType(instanceType string) ekstypes.AMITypes {
	if armFamily.MatchString(instanceType) {
		return ekstypes.AMITypesAl2023Arm64Standard
	}
	return ekstypes.AMITypesAl2023X8664Standard
}

// addNodegroup adds the managed node group. It is found on every run: a
// node group deleted outside kforge is made again, and one resized by hand
// is brought back to the wanted number of nodes.
func (p *Provider) addNodegroup(g *engine.Graph, s spec.Spec, cluster engine.Ref[ClusterOut], role engine.Ref[iamrole.Out], net engine.Ref[network.Network]) engine.Ref[NodegroupOut] {
	ref := s.Ref
	name := NodegroupName(s.Name)
	nodes := int32(s.Nodes)
	// EKS wants a maximum of at least 1: a node group scaled to zero
	// (kforge scale aws --nodes 0) keeps room for one node.
	maxNodes := max(nodes, 1)
	in := &eks.DescribeNodegroupInput{ClusterName: aws.String(s.Name), NodegroupName: aws.String(name)}
	// sized reports whether the node group has exactly the wanted nodes,
	// as a create makes it.
	sized := func(sc *ekstypes.NodegroupScalingConfig) bool {
		return sc != nil && aws.ToInt32(sc.DesiredSize) == nodes && aws.ToInt32(sc.MinSize) == nodes && aws.ToInt32(sc.MaxSize) == maxNodes
	}
	// settle waits for the node group to be ACTIVE, resizes it if needed,
	// and returns what it then is.
	settle := func(ctx context.Context, r *engine.Run) (NodegroupOut, error) {
		ng, err := p.waitNodegroup(ctx, r, in, "")
		if err != nil {
			return NodegroupOut{}, err
		}
		if !sized(ng.ScalingConfig) {
			// The token is that of this resize: a lost answer retried does
			// not resize twice, a later drift is another resize.
			token := r.Token(fmt.Sprint(nodes), aws.ToTime(ng.ModifiedAt).String())
			want := &ekstypes.NodegroupScalingConfig{DesiredSize: aws.Int32(nodes), MinSize: aws.Int32(nodes), MaxSize: aws.Int32(maxNodes)}
			if _, err := p.eks.UpdateNodegroupConfig(ctx, &eks.UpdateNodegroupConfigInput{
				ClusterName: aws.String(s.Name), NodegroupName: aws.String(name), ScalingConfig: want, ClientRequestToken: aws.String(token),
			}); err != nil {
				return NodegroupOut{}, fmt.Errorf("resize node group %s to %d nodes: %w", name, nodes, err)
			}
			if ng, err = p.waitNodegroup(ctx, r, in, "after resizing it"); err != nil {
				return NodegroupOut{}, err
			}
			if !sized(ng.ScalingConfig) {
				return NodegroupOut{}, fmt.Errorf("node group %s has %d desired nodes after the update, not %d", name, aws.ToInt32(ng.ScalingConfig.DesiredSize), nodes)
			}
		}
		if CompareVersions(aws.ToString(ng.Version), s.Version) < 0 {
			// The nodes are replaced by EKS with nodes of the new version,
			// each drained first (its pod disruption budgets honoured).
			up, err := p.eks.UpdateNodegroupVersion(ctx, &eks.UpdateNodegroupVersionInput{
				ClusterName: aws.String(s.Name), NodegroupName: aws.String(name), Version: aws.String(s.Version),
				ClientRequestToken: aws.String(r.Token("version", s.Version)),
			})
			if err != nil {
				return NodegroupOut{}, fmt.Errorf("update node group %s to Kubernetes %s: %w", name, s.Version, err)
			}
			what := fmt.Sprintf("node group %s to Kubernetes %s (EKS replaces its nodes one at a time)", name, s.Version)
			if err := p.waitUpdate(ctx, r, &eks.DescribeUpdateInput{Name: aws.String(s.Name), NodegroupName: aws.String(name), UpdateId: up.Update.Id}, what, nodegroupWait); err != nil {
				return NodegroupOut{}, err
			}
			if ng, err = p.waitNodegroup(ctx, r, in, "after its update"); err != nil {
				return NodegroupOut{}, err
			}
		}
		return NodegroupOut{Name: name, ARN: aws.ToString(ng.NodegroupArn), Desired: nodes}, nil
	}
	return engine.Add(g, engine.Resource[NodegroupOut]{
		ID:          StepNodegroup,
		Needs:       engine.Needs(cluster, role, net),
		Title:       nodegroupTitle(s),
		DeleteTitle: fmt.Sprintf("managed node group %s and its nodes (EKS takes a few minutes to delete them)", name),
		Inputs:      struct{ Nodes int }{s.Nodes},
		Find: func(ctx context.Context, _ *engine.Run, prev *NodegroupOut) (engine.Observation[NodegroupOut], error) {
			got, err := p.eks.DescribeNodegroup(ctx, in)
			switch {
			case awsx.IsNotFound(err) && prev != nil:
				return engine.Gone[NodegroupOut]("node group %s was deleted outside kforge", name), nil
			case awsx.IsNotFound(err):
				return engine.Missing[NodegroupOut](), nil
			case err != nil:
				return engine.Observation[NodegroupOut]{}, fmt.Errorf("look up node group: %w", err)
			}
			ng := got.Nodegroup
			if !ownedBy(ng.Tags, ref) {
				return engine.Unsafe[NodegroupOut]("node group %s exists but was not made by kforge for this cluster: kforge will not change it", name), nil
			}
			sc := ng.ScalingConfig
			if sc == nil {
				sc = &ekstypes.NodegroupScalingConfig{}
			}
			out := NodegroupOut{Name: name, ARN: aws.ToString(ng.NodegroupArn), Desired: aws.ToInt32(sc.DesiredSize)}
			switch {
			case ng.Status == ekstypes.NodegroupStatusCreateFailed || ng.Status == ekstypes.NodegroupStatusDegraded:
				return engine.Unsafe[NodegroupOut]("EKS reports node group %s as %s: %s; fix the cause, or delete the cluster with `kforge delete %s`", name, ng.Status, healthIssues(ng), ref.Args()), nil
			case ng.Status == ekstypes.NodegroupStatusDeleting:
				return engine.Unsafe[NodegroupOut]("node group %s is being deleted outside kforge: wait for it to be gone, then run the command again", name), nil
			case !sized(ng.ScalingConfig) && prev != nil && prev.Desired == nodes:
				return engine.Drifted(out, "node group %s was resized outside kforge: %d nodes (min %d, max %d), want %d", name,
					aws.ToInt32(sc.DesiredSize), aws.ToInt32(sc.MinSize), aws.ToInt32(sc.MaxSize), nodes), nil
			case !sized(ng.ScalingConfig):
				return engine.Drifted(out, "node group %s has %d nodes, want %d", name, aws.ToInt32(sc.DesiredSize), nodes), nil
			case CompareVersions(aws.ToString(ng.Version), s.Version) < 0:
				return engine.Drifted(out, "node group %s runs Kubernetes %s, want %s", name, aws.ToString(ng.Version), s.Version), nil
			case ng.Status != ekstypes.NodegroupStatusActive:
				return engine.Drifted(out, "node group %s is %s", name, ng.Status), nil
			}
			return engine.InSync(out), nil
		},
		Create: func(ctx context.Context, r *engine.Run) (NodegroupOut, error) {
			net, err := net.Get(r)
			if err != nil {
				return NodegroupOut{}, err
			}
			role, err := role.Get(r)
			if err != nil {
				return NodegroupOut{}, err
			}
			_, err = p.eks.CreateNodegroup(ctx, &eks.CreateNodegroupInput{
				ClusterName:        aws.String(s.Name),
				NodegroupName:      aws.String(name),
				NodeRole:           aws.String(role.ARN),
				Subnets:            net.SubnetIDs(),
				InstanceTypes:      []string{s.NodeSize},
				AmiType:            amiType(s.NodeSize),
				Version:            aws.String(s.Version),
				ScalingConfig:      &ekstypes.NodegroupScalingConfig{MinSize: aws.Int32(nodes), MaxSize: aws.Int32(maxNodes), DesiredSize: aws.Int32(nodes)},
				ClientRequestToken: aws.String(r.Token()),
				Tags:               awsx.Tags(ref, name),
			}, eventual)
			if err != nil && !awsx.HasCode(err, "ResourceInUseException") {
				return NodegroupOut{}, fmt.Errorf("create node group: %w", err)
			}
			return settle(ctx, r)
		},
		Update: func(ctx context.Context, r *engine.Run, _ NodegroupOut) (NodegroupOut, error) { return settle(ctx, r) },
		Delete: func(ctx context.Context, r *engine.Run, _ *NodegroupOut) error {
			return deleteEKS(ctx, r, ref, eksDelete{
				what: "node group " + name,
				describe: func(ctx context.Context) (map[string]string, bool, error) {
					got, err := p.eks.DescribeNodegroup(ctx, in)
					if err != nil {
						return nil, false, err
					}
					return got.Nodegroup.Tags, got.Nodegroup.Status == ekstypes.NodegroupStatusDeleting, nil
				},
				del: func(ctx context.Context) error {
					_, err := p.eks.DeleteNodegroup(ctx, &eks.DeleteNodegroupInput{ClusterName: aws.String(s.Name), NodegroupName: aws.String(name)})
					return err
				},
				foreign: func() error {
					return fmt.Errorf("node group %s was not made by kforge for this cluster: not deleting it", name)
				},
				wait: func(ctx context.Context) error {
					return eks.NewNodegroupDeletedWaiter(p.eks, func(o *eks.NodegroupDeletedWaiterOptions) {
						o.MinDelay, o.MaxDelay = 5*time.Second, 30*time.Second
					}).Wait(ctx, in, nodegroupWait)
				},
			})
		},
	})
}

// deleteLateNodegroup deletes the cluster's node group, if it exists,
// and waits until it is gone (nil if there is none).
func (p *Provider) deleteLateNodegroup(ctx context.Context, r *engine.Run, s spec.Spec) error {
	name := NodegroupName(s.Name)
	in := &eks.DescribeNodegroupInput{ClusterName: aws.String(s.Name), NodegroupName: aws.String(name)}
	got, err := p.eks.DescribeNodegroup(ctx, in)
	switch {
	case awsx.IsNotFound(err):
		return nil
	case err != nil:
		return fmt.Errorf("look up node group %s: %w", name, err)
	case !ownedBy(got.Nodegroup.Tags, s.Ref):
		return fmt.Errorf("node group %s was not made by kforge for this cluster: delete it, then run the command again", name)
	}
	if got.Nodegroup.Status != ekstypes.NodegroupStatusDeleting {
		if _, err := p.eks.DeleteNodegroup(ctx, &eks.DeleteNodegroupInput{ClusterName: aws.String(s.Name), NodegroupName: aws.String(name)}); err != nil && !awsx.IsNotFound(err) {
			return fmt.Errorf("delete node group %s: %w", name, err)
		}
	}
	r.Waiting("node group %s appeared after its step found none (a create that was on its way): waiting for it to be deleted", name)
	return eks.NewNodegroupDeletedWaiter(p.eks, func(o *eks.NodegroupDeletedWaiterOptions) {
		o.MinDelay, o.MaxDelay = 5*time.Second, 30*time.Second
	}).Wait(ctx, in, nodegroupWait)
}

// eksDelete is how to delete one EKS resource (a cluster, a node group,
// an add-on) for deleteEKS.
type eksDelete struct {
	// what names it ("node group demo-workers"); waitNote is added to the
	// progress while it is deleted.
	what, waitNote string
	// describe returns its tags and whether its deletion is under way.
	describe func(context.Context) (tags map[string]string, deleting bool, err error)
	del      func(context.Context) error
	// foreign is the outcome for one kforge did not make.
	foreign func() error
	// wait waits until it is gone.
	wait func(context.Context) error
}

// deleteEKS looks the resource up (engine.ErrAbsent if it is gone),
// leaves one that kforge did not make for this cluster to d.foreign, asks
// for its deletion unless it is under way, and waits until it is gone.
func deleteEKS(ctx context.Context, r *engine.Run, ref spec.Ref, d eksDelete) error {
	tags, deleting, err := d.describe(ctx)
	if awsx.IsNotFound(err) {
		return engine.ErrAbsent
	}
	if err != nil {
		return fmt.Errorf("look up %s: %w", d.what, err)
	}
	if !ownedBy(tags, ref) {
		return d.foreign()
	}
	if !deleting {
		if err := d.del(ctx); err != nil && !awsx.IsNotFound(err) {
			return fmt.Errorf("delete %s: %w", d.what, err)
		}
	}
	r.Waiting("waiting for %s to be deleted%s", d.what, d.waitNote)
	if err := d.wait(ctx); err != nil {
		return fmt.Errorf("wait for %s to be deleted: %w", d.what, err)
	}
	return nil
}

// waitNodegroup waits for the node group to be ACTIVE and returns it.
func (p *Provider) waitNodegroup(ctx context.Context, r *engine.Run, in *eks.DescribeNodegroupInput, why string) (*ekstypes.Nodegroup, error) {
	r.Waiting("waiting for node group %s to be ACTIVE %s", aws.ToString(in.NodegroupName), why)
	out, err := eks.NewNodegroupActiveWaiter(p.eks, func(o *eks.NodegroupActiveWaiterOptions) {
		o.MinDelay, o.MaxDelay = 5*time.Second, 30*time.Second
	}).WaitForOutput(ctx, in, nodegroupWait)
	if err != nil {
		return nil, fmt.Errorf("wait for node group %s to be ACTIVE: %w", aws.ToString(in.NodegroupName), err)
	}
	if out.Nodegroup == nil {
		return nil, fmt.Errorf("wait for node group %s to be ACTIVE: EKS described no node group", aws.ToString(in.NodegroupName))
	}
	return out.Nodegroup, nil
}

func healthIssues(ng *ekstypes.Nodegroup) string {
	if ng.Health == nil || len(ng.Health.Issues) == 0 {
		return "no details from EKS"
	}
	var s string
	for i, is := range ng.Health.Issues {
		if i > 0 {
			s += "; "
		}
		s += fmt.Sprintf("%s: %s", is.Code, aws.ToString(is.Message))
	}
	return s
}

func clusterTitle(s spec.Spec) string {
	if s.Version == "" { // a delete without state
		return "EKS cluster " + s.Name
	}
	return fmt.Sprintf("EKS cluster %s, Kubernetes %s (EKS takes 10-15 minutes)", s.Name, s.Version)
}

func nodegroupTitle(s spec.Spec) string {
	if s.NodeSize == "" { // a delete without state
		return "managed node group " + NodegroupName(s.Name)
	}
	return fmt.Sprintf("managed node group %s: %d x %s", NodegroupName(s.Name), s.Nodes, s.NodeSize)
}
