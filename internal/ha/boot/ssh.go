package boot

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/kforge/kforge/internal/engine"
	"github.com/kforge/kforge/internal/ha/infra"
	"github.com/kforge/kforge/internal/spec"
	"github.com/kforge/kforge/internal/sshx"
)

// Session is what one run of the bootstrap shares: the SSH client (one
// connection per VM, or per jump host), made on first use from the
// cluster key in state and the spec's jump host.
type Session struct {
	// Console, if set, reads a VM's console output (EC2
	// GetConsoleOutput), shown when a VM does not answer SSH.
	Console func(ctx context.Context, instanceID string) (string, error)

	mu     sync.Mutex
	client *sshx.Client
	jump   string
	waits  sshWaits
}

// SessionHolder is what a provider's session (engine.Run.Context) must
// implement for the bootstrap's steps.
type SessionHolder interface {
	BootSession() *Session
}

// Close closes the SSH connections of the run.
func (s *Session) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client == nil {
		return nil
	}
	err := s.client.Close()
	s.client = nil
	return err
}

// sessionOf returns the run's session. Steps run by this package always
// have one: the provider makes it.
func sessionOf(r *engine.Run) (*Session, error) {
	if h, ok := r.Context().(SessionHolder); ok && h.BootSession() != nil {
		return h.BootSession(), nil
	}
	return nil, fmt.Errorf("engine: step %s runs without the ha-aws provider's session", r.StepID())
}

// sshClient returns the run's SSH client, shared by every step.
func (ss *Session) sshClient(r infra.SecretGetter, s spec.Spec) (*sshx.Client, error) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	key := s.SSHJump + "|" + s.SSHJumpKey
	if ss.client != nil && ss.jump == key {
		return ss.client, nil
	}
	signer, err := infra.ClusterSigner(r)
	if err != nil {
		return nil, err
	}
	cfg := sshx.Config{Signer: signer, ReachTimeout: s.SSHTimeout, MaxSessions: s.SSHSessions}
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
	if ss.client != nil {
		ss.client.Close()
	}
	ss.client, ss.jump = c, key
	return c, nil
}

// target is how SSH reaches a VM: its addresses and its pinned host key.
func target(r infra.SecretGetter, vm infra.VM) (sshx.Target, error) {
	hk, err := infra.HostPublicKey(r, vm.Slot())
	if err != nil {
		return sshx.Target{}, err
	}
	return sshx.Target{Name: vm.Name, PublicIP: vm.PublicIP, PrivateIP: vm.PrivateIP, HostKey: hk}, nil
}

// runOn runs a rendered script on a VM, first waiting for it to answer SSH
// (a new VM answers a minute or two after launch), with progress.
func runOn(ctx context.Context, r *engine.Run, s spec.Spec, vm infra.VM, script string) ([]byte, error) {
	ss, err := sessionOf(r)
	if err != nil {
		return nil, err
	}
	c, err := ss.sshClient(r, s)
	if err != nil {
		return nil, err
	}
	t, err := target(r, vm)
	if err != nil {
		return nil, err
	}
	ss.waits.console = ss.Console
	ss.waits.start(vm, c.Addr(t))
	err = c.WaitReachable(ctx, t, func(_ time.Duration, lastErr error) {
		report(r, ss.waits.probed(ctx, vm, lastErr, s.SSHJump != ""))
	})
	ss.waits.done(vm)
	if err != nil {
		return nil, err
	}
	return c.Run(ctx, t, script)
}
