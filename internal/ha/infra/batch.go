package infra

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/kforge/kforge/internal/awsx"
	"github.com/kforge/kforge/internal/engine"
	"github.com/kforge/kforge/internal/iamrole"
	"github.com/kforge/kforge/internal/spec"
)

// Batched launches. The workers of one subnet (same role and instance
// type) that a run launches for the first time go in batches: one
// RunInstances with MinCount = MaxCount = the batch's size, instead of one
// per VM. Each VM keeps its own step (its slot): the first of a batch's
// steps to be created launches the whole batch, the others take their
// instance from it.
//
// What a batch is follows from what exists and what the journal holds, so
// that a resume forms the same batches: the workers of the subnet that have
// no live instance and were never made (a slot whose VM was terminated
// outside kforge is launched alone, as a replacement), in slot order, cut
// every BatchMax. Its ClientToken derives from its slots' steps, and its
// instances carry the cluster's tags, the role, the batch's ID (TagBatch)
// and its slots (TagBatchSlots): the instance of launch index i is the VM
// of the i-th slot. Right after the launch each instance is named after its
// slot (Name, TagSlot: one CreateTags each). An instance of a batch that a
// crash left unnamed is still found in its slot (slotOf), and named by its
// step's repair (Update); a delete finds it by its cluster tags.
//
// The batch's one user-data carries every VM's hostname and host key, each
// in a part cloud-init keeps only on the instance of its launch index
// (batchUserData).

// Tags of a batch's instances.
const (
	// TagBatch is the ID of the batched launch an instance came from.
	TagBatch = "kforge.io/batch"
	// TagBatchSlots lists the slot indexes of a batch in launch-index
	// order ("0,3,6"): the instance of launch index i is the VM of the
	// role's i-th listed index.
	TagBatchSlots = "kforge.io/batch-slots"
)

// BatchMax caps the VMs of one batched launch.
const BatchMax = 50

// maxTagValue is the longest value an EC2 tag takes.
const maxTagValue = 256

// slotOf returns the slot of an instance: its TagSlot, else (named is
// false) the slot its batch's tags give its launch index.
func slotOf(in ec2types.Instance) (slot string, named bool) {
	if s := awsx.EC2TagValue(in.Tags, TagSlot); s != "" {
		return s, true
	}
	role := awsx.EC2TagValue(in.Tags, awsx.TagRole)
	list := awsx.EC2TagValue(in.Tags, TagBatchSlots)
	if role == "" || list == "" || awsx.EC2TagValue(in.Tags, TagBatch) == "" || in.AmiLaunchIndex == nil {
		return "", false
	}
	idx := strings.Split(list, ",")
	li := int(aws.ToInt32(in.AmiLaunchIndex))
	if li < 0 || li >= len(idx) {
		return "", false
	}
	n, err := strconv.Atoi(idx[li])
	if err != nil {
		return "", false
	}
	return SlotOf(role, n), false
}

// batch is one batched launch of a run.
type batch struct {
	role, subnetID string
	slots          []int // indexes, in launch-index order

	mu      sync.Mutex
	started bool
	done    chan struct{}
	insts   map[int]ec2types.Instance // running instances by slot index
	err     error
}

// batchKey identifies the VMs that may share a launch.
type batchKey struct{ role, itype, subnetID string }

// batchesOf forms, once per run, the batches of the VMs of a role in a
// subnet: the VMs whose index is zone modulo zones.
func (s *Session) batchesOf(ctx context.Context, r *engine.Run, sp spec.Spec, role, subnetID string, zone, zones int) (map[int]*batch, error) {
	key := batchKey{role, Size(sp, role), subnetID}
	s.batchMu.Lock()
	defer s.batchMu.Unlock()
	if b, ok := s.batches[key]; ok {
		return b, nil
	}
	bySlot, _, err := s.instances(ctx)
	if err != nil {
		return nil, err
	}
	var fresh []int
	for j := 0; j < Count(sp, role); j++ {
		if j%zones != zone {
			continue
		}
		if _, live := bySlot[SlotOf(role, j)]; live {
			continue
		}
		if raw, ok := r.PrevOf(VMStepID(role, j)); ok {
			var prev VM
			if json.Unmarshal(raw, &prev) == nil && prev.ID != "" {
				continue // a replacement: launched alone
			}
		}
		fresh = append(fresh, j)
	}
	out := map[int]*batch{}
	for len(fresh) > 0 {
		n, width := 0, 0
		for n < len(fresh) && n < BatchMax {
			w := len(strconv.Itoa(fresh[n])) + min(n, 1)
			if width+w > maxTagValue {
				break
			}
			width += w
			n++
		}
		b := &batch{role: role, subnetID: subnetID, slots: fresh[:n], done: make(chan struct{})}
		for _, j := range b.slots {
			out[j] = b
		}
		fresh = fresh[n:]
	}
	if s.batches == nil {
		s.batches = map[batchKey]map[int]*batch{}
	}
	s.batches[key] = out
	return out, nil
}

// launchBatched launches VM i of a role in its batch (the first of the
// batch's steps here launches the whole batch) and returns its instance
// once it runs.
// The role's VMs go round robin over zones subnets. ok is false when the
// VM is not in a batch of two or more (a replacement, or the only new VM
// of its subnet): it is launched alone. An error (forming the batches, or
// the batch's launch) fails the VM's step either way.
func launchBatched(ctx context.Context, r *engine.Run, c *Clients, sess *Session, s spec.Spec, role string, i int, subnetID string, zones int, refs Refs) (in ec2types.Instance, ok bool, err error) {
	if zones == 0 {
		return in, false, nil
	}
	batches, err := sess.batchesOf(ctx, r, s, role, subnetID, i%zones, zones)
	if err != nil {
		return in, false, err
	}
	b := batches[i]
	if b == nil || len(b.slots) < 2 {
		return in, false, nil
	}
	b.mu.Lock()
	lead := !b.started
	b.started = true
	b.mu.Unlock()
	if lead {
		b.insts, b.err = runBatch(ctx, r, c, sess, s, refs, b)
		close(b.done)
	} else {
		r.Waiting("%s is launched with %d other workers of its subnet", VMName(s.Name, role, i), len(b.slots)-1)
		select {
		case <-b.done:
		case <-ctx.Done():
			return in, true, ctx.Err()
		}
	}
	if b.err != nil {
		return in, true, b.err
	}
	return b.insts[i], true, nil
}

// batchID is the ID of a batch (TagBatch): its ClientToken's hash.
func batchID(token string) string { return strings.TrimPrefix(token, "kforge-")[:16] }

// runBatch launches a batch, names each instance after its slot, sees
// that each has its role's instance profile, and returns the instances by
// slot index once they run.
func runBatch(ctx context.Context, r *engine.Run, c *Clients, sess *Session, s spec.Spec, refs Refs, b *batch) (map[int]ec2types.Instance, error) {
	role := b.role
	steps := make([]string, len(b.slots))
	vms := make([]vmIdentity, len(b.slots))
	idx := make([]string, len(b.slots))
	for k, j := range b.slots {
		steps[k] = VMStepID(role, j)
		idx[k] = strconv.Itoa(j)
		key, err := hostKey(r, SlotOf(role, j))
		if err != nil {
			return nil, err
		}
		vms[k] = vmIdentity{Hostname: VMName(s.Name, role, j), Key: key}
	}
	what := fmt.Sprintf("workers %s", strings.Join(idx, ", "))
	ud, size, err := batchUserData(vms)
	if err != nil {
		return nil, err
	}
	if size > MaxUserData {
		return nil, fmt.Errorf("launch %s: their user-data takes %d bytes, more than EC2's %d", what, size, MaxUserData)
	}
	token := r.TokenFor(steps, "batch", b.subnetID, Size(s, role))
	id := batchID(token)
	name := fmt.Sprintf("%s-%s-batch-%s", s.Name, role, id[:8])
	// The launch tags name the batch; each VM's Name and slot come after.
	in, err := launchInput(r, s, refs, role, b.subnetID, int32(len(b.slots)), ud, token,
		awsx.Owned(s.Ref, awsx.Tags(s.Ref, name, awsx.TagRole, role, TagBatch, id, TagBatchSlots, strings.Join(idx, ","))),
		awsx.Owned(s.Ref, awsx.Tags(s.Ref, name, awsx.TagRole, role, TagBatch, id)))
	if err != nil {
		return nil, err
	}
	find := func(ctx context.Context) ([]ec2types.Instance, bool, error) {
		live, err := liveInstances(ctx, c.EC2, s.Ref, TagBatch, id)
		// A batch launches all its instances or none: seeing fewer is
		// not seeing it yet.
		return live, err == nil && len(live) == len(b.slots), err
	}
	launched, err := awsx.CreateOnce(ctx, find, func(ctx context.Context) ([]ec2types.Instance, error) {
		if err := sess.pace.Wait(ctx, prioWorkers); err != nil {
			return nil, err
		}
		sess.watch.launchStarted()
		out, err := c.EC2.RunInstances(ctx, in, func(o *ec2.Options) { o.Retryer = launchRetryer(sess, "") })
		sess.watch.launchEnded()
		if err != nil {
			return nil, fmt.Errorf("launch %s: %w", what, err)
		}
		return out.Instances, nil
	})
	if err != nil {
		return nil, err
	}
	ids := map[int]string{}
	for _, inst := range launched {
		li := int(aws.ToInt32(inst.AmiLaunchIndex))
		if inst.AmiLaunchIndex == nil || li < 0 || li >= len(b.slots) {
			return nil, fmt.Errorf("launch %s: instance %s has launch index %d, not one of the batch's 0 to %d", what, aws.ToString(inst.InstanceId), li, len(b.slots)-1)
		}
		ids[b.slots[li]] = aws.ToString(inst.InstanceId)
	}
	if len(ids) != len(b.slots) {
		return nil, fmt.Errorf("launch %s: RunInstances returned %d instances with %d launch indexes, want %d", what, len(launched), len(ids), len(b.slots))
	}
	// Name each VM after its slot, see that each has its role's instance
	// profile, and wait for each to run, all at once: none needs another.
	r.Waiting("waiting for instances of %s to run", what)
	var wg sync.WaitGroup
	var mu sync.Mutex
	insts := map[int]ec2types.Instance{}
	var errs []error
	fail := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}
	for _, j := range b.slots {
		wg.Go(func() {
			err := sess.tags.Wait(ctx, 0)
			if err == nil {
				err = nameVM(ctx, c, ids[j], VMName(s.Name, role, j), SlotOf(role, j))
			}
			if err != nil {
				fail(err)
			}
		})
		wg.Go(func() {
			in, err := waitFor(ctx, sess, ids[j], running, runningWait)
			if err != nil {
				fail(err)
				return
			}
			mu.Lock()
			insts[j] = in
			mu.Unlock()
		})
	}
	if profile, ok := refs.Roles[role]; ok {
		list := make([]string, len(b.slots))
		for k, j := range b.slots {
			list[k] = ids[j]
		}
		wg.Go(func() {
			if err := ensureProfiles(ctx, c, list, profile, r); err != nil {
				fail(fmt.Errorf("launch %s: %w", what, err))
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		return nil, errs[0]
	}
	return insts, nil
}

// nameVM tags an instance of a batch with its VM's Name and slot.
func nameVM(ctx context.Context, c *Clients, id, name, slot string) error {
	_, err := c.EC2.CreateTags(ctx, &ec2.CreateTagsInput{
		Resources: []string{id},
		Tags:      awsx.EC2Tags(map[string]string{awsx.TagName: name, TagSlot: slot}),
	})
	if err != nil {
		return fmt.Errorf("name instance %s %s (slot %s): %w", id, name, slot, err)
	}
	return nil
}

// ensureProfiles gives the instances of a batch their role's instance
// profile where they lack it, with one look-up for all of them: AWS gives
// it to every instance a RunInstances launches, the emulator only to the
// first.
func ensureProfiles(ctx context.Context, c *Clients, ids []string, profile engine.Ref[iamrole.Out], r *engine.Run) error {
	p, err := profile.Get(r)
	if err != nil {
		return err
	}
	assocs, err := awsx.Collect(ctx, ec2.NewDescribeIamInstanceProfileAssociationsPaginator(c.EC2, &ec2.DescribeIamInstanceProfileAssociationsInput{
		Filters: []ec2types.Filter{
			{Name: aws.String("instance-id"), Values: ids},
			{Name: aws.String("state"), Values: []string{"associating", "associated"}},
		},
	}), func(o *ec2.DescribeIamInstanceProfileAssociationsOutput) []ec2types.IamInstanceProfileAssociation {
		return o.IamInstanceProfileAssociations
	})
	if err != nil {
		return fmt.Errorf("look up the instance profiles of %s: %w", strings.Join(ids, ", "), err)
	}
	have := map[string]bool{}
	for _, a := range assocs {
		have[aws.ToString(a.InstanceId)] = true
	}
	var wg sync.WaitGroup
	errs := make([]error, len(ids))
	for k, id := range ids {
		if have[id] {
			continue
		}
		wg.Go(func() {
			_, err := c.EC2.AssociateIamInstanceProfile(ctx, &ec2.AssociateIamInstanceProfileInput{
				InstanceId: aws.String(id), IamInstanceProfile: &ec2types.IamInstanceProfileSpecification{Arn: aws.String(p.ProfileARN)},
			}, func(o *ec2.Options) { o.Retryer = awsx.Eventual(o.Retryer, awsx.IsIAMPropagation) })
			if err != nil && !awsx.HasCode(err, "IncorrectState") {
				// IncorrectState: an association exists, made by an attempt
				// whose answer was lost (the instance is new: it is ours).
				errs[k] = fmt.Errorf("give %s instance profile %s: %w", id, p.ProfileARN, err)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
