package sshfleet

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"golang.org/x/crypto/ssh"
	"sigs.k8s.io/yaml"

	"github.com/kforge/kforge/internal/sshx"
)

// awsTimeout bounds one look-up in the emulator.
const awsTimeout = 15 * time.Second

// CloudConfig is the part of a VM's #cloud-config user-data the fleet
// reads: the SSH host key kforge hands the VM, and, in a part of a batch's
// user-data, the launch index of the instance the part is for.
type CloudConfig struct {
	LaunchIndex *int              `json:"launch-index"`
	SSHKeys     map[string]string `json:"ssh_keys"`
}

// archivePart is a part of a #cloud-config-archive.
type archivePart struct {
	Type        string `json:"type"`
	LaunchIndex *int   `json:"launch-index"`
	Content     string `json:"content"`
}

// ParseUserData reads the host key from the user-data of the instance of
// launch index 0 (see ParseUserDataAt).
func ParseUserData(userData []byte) (ssh.Signer, error) { return ParseUserDataAt(userData, 0) }

// ParseUserDataAt reads the host key the user-data gives the instance of
// EC2 launch index launchIndex, as cloud-init does (gzip allowed):
// ssh_keys.ed25519_private of the #cloud-config, checked against
// ed25519_public when that is given. In a #cloud-config-archive (one
// user-data for a batch of instances), only the cloud-config parts of that
// launch index, or of none, count (cloud-init drops the others), and
// exactly one of them must hold a host key; a #cloud-config that names
// another launch index gives none.
func ParseUserDataAt(userData []byte, launchIndex int) (ssh.Signer, error) {
	if len(userData) >= 2 && userData[0] == 0x1f && userData[1] == 0x8b {
		zr, err := gzip.NewReader(bytes.NewReader(userData))
		if err != nil {
			return nil, fmt.Errorf("gunzip user-data: %w", err)
		}
		if userData, err = io.ReadAll(zr); err != nil {
			return nil, fmt.Errorf("gunzip user-data: %w", err)
		}
	}
	if bytes.HasPrefix(userData, []byte("#cloud-config-archive")) {
		var parts []archivePart
		if err := yaml.Unmarshal(userData, &parts); err != nil {
			return nil, fmt.Errorf("user-data is not a valid #cloud-config-archive: %w", err)
		}
		var found []ssh.Signer
		for i, p := range parts {
			if p.LaunchIndex != nil && *p.LaunchIndex != launchIndex {
				continue
			}
			if p.Type != "" && p.Type != "text/cloud-config" || !strings.HasPrefix(p.Content, "#cloud-config") {
				continue
			}
			s, err := parseCloudConfig([]byte(p.Content), launchIndex)
			if errors.Is(err, errNoHostKey) || errors.Is(err, errOtherIndex) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("user-data part %d: %w", i, err)
			}
			found = append(found, s)
		}
		switch len(found) {
		case 0:
			return nil, fmt.Errorf("user-data has no part with ssh_keys.ed25519_private for launch index %d: kforge must hand every VM its host key", launchIndex)
		case 1:
			return found[0], nil
		}
		return nil, fmt.Errorf("user-data has %d parts with a host key for launch index %d", len(found), launchIndex)
	}
	if !bytes.HasPrefix(userData, []byte("#cloud-config")) {
		return nil, errors.New("user-data is not #cloud-config")
	}
	s, err := parseCloudConfig(userData, launchIndex)
	if errors.Is(err, errNoHostKey) {
		return nil, errors.New("user-data has no ssh_keys.ed25519_private: kforge must hand every VM its host key")
	}
	return s, err
}

var (
	errNoHostKey  = errors.New("no ssh_keys.ed25519_private")
	errOtherIndex = errors.New("for another launch index")
)

// parseCloudConfig reads the host key of one #cloud-config.
func parseCloudConfig(data []byte, launchIndex int) (ssh.Signer, error) {
	var cc CloudConfig
	if err := yaml.Unmarshal(data, &cc); err != nil {
		return nil, fmt.Errorf("user-data is not valid YAML: %w", err)
	}
	if cc.LaunchIndex != nil && *cc.LaunchIndex != launchIndex {
		return nil, fmt.Errorf("user-data is for launch index %d, not %d: %w", *cc.LaunchIndex, launchIndex, errOtherIndex)
	}
	priv := cc.SSHKeys["ed25519_private"]
	if priv == "" {
		return nil, errNoHostKey
	}
	signer, err := sshx.ParsePrivateKey([]byte(priv))
	if err != nil {
		return nil, fmt.Errorf("user-data ssh_keys.ed25519_private: %w", err)
	}
	if signer.PublicKey().Type() != ssh.KeyAlgoED25519 {
		return nil, fmt.Errorf("user-data ssh_keys.ed25519_private holds a %s key", signer.PublicKey().Type())
	}
	if pub := cc.SSHKeys["ed25519_public"]; pub != "" {
		k, err := sshx.ParsePublicKey(pub)
		if err != nil {
			return nil, fmt.Errorf("user-data ssh_keys.ed25519_public: %w", err)
		}
		if !sshx.SameKey(k, signer.PublicKey()) {
			return nil, errors.New("user-data ssh_keys.ed25519_public is not the public half of ed25519_private")
		}
	}
	return signer, nil
}

// lookup finds the VM serving address: a static VM, else the running
// instance with that private IP, else with that public IP, as the emulator
// says after the lookup began (see resolve).
func (f *Fleet) lookup(address string) (*identity, error) {
	f.mu.Lock()
	for _, v := range f.static {
		if v.PrivateIP == address || (v.PublicIP != "" && v.PublicIP == address) {
			id := &identity{vm: v.VM, hostKey: v.HostKeySigner, login: v.LoginKey}
			f.mu.Unlock()
			return id, nil
		}
	}
	f.mu.Unlock()
	if f.ec2 == nil {
		return nil, fmt.Errorf("no VM has address %s", address)
	}
	ctx, cancel := context.WithTimeout(f.ctx, awsTimeout)
	defer cancel()
	return f.resolve(ctx, address)
}

// found is the answer to one address of a batch: the VM serving it, or why
// none does.
type found struct {
	id  *identity
	err error
}

// resolve asks the next batch of look-ups for address and waits for its
// answer. Look-ups are batched like a group commit: at most one batch talks
// to the emulator at a time, and the next one takes every address asked
// for meanwhile, so concurrent connections cost a few DescribeInstances
// calls, not one each, and every answer comes from calls made after the
// look-up began: a terminated instance is never served from a stale view.
func (f *Fleet) resolve(ctx context.Context, address string) (*identity, error) {
	ch := make(chan found, 1)
	f.mu.Lock()
	f.pending[address] = append(f.pending[address], ch)
	if !f.batching {
		f.batching = true
		f.goTracked(f.batchLoop)
	}
	f.mu.Unlock()
	select {
	case r := <-ch:
		return r.id, r.err
	case <-ctx.Done():
		return nil, fmt.Errorf("look up address %s: %w", address, ctx.Err())
	}
}

// batchWindow is how long a batch that starts while the fleet is idle
// waits for more look-ups: the connections of a burst (VMs that became
// ready together) arrive within a millisecond or two of each other.
const batchWindow = 2 * time.Millisecond

// batchLoop answers the pending look-ups, one batch at a time, until none
// is left.
func (f *Fleet) batchLoop() {
	t := time.NewTimer(batchWindow)
	select {
	case <-t.C:
	case <-f.ctx.Done():
		t.Stop()
	}
	for {
		f.mu.Lock()
		batch := f.pending
		if len(batch) == 0 {
			f.batching = false
			f.mu.Unlock()
			return
		}
		f.pending = map[string][]chan found{}
		f.mu.Unlock()
		ctx, cancel := context.WithTimeout(f.ctx, awsTimeout)
		f.answer(ctx, batch)
		cancel()
	}
}

// maxFilterValues is how many values one EC2 filter takes.
const maxFilterValues = 200

// answer answers a batch of look-ups (waiters by address): one
// DescribeInstances for the private IPs, one more for the public IPs among
// those not found; then, for instances the fleet has not served before,
// their key pairs (one call) and user-data (one call each:
// DescribeInstanceAttribute reads one instance) at once, each look-up
// answered as soon as its instance is known. What the fleet learns of an
// instance (its host key, the key it admits) is kept by instance ID:
// neither changes while it lives. Only the batch loop calls answer, so no
// instance is read twice.
func (f *Fleet) answer(ctx context.Context, batch map[string][]chan found) {
	reply := func(addrs []string, r found) {
		for _, a := range addrs {
			for _, ch := range batch[a] {
				ch <- r
			}
		}
	}
	addrs := make([]string, 0, len(batch))
	for a := range batch {
		addrs = append(addrs, a)
	}
	byPrivate, err := f.findInstances(ctx, "private-ip-address", addrs)
	if err != nil {
		reply(addrs, found{err: err})
		return
	}
	var missing []string
	for _, a := range addrs {
		if len(byPrivate[a]) == 0 {
			missing = append(missing, a)
		}
	}
	var byPublic map[string][]ec2types.Instance
	var publicErr error
	if len(missing) > 0 {
		if byPublic, publicErr = f.findInstances(ctx, "ip-address", missing); publicErr != nil {
			reply(missing, found{err: publicErr})
		}
	}

	// The instance of each address, and the addresses of each instance.
	insts := map[string]*ec2types.Instance{}
	served := map[string][]string{}
	for _, a := range addrs {
		matches := byPrivate[a]
		if len(matches) == 0 {
			if publicErr != nil {
				continue // answered: the look-up failed
			}
			matches = byPublic[a]
		}
		switch len(matches) {
		case 0:
			reply([]string{a}, found{err: fmt.Errorf("no running instance has address %s", a)})
		case 1:
			iid := aws.ToString(matches[0].InstanceId)
			insts[iid] = &matches[0]
			served[iid] = append(served[iid], a)
		default:
			ids := make([]string, len(matches))
			for i, in := range matches {
				ids[i] = aws.ToString(in.InstanceId)
			}
			reply([]string{a}, found{err: fmt.Errorf("address %s is ambiguous: running instances %s all have it (set Options.VPCID)", a, strings.Join(ids, ", "))})
		}
	}

	// Instances served before are answered at once; the others once their
	// user-data and key pair are read.
	serve := func(in *ec2types.Instance, known *identity) {
		vm := vmOf(in)
		vm.UserData, vm.HostKey = known.vm.UserData, known.vm.HostKey
		reply(served[vm.InstanceID], found{id: &identity{vm: vm, hostKey: known.hostKey, login: known.login}})
	}
	var fresh []*ec2types.Instance
	names := map[string]bool{}
	f.mu.Lock()
	cached := map[string]*identity{}
	for iid, in := range insts {
		if id := f.cache[iid]; id != nil {
			cached[iid] = id
			continue
		}
		fresh = append(fresh, in)
		if k := aws.ToString(in.KeyName); k != "" {
			names[k] = true
		}
	}
	f.mu.Unlock()
	for iid, id := range cached {
		serve(insts[iid], id)
	}
	if len(fresh) == 0 {
		return
	}
	var keys map[string]keyPair
	var keysErr error
	keysRead := make(chan struct{})
	go func() {
		defer close(keysRead)
		if len(names) > 0 {
			keys, keysErr = f.keyPairs(ctx, names)
		}
	}()
	var wg sync.WaitGroup
	for _, in := range fresh {
		wg.Add(1)
		go func() {
			defer wg.Done()
			vm := vmOf(in)
			ud, err := f.userData(ctx, vm.InstanceID)
			<-keysRead
			id, err := makeIdentity(vm, ud, err, keys, keysErr)
			if err != nil {
				reply(served[vm.InstanceID], found{err: err})
				return
			}
			f.mu.Lock()
			f.cache[vm.InstanceID] = id
			f.mu.Unlock()
			serve(in, id)
		}()
	}
	wg.Wait()
}

// findInstances returns the running instances (in Options.VPCID if set)
// whose filter attribute is one of values, by value.
func (f *Fleet) findInstances(ctx context.Context, filter string, values []string) (map[string][]ec2types.Instance, error) {
	out := map[string][]ec2types.Instance{}
	for i := 0; i < len(values); i += maxFilterValues {
		chunk := values[i:min(i+maxFilterValues, len(values))]
		filters := []ec2types.Filter{
			{Name: aws.String(filter), Values: chunk},
			{Name: aws.String("instance-state-name"), Values: []string{string(ec2types.InstanceStateNameRunning)}},
		}
		if f.opts.VPCID != "" {
			filters = append(filters, ec2types.Filter{Name: aws.String("vpc-id"), Values: []string{f.opts.VPCID}})
		}
		want := map[string]bool{}
		for _, v := range chunk {
			want[v] = true
		}
		p := ec2.NewDescribeInstancesPaginator(f.ec2, &ec2.DescribeInstancesInput{Filters: filters})
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				return nil, fmt.Errorf("describe the instances with %s %s: %w", filter, summary(chunk), err)
			}
			for _, r := range page.Reservations {
				for _, in := range r.Instances {
					for _, a := range addressesOf(in, filter == "ip-address") {
						if want[a] {
							out[a] = append(out[a], in)
						}
					}
				}
			}
		}
	}
	return out, nil
}

// summary names the addresses of a look-up, the first few of them.
func summary(addrs []string) string {
	if len(addrs) <= 3 {
		return strings.Join(addrs, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(addrs[:3], ", "), len(addrs)-3)
}

// addressesOf returns the private (or public) IPv4 addresses of an
// instance, each once.
func addressesOf(in ec2types.Instance, public bool) []string {
	seen := map[string]bool{}
	var out []string
	add := func(a *string) {
		if s := aws.ToString(a); s != "" && !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	if public {
		add(in.PublicIpAddress)
	} else {
		add(in.PrivateIpAddress)
	}
	for _, ni := range in.NetworkInterfaces {
		for _, pa := range ni.PrivateIpAddresses {
			if public {
				if pa.Association != nil {
					add(pa.Association.PublicIp)
				}
			} else {
				add(pa.PrivateIpAddress)
			}
		}
	}
	return out
}

// makeIdentity makes what the fleet needs to serve an instance from its
// user-data (or the error reading it) and the key pairs read for it.
func makeIdentity(vm VM, userData []byte, udErr error, keys map[string]keyPair, keysErr error) (*identity, error) {
	if udErr != nil {
		return nil, udErr
	}
	signer, err := ParseUserDataAt(userData, vm.LaunchIndex)
	if err != nil {
		return nil, fmt.Errorf("instance %s: %w", vm.InstanceID, err)
	}
	if vm.KeyName == "" {
		return nil, fmt.Errorf("instance %s was launched without a key pair: kforge must launch VMs with the cluster key pair", vm.InstanceID)
	}
	if keysErr != nil {
		return nil, fmt.Errorf("instance %s: key pair %s: %w", vm.InstanceID, vm.KeyName, keysErr)
	}
	kp, ok := keys[vm.KeyName]
	switch {
	case !ok:
		return nil, fmt.Errorf("instance %s: key pair %s not found", vm.InstanceID, vm.KeyName)
	case kp.err != nil:
		return nil, fmt.Errorf("instance %s: key pair %s: %w", vm.InstanceID, vm.KeyName, kp.err)
	}
	vm.UserData, vm.HostKey = userData, signer.PublicKey()
	return &identity{vm: vm, hostKey: signer, login: kp.key}, nil
}

// userData returns the decoded user-data of an instance.
func (f *Fleet) userData(ctx context.Context, instanceID string) ([]byte, error) {
	attr, err := f.ec2.DescribeInstanceAttribute(ctx, &ec2.DescribeInstanceAttributeInput{
		InstanceId: aws.String(instanceID),
		Attribute:  ec2types.InstanceAttributeNameUserData,
	})
	if err != nil {
		return nil, fmt.Errorf("instance %s: read user-data: %w", instanceID, err)
	}
	if attr.UserData == nil || aws.ToString(attr.UserData.Value) == "" {
		return nil, fmt.Errorf("instance %s has no user-data: kforge must hand every VM its host key", instanceID)
	}
	raw, err := base64.StdEncoding.DecodeString(aws.ToString(attr.UserData.Value))
	if err != nil {
		return nil, fmt.Errorf("instance %s: user-data is not base64: %w", instanceID, err)
	}
	return raw, nil
}

// keyPairs returns the public keys of the named EC2 key pairs, by name, in
// one call: a key pair that does not exist is missing from the map, one
// whose key cannot be read maps to the error.
func (f *Fleet) keyPairs(ctx context.Context, names map[string]bool) (map[string]keyPair, error) {
	list := make([]string, 0, len(names))
	for n := range names {
		list = append(list, n)
	}
	out, err := f.ec2.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{
		Filters:          []ec2types.Filter{{Name: aws.String("key-name"), Values: list}},
		IncludePublicKey: aws.Bool(true),
	})
	if err != nil {
		return nil, err
	}
	keys := map[string]keyPair{}
	for _, kp := range out.KeyPairs {
		k, err := sshx.ParsePublicKey(aws.ToString(kp.PublicKey))
		keys[aws.ToString(kp.KeyName)] = keyPair{key: k, err: err}
	}
	return keys, nil
}

// keyPair is the public key of an EC2 key pair, or why it is unusable.
type keyPair struct {
	key ssh.PublicKey
	err error
}

// vmOf describes an instance.
func vmOf(in *ec2types.Instance) VM {
	vm := VM{
		InstanceID: aws.ToString(in.InstanceId),
		PrivateIP:  aws.ToString(in.PrivateIpAddress),
		PublicIP:   aws.ToString(in.PublicIpAddress),
		VPCID:      aws.ToString(in.VpcId),
		KeyName:    aws.ToString(in.KeyName),
		Tags:       map[string]string{},
	}
	for _, t := range in.Tags {
		vm.Tags[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	vm.Name = vm.Tags["Name"]
	vm.Role = vm.Tags["kforge.io/role"]
	vm.LaunchIndex = int(aws.ToInt32(in.AmiLaunchIndex))
	return vm
}

// keyPairKeys returns the public keys of every EC2 key pair.
func (f *Fleet) keyPairKeys() ([]ssh.PublicKey, error) {
	ctx, cancel := context.WithTimeout(f.ctx, awsTimeout)
	defer cancel()
	out, err := f.ec2.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{IncludePublicKey: aws.Bool(true)})
	if err != nil {
		return nil, fmt.Errorf("describe key pairs: %w", err)
	}
	var keys []ssh.PublicKey
	for _, kp := range out.KeyPairs {
		if k, err := sshx.ParsePublicKey(aws.ToString(kp.PublicKey)); err == nil {
			keys = append(keys, k)
		}
	}
	return keys, nil
}
