package ha

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/kforge/kforge/internal/awsx"
	"github.com/kforge/kforge/internal/engine"
	"github.com/kforge/kforge/internal/iamrole"
	"github.com/kforge/kforge/internal/leftovers"
	"github.com/kforge/kforge/internal/network"
	"github.com/kforge/kforge/internal/spec"
)

// TagSlot holds a VM's role and index ("cp/0"), so a re-run finds the VM
// its step launched.
const TagSlot = "kforge.io/slot"

// Root volume sizes in GiB, per role.
var rootGiB = map[string]int32{RoleEtcd: 20, RoleLB: 10, RoleCP: 40, RoleWP: 50}

// How long to wait for launches and terminations.
const (
	runningWait   = 10 * time.Minute
	terminateWait = 15 * time.Minute
)

// VMOut is the output of a VM step.
type VMOut struct {
	ID        string `json:"id"`
	Role      string `json:"role"`
	Index     int    `json:"index"`
	Name      string `json:"name"`
	Zone      string `json:"zone"`
	SubnetID  string `json:"subnetId"`
	PrivateIP string `json:"privateIp"`
	PublicIP  string `json:"publicIp"`
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// inventory is the cluster's live instances by slot, read once per run
// (one DescribeInstances for all VMs), so a resumed create adopts what an
// interrupted run launched without a look-up per VM.
type inventory struct {
	once  sync.Once
	slots map[string]ec2types.Instance
	err   error
}

func (p *Provider) inventory(ctx context.Context, ref spec.Ref) (map[string]ec2types.Instance, error) {
	p.invMu.Lock()
	inv := p.inv[ref]
	if inv == nil {
		inv = &inventory{}
		p.inv[ref] = inv
	}
	p.invMu.Unlock()
	inv.once.Do(func() {
		inv.slots = map[string]ec2types.Instance{}
		all, err := p.liveInstances(ctx, ref)
		if err != nil {
			inv.err = err
			return
		}
		for _, in := range all {
			inv.slots[awsx.EC2TagValue(in.Tags, TagSlot)] = in
		}
	})
	return inv.slots, inv.err
}

// liveInstances returns the cluster's instances that are not terminated
// or being terminated, extra filters narrowing them.
func (p *Provider) liveInstances(ctx context.Context, ref spec.Ref, extra ...string) ([]ec2types.Instance, error) {
	filters := append(awsx.ClusterFilters(ref, extra...), ec2types.Filter{
		Name: aws.String("instance-state-name"), Values: []string{"pending", "running", "stopping", "stopped"},
	})
	var out []ec2types.Instance
	pages := ec2.NewDescribeInstancesPaginator(p.ec2, &ec2.DescribeInstancesInput{Filters: filters})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list the cluster's instances: %w", err)
		}
		for _, r := range page.Reservations {
			out = append(out, r.Instances...)
		}
	}
	return out, nil
}

func slotOf(role string, i int) string { return role + "/" + strconv.Itoa(i) }

// inventoryStep reads the cluster's live instances (one DescribeInstances)
// at the start of a create, alongside the network, so that the VM steps
// find it ready instead of each launch waiting for it. Its outputs are
// nothing: the inventory lives in the run (on a resume, the first VM step
// reads it).
func (p *Provider) inventoryStep(s spec.Spec) *engine.Step {
	return &engine.Step{
		ID:    StepInventory,
		Title: "look up the VMs the cluster already has (a resumed create adopts them)",
		Ensure: func(ctx context.Context, r *engine.Run) (any, error) {
			_, err := p.inventory(ctx, s.Ref)
			return nil, err
		},
	}
}

// vmStep launches VM i of a role with its own RunInstances: its own
// user-data (hostname, host key) and a ClientToken derived from the
// cluster, the role and the index.
func (p *Provider) vmStep(s spec.Spec, role string, i int) *engine.Step {
	slot := slotOf(role, i)
	name := vmName(s.Name, role, i)
	itype := size(s, role)
	needs := []string{network.StepID, leftovers.StepID, StepImages, StepKeyPair, StepSecrets, StepInventory, SGStepID(role)}
	profileStep := ""
	switch role {
	case RoleCP:
		profileStep = StepCPRole
	case RoleWP:
		profileStep = StepWPRole
	}
	if profileStep != "" {
		needs = append(needs, profileStep)
	}
	return &engine.Step{
		ID:    VMStepID(role, i),
		Needs: needs,
		Title: fmt.Sprintf("%s VM %s (%s)", roleTitles[role], name, itype),
		Ensure: func(ctx context.Context, r *engine.Run) (any, error) {
			net, err := engine.Out[network.Network](r, network.StepID)
			if err != nil {
				return nil, err
			}
			if len(net.Subnets) == 0 {
				return nil, fmt.Errorf("the network has no subnet")
			}
			subnet := net.Subnets[i%len(net.Subnets)]
			inv, err := p.inventory(ctx, s.Ref)
			if err != nil {
				return nil, err
			}
			id := ""
			if in, ok := inv[slot]; ok {
				id = aws.ToString(in.InstanceId)
			} else {
				if id, err = p.launch(ctx, r, s, role, i, subnet.ID, profileStep); err != nil {
					return nil, err
				}
			}
			r.Waiting("waiting for instance %s to run", id)
			in, err := p.waitFor(ctx, id, running, runningWait)
			if err != nil {
				return nil, err
			}
			return VMOut{ID: id, Role: role, Index: i, Name: name, Zone: zoneOf(in), SubnetID: aws.ToString(in.SubnetId),
				PrivateIP: aws.ToString(in.PrivateIpAddress), PublicIP: aws.ToString(in.PublicIpAddress)}, nil
		},
		Delete: func(ctx context.Context, r *engine.Run) error {
			var prev VMOut
			var ids []string
			if r.PrevInto(&prev) && prev.ID != "" {
				ids = append(ids, prev.ID)
			}
			live, err := p.liveInstances(ctx, s.Ref, TagSlot, slot)
			if err != nil {
				return err
			}
			for _, in := range live {
				if id := aws.ToString(in.InstanceId); id != prev.ID {
					ids = append(ids, id)
				}
			}
			if len(ids) == 0 {
				return engine.ErrAbsent
			}
			return p.terminate(ctx, r, ids)
		},
	}
}

func zoneOf(in ec2types.Instance) string {
	if in.Placement != nil {
		return aws.ToString(in.Placement.AvailabilityZone)
	}
	return ""
}

func (p *Provider) launch(ctx context.Context, r *engine.Run, s spec.Spec, role string, i int, subnetID, profileStep string) (string, error) {
	slot := slotOf(role, i)
	name := vmName(s.Name, role, i)
	itype := size(s, role)
	imgs, err := engine.Out[imagesOut](r, StepImages)
	if err != nil {
		return "", err
	}
	img, ok := imgs.ByType[itype]
	if !ok {
		return "", fmt.Errorf("no image was looked up for %s", itype)
	}
	sg, err := engine.Out[sgOut](r, SGStepID(role))
	if err != nil {
		return "", err
	}
	key, err := hostKey(r, slot)
	if err != nil {
		return "", err
	}
	ud, err := userData(name, key)
	if err != nil {
		return "", err
	}
	tags := awsx.Owned(s.Ref, awsx.Tags(s.Ref, name, awsx.TagRole, role, TagSlot, slot))
	in := &ec2.RunInstancesInput{
		ImageId:          aws.String(img.ID),
		InstanceType:     ec2types.InstanceType(itype),
		MinCount:         aws.Int32(1),
		MaxCount:         aws.Int32(1),
		KeyName:          aws.String(keyPairName(s.Name)),
		SubnetId:         aws.String(subnetID),
		SecurityGroupIds: []string{sg.ID},
		UserData:         aws.String(ud),
		ClientToken:      aws.String(r.Token()),
		MetadataOptions: &ec2types.InstanceMetadataOptionsRequest{
			HttpTokens:              ec2types.HttpTokensStateRequired,
			HttpEndpoint:            ec2types.InstanceMetadataEndpointStateEnabled,
			HttpPutResponseHopLimit: aws.Int32(2),
		},
		BlockDeviceMappings: []ec2types.BlockDeviceMapping{{
			DeviceName: aws.String(img.RootDevice),
			Ebs: &ec2types.EbsBlockDevice{
				VolumeSize: aws.Int32(rootGiB[role]), VolumeType: ec2types.VolumeTypeGp3,
				Encrypted: aws.Bool(true), DeleteOnTermination: aws.Bool(true),
			},
		}},
		TagSpecifications: []ec2types.TagSpecification{
			{ResourceType: ec2types.ResourceTypeInstance, Tags: awsx.EC2Tags(tags)},
			{ResourceType: ec2types.ResourceTypeVolume, Tags: awsx.EC2Tags(awsx.Owned(s.Ref, awsx.Tags(s.Ref, name, awsx.TagRole, role)))},
		},
	}
	if profileStep != "" {
		prof, err := engine.Out[iamrole.Out](r, profileStep)
		if err != nil {
			return "", err
		}
		in.IamInstanceProfile = &ec2types.IamInstanceProfileSpecification{Arn: aws.String(prof.ProfileARN)}
	}
	find := func(ctx context.Context) (string, bool, error) {
		live, err := p.liveInstances(ctx, s.Ref, TagSlot, slot)
		if err != nil || len(live) == 0 {
			return "", false, err
		}
		return aws.ToString(live[0].InstanceId), true, nil
	}
	// The watcher holds its polls while launches are in flight, so that a
	// wave of launches is seen running in one poll.
	p.watch.launchStarted()
	defer p.watch.launchEnded()
	return awsx.CreateOnce(ctx, find, func(ctx context.Context) (string, error) {
		out, err := p.ec2.RunInstances(ctx, in, func(o *ec2.Options) {
			// The ClientToken makes a retry safe on AWS; SafeRetryer keeps
			// the emulator, which ignores it, from duplicating too. A new
			// instance profile may be invisible to EC2 for seconds. The
			// launches of a run share one adaptive policy: a hundred VMs
			// launch at once, and once EC2 throttles they go at its pace.
			o.Retryer = awsx.Eventual(awsx.SafeRetryer(p.launches), awsx.IsIAMPropagation)
		})
		if err != nil {
			return "", fmt.Errorf("launch %s: %w", name, err)
		}
		if len(out.Instances) == 0 {
			return "", fmt.Errorf("launch %s: RunInstances returned no instance", name)
		}
		return aws.ToString(out.Instances[0].InstanceId), nil
	})
}

// waitFor waits, batched with every other wait of this run, until cond
// holds for the instance.
func (p *Provider) waitFor(ctx context.Context, id string, cond func(ec2types.Instance) (bool, error), limit time.Duration) (ec2types.Instance, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	in, err := p.watch.wait(ctx, id, cond)
	if err != nil {
		if ctx.Err() == context.DeadlineExceeded {
			return in, fmt.Errorf("instance %s did not reach the wanted state within %s", id, limit)
		}
		return in, err
	}
	return in, nil
}

// terminate terminates instances and waits until they are gone.
func (p *Provider) terminate(ctx context.Context, r *engine.Run, ids []string) error {
	for start := 0; start < len(ids); start += 1000 {
		chunk := ids[start:min(start+1000, len(ids))]
		if _, err := p.ec2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: chunk}); err != nil && !awsx.IsNotFound(err) {
			return fmt.Errorf("terminate %s: %w", strings.Join(chunk, ", "), err)
		}
	}
	r.Waiting("waiting for %d instance(s) to terminate", len(ids))
	var wg sync.WaitGroup
	errs := make([]error, len(ids))
	for i, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = p.waitFor(ctx, id, terminated, terminateWait)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// vmsTeardownStep terminates every VM of the cluster, found by its tags,
// in one call, and waits for all of them.
func (p *Provider) vmsTeardownStep(s spec.Spec, needs []string) *engine.Step {
	return &engine.Step{
		ID:     StepVMs,
		Needs:  needs,
		Title:  "every VM of the cluster",
		Ensure: func(context.Context, *engine.Run) (any, error) { return nil, nil },
		Delete: func(ctx context.Context, r *engine.Run) error {
			live, err := p.liveInstances(ctx, s.Ref)
			if err != nil {
				return err
			}
			if len(live) == 0 {
				return engine.ErrAbsent
			}
			ids := make([]string, len(live))
			for i, in := range live {
				ids[i] = aws.ToString(in.InstanceId)
			}
			return p.terminate(ctx, r, ids)
		},
	}
}
