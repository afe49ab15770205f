package ha

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/kforge/kforge/internal/ha/infra"
	"github.com/kforge/kforge/internal/kubeconfig"
	"github.com/kforge/kforge/internal/lifecycle"
	"github.com/kforge/kforge/internal/state"
)

// Kubeconfig implements lifecycle.Provider: the admin kubeconfig read from
// the first control plane, with its server at the load balancer's public
// address.
func (p *Provider) Kubeconfig(_ context.Context, c *state.Cluster, _ lifecycle.KubeconfigOptions) (kubeconfig.Entry, error) {
	admin, ok := c.Secrets[infra.SecretAdmin]
	var lb infra.VM
	if !ok || !decode(c, infra.VMStepID(infra.RoleLB, 0), &lb) || lb.PublicIP == "" {
		return kubeconfig.Entry{}, fmt.Errorf("%s has no admin kubeconfig yet (status %s): finish its create with `kforge create %s`", c.Ref(), c.Status, c.Ref().Args())
	}
	kc, user, err := kubeconfig.FromAdmin(admin, "https://"+lb.PublicIP+":6443")
	if err != nil {
		return kubeconfig.Entry{}, err
	}
	return kubeconfig.Entry{Context: lifecycle.ContextName(c.Ref()), Cluster: kc, User: user}, nil
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
