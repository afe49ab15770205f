package cli

import (
	"fmt"
	"net/url"
	"path/filepath"
	"strings"

	"github.com/kforge/kforge/internal/spec"
	"github.com/kforge/kforge/internal/state"
)

// stateURL returns the state store URL in force: --state, else
// KFORGE_STATE, else "" (the local store under KFORGE_HOME).
func (a *App) stateURL() string {
	if a.stateFlag != "" {
		return a.stateFlag
	}
	return a.Getenv("KFORGE_STATE")
}

// openStore opens the state store in force.
func (a *App) openStore() (state.Store, error) {
	home, err := a.Home()
	if err != nil {
		return nil, err
	}
	raw := a.stateURL()
	if raw == "" {
		return state.NewLocal(filepath.Join(home, "state"))
	}
	return openStoreURL(raw)
}

func openStoreURL(raw string) (state.Store, error) {
	if !strings.Contains(raw, "://") {
		return state.NewLocal(raw)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, spec.Usagef("invalid --state %q: %v", raw, err)
	}
	switch u.Scheme {
	case "file":
		if u.Path == "" {
			return nil, spec.Usagef("invalid --state %q: give file:///absolute/path", raw)
		}
		return state.NewLocal(u.Path)
	default:
		return nil, spec.Usagef("unsupported --state %q: use a directory or file:///path", raw)
	}
}

// refFlags are the flags that name a cluster.
type refFlags struct {
	name, region string
}

func (f *refFlags) ref(typ string) (spec.Ref, error) {
	r := spec.Ref{Type: typ, Name: f.name, Region: f.region}
	return r, spec.ValidateRef(r)
}

func (f *refFlags) register(fs interface {
	StringVar(*string, string, string, string)
}) {
	fs.StringVar(&f.name, "name", "", "cluster name (required): 1-40 lowercase letters, digits and '-'")
	fs.StringVar(&f.region, "region", "", "AWS region (required), for example us-east-1")
}

func notFound(ref spec.Ref) error {
	return fmt.Errorf("kforge has no state for %s: `kforge get` lists the clusters it knows (check --state if you use a shared store)", ref)
}
