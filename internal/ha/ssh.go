package ha

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/kforge/kforge/internal/engine"
	"github.com/kforge/kforge/internal/spec"
	"github.com/kforge/kforge/internal/sshx"
)

// sshPool holds the SSH client of a run, made on first use from the
// cluster key in state and the jump host of the spec.
type sshPool struct {
	client *sshx.Client
	jump   string
}

// sshClient returns the run's SSH client, shared by every step.
func (p *Provider) sshClient(r secretGetter, s spec.Spec) (*sshx.Client, error) {
	p.sshMu.Lock()
	defer p.sshMu.Unlock()
	if p.ssh != nil && p.ssh.jump == s.SSHJump+"|"+s.SSHJumpKey {
		return p.ssh.client, nil
	}
	signer, err := clusterSigner(r)
	if err != nil {
		return nil, err
	}
	cfg := sshx.Config{Signer: signer}
	if s.SSHJump != "" {
		j, err := sshx.ParseJump(s.SSHJump)
		if err != nil {
			return nil, err
		}
		if s.SSHJumpKey != "" {
			b, err := os.ReadFile(s.SSHJumpKey)
			if err != nil {
				return nil, fmt.Errorf("read --ssh-jump-key: %w", err)
			}
			if j.Signer, err = sshx.ParsePrivateKey(b); err != nil {
				return nil, fmt.Errorf("--ssh-jump-key %s: %w", s.SSHJumpKey, err)
			}
		}
		cfg.Jump = &j
	}
	c, err := sshx.New(cfg)
	if err != nil {
		return nil, err
	}
	if p.ssh != nil {
		p.ssh.client.Close()
	}
	p.ssh = &sshPool{client: c, jump: s.SSHJump + "|" + s.SSHJumpKey}
	return c, nil
}

// Close closes the SSH connections of the run.
func (p *Provider) Close() error {
	p.sshMu.Lock()
	defer p.sshMu.Unlock()
	if p.ssh != nil {
		err := p.ssh.client.Close()
		p.ssh = nil
		return err
	}
	return nil
}

// target is how SSH reaches a VM: its addresses and its pinned host key.
func target(r secretGetter, vm VMOut) (sshx.Target, error) {
	hk, err := hostPublicKey(r, slotOf(vm.Role, vm.Index))
	if err != nil {
		return sshx.Target{}, err
	}
	return sshx.Target{Name: vm.Name, PublicIP: vm.PublicIP, PrivateIP: vm.PrivateIP, HostKey: hk}, nil
}

// runOn runs a rendered script on a VM, first waiting for it to answer SSH
// (a new VM answers a minute or two after launch), with progress.
func (p *Provider) runOn(ctx context.Context, r *engine.Run, s spec.Spec, vm VMOut, script string) ([]byte, error) {
	c, err := p.sshClient(r, s)
	if err != nil {
		return nil, err
	}
	t, err := target(r, vm)
	if err != nil {
		return nil, err
	}
	if err := c.WaitReachable(ctx, t, func(elapsed time.Duration, lastErr error) {
		r.Waiting("waiting for %s (%s) to answer SSH (%s so far)", vm.Name, vm.ID, elapsed.Round(time.Second))
	}); err != nil {
		return nil, err
	}
	return c.Run(ctx, t, script)
}
