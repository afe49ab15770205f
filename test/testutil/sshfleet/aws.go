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
// reads: the SSH host key kforge hands the VM.
type CloudConfig struct {
	SSHKeys map[string]string `json:"ssh_keys"`
}

// ParseUserData reads the host key from #cloud-config user-data (gzip
// allowed): ssh_keys.ed25519_private, checked against ed25519_public when
// that is given.
func ParseUserData(userData []byte) (ssh.Signer, error) {
	if len(userData) >= 2 && userData[0] == 0x1f && userData[1] == 0x8b {
		zr, err := gzip.NewReader(bytes.NewReader(userData))
		if err != nil {
			return nil, fmt.Errorf("gunzip user-data: %w", err)
		}
		if userData, err = io.ReadAll(zr); err != nil {
			return nil, fmt.Errorf("gunzip user-data: %w", err)
		}
	}
	if !bytes.HasPrefix(userData, []byte("#cloud-config")) {
		return nil, errors.New("user-data is not #cloud-config")
	}
	var cc CloudConfig
	if err := yaml.Unmarshal(userData, &cc); err != nil {
		return nil, fmt.Errorf("user-data is not valid YAML: %w", err)
	}
	priv := cc.SSHKeys["ed25519_private"]
	if priv == "" {
		return nil, errors.New("user-data has no ssh_keys.ed25519_private: kforge must hand every VM its host key")
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
// instance with that private IP, else with that public IP.
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
	inst, err := f.findInstance(ctx, "private-ip-address", address)
	if err == nil && inst == nil {
		inst, err = f.findInstance(ctx, "ip-address", address)
	}
	if err != nil {
		return nil, err
	}
	if inst == nil {
		return nil, fmt.Errorf("no running instance has address %s", address)
	}
	vm := vmOf(inst)
	f.mu.Lock()
	cached := f.cache[vm.InstanceID]
	f.mu.Unlock()
	if cached != nil {
		vm.UserData, vm.HostKey = cached.vm.UserData, cached.vm.HostKey
		return &identity{vm: vm, hostKey: cached.hostKey, login: cached.login}, nil
	}

	attr, err := f.ec2.DescribeInstanceAttribute(ctx, &ec2.DescribeInstanceAttributeInput{
		InstanceId: aws.String(vm.InstanceID),
		Attribute:  ec2types.InstanceAttributeNameUserData,
	})
	if err != nil {
		return nil, fmt.Errorf("instance %s: read user-data: %w", vm.InstanceID, err)
	}
	if attr.UserData == nil || aws.ToString(attr.UserData.Value) == "" {
		return nil, fmt.Errorf("instance %s has no user-data: kforge must hand every VM its host key", vm.InstanceID)
	}
	raw, err := base64.StdEncoding.DecodeString(aws.ToString(attr.UserData.Value))
	if err != nil {
		return nil, fmt.Errorf("instance %s: user-data is not base64: %w", vm.InstanceID, err)
	}
	signer, err := ParseUserData(raw)
	if err != nil {
		return nil, fmt.Errorf("instance %s: %w", vm.InstanceID, err)
	}
	if vm.KeyName == "" {
		return nil, fmt.Errorf("instance %s was launched without a key pair: kforge must launch VMs with the cluster key pair", vm.InstanceID)
	}
	kp, err := f.ec2.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{KeyNames: []string{vm.KeyName}, IncludePublicKey: aws.Bool(true)})
	if err != nil {
		return nil, fmt.Errorf("instance %s: key pair %s: %w", vm.InstanceID, vm.KeyName, err)
	}
	if len(kp.KeyPairs) != 1 {
		return nil, fmt.Errorf("instance %s: key pair %s not found", vm.InstanceID, vm.KeyName)
	}
	login, err := sshx.ParsePublicKey(aws.ToString(kp.KeyPairs[0].PublicKey))
	if err != nil {
		return nil, fmt.Errorf("instance %s: key pair %s: %w", vm.InstanceID, vm.KeyName, err)
	}
	vm.UserData, vm.HostKey = raw, signer.PublicKey()
	id := &identity{vm: vm, hostKey: signer, login: login}
	f.mu.Lock()
	f.cache[vm.InstanceID] = id
	f.mu.Unlock()
	return id, nil
}

// findInstance returns the one running instance whose filter attribute is
// value (in Options.VPCID if set), or nil.
func (f *Fleet) findInstance(ctx context.Context, filter, value string) (*ec2types.Instance, error) {
	filters := []ec2types.Filter{
		{Name: aws.String(filter), Values: []string{value}},
		{Name: aws.String("instance-state-name"), Values: []string{string(ec2types.InstanceStateNameRunning)}},
	}
	if f.opts.VPCID != "" {
		filters = append(filters, ec2types.Filter{Name: aws.String("vpc-id"), Values: []string{f.opts.VPCID}})
	}
	var found []ec2types.Instance
	p := ec2.NewDescribeInstancesPaginator(f.ec2, &ec2.DescribeInstancesInput{Filters: filters})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("describe instances with %s=%s: %w", filter, value, err)
		}
		for _, r := range page.Reservations {
			found = append(found, r.Instances...)
		}
	}
	switch len(found) {
	case 0:
		return nil, nil
	case 1:
		return &found[0], nil
	}
	ids := make([]string, len(found))
	for i, in := range found {
		ids[i] = aws.ToString(in.InstanceId)
	}
	return nil, fmt.Errorf("address %s is ambiguous: running instances %s all have it (set Options.VPCID)", value, strings.Join(ids, ", "))
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
