package infra

import (
	"context"
	"fmt"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/iam"

	"github.com/kforge/kforge/internal/awsx"
	"github.com/kforge/kforge/internal/engine"
	"github.com/kforge/kforge/internal/spec"
)

// Clients are the AWS clients of the infrastructure's steps.
type Clients struct {
	EC2 *ec2.Client
	IAM *iam.Client

	fallbackOnce sync.Once
	fallback     *Session
}

// Session is what one run of the infrastructure's steps shares: the
// batched look-ups (every VM of the cluster in one DescribeInstances, every
// security group with its rules in one DescribeSecurityGroups), the
// instance watcher that batches waits, and the retry policy every launch
// shares (EC2 allows 5 RunInstances at once, then 2 a second).
type Session struct {
	c        *Clients
	ref      spec.Ref
	watch    *watcher
	launches aws.Retryer
	// pace keeps the run's RunInstances calls within EC2's documented
	// request bucket for them, and its CreateTags calls within theirs
	// (pace.go).
	pace, tags *pacer

	instOnce sync.Once
	inst     map[string]ec2types.Instance // live instances by slot
	instAll  map[string]ec2types.Instance // live instances by ID
	instErr  error

	profOnce sync.Once
	prof     map[string]ec2types.IamInstanceProfile // by instance ID
	profErr  error

	sgOnce sync.Once
	sgs    []ec2types.SecurityGroup
	sgErr  error

	// batches are the batched launches of the run (batch.go).
	batchMu sync.Mutex
	batches map[batchKey]map[int]*batch
}

// NewSession returns the session of one run for a cluster.
func NewSession(c *Clients, ref spec.Ref) *Session {
	return &Session{c: c, ref: ref, watch: newWatcher(c.EC2), launches: awsx.NewAdaptiveRetryer(), pace: newPacer(launchRate, launchBurst, launchGather), tags: newPacer(tagRate, tagBurst, 0)}
}

// SessionHolder is what a provider's session (engine.Run.Context) must
// implement for the infrastructure's steps.
type SessionHolder interface {
	InfraSession() *Session
}

// sessionOf returns the run's session, or one kept in c (a run without a
// provider session, as in this package's tests).
func sessionOf(r *engine.Run, c *Clients, ref spec.Ref) *Session {
	if h, ok := r.Context().(SessionHolder); ok && h.InfraSession() != nil {
		return h.InfraSession()
	}
	c.fallbackOnce.Do(func() { c.fallback = NewSession(c, ref) })
	return c.fallback
}

// liveStates are the states of an instance that still exists.
var liveStates = []string{"pending", "running", "stopping", "stopped"}

// instances returns the cluster's live instances by slot and by ID, from
// one DescribeInstances per run.
func (s *Session) instances(ctx context.Context) (bySlot, byID map[string]ec2types.Instance, err error) {
	s.instOnce.Do(func() {
		s.inst, s.instAll = map[string]ec2types.Instance{}, map[string]ec2types.Instance{}
		all, err := liveInstances(ctx, s.c.EC2, s.ref)
		if err != nil {
			s.instErr = err
			return
		}
		for _, in := range all {
			s.instAll[aws.ToString(in.InstanceId)] = in
			// An instance of a batch not yet named after its slot is in
			// the slot its launch index gives it (slotOf).
			if slot, named := slotOf(in); slot != "" {
				// Two live instances in one slot: the journaled one wins
				// (found by ID), else the one named after the slot; the
				// other is reported by the VM's Find.
				if have, dup := s.inst[slot]; !dup || (named && awsx.EC2TagValue(have.Tags, TagSlot) == "") {
					s.inst[slot] = in
				}
			}
		}
	})
	return s.inst, s.instAll, s.instErr
}

// liveInstances returns the cluster's instances that are not terminated
// or being terminated, extra tag filters narrowing them.
func liveInstances(ctx context.Context, c *ec2.Client, ref spec.Ref, extra ...string) ([]ec2types.Instance, error) {
	filters := append(awsx.ClusterFilters(ref, extra...), ec2types.Filter{
		Name: aws.String("instance-state-name"), Values: liveStates,
	})
	out, err := awsx.Collect(ctx, ec2.NewDescribeInstancesPaginator(c, &ec2.DescribeInstancesInput{Filters: filters}), reservationInstances)
	if err != nil {
		return nil, fmt.Errorf("list the cluster's instances: %w", err)
	}
	return out, nil
}

// reservationInstances returns the instances of a DescribeInstances page,
// reservation after reservation.
func reservationInstances(o *ec2.DescribeInstancesOutput) []ec2types.Instance {
	var out []ec2types.Instance
	for _, r := range o.Reservations {
		out = append(out, r.Instances...)
	}
	return out
}

// profiles returns the instance profile each instance of the account is
// associated with, from one DescribeIamInstanceProfileAssociations per run.
// (The profile in DescribeInstances has its ID too on AWS, but the
// emulator puts the association's ID there: the associations say it the
// same way on both.)
func (s *Session) profiles(ctx context.Context) (map[string]ec2types.IamInstanceProfile, error) {
	s.profOnce.Do(func() {
		all, err := awsx.Collect(ctx, ec2.NewDescribeIamInstanceProfileAssociationsPaginator(s.c.EC2, &ec2.DescribeIamInstanceProfileAssociationsInput{
			Filters: []ec2types.Filter{{Name: aws.String("state"), Values: []string{"associating", "associated"}}},
		}), func(o *ec2.DescribeIamInstanceProfileAssociationsOutput) []ec2types.IamInstanceProfileAssociation {
			return o.IamInstanceProfileAssociations
		})
		if err != nil {
			s.profErr = fmt.Errorf("list instance profile associations: %w", err)
			return
		}
		s.prof = map[string]ec2types.IamInstanceProfile{}
		for _, a := range all {
			if a.IamInstanceProfile != nil {
				s.prof[aws.ToString(a.InstanceId)] = *a.IamInstanceProfile
			}
		}
	})
	return s.prof, s.profErr
}

// groups returns the cluster's security groups with their rules, from one
// DescribeSecurityGroups per run.
func (s *Session) groups(ctx context.Context) ([]ec2types.SecurityGroup, error) {
	s.sgOnce.Do(func() {
		// On an error, the groups of the pages read so far stay in s.sgs,
		// as they always have.
		sgs, err := awsx.Collect(ctx, ec2.NewDescribeSecurityGroupsPaginator(s.c.EC2, &ec2.DescribeSecurityGroupsInput{Filters: awsx.ClusterFilters(s.ref)}),
			func(o *ec2.DescribeSecurityGroupsOutput) []ec2types.SecurityGroup { return o.SecurityGroups })
		s.sgs = sgs
		if err != nil {
			s.sgErr = fmt.Errorf("list the cluster's security groups: %w", err)
		}
	})
	return s.sgs, s.sgErr
}
