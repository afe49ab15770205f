package boot

import (
	"context"
	"fmt"
	"io"

	"github.com/kforge/kforge/internal/bootstrap"
	"github.com/kforge/kforge/internal/ha/infra"
	"github.com/kforge/kforge/internal/spec"
	"github.com/kforge/kforge/internal/sshx"
	"github.com/kforge/kforge/internal/state"
)

// Remote runs scripts on the VMs of an existing cluster, from its state
// alone, for the operations that are not a reconcile (backups, restores):
// the VMs as the last create recorded them, the cluster key and the
// pinned host keys from its secrets, and the jump host it was given.
type Remote struct {
	c      *state.Cluster
	client *sshx.Client
}

// stateSecrets reads secrets from a cluster's state.
type stateSecrets struct{ c *state.Cluster }

func (s stateSecrets) Secret(key string) ([]byte, bool) {
	v, ok := s.c.Secrets[key]
	return v, ok
}

// NewRemote returns the Remote of cluster c, with spec s (c's, with the
// jump host and SSH flags the command was given).
func NewRemote(c *state.Cluster, s spec.Spec) (*Remote, error) {
	var ss Session
	client, err := ss.sshClient(stateSecrets{c}, s)
	if err != nil {
		return nil, err
	}
	return &Remote{c: c, client: client}, nil
}

// Close closes the SSH connections.
func (r *Remote) Close() error { return r.client.Close() }

// VMs returns the cluster's VMs of a role, as its state records them.
func (r *Remote) VMs(role string) ([]infra.VM, error) {
	var out []infra.VM
	for i := 0; i < infra.Count(r.c.Spec, role); i++ {
		id := infra.VMStepID(role, i)
		rec, ok := r.c.Steps[id]
		if !ok {
			return nil, fmt.Errorf("the state of %s has no %s: run `kforge create %s` to finish the cluster first", r.c.Ref(), id, r.c.Ref().Args())
		}
		vm, err := infra.DecodeVM(rec.Out)
		if err != nil {
			return nil, fmt.Errorf("the state of %s: %s: %w", r.c.Ref(), id, err)
		}
		out = append(out, vm)
	}
	return out, nil
}

// Node is a VM as the recipes see it.
func Node(vm infra.VM) bootstrap.Node { return node(vm) }

// Run runs a script on a VM and returns its stdout.
func (r *Remote) Run(ctx context.Context, vm infra.VM, script string) ([]byte, error) {
	t, err := target(stateSecrets{r.c}, vm)
	if err != nil {
		return nil, err
	}
	return r.client.Run(ctx, t, script)
}

// Stream runs a script on a VM with input after it on stdin, writing its
// stdout to stdout as it comes.
func (r *Remote) Stream(ctx context.Context, vm infra.VM, script string, input io.Reader, stdout io.Writer) error {
	t, err := target(stateSecrets{r.c}, vm)
	if err != nil {
		return err
	}
	return r.client.RunStream(ctx, t, script, input, stdout)
}

// EtcdCluster is the cluster's etcd as its recipes see it, with token.
func EtcdCluster(vms []infra.VM, token string) bootstrap.EtcdCluster {
	c := bootstrap.EtcdCluster{Token: token}
	for _, vm := range vms {
		c.Members = append(c.Members, node(vm))
	}
	return c
}
