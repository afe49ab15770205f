package infra

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/kforge/kforge/internal/awsx"
	"github.com/kforge/kforge/internal/engine"
	"github.com/kforge/kforge/internal/iamrole"
	"github.com/kforge/kforge/internal/network"
	"github.com/kforge/kforge/internal/spec"
)

// TagSlot holds a VM's role and index ("cp/0"), so a re-run finds the VM
// its step launched.
const TagSlot = "kforge.io/slot"

// RootGiB are the root volume sizes in GiB, per role.
var RootGiB = map[string]int32{RoleEtcd: 20, RoleLB: 10, RoleCP: 40, RoleWP: 50}

// How long to wait for launches, starts and terminations.
const (
	runningWait   = 10 * time.Minute
	terminateWait = 15 * time.Minute
	// addressWait bounds how long a replacement waits for the address of
	// the VM it replaces to be released.
	addressWait = 5 * time.Minute
)

// VM is the output of a VM step.
type VM struct {
	ID        string `json:"id"`
	Role      string `json:"role"`
	Index     int    `json:"index"`
	Name      string `json:"name"`
	Zone      string `json:"zone"`
	SubnetID  string `json:"subnetId"`
	PrivateIP string `json:"privateIp"`
	PublicIP  string `json:"publicIp"`
	// PrivateDNS is the instance's private DNS name, kept for the nodes
	// of clusters with the cloud integration: it is their Kubernetes node
	// name, the name the AWS cloud controller manager looks nodes up by.
	PrivateDNS string `json:"privateDns,omitempty"`
}

// Slot is the VM's slot ("cp/0").
func (v VM) Slot() string { return SlotOf(v.Role, v.Index) }

// DecodeVM reads a VM step's journaled output.
func DecodeVM(raw []byte) (VM, error) {
	var v VM
	err := json.Unmarshal(raw, &v)
	return v, err
}

// addInventory looks up the cluster's instances (one DescribeInstances)
// at the start of every run, alongside the network, so that the VM steps
// find the answer ready. Its output is nothing: the answer lives in the
// run's session.
func addInventory(g *engine.Graph, c *Clients, s spec.Spec) engine.Ref[struct{}] {
	return engine.Add(g, engine.Resource[struct{}]{
		ID:    StepInventory,
		Title: "look up the cluster's VMs (one look-up for all of them)",
		Find: func(ctx context.Context, r *engine.Run, _ *struct{}) (engine.Observation[struct{}], error) {
			_, _, err := sessionOf(r, c, s.Ref).instances(ctx)
			return engine.InSync(struct{}{}), err
		},
	})
}

// vmOf describes an instance as a VM step's output.
func vmOf(s spec.Spec, in ec2types.Instance, role string, i int, name string) VM {
	vm := VM{ID: aws.ToString(in.InstanceId), Role: role, Index: i, Name: name, Zone: zoneOf(in), SubnetID: aws.ToString(in.SubnetId),
		PrivateIP: aws.ToString(in.PrivateIpAddress), PublicIP: aws.ToString(in.PublicIpAddress)}
	if s.CloudIntegration() && IsNode(role) {
		// Only then: a VM's output is what the steps after it hash, and a
		// new field on the VMs of older clusters would run them again.
		vm.PrivateDNS = aws.ToString(in.PrivateDnsName)
	}
	return vm
}

// IsNode reports whether the VMs of a role are Kubernetes nodes.
func IsNode(role string) bool { return role == RoleCP || role == RoleWP }

// NodeName is the Kubernetes node name of a VM: its private DNS name in a
// cluster with the cloud integration (what the cloud controller manager
// expects), else its kforge name.
func (v VM) NodeName() string {
	if v.PrivateDNS != "" {
		return v.PrivateDNS
	}
	return v.Name
}

// ProviderID is the VM's Kubernetes provider ID, aws:///<zone>/<instance>,
// as the AWS cloud provider writes it.
func (v VM) ProviderID() string { return "aws:///" + v.Zone + "/" + v.ID }

// addVM is VM i of a role, launched with its own RunInstances (its own
// user-data: hostname and host key; its own ClientToken). Found again on
// every run in the batched look-up: terminated outside kforge, it is
// launched again in the same slot, subnet and private address; stopped, it
// is started; in the wrong security group or without its instance profile,
// it is put back.
func addVM(g *engine.Graph, c *Clients, s spec.Spec, role string, i int, refs Refs, inv engine.Ref[struct{}]) engine.Ref[VM] {
	slot := SlotOf(role, i)
	name := VMName(s.Name, role, i)
	itype := Size(s, role)
	group := refs.Groups[role]
	// The VM is launched as soon as its subnet exists, while the subnet
	// is being routed: only reaching it (boot) needs the route.
	subnet := refs.Network.Subnets[i%len(refs.Network.Subnets)]
	needs := []engine.Dep{subnet, refs.Images, refs.KeyPair, refs.Secrets, inv, group}
	profile, hasProfile := refs.Roles[role]
	if hasProfile {
		needs = append(needs, profile)
	}
	// want checks what a VM must be, besides running.
	want := func(ctx context.Context, r *engine.Run, in ec2types.Instance) (string, error) {
		var drift []string
		sg, err := group.Get(r)
		if err != nil {
			return "", err
		}
		var have []string
		for _, g := range in.SecurityGroups {
			have = append(have, aws.ToString(g.GroupId))
		}
		if !slices.Contains(have, sg.ID) {
			drift = append(drift, fmt.Sprintf("it is not in security group %s (it is in %s)", sg.ID, strings.Join(have, ", ")))
		}
		if hasProfile {
			p, err := profile.Get(r)
			if err != nil {
				return "", err
			}
			// The profile's ID tells a profile deleted and made again
			// (same ARN) from the one the instance was given.
			assoc, err := sessionOf(r, c, s.Ref).profiles(ctx)
			if err != nil {
				return "", err
			}
			got, ok := assoc[aws.ToString(in.InstanceId)]
			if !ok || aws.ToString(got.Arn) != p.ProfileARN || (p.ProfileID != "" && aws.ToString(got.Id) != p.ProfileID) {
				drift = append(drift, "its instance profile is not "+p.ProfileARN)
			}
		}
		if in.State != nil && (in.State.Name == ec2types.InstanceStateNameStopped || in.State.Name == ec2types.InstanceStateNameStopping) {
			drift = append(drift, "it was stopped outside kforge")
		}
		if _, named := slotOf(in); !named {
			drift = append(drift, fmt.Sprintf("it was launched in batch %s and not yet named after its slot %s", awsx.EC2TagValue(in.Tags, TagBatch), slot))
		}
		return strings.Join(drift, "; "), nil
	}
	return engine.Add(g, engine.Resource[VM]{
		ID:    VMStepID(role, i),
		Needs: needs,
		// VMs of a role go round robin over the network's subnets, one
		// per availability zone (NetworkZones of them).
		Title: fmt.Sprintf("%s VM %s (%s) in availability zone %d of %d", RoleTitles[role], name, itype, i%NetworkZones+1, NetworkZones),
		Find: func(ctx context.Context, r *engine.Run, prev *VM) (engine.Observation[VM], error) {
			bySlot, byID, err := sessionOf(r, c, s.Ref).instances(ctx)
			if err != nil {
				return engine.Observation[VM]{}, err
			}
			in, ok := ec2types.Instance{}, false
			if prev != nil && prev.ID != "" {
				in, ok = byID[prev.ID]
				if !ok {
					if other, live := bySlot[slot]; live {
						// The state missed a relaunch (a crash right after
						// it): the slot's live instance is the VM.
						in, ok = other, true
					} else {
						return engine.Gone[VM]("%s (%s) was terminated outside kforge", name, prev.ID), nil
					}
				}
			} else {
				in, ok = bySlot[slot]
			}
			if !ok {
				return engine.Missing[VM](), nil
			}
			out := vmOf(s, in, role, i, name)
			drift, err := want(ctx, r, in)
			if err != nil || drift == "" {
				return engine.InSync(out), err
			}
			return engine.Drifted(out, "%s (%s): %s", name, out.ID, drift), nil
		},
		Create: func(ctx context.Context, r *engine.Run) (VM, error) {
			var prev VM
			r.PrevInto(&prev)
			sn, err := subnet.Get(r)
			if err != nil {
				return VM{}, err
			}
			subnetID, address := sn.ID, ""
			if role == RoleLB && prev.ID != "" && prev.PrivateIP != "" && prev.SubnetID == sn.ID {
				// A new load balancer keeps the old one's address: it is
				// the API endpoint every kubeconfig and certificate of the
				// cluster names. Other VMs get a new address, which the
				// bootstrap tells the others (etcd members, HAProxy's
				// backends, the API servers' etcd endpoints).
				subnetID, address = prev.SubnetID, prev.PrivateIP
			}
			sess := sessionOf(r, c, s.Ref)
			lctx := ctx
			if address != "" {
				r.Waiting("launching %s again at its address %s (released minutes after the old VM goes)", name, address)
				var cancel context.CancelFunc
				lctx, cancel = context.WithTimeout(ctx, addressWait)
				defer cancel()
			}
			if role == RoleWP && prev.ID == "" {
				// New workers of a subnet launch in batches; a batch
				// waits for its instances to run.
				in, batched, err := launchBatched(ctx, r, c, sess, s, role, i, subnetID, len(refs.Network.Subnets), refs)
				if err != nil {
					return VM{}, err
				}
				if batched {
					return vmOf(s, in, role, i, name), nil
				}
			}
			id, err := launch(lctx, r, c, sess, s, role, i, subnetID, address, refs, prev.ID)
			if err != nil {
				if address != "" && ctx.Err() == nil && lctx.Err() != nil {
					return VM{}, fmt.Errorf("launch %s at its address %s: still in use after %s (the API endpoint of the cluster is that address): %w", name, address, addressWait, err)
				}
				return VM{}, err
			}
			r.Waiting("waiting for instance %s to run", id)
			in, err := waitFor(ctx, sess, id, running, runningWait)
			if err != nil {
				return VM{}, err
			}
			return vmOf(s, in, role, i, name), nil
		},
		Update: func(ctx context.Context, r *engine.Run, found VM) (VM, error) {
			sess := sessionOf(r, c, s.Ref)
			_, byID, err := sess.instances(ctx)
			if err != nil {
				return VM{}, err
			}
			in := byID[found.ID]
			if _, named := slotOf(in); !named {
				if err := nameVM(ctx, c, found.ID, name, slot); err != nil {
					return VM{}, err
				}
			}
			sg, err := group.Get(r)
			if err != nil {
				return VM{}, err
			}
			var groups []string
			for _, g := range in.SecurityGroups {
				groups = append(groups, aws.ToString(g.GroupId))
			}
			if !slices.Contains(groups, sg.ID) {
				if _, err := c.EC2.ModifyInstanceAttribute(ctx, &ec2.ModifyInstanceAttributeInput{InstanceId: aws.String(found.ID), Groups: []string{sg.ID}}); err != nil {
					return VM{}, fmt.Errorf("put %s back in security group %s: %w", name, sg.ID, err)
				}
			}
			if hasProfile {
				if err := ensureProfile(ctx, c, found.ID, name, profile, r); err != nil {
					return VM{}, err
				}
			}
			if in.State != nil && (in.State.Name == ec2types.InstanceStateNameStopped || in.State.Name == ec2types.InstanceStateNameStopping) {
				if in.State.Name == ec2types.InstanceStateNameStopping {
					r.Waiting("waiting for %s (%s) to stop before starting it again", name, found.ID)
					if _, err := waitFor(ctx, sess, found.ID, stopped, runningWait); err != nil {
						return VM{}, err
					}
				}
				if _, err := c.EC2.StartInstances(ctx, &ec2.StartInstancesInput{InstanceIds: []string{found.ID}}); err != nil {
					return VM{}, fmt.Errorf("start %s (%s): %w", name, found.ID, err)
				}
			}
			r.Waiting("waiting for instance %s to run", found.ID)
			now, err := waitFor(ctx, sess, found.ID, running, runningWait)
			if err != nil {
				return VM{}, err
			}
			return vmOf(s, now, role, i, name), nil
		},
		Delete: func(ctx context.Context, r *engine.Run, prev *VM) error {
			var ids []string
			if prev != nil && prev.ID != "" {
				ids = append(ids, prev.ID)
			}
			// The role's instances: a batch's not yet named after their
			// slots are in theirs too.
			live, err := liveInstances(ctx, c.EC2, s.Ref, awsx.TagRole, role)
			if err != nil {
				return err
			}
			for _, in := range live {
				if at, _ := slotOf(in); at != slot {
					continue
				}
				if id := aws.ToString(in.InstanceId); !slices.Contains(ids, id) {
					ids = append(ids, id)
				}
			}
			if len(ids) == 0 {
				return engine.ErrAbsent
			}
			return terminate(ctx, r, c, sessionOf(r, c, s.Ref), ids)
		},
	})
}

// ensureProfile associates an instance with its role's instance profile,
// replacing an association with a profile that no longer exists (an
// instance profile deleted and made again outside kforge has a new ID).
func ensureProfile(ctx context.Context, c *Clients, id, name string, profile engine.Ref[iamrole.Out], r *engine.Run) error {
	p, err := profile.Get(r)
	if err != nil {
		return err
	}
	out, err := c.EC2.DescribeIamInstanceProfileAssociations(ctx, &ec2.DescribeIamInstanceProfileAssociationsInput{
		Filters: []ec2types.Filter{{Name: aws.String("instance-id"), Values: []string{id}}},
	})
	if err != nil {
		return fmt.Errorf("look up the instance profile of %s: %w", name, err)
	}
	spec := &ec2types.IamInstanceProfileSpecification{Arn: aws.String(p.ProfileARN)}
	for _, a := range out.IamInstanceProfileAssociations {
		if a.State != ec2types.IamInstanceProfileAssociationStateAssociated && a.State != ec2types.IamInstanceProfileAssociationStateAssociating {
			continue
		}
		if a.IamInstanceProfile != nil && aws.ToString(a.IamInstanceProfile.Arn) == p.ProfileARN &&
			(p.ProfileID == "" || aws.ToString(a.IamInstanceProfile.Id) == p.ProfileID) {
			return nil
		}
		_, err := c.EC2.ReplaceIamInstanceProfileAssociation(ctx, &ec2.ReplaceIamInstanceProfileAssociationInput{
			AssociationId: a.AssociationId, IamInstanceProfile: spec,
		}, func(o *ec2.Options) { o.Retryer = awsx.Eventual(o.Retryer, awsx.IsIAMPropagation) })
		if err != nil {
			return fmt.Errorf("give %s instance profile %s: %w", name, p.ProfileARN, err)
		}
		return nil
	}
	_, err = c.EC2.AssociateIamInstanceProfile(ctx, &ec2.AssociateIamInstanceProfileInput{InstanceId: aws.String(id), IamInstanceProfile: spec},
		func(o *ec2.Options) { o.Retryer = awsx.Eventual(o.Retryer, awsx.IsIAMPropagation) })
	if err != nil {
		return fmt.Errorf("give %s instance profile %s: %w", name, p.ProfileARN, err)
	}
	return nil
}

func zoneOf(in ec2types.Instance) string {
	if in.Placement != nil {
		return aws.ToString(in.Placement.AvailabilityZone)
	}
	return ""
}

// launch runs VM i of a role in a subnet (at address, when it replaces a
// VM). replaced is the ID of the VM it replaces: part of the ClientToken,
// so that AWS does not answer a relaunch with the instance it replaces.
func launch(ctx context.Context, r *engine.Run, c *Clients, sess *Session, s spec.Spec, role string, i int, subnetID, address string, refs Refs, replaced string) (string, error) {
	slot := SlotOf(role, i)
	name := VMName(s.Name, role, i)
	key, err := hostKey(r, slot)
	if err != nil {
		return "", err
	}
	ud, err := userData(name, key)
	if err != nil {
		return "", err
	}
	in, err := launchInput(r, s, refs, role, subnetID, 1, ud, r.Token(replaced),
		awsx.Owned(s.Ref, awsx.Tags(s.Ref, name, awsx.TagRole, role, TagSlot, slot)),
		awsx.Owned(s.Ref, awsx.Tags(s.Ref, name, awsx.TagRole, role)))
	if err != nil {
		return "", err
	}
	if address != "" {
		in.PrivateIpAddress = aws.String(address)
	}
	find := func(ctx context.Context) (string, bool, error) {
		live, err := liveInstances(ctx, c.EC2, s.Ref, TagSlot, slot)
		if err != nil || len(live) == 0 {
			return "", false, err
		}
		return aws.ToString(live[0].InstanceId), true, nil
	}
	return awsx.CreateOnce(ctx, find, func(ctx context.Context) (string, error) {
		if err := sess.pace.Wait(ctx, launchPriority(role, i)); err != nil {
			return "", err
		}
		// The watcher holds its polls while launches are in flight, so
		// that a wave of launches is seen running in one poll.
		sess.watch.launchStarted()
		out, err := c.EC2.RunInstances(ctx, in, func(o *ec2.Options) { o.Retryer = launchRetryer(sess, address) })
		sess.watch.launchEnded()
		if err != nil {
			return "", fmt.Errorf("launch %s: %w", name, err)
		}
		if len(out.Instances) == 0 {
			return "", fmt.Errorf("launch %s: RunInstances returned no instance", name)
		}
		return aws.ToString(out.Instances[0].InstanceId), nil
	})
}

// launchInput is the RunInstances of count VMs of a role in a subnet, with
// their user-data, ClientToken and tags.
func launchInput(r *engine.Run, s spec.Spec, refs Refs, role, subnetID string, count int32, userData, token string, tags, volumeTags map[string]string) (*ec2.RunInstancesInput, error) {
	itype := Size(s, role)
	imgs, err := refs.Images.Get(r)
	if err != nil {
		return nil, err
	}
	img, ok := imgs.ByType[itype]
	if !ok {
		return nil, fmt.Errorf("no image was looked up for %s", itype)
	}
	sg, err := refs.Groups[role].Get(r)
	if err != nil {
		return nil, err
	}
	in := &ec2.RunInstancesInput{
		ImageId:          aws.String(img.ID),
		InstanceType:     ec2types.InstanceType(itype),
		MinCount:         aws.Int32(count),
		MaxCount:         aws.Int32(count),
		KeyName:          aws.String(KeyPairName(s.Name)),
		SubnetId:         aws.String(subnetID),
		SecurityGroupIds: []string{sg.ID},
		UserData:         aws.String(userData),
		ClientToken:      aws.String(token),
		MetadataOptions: &ec2types.InstanceMetadataOptionsRequest{
			HttpTokens:              ec2types.HttpTokensStateRequired,
			HttpEndpoint:            ec2types.InstanceMetadataEndpointStateEnabled,
			HttpPutResponseHopLimit: aws.Int32(2),
		},
		BlockDeviceMappings: []ec2types.BlockDeviceMapping{{
			DeviceName: aws.String(img.RootDevice),
			Ebs: &ec2types.EbsBlockDevice{
				VolumeSize: aws.Int32(RootGiB[role]), VolumeType: ec2types.VolumeTypeGp3,
				Encrypted: aws.Bool(true), DeleteOnTermination: aws.Bool(true),
			},
		}},
		TagSpecifications: []ec2types.TagSpecification{
			{ResourceType: ec2types.ResourceTypeInstance, Tags: awsx.EC2Tags(tags)},
			{ResourceType: ec2types.ResourceTypeVolume, Tags: awsx.EC2Tags(volumeTags)},
		},
	}
	if profile, ok := refs.Roles[role]; ok {
		prof, err := profile.Get(r)
		if err != nil {
			return nil, err
		}
		in.IamInstanceProfile = &ec2types.IamInstanceProfileSpecification{Arn: aws.String(prof.ProfileARN)}
	}
	return in, nil
}

// launchRetryer is the retry policy of a RunInstances. The ClientToken
// makes a retry safe on AWS; SafeRetryer keeps the emulator, which ignores
// it, from duplicating too. A new instance profile may be invisible to EC2
// for seconds, and the address of a terminated VM (a launch at address) is
// released minutes after it goes. The launches of a run share one adaptive
// policy: a hundred VMs launch at once, and once EC2 throttles they go at
// its pace.
func launchRetryer(sess *Session, address string) aws.Retryer {
	retry := awsx.Eventual(awsx.SafeRetryer(sess.launches), awsx.IsIAMPropagation)
	if address != "" {
		retry = awsx.Eventual(retry, addressInUse)
	}
	return retry
}

// addressInUse is EC2's refusal of an address still held by a VM being
// terminated.
func addressInUse(err error) bool { return awsx.HasCode(err, "InvalidIPAddress.InUse") }

// waitFor waits, batched with every other wait of this run, until cond
// holds for the instance.
func waitFor(ctx context.Context, sess *Session, id string, cond func(ec2types.Instance) (bool, error), limit time.Duration) (ec2types.Instance, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	in, err := sess.watch.wait(ctx, id, cond)
	if err != nil {
		if ctx.Err() == context.DeadlineExceeded {
			return in, fmt.Errorf("instance %s did not reach the wanted state within %s", id, limit)
		}
		return in, err
	}
	return in, nil
}

// terminate terminates instances and waits until they are gone.
func terminate(ctx context.Context, r *engine.Run, c *Clients, sess *Session, ids []string) error {
	for start := 0; start < len(ids); start += 1000 {
		chunk := ids[start:min(start+1000, len(ids))]
		if _, err := c.EC2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: chunk}); err != nil && !awsx.IsNotFound(err) {
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
			_, errs[i] = waitFor(ctx, sess, id, terminated, terminateWait)
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
func vmsTeardownStep(c *Clients, s spec.Spec, needs []engine.Dep) *engine.Step {
	var ids []string
	for _, d := range needs {
		ids = append(ids, engine.DepID(d))
	}
	return &engine.Step{
		ID:     StepVMs,
		Needs:  ids,
		Title:  "every VM of the cluster",
		Ensure: func(context.Context, *engine.Run) (any, error) { return nil, nil },
		Delete: func(ctx context.Context, r *engine.Run) error {
			live, err := liveInstances(ctx, c.EC2, s.Ref)
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
			return terminate(ctx, r, c, sessionOf(r, c, s.Ref), ids)
		},
	}
}

var _ = network.StepID

// ConsoleOutput returns the latest console output of an instance (what
// the VM printed while it booted), decoded.
func ConsoleOutput(ctx context.Context, c *Clients, id string) (string, error) {
	out, err := c.EC2.GetConsoleOutput(ctx, &ec2.GetConsoleOutputInput{InstanceId: aws.String(id), Latest: aws.Bool(true)})
	if err != nil {
		return "", fmt.Errorf("ec2:GetConsoleOutput: %s", awsx.Message(err))
	}
	b, err := base64.StdEncoding.DecodeString(aws.ToString(out.Output))
	if err != nil {
		return aws.ToString(out.Output), nil
	}
	return string(b), nil
}
