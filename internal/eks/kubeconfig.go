package eks

import (
	"context"
	"fmt"
	"time"

	"github.com/kforge/kforge/internal/ekstoken"
	"github.com/kforge/kforge/internal/kubeconfig"
	"github.com/kforge/kforge/internal/lifecycle"
	"github.com/kforge/kforge/internal/state"
)

// Kubeconfig implements lifecycle.Provider: the EKS endpoint and CA from
// state, and a user that runs `kforge token` as an exec credential plugin,
// so the kubeconfig never goes stale; or, with StaticToken, a token valid
// for 15 minutes.
func (p *Provider) Kubeconfig(ctx context.Context, c *state.Cluster, o lifecycle.KubeconfigOptions) (kubeconfig.Entry, error) {
	var cl ClusterOut
	if !decode(c, StepCluster, &cl) || cl.Endpoint == "" {
		return kubeconfig.Entry{}, fmt.Errorf("%s has no EKS endpoint yet (status %s): finish its create with `kforge create %s`", c.Ref(), c.Status, c.Ref().Args())
	}
	kc, err := kubeconfig.EKSCluster(cl.Endpoint, []byte(cl.CAData))
	if err != nil {
		return kubeconfig.Entry{}, err
	}
	e := kubeconfig.Entry{Context: lifecycle.ContextName(c.Ref()), Cluster: kc}
	if o.StaticToken {
		tok, err := ekstoken.Generate(ctx, p.cfg, c.Spec.Name, time.Now())
		if err != nil {
			return kubeconfig.Entry{}, err
		}
		e.User = kubeconfig.TokenUser(tok.Value)
		return e, nil
	}
	e.User = kubeconfig.ExecUser(o.KforgePath, c.Spec.Name, c.Spec.Region, o.Profile)
	return e, nil
}
