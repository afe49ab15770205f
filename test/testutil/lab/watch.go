//go:build lab && linux

package lab

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"golang.org/x/crypto/ssh"
)

// awsTimeout bounds one round of questions to the emulator.
const awsTimeout = 20 * time.Second

// instance is what the watcher reads of an EC2 instance.
type instance struct {
	id, vpcID, state    string
	privateIP, publicIP string
	privateDNS, keyName string
	name, role          string
	tags                map[string]string
	// launchIndex is the instance's EC2 launch index (ami-launch-index),
	// by which cloud-init picks its part of a batch's user-data.
	launchIndex int
}

// watch asks the emulator every PollInterval until Close, and makes the
// hosts follow the instances.
func (l *Lab) watch() {
	defer close(l.watchDone)
	t := time.NewTicker(l.opts.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-l.ctx.Done():
			return
		case <-t.C:
		}
		err := l.sync(l.ctx)
		if l.ctx.Err() != nil {
			return
		}
		msg := ""
		if err != nil {
			msg = err.Error()
		}
		l.mu.Lock()
		changed := msg != l.lastErr
		l.lastErr = msg
		l.mu.Unlock()
		if changed && err != nil {
			l.logf("lab: watching the emulator: %v", err)
		}
	}
}

// sync reads every instance (one paginated DescribeInstances) and the key
// pairs (when authorising them), and starts what each host needs: a
// running instance without a host gets one, a stopped instance's host is
// powered off, a terminated instance's host is removed.
func (l *Lab) sync(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, awsTimeout)
	defer cancel()
	insts, err := l.describeInstances(ctx)
	if err != nil {
		return err
	}
	if l.opts.AuthorizeKeyPairs {
		if err := l.authorizeAllKeyPairs(ctx); err != nil {
			return err
		}
	}
	l.mu.Lock()
	adopt := l.vpc == nil
	l.mu.Unlock()
	if adopt {
		for _, in := range insts {
			if in.state == string(ec2types.InstanceStateNameRunning) && in.vpcID != "" {
				if err := l.adoptVPC(ctx, in.vpcID); err != nil {
					return err
				}
				break
			}
		}
	}
	seen := map[string]bool{}
	for _, in := range insts {
		seen[in.id] = true
		l.reconcile(in)
	}
	// An instance no longer listed is gone.
	l.mu.Lock()
	var gone []string
	for id := range l.hosts {
		if !seen[id] {
			gone = append(gone, id)
		}
	}
	l.mu.Unlock()
	for _, id := range gone {
		l.reconcile(instance{id: id, state: string(ec2types.InstanceStateNameTerminated)})
	}
	return nil
}

// reconcile starts the operation a host needs to match its instance, if
// no other is in flight (the next round looks again).
func (l *Lab) reconcile(in instance) {
	l.mu.Lock()
	defer l.mu.Unlock()
	h := l.hosts[in.id]
	if h != nil && h.busy {
		return
	}
	switch ec2types.InstanceStateName(in.state) {
	case ec2types.InstanceStateNameRunning:
		if h == nil {
			if l.vpc == nil || in.vpcID != l.vpc.id {
				if !l.ignoredVPC[in.id] {
					l.ignoredVPC[in.id] = true
					l.logf("lab: instance %s is in VPC %s, not the lab's: ignored", in.id, in.vpcID)
				}
				return
			}
			if in.privateIP == "" {
				return
			}
			l.nextIndex++
			name := fmt.Sprintf("%s%s-%d", NamePrefix, l.id, l.nextIndex)
			h = &host{l: l, index: l.nextIndex, name: name, dir: filepath.Join(l.dir, "hosts", name)}
			h.info = Host{
				Name: name, InstanceID: in.id, EC2Name: in.name, Role: in.role,
				PrivateIP: in.privateIP, PublicIP: in.publicIP, KeyName: in.keyName,
				Tags: in.tags, State: HostCreating,
			}
			l.hosts[in.id] = h
			l.runOp(h, func(ctx context.Context) error { return h.create(ctx, in) })
			return
		}
		if h.info.State == HostStopped && !h.held {
			old, vpc := h.snapshot(), l.vpc
			l.runOp(h, func(ctx context.Context) error {
				if err := h.readdress(ctx, old, in, vpc); err != nil {
					h.setState(HostFailed, err)
					return err
				}
				return h.start()
			})
		}
	case ec2types.InstanceStateNameStopping, ec2types.InstanceStateNameStopped:
		if h != nil && h.info.State == HostRunning {
			l.runOp(h, h.stop)
		}
	case ec2types.InstanceStateNameShuttingDown, ec2types.InstanceStateNameTerminated:
		if h != nil && h.info.State != HostRemoved {
			l.runOp(h, h.remove)
		}
	}
}

// runOp runs op on h in the background, one at a time per host; l.mu
// must be held.
func (l *Lab) runOp(h *host, op func(context.Context) error) {
	h.busy = true
	l.ops.Add(1)
	go func() {
		defer l.ops.Done()
		h.mu.Lock()
		_ = op(l.ctx) // ops record their own errors in the host
		h.mu.Unlock()
		l.mu.Lock()
		h.busy = false
		l.mu.Unlock()
	}()
}

// describeInstances lists every instance, all pages.
func (l *Lab) describeInstances(ctx context.Context) ([]instance, error) {
	var out []instance
	p := ec2.NewDescribeInstancesPaginator(l.ec2, &ec2.DescribeInstancesInput{MaxResults: aws.Int32(1000)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("describe instances: %w", err)
		}
		for _, r := range page.Reservations {
			for _, in := range r.Instances {
				i := instance{
					id: aws.ToString(in.InstanceId), vpcID: aws.ToString(in.VpcId),
					privateIP: aws.ToString(in.PrivateIpAddress), publicIP: aws.ToString(in.PublicIpAddress),
					privateDNS: aws.ToString(in.PrivateDnsName), keyName: aws.ToString(in.KeyName),
					tags: map[string]string{}, launchIndex: int(aws.ToInt32(in.AmiLaunchIndex)),
				}
				if in.State != nil {
					i.state = string(in.State.Name)
				}
				for _, t := range in.Tags {
					i.tags[aws.ToString(t.Key)] = aws.ToString(t.Value)
				}
				i.name, i.role = i.tags["Name"], i.tags["kforge.io/role"]
				out = append(out, i)
			}
		}
	}
	return out, nil
}

// adoptVPC makes the bridge the VPC's network: its base+1 (AWS's router)
// and base+2 (AWS's resolver, where nothing answers: a lookup is refused
// at once instead of timing out).
func (l *Lab) adoptVPC(ctx context.Context, vpcID string) error {
	out, err := l.ec2.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{VpcIds: []string{vpcID}})
	if err != nil {
		return fmt.Errorf("describe VPC %s: %w", vpcID, err)
	}
	if len(out.Vpcs) != 1 {
		return fmt.Errorf("VPC %s not found", vpcID)
	}
	cidr := aws.ToString(out.Vpcs[0].CidrBlock)
	_, prefix, err := net.ParseCIDR(cidr)
	if err != nil || prefix.IP.To4() == nil {
		return fmt.Errorf("VPC %s has no IPv4 CIDR (%q)", vpcID, cidr)
	}
	v := &vpcNet{id: vpcID, prefix: prefix, gateway: offset(prefix.IP, 1), dns: offset(prefix.IP, 2)}
	for _, a := range []net.IP{v.gateway, v.dns} {
		if _, err := ipIn(ctx, l.labNS, "addr", "add", fmt.Sprintf("%s/%d", a, v.ones()), "dev", bridgeName); err != nil {
			return fmt.Errorf("bridge address: %w", err)
		}
	}
	l.mu.Lock()
	l.vpc = v
	l.mu.Unlock()
	l.logf("lab: playing VPC %s (%s): router %s", vpcID, cidr, v.gateway)
	return nil
}

// offset returns ip+n (IPv4).
func offset(ip net.IP, n byte) net.IP {
	out := append(net.IP(nil), ip.To4()...)
	out[3] += n
	return out
}

// userData reads an instance's user-data, decoded.
func (l *Lab) userData(ctx context.Context, instanceID string) ([]byte, error) {
	out, err := l.ec2.DescribeInstanceAttribute(ctx, &ec2.DescribeInstanceAttributeInput{
		InstanceId: aws.String(instanceID),
		Attribute:  ec2types.InstanceAttributeNameUserData,
	})
	if err != nil {
		return nil, fmt.Errorf("user-data of %s: %w", instanceID, err)
	}
	if out.UserData == nil || aws.ToString(out.UserData.Value) == "" {
		return nil, nil
	}
	b, err := base64.StdEncoding.DecodeString(aws.ToString(out.UserData.Value))
	if err != nil {
		return nil, fmt.Errorf("user-data of %s is not base64: %w", instanceID, err)
	}
	return b, nil
}

// keyPairKeys returns the public key of an EC2 key pair as an
// authorized_keys line ("" name: none).
func (l *Lab) keyPairKeys(ctx context.Context, name string) ([]string, error) {
	if name == "" {
		return nil, nil
	}
	out, err := l.ec2.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{
		KeyNames: []string{name}, IncludePublicKey: aws.Bool(true),
	})
	if err != nil {
		return nil, fmt.Errorf("key pair %s: %w", name, err)
	}
	var keys []string
	for _, kp := range out.KeyPairs {
		if k := strings.TrimSpace(aws.ToString(kp.PublicKey)); k != "" {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("key pair %s has no public key in the emulator", name)
	}
	return keys, nil
}

// authorizeAllKeyPairs admits every EC2 key pair's public key on the jump
// host.
func (l *Lab) authorizeAllKeyPairs(ctx context.Context) error {
	out, err := l.ec2.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{IncludePublicKey: aws.Bool(true)})
	if err != nil {
		return fmt.Errorf("describe key pairs: %w", err)
	}
	var errs []error
	for _, kp := range out.KeyPairs {
		line := strings.TrimSpace(aws.ToString(kp.PublicKey))
		if line == "" {
			continue
		}
		k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
		if err != nil {
			errs = append(errs, fmt.Errorf("key pair %s: %w", aws.ToString(kp.KeyName), err))
			continue
		}
		if err := l.jump.authorize(k, "key pair "+aws.ToString(kp.KeyName)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// AuthorizeKeyPair admits the public key of an EC2 key pair (kforge's
// cluster key is kforge-<cluster>) on the jump host.
func (l *Lab) AuthorizeKeyPair(ctx context.Context, name string) error {
	keys, err := l.keyPairKeys(ctx, name)
	if err != nil {
		return err
	}
	for _, line := range keys {
		k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
		if err != nil {
			return fmt.Errorf("key pair %s: %w", name, err)
		}
		if err := l.jump.authorize(k, "key pair "+name); err != nil {
			return err
		}
	}
	return nil
}
