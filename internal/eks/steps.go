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

func (p *Provider) clusterStep(s spec.Spec) *engine.Step {
	ref := s.Ref
	return &engine.Step{
		ID:    StepCluster,
		Needs: []string{network.StepID, StepCPRole, leftovers.StepID},
		Title: clusterTitle(s),
		Ensure: func(ctx context.Context, r *engine.Run) (any, error) {
			net, err := engine.Out[network.Network](r, network.StepID)
			if err != nil {
				return nil, err
			}
			role, err := engine.Out[iamrole.Out](r, StepCPRole)
			if err != nil {
				return nil, err
			}
			got, err := p.eks.DescribeCluster(ctx, &eks.DescribeClusterInput{Name: aws.String(s.Name)})
			switch {
			case awsx.IsNotFound(err):
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
					return nil, fmt.Errorf("create EKS cluster: %w", err)
				}
			case err != nil:
				return nil, fmt.Errorf("look up EKS cluster: %w", err)
			default:
				if !ownedBy(got.Cluster.Tags, ref) {
					return nil, fmt.Errorf("an EKS cluster named %s exists in %s but was not made by kforge for this cluster", s.Name, s.Region)
				}
				switch got.Cluster.Status {
				case ekstypes.ClusterStatusFailed:
					return nil, fmt.Errorf("EKS reports cluster %s as FAILED: delete it with `kforge delete %s` and create it again", s.Name, ref.Args())
				case ekstypes.ClusterStatusDeleting:
					return nil, fmt.Errorf("EKS cluster %s is being deleted: wait for it to be gone, then create again", s.Name)
				}
			}
			r.Waiting("waiting for EKS cluster %s to be ACTIVE (EKS takes 10-15 minutes)", s.Name)
			out, err := eks.NewClusterActiveWaiter(p.eks, func(o *eks.ClusterActiveWaiterOptions) {
				o.MinDelay, o.MaxDelay = 5*time.Second, 30*time.Second
			}).WaitForOutput(ctx, &eks.DescribeClusterInput{Name: aws.String(s.Name)}, clusterWait)
			if err != nil {
				return nil, fmt.Errorf("wait for EKS cluster %s to be ACTIVE: %w", s.Name, err)
			}
			c := out.Cluster
			res := ClusterOut{Name: s.Name, ARN: aws.ToString(c.Arn), Endpoint: aws.ToString(c.Endpoint),
				Version: aws.ToString(c.Version), PlatformVersion: aws.ToString(c.PlatformVersion)}
			if c.CertificateAuthority != nil {
				res.CAData = aws.ToString(c.CertificateAuthority.Data)
			}
			return res, nil
		},
		Delete: func(ctx context.Context, r *engine.Run) error {
			got, err := p.eks.DescribeCluster(ctx, &eks.DescribeClusterInput{Name: aws.String(s.Name)})
			if awsx.IsNotFound(err) {
				return engine.ErrAbsent
			}
			if err != nil {
				return fmt.Errorf("look up EKS cluster: %w", err)
			}
			if !ownedBy(got.Cluster.Tags, ref) {
				return fmt.Errorf("the EKS cluster named %s in %s was not made by kforge for this cluster: not deleting it", s.Name, s.Region)
			}
			if got.Cluster.Status != ekstypes.ClusterStatusDeleting {
				if _, err := p.eks.DeleteCluster(ctx, &eks.DeleteClusterInput{Name: aws.String(s.Name)}); err != nil && !awsx.IsNotFound(err) {
					return fmt.Errorf("delete EKS cluster: %w", err)
				}
			}
			r.Waiting("waiting for EKS cluster %s to be deleted (EKS takes several minutes)", s.Name)
			if err := eks.NewClusterDeletedWaiter(p.eks, func(o *eks.ClusterDeletedWaiterOptions) {
				o.MinDelay, o.MaxDelay = 5*time.Second, 30*time.Second
			}).Wait(ctx, &eks.DescribeClusterInput{Name: aws.String(s.Name)}, clusterWait); err != nil {
				return fmt.Errorf("wait for EKS cluster %s to be deleted: %w", s.Name, err)
			}
			return nil
		},
	}
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

func (p *Provider) nodegroupStep(s spec.Spec) *engine.Step {
	ref := s.Ref
	name := NodegroupName(s.Name)
	nodes := int32(s.Nodes)
	return &engine.Step{
		ID:     StepNodegroup,
		Needs:  []string{StepCluster, StepWPRole, network.StepID},
		Title:  nodegroupTitle(s),
		Inputs: struct{ Nodes int }{s.Nodes},
		Ensure: func(ctx context.Context, r *engine.Run) (any, error) {
			net, err := engine.Out[network.Network](r, network.StepID)
			if err != nil {
				return nil, err
			}
			role, err := engine.Out[iamrole.Out](r, StepWPRole)
			if err != nil {
				return nil, err
			}
			in := &eks.DescribeNodegroupInput{ClusterName: aws.String(s.Name), NodegroupName: aws.String(name)}
			got, err := p.eks.DescribeNodegroup(ctx, in)
			switch {
			case awsx.IsNotFound(err):
				_, err = p.eks.CreateNodegroup(ctx, &eks.CreateNodegroupInput{
					ClusterName:        aws.String(s.Name),
					NodegroupName:      aws.String(name),
					NodeRole:           aws.String(role.ARN),
					Subnets:            net.SubnetIDs(),
					InstanceTypes:      []string{s.NodeSize},
					AmiType:            amiType(s.NodeSize),
					ScalingConfig:      &ekstypes.NodegroupScalingConfig{MinSize: aws.Int32(nodes), MaxSize: aws.Int32(nodes), DesiredSize: aws.Int32(nodes)},
					ClientRequestToken: aws.String(r.Token()),
					Tags:               awsx.Tags(ref, name),
				}, eventual)
				if err != nil && !awsx.HasCode(err, "ResourceInUseException") {
					return nil, fmt.Errorf("create node group: %w", err)
				}
			case err != nil:
				return nil, fmt.Errorf("look up node group: %w", err)
			default:
				if !ownedBy(got.Nodegroup.Tags, ref) {
					return nil, fmt.Errorf("node group %s exists but was not made by kforge for this cluster", name)
				}
				if got.Nodegroup.Status == ekstypes.NodegroupStatusCreateFailed || got.Nodegroup.Status == ekstypes.NodegroupStatusDegraded {
					return nil, fmt.Errorf("EKS reports node group %s as %s: %s", name, got.Nodegroup.Status, healthIssues(got.Nodegroup))
				}
				if sc := got.Nodegroup.ScalingConfig; sc != nil && aws.ToInt32(sc.DesiredSize) != nodes {
					// Wait for a running update or creation to settle first:
					// EKS refuses an update while one is in progress.
					if _, err := p.waitNodegroup(ctx, r, in, "before resizing it"); err != nil {
						return nil, err
					}
					want := &ekstypes.NodegroupScalingConfig{DesiredSize: aws.Int32(nodes),
						MinSize: aws.Int32(min(aws.ToInt32(sc.MinSize), nodes)), MaxSize: aws.Int32(max(aws.ToInt32(sc.MaxSize), nodes))}
					if _, err := p.eks.UpdateNodegroupConfig(ctx, &eks.UpdateNodegroupConfigInput{
						ClusterName: aws.String(s.Name), NodegroupName: aws.String(name), ScalingConfig: want,
						ClientRequestToken: aws.String(r.Token(fmt.Sprint(nodes))),
					}); err != nil {
						return nil, fmt.Errorf("resize node group to %d nodes: %w", nodes, err)
					}
				}
			}
			// The waiter's last answer is the node group as it is now.
			ng, err := p.waitNodegroup(ctx, r, in, "")
			if err != nil {
				return nil, err
			}
			if sc := ng.ScalingConfig; sc != nil && aws.ToInt32(sc.DesiredSize) != nodes {
				return nil, fmt.Errorf("node group %s has %d desired nodes after the update, not %d", name, aws.ToInt32(sc.DesiredSize), nodes)
			}
			return NodegroupOut{Name: name, ARN: aws.ToString(ng.NodegroupArn), Desired: nodes}, nil
		},
		Delete: func(ctx context.Context, r *engine.Run) error {
			in := &eks.DescribeNodegroupInput{ClusterName: aws.String(s.Name), NodegroupName: aws.String(name)}
			got, err := p.eks.DescribeNodegroup(ctx, in)
			if awsx.IsNotFound(err) {
				return engine.ErrAbsent
			}
			if err != nil {
				return fmt.Errorf("look up node group: %w", err)
			}
			if !ownedBy(got.Nodegroup.Tags, ref) {
				return fmt.Errorf("node group %s was not made by kforge for this cluster: not deleting it", name)
			}
			if got.Nodegroup.Status != ekstypes.NodegroupStatusDeleting {
				if _, err := p.eks.DeleteNodegroup(ctx, &eks.DeleteNodegroupInput{ClusterName: aws.String(s.Name), NodegroupName: aws.String(name)}); err != nil && !awsx.IsNotFound(err) {
					return fmt.Errorf("delete node group: %w", err)
				}
			}
			r.Waiting("waiting for node group %s to be deleted", name)
			if err := eks.NewNodegroupDeletedWaiter(p.eks, func(o *eks.NodegroupDeletedWaiterOptions) {
				o.MinDelay, o.MaxDelay = 5*time.Second, 30*time.Second
			}).Wait(ctx, in, nodegroupWait); err != nil {
				return fmt.Errorf("wait for node group %s to be deleted: %w", name, err)
			}
			return nil
		},
	}
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
	if s.Nodes == 0 { // a delete without state
		return "managed node group " + NodegroupName(s.Name)
	}
	return fmt.Sprintf("managed node group %s: %d x %s", NodegroupName(s.Name), s.Nodes, s.NodeSize)
}
