// Package lifecycle runs the lifecycle operations (create, scale, delete,
// diff) that both cluster types share: it takes the cluster's lock, loads or starts its
// state, asks the type's Provider for the graph of steps, and lets the
// engine reconcile it. Provider packages (eks, ha) supply the steps.
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"io"
	"reflect"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/kforge/kforge/internal/cost"
	"github.com/kforge/kforge/internal/engine"
	"github.com/kforge/kforge/internal/kubeconfig"
	"github.com/kforge/kforge/internal/preflight"
	"github.com/kforge/kforge/internal/spec"
	"github.com/kforge/kforge/internal/state"
)

// Provider builds the lifecycle graphs of one cluster type.
type Provider interface {
	// Graph returns the steps that make a cluster of spec s. It makes no
	// AWS call, so it also serves --dry-run.
	Graph(s spec.Spec) (*engine.Graph, error)
	// Teardown returns the steps that remove a cluster of spec s, in
	// creation order (Destroy runs them in reverse). When the state is
	// lost, s holds only the Ref: the steps find resources by tags and
	// names.
	Teardown(s spec.Spec) (*engine.Graph, error)
	// Check makes the read-only AWS checks that must refuse a create
	// before anything is made (a VPC without DNS support, IAM names of
	// another cluster). A refusal is a *spec.UsageError.
	Check(ctx context.Context, s spec.Spec) error
	// Info describes a cluster from its state.
	Info(c *state.Cluster) Info
	// Cost lists what a cluster of spec s runs and pays for, to price it.
	Cost(s spec.Spec) []cost.Item
	// Session returns what one operation's steps share (SSH connections,
	// the caches of batched look-ups): the engine hands it to every step
	// (engine.Run.Context) and the runner closes it when the operation
	// ends. It makes no AWS call.
	Session() Session
	// Review lists, for the plan, what a reviewer of a cluster of spec s
	// needs to know: versions, who can reach it, who is its admin. A
	// line that starts with "Warning:" is a warning.
	Review(s spec.Spec) []string
	// Kubeconfig returns the kubeconfig entry that reaches the cluster.
	Kubeconfig(ctx context.Context, c *state.Cluster, o KubeconfigOptions) (kubeconfig.Entry, error)
	// Preflight says what preflight must know of a cluster of spec s
	// (its zones, instance types, IAM names, image and versions). It
	// makes no AWS call.
	Preflight(s spec.Spec) preflight.Facts
}

// Session is what one operation's steps share; see Provider.Session.
type Session interface {
	Close() error
}

// NoSession is a Session that holds nothing.
type NoSession struct{}

// Close does nothing.
func (NoSession) Close() error { return nil }

// KubeconfigOptions tune the kubeconfig entry of a cluster.
type KubeconfigOptions struct {
	// KforgePath is the absolute path of the kforge binary, for exec
	// credential plugins.
	KforgePath string
	// StaticToken embeds a short-lived token instead of an exec plugin
	// (aws only).
	StaticToken bool
	// Profile is the named AWS profile the exec plugin runs under ("":
	// none; aws only).
	Profile string
}

// ContextName is the kubeconfig context of a cluster:
// kforge-<type>-<name>-<region>.
func ContextName(ref spec.Ref) string {
	return "kforge-" + ref.Type + "-" + ref.Name + "-" + ref.Region
}

// Info is what `kforge info` shows of a cluster.
type Info struct {
	Name      string            `json:"name"`
	Type      string            `json:"type"`
	Region    string            `json:"region"`
	Status    string            `json:"status"`
	Nodes     int               `json:"nodes"`
	Created   time.Time         `json:"created"`
	Error     string            `json:"error,omitempty"`
	Endpoint  string            `json:"endpoint,omitempty"`
	Versions  map[string]string `json:"versions"`
	Spec      spec.Spec         `json:"spec"`
	Resources map[string]any    `json:"resources"`
	Instances []Instance        `json:"instances,omitempty"`
	// Cost is what the cluster costs to run, estimated from its shape.
	Cost *cost.Estimate `json:"cost,omitempty"`
	// Check is what a look-up of every resource in AWS found (absent:
	// not looked up).
	Check *ResourceCheck `json:"check,omitempty"`
}

// ResourceCheck is, per resource of a cluster, whether it was found in AWS
// as its state records it.
type ResourceCheck struct {
	// InSync: every resource found as recorded, and nothing would run
	// again.
	InSync    bool             `json:"inSync"`
	Resources []ResourceStatus `json:"resources,omitempty"`
	// Reruns counts the actions (bootstrap scripts) a reconcile would run
	// again, because of the drift above.
	Reruns int `json:"reruns,omitempty"`
	// Error says why nothing could be looked up.
	Error string `json:"error,omitempty"`
}

// ResourceStatus is one resource in a ResourceCheck.
type ResourceStatus struct {
	Step string `json:"step"`
	// Status is StatusFound, or the kind of change a reconcile would make
	// (engine.ChangeRecreate, ChangeUpdate, ...).
	Status string `json:"status"`
	Detail string `json:"detail,omitempty"`
}

// StatusFound is the status of a resource found as recorded.
const StatusFound = "found as recorded"

// CheckResources turns the report of Runner.Check into a ResourceCheck.
func CheckResources(all []engine.Change) *ResourceCheck {
	rc := &ResourceCheck{InSync: true}
	for _, ch := range all {
		if ch.Kind != engine.ChangeNone {
			rc.InSync = false
		}
		if !ch.Resource {
			if ch.Kind != engine.ChangeNone {
				rc.Reruns++
			}
			continue
		}
		st := ResourceStatus{Step: ch.Step, Status: ch.Kind, Detail: ch.Detail}
		if ch.Kind == engine.ChangeNone {
			st.Status = StatusFound
		}
		rc.Resources = append(rc.Resources, st)
	}
	return rc
}

// Instance is a VM of an ha-aws cluster.
type Instance struct {
	ID        string `json:"id"`
	Role      string `json:"role"`
	Name      string `json:"name,omitempty"`
	Zone      string `json:"zone,omitempty"`
	PrivateIP string `json:"privateIp"`
	PublicIP  string `json:"publicIp"`
}

// Runner runs lifecycle operations against a state store.
type Runner struct {
	Store state.Store
	// Events receives step progress.
	Events func(engine.Event)
	// Stop, when closed, stops the operation at the next safe point.
	Stop <-chan struct{}
	// Command names the running command in the lock, for "in use" errors.
	Command string
	// Parallel bounds concurrent steps (0: the engine's default).
	Parallel int
	// StepContext, if set, derives each step's context (see
	// engine.Options).
	StepContext func(ctx context.Context, step string) context.Context
	// Now is the clock (time.Now if nil).
	Now func() time.Time
}

func (r *Runner) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *Runner) options(events func(engine.Event), sess Session) engine.Options {
	return engine.Options{Parallel: r.Parallel, Events: events, Stop: r.Stop, StepContext: r.StepContext, Context: sess}
}

// session opens a provider's session for one operation; done closes it.
func session(p Provider) (Session, func()) {
	sess := p.Session()
	return sess, func() { _ = sess.Close() }
}

// ErrLockLost is the cause of an operation stopped because its lock was
// lost: a shared store's lease ran out (the process was paused or cut off)
// and another kforge took the lock over, or someone broke it.
var ErrLockLost = errors.New("lost the cluster's lock")

// lossable is a lock that can be lost while held: a lease in a shared
// store. Its channel is closed when it is lost.
type lossable interface {
	Lost() <-chan struct{}
}

// lock takes the cluster's lock. It returns a context that ends, with an
// ErrLockLost cause, if the lock is lost while the operation runs, and a
// function that releases the lock.
func (r *Runner) lock(ctx context.Context, ref spec.Ref) (context.Context, func(), error) {
	lk, err := r.Store.Lock(ctx, ref, state.CurrentHolder(r.Command))
	if err != nil {
		return ctx, nil, err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	if l, ok := lk.(lossable); ok {
		go func() {
			select {
			case <-l.Lost():
				cancel(fmt.Errorf("%w: %s: its lease expired or it was broken (`kforge state unlock`), so another kforge may be working on it; this run stopped and wrote nothing more. Check with `kforge info %s`, then run the command again",
					ErrLockLost, ref, ref.Args()))
			case <-ctx.Done():
			}
		}()
	}
	return ctx, func() {
		cancel(nil)
		_ = lk.Unlock()
	}, nil
}

// lockLost returns the error of an operation whose lock was lost, or nil.
func lockLost(ctx context.Context) error {
	if err := context.Cause(ctx); errors.Is(err, ErrLockLost) {
		return err
	}
	return nil
}

// Locked runs op with the cluster's lock held and its state read, for
// operations that work on a cluster without a reconcile (backups and
// restores): no create, scale or delete runs meanwhile.
func (r *Runner) Locked(ctx context.Context, ref spec.Ref, op func(context.Context, *state.Cluster) error) error {
	ctx, unlock, err := r.lock(ctx, ref)
	if err != nil {
		return err
	}
	defer unlock()
	c, err := r.Store.Get(ctx, ref)
	if errors.Is(err, state.ErrNotFound) {
		return fmt.Errorf("%w: kforge has no state for %s (see `kforge get`)", ErrNoCluster, ref)
	}
	if err != nil {
		return err
	}
	if err := op(ctx, c); err != nil {
		if lerr := lockLost(ctx); lerr != nil {
			return lerr
		}
		return err
	}
	return nil
}

// ErrNoCluster is returned for an operation on a cluster with no state.
var ErrNoCluster = errors.New("no such cluster")

// Plan returns the dry-run plan of a create: the steps in order, marking
// those a previous run completed when state exists (it is read without
// locking and never written).
func (r *Runner) Plan(ctx context.Context, p Provider, s spec.Spec) ([]engine.PlanEntry, error) {
	g, err := p.Graph(s)
	if err != nil {
		return nil, err
	}
	var done func(string) bool
	if r.Store != nil {
		if c, err := r.Store.Get(ctx, s.Ref); err == nil {
			done = func(id string) bool { _, ok := c.Steps[id]; return ok }
		}
	}
	return g.Plan(done)
}

// sameShape reports whether two specs ask for the same cluster, ignoring
// how kforge reaches it (the SSH jump host may change between runs).
func sameShape(a, b spec.Spec) bool {
	a.SSHJump, a.SSHJumpKey, b.SSHJump, b.SSHJumpKey = "", "", "", ""
	a.SSHTimeout, b.SSHTimeout = 0, 0
	a.SSHSessions, b.SSHSessions = 0, 0
	return reflect.DeepEqual(a, b)
}

// ChangedSettings returns nil if a create with spec s may go on with
// existing cluster c, else the *spec.UsageError that names each setting s
// would change, with its old and new value and the command that changes it
// if one does. It makes no AWS call: the CLI asks it before anything else.
func ChangedSettings(c *state.Cluster, s spec.Spec) error {
	if sameShape(c.Spec, s) {
		return nil
	}
	finished := c.Status == state.StatusRunning
	changes := SettingChanges(c.Spec, s)
	if len(changes) == 0 {
		changes = []SettingChange{{Flag: "(settings)", Old: "as created", New: "others"}}
	}
	return settingsError(s.Ref, changes, finished)
}

// Check is a provider's Check of a create, started before the create takes
// the cluster's lock (Runner.StartCheck) so that it runs alongside the
// caller's own checks (the CLI's preflight) instead of after them.
type Check struct {
	spec   spec.Spec
	cancel context.CancelFunc
	done   chan struct{}
	// ran is true when the provider's Check ran: the store had no state for
	// the cluster when the check began. err is its outcome.
	ran bool
	err error
}

// StartCheck starts in the background what Create checks before it makes a
// new cluster: if the store has no state for s.Ref (read without the
// lock), the provider's Check of s. Create, given the Check, waits for it
// instead of checking after it has taken the lock. If the cluster had state
// when the check began, or has state once Create holds the lock (another
// kforge made it meanwhile), Create goes on as if it had not been given the
// Check: a cluster that exists is not checked, and one that has vanished
// meanwhile is checked under the lock. Stop releases the Check.
func (r *Runner) StartCheck(ctx context.Context, p Provider, s spec.Spec) *Check {
	ctx, cancel := context.WithCancel(ctx)
	c := &Check{spec: s, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		if _, err := r.Store.Get(ctx, s.Ref); !errors.Is(err, state.ErrNotFound) {
			return // it exists, or cannot be read: Create decides under the lock
		}
		c.ran, c.err = true, p.Check(ctx, s)
	}()
	return c
}

// Stop cancels the check if it still runs and waits for it to end. It may
// be called more than once, and after Create.
func (c *Check) Stop() {
	c.cancel()
	<-c.done
}

// outcome waits for the check and says whether it checked a new cluster of
// spec s, and with what result.
func (c *Check) outcome(ctx context.Context, s spec.Spec) (bool, error) {
	select {
	case <-c.done:
	case <-ctx.Done():
		return false, ctx.Err()
	}
	if !c.ran || !reflect.DeepEqual(c.spec, s) {
		return false, nil
	}
	return true, c.err
}

// check makes the checks of a new cluster: the outcome of ahead, when it
// checked a new cluster of spec s, else the provider's Check.
func check(ctx context.Context, p Provider, s spec.Spec, ahead *Check) error {
	if ahead != nil {
		ran, err := ahead.outcome(ctx, s)
		if ran || err != nil {
			return err
		}
	}
	return p.Check(ctx, s)
}

// Diff observes every resource of the cluster without changing anything
// (in AWS or in its state) and returns what a reconcile (create with the
// same settings) would change: what is missing, what drifted, which steps
// would run again.
func (r *Runner) Diff(ctx context.Context, p Provider, ref spec.Ref) ([]engine.Change, *state.Cluster, error) {
	all, c, err := r.Check(ctx, p, ref)
	var changes []engine.Change
	for _, ch := range all {
		if ch.Kind != engine.ChangeNone {
			changes = append(changes, ch)
		}
	}
	return changes, c, err
}

// Check is Diff with every step of the cluster in the report: what a
// reconcile would leave alone has Kind engine.ChangeNone (a resource
// found as recorded).
func (r *Runner) Check(ctx context.Context, p Provider, ref spec.Ref) ([]engine.Change, *state.Cluster, error) {
	c, err := r.Store.Get(ctx, ref)
	if errors.Is(err, state.ErrNotFound) {
		return nil, nil, fmt.Errorf("%w: kforge has no state for %s (see `kforge get`)", ErrNoCluster, ref)
	}
	if err != nil {
		return nil, nil, err
	}
	g, err := p.Graph(c.Spec)
	if err != nil {
		return nil, nil, err
	}
	sess, done := session(p)
	defer done()
	all, err := engine.Check(ctx, g, engine.NewJournal(readOnly{}, c.Clone()), r.options(nil, sess))
	return all, c, err
}

// readOnly is the store of a diff's journal: a diff never saves.
type readOnly struct{ state.Store }

func (readOnly) Put(context.Context, *state.Cluster) error {
	return errors.New("a diff does not change the state")
}

// Create makes the cluster of spec s, or continues a create that stopped.
// Before it makes a new cluster (no state), the provider's Check must pass:
// nothing is made when it refuses. ahead, if not nil, is that Check started
// with StartCheck for s; nil means Create runs the Check itself.
func (r *Runner) Create(ctx context.Context, p Provider, s spec.Spec, ahead *Check) (*state.Cluster, error) {
	ctx, unlock, err := r.lock(ctx, s.Ref)
	if err != nil {
		return nil, err
	}
	defer unlock()

	c, err := r.Store.Get(ctx, s.Ref)
	switch {
	case errors.Is(err, state.ErrNotFound):
		if err := check(ctx, p, s, ahead); err != nil {
			return nil, err
		}
		c = state.New(s, r.now())
		if err := r.Store.Put(ctx, c); err != nil {
			return nil, fmt.Errorf("save state: %w", err)
		}
	case err != nil:
		return nil, err
	default:
		switch {
		case c.Status == state.StatusDeleting:
			return nil, spec.Usagef("%s is being deleted; finish with `kforge delete %s`", s.Ref, s.Ref.Args())
		case !sameShape(c.Spec, s):
			return nil, ChangedSettings(c, s)
		}
		if err := upgradeUnfinished(p, c); err != nil {
			return nil, err
		}
		// Already there (or half made): the reconcile below finds every
		// resource again and repairs what drifted.
		c.Spec.SSHJump, c.Spec.SSHJumpKey, c.Spec.SSHTimeout = s.SSHJump, s.SSHJumpKey, s.SSHTimeout
	}
	g, err := p.Graph(c.Spec)
	if err != nil {
		return nil, err
	}
	j := engine.NewJournal(r.Store, c)
	if err := j.Update(ctx, func(c *state.Cluster) { c.Status, c.Error = state.StatusCreating, "" }); err != nil {
		return nil, err
	}
	sess, done := session(p)
	defer done()
	runErr := engine.Apply(ctx, g, j, r.options(r.Events, sess))
	if err := lockLost(ctx); err != nil {
		return j.Cluster(), err
	}
	return r.finish(ctx, j, runErr, state.StatusRunning)
}

// finish records the outcome of an operation in state.
func (r *Runner) finish(ctx context.Context, j *engine.Journal, runErr error, ok string) (*state.Cluster, error) {
	err := j.Update(ctx, func(c *state.Cluster) {
		if runErr == nil {
			c.Status, c.Error, c.Pending = ok, "", nil
			return
		}
		c.Status, c.Error = state.StatusFailed, runErr.Error()
	})
	if runErr != nil {
		return j.Cluster(), runErr
	}
	return j.Cluster(), err
}

// Upgrader is a Provider whose clusters kforge upgrades with a graph of
// their own (ha-aws: node by node), rather than by reconciling the
// cluster's graph at the new version (aws).
type Upgrader interface {
	// UpgradeGraph returns the steps that bring a cluster to spec s's
	// Kubernetes version. It makes no AWS call.
	UpgradeGraph(s spec.Spec) (*engine.Graph, error)
}

// running locks a running cluster (or one whose last change did not
// finish) and returns its state and the spec change makes of it.
func (r *Runner) running(ctx context.Context, ref spec.Ref, change func(*spec.Spec)) (context.Context, func(), *state.Cluster, spec.Spec, error) {
	ctx, unlock, err := r.lock(ctx, ref)
	if err != nil {
		return ctx, nil, nil, spec.Spec{}, err
	}
	c, err := r.Store.Get(ctx, ref)
	if errors.Is(err, state.ErrNotFound) {
		err = fmt.Errorf("%w: kforge has no state for %s (see `kforge get`)", ErrNoCluster, ref)
	}
	if err == nil && c.Status != state.StatusRunning && len(c.Pending) == 0 {
		err = fmt.Errorf("%s is %s, not running: finish its create first (`kforge create %s`)", ref, c.Status, ref.Args())
	}
	next := spec.Spec{}
	if err == nil {
		next = c.Spec
		change(&next)
		err = next.Validate()
	}
	if err != nil {
		unlock()
		return ctx, nil, nil, next, err
	}
	return ctx, unlock, c, next, nil
}

// upgradeUnfinished refuses to reconcile the whole of a cluster that an
// Upgrader's upgrade left half done: its nodes would all be brought to the
// new version at once. The upgrade, run again, continues node by node.
func upgradeUnfinished(p Provider, c *state.Cluster) error {
	if _, ok := p.(Upgrader); !ok {
		return nil
	}
	for _, old := range c.Pending {
		if old.K8sVersion != c.Spec.K8sVersion {
			return spec.Usagef("the upgrade of %s from Kubernetes %s to %s did not finish: run `kforge upgrade %s --k8s-version %s` again first",
				c.Ref(), old.K8sVersion, c.Spec.K8sVersion, c.Ref().Args(), c.Spec.K8sVersion)
		}
	}
	return nil
}

// Upgrade changes a running cluster's spec with change (its Kubernetes
// version) and applies the provider's upgrade graph. Run again after a
// stop, it continues: the steps that completed are journaled.
func (r *Runner) Upgrade(ctx context.Context, p Provider, ref spec.Ref, change func(*spec.Spec)) (*state.Cluster, error) {
	up, ok := p.(Upgrader)
	if !ok {
		return nil, fmt.Errorf("%s clusters are upgraded by reconciling them (Scale)", ref.Type)
	}
	ctx, unlock, c, next, err := r.running(ctx, ref, change)
	if err != nil {
		return nil, err
	}
	defer unlock()
	g, err := up.UpgradeGraph(next)
	if err != nil {
		return nil, err
	}
	return r.change(ctx, p, c, next, func(j *engine.Journal, o engine.Options) error { return engine.Apply(ctx, g, j, o) })
}

// change records next as the spec of c (the old one pending until the
// change finishes; a change run again after a stop keeps the first), runs
// it, and records its outcome.
func (r *Runner) change(ctx context.Context, p Provider, c *state.Cluster, next spec.Spec, run func(*engine.Journal, engine.Options) error) (*state.Cluster, error) {
	j := engine.NewJournal(r.Store, c)
	if err := j.Update(ctx, func(c *state.Cluster) {
		if !reflect.DeepEqual(c.Spec, next) || len(c.Pending) == 0 {
			c.Pending = append(c.Pending, c.Spec)
			c.Spec = next
		}
		c.Status = state.StatusCreating
	}); err != nil {
		return nil, err
	}
	sess, done := session(p)
	defer done()
	runErr := run(j, r.options(r.Events, sess))
	if err := lockLost(ctx); err != nil {
		return j.Cluster(), err
	}
	return r.finish(ctx, j, runErr, state.StatusRunning)
}

// Scale changes a running cluster's spec with change and reconciles it:
// steps that only the old spec had are destroyed, new ones are made.
func (r *Runner) Scale(ctx context.Context, p Provider, ref spec.Ref, change func(*spec.Spec)) (*state.Cluster, error) {
	ctx, unlock, c, next, err := r.running(ctx, ref, change)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := upgradeUnfinished(p, c); err != nil {
		return nil, err
	}
	olds := append([]spec.Spec{c.Spec}, c.Pending...)
	var oldGraphs []*engine.Graph
	for _, s := range olds {
		g, err := p.Graph(s)
		if err != nil {
			return nil, err
		}
		oldGraphs = append(oldGraphs, g)
	}
	newGraph, err := p.Graph(next)
	if err != nil {
		return nil, err
	}
	return r.change(ctx, p, c, next, func(j *engine.Journal, o engine.Options) error {
		return engine.Reconcile(ctx, engine.Union(oldGraphs...), newGraph, j, o)
	})
}

// DeleteResult says what a delete did.
type DeleteResult struct {
	// StateFound is false when no state existed and resources were looked
	// up by tags and names only.
	StateFound bool
	// Deleted counts the steps that removed something.
	Deleted int
}

// Delete removes every AWS resource of a cluster, then its state. Without
// state it finds the resources by their tags and names. override adjusts
// the stored spec (SSH jump host) before the teardown.
func (r *Runner) Delete(ctx context.Context, p Provider, ref spec.Ref, override func(*spec.Spec)) (DeleteResult, error) {
	var res DeleteResult
	ctx, unlock, err := r.lock(ctx, ref)
	if err != nil {
		return res, err
	}
	defer unlock()
	c, err := r.Store.Get(ctx, ref)
	var store state.Store = r.Store
	switch {
	case errors.Is(err, state.ErrNotFound):
		c = state.New(spec.Spec{Ref: ref}, r.now())
		store = discard{}
	case err != nil:
		var ce *state.CorruptError
		if !errors.As(err, &ce) {
			return res, err
		}
		// Unreadable state: fall back to tags and names, and leave the
		// file for the user to inspect until the teardown succeeds.
		c = state.New(spec.Spec{Ref: ref}, r.now())
		store = discard{}
	default:
		res.StateFound = true
	}
	if override != nil {
		override(&c.Spec)
	}
	g, err := p.Teardown(c.Spec)
	if err != nil {
		return res, err
	}
	j := engine.NewJournal(store, c)
	if err := j.Update(ctx, func(c *state.Cluster) { c.Status, c.Error = state.StatusDeleting, "" }); err != nil {
		return res, err
	}
	count := func(e engine.Event) {
		if e.Kind == engine.EventDone {
			res.Deleted++
		}
		if r.Events != nil {
			r.Events(e)
		}
	}
	sess, done := session(p)
	defer done()
	if err := engine.Destroy(ctx, g, j, r.options(count, sess)); err != nil {
		if lost := lockLost(ctx); lost != nil {
			return res, lost
		}
		_ = j.Update(ctx, func(c *state.Cluster) { c.Error = err.Error() })
		return res, err
	}
	if err := lockLost(ctx); err != nil {
		return res, err
	}
	if err := r.Store.Delete(ctx, ref); err != nil {
		return res, err
	}
	return res, nil
}

// discard is a store that keeps nothing: a delete without state must not
// create any.
type discard struct{ state.Store }

func (discard) Put(context.Context, *state.Cluster) error { return nil }

// Env is what a provider gets to work with.
type Env struct {
	// AWS is the SDK configuration for the cluster's region (empty when
	// planning offline).
	AWS aws.Config
	// Home is KFORGE_HOME.
	Home string
	// Log receives warnings meant for the user (stderr).
	Log io.Writer
}
