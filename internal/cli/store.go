package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/kforge/kforge/internal/atomicfile"
	"github.com/kforge/kforge/internal/awsx"
	"github.com/kforge/kforge/internal/spec"
	"github.com/kforge/kforge/internal/state"
	"github.com/kforge/kforge/internal/state/s3store"
)

// stateURL returns the state store URL in force: --state, else
// KFORGE_STATE, else the default that `kforge state migrate` recorded in
// KFORGE_HOME/config.json, else "" (the local store under KFORGE_HOME).
func (a *App) stateURL() (string, error) {
	if a.stateFlag != "" {
		return a.stateFlag, nil
	}
	if v := a.Getenv("KFORGE_STATE"); v != "" {
		return v, nil
	}
	cfg, err := a.readConfig()
	return cfg.State, err
}

// openStore opens the state store in force.
func (a *App) openStore(ctx context.Context) (state.Store, error) {
	raw, err := a.stateURL()
	if err != nil {
		return nil, err
	}
	if raw == "" {
		home, err := a.Home()
		if err != nil {
			return nil, err
		}
		return state.NewLocal(filepath.Join(home, "state"))
	}
	return a.openStoreURL(ctx, raw)
}

// openStoreURL opens the store at a state URL: a directory, file:///path
// or s3://bucket/prefix.
func (a *App) openStoreURL(ctx context.Context, raw string) (state.Store, error) {
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
	case "s3":
		return a.openS3(ctx, raw)
	default:
		return nil, spec.Usagef("unsupported --state %q: use a directory, file:///path or s3://bucket/prefix", raw)
	}
}

// openS3 opens a state store in S3. The client works in the bucket's
// region as the URL gives it (?region=), else AWS_REGION or
// AWS_DEFAULT_REGION, else us-east-1; a bucket in another region is
// refused with a message naming its region.
func (a *App) openS3(ctx context.Context, raw string) (*s3store.Store, error) {
	loc, err := s3store.ParseURL(raw)
	if err != nil {
		return nil, err
	}
	region := loc.Region
	if region == "" {
		region, _ = awsx.EnvRegion(a.Getenv)
	}
	if region == "" {
		region = "us-east-1"
	}
	cfg, _, err := a.awsConfig(ctx, region)
	if err != nil {
		return nil, err
	}
	return s3store.Open(ctx, cfg, loc, s3store.Options{Log: a.Stderr})
}

// kforgeConfig is what kforge keeps in KFORGE_HOME/config.json.
type kforgeConfig struct {
	// State is the default state store URL ("" for the local store).
	State string `json:"state,omitempty"`
}

func (a *App) configPath() (string, error) {
	home, err := a.Home()
	if err != nil {
		return "", err
	}
	return filepath.Join(home, "config.json"), nil
}

// readConfig reads KFORGE_HOME/config.json; a missing file is an empty
// configuration.
func (a *App) readConfig() (kforgeConfig, error) {
	var c kforgeConfig
	p, err := a.configPath()
	if err != nil {
		return c, err
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("read kforge's configuration: %w", err)
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("kforge's configuration %s is not valid JSON (%v): fix or remove it", p, err)
	}
	return c, nil
}

// writeConfig writes KFORGE_HOME/config.json (mode 0600).
func (a *App) writeConfig(c kforgeConfig) error {
	p, err := a.configPath()
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(p, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("write kforge's configuration: %w", err)
	}
	return nil
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
	fs.StringVar(&f.region, "region", "", regionUsage)
}

// loadCluster reads a cluster's state from the store in force, saying
// what to do when there is none.
func (a *App) loadCluster(ctx context.Context, ref spec.Ref) (*state.Cluster, error) {
	store, err := a.openStore(ctx)
	if err != nil {
		return nil, err
	}
	c, err := store.Get(ctx, ref)
	if errors.Is(err, state.ErrNotFound) {
		return nil, fmt.Errorf("kforge has no state for %s: `kforge get` lists the clusters it knows (check --state if you use a shared store)", ref)
	}
	return c, err
}

// regionUsage is the help of every --region flag that names a cluster's
// region.
const regionUsage = "AWS region, for example us-east-1 (default: AWS_REGION, else AWS_DEFAULT_REGION, else the AWS profile's region)"
