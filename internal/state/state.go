// Package state keeps what kforge knows about each cluster: the spec it was
// asked for, its status, the journal of completed lifecycle steps with their
// outputs, and its secrets. A Store persists it atomically and serialises
// the processes that work on one cluster.
package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/kforge/kforge/internal/spec"
)

// SchemaVersion is the version of the state format this build writes.
// Schema 2 added the cloud integration of ha-aws clusters, on by default;
// clusters of schema 1 were made without it (see Upgrade).
const SchemaVersion = 2

// Cluster statuses, as `kforge get` shows them.
const (
	StatusCreating = "creating"
	StatusRunning  = "running"
	StatusFailed   = "failed"
	StatusDeleting = "deleting"
)

// Cluster is the state of one cluster.
type Cluster struct {
	Schema  int                   `json:"schema"`
	Spec    spec.Spec             `json:"spec"`
	Status  string                `json:"status"`
	Created time.Time             `json:"created"`
	Updated time.Time             `json:"updated"`
	Error   string                `json:"error,omitempty"`
	Steps   map[string]StepRecord `json:"steps,omitempty"`
	// Generations counts, per step, how many times its resource was
	// deleted, so that a resource made again gets a new idempotency token
	// instead of the deleted one's.
	Generations map[string]int `json:"generations,omitempty"`
	// Pending holds the specs of scales that have not completed: their
	// steps may still exist and are reconciled away by the next scale.
	Pending []spec.Spec `json:"pending,omitempty"`

	// Secrets (keys, tokens, kubeconfigs) are kept apart from the rest so
	// that backends can store them encrypted and listings never read them.
	Secrets map[string][]byte `json:"-"`
}

// StepRecord is the journal entry of a completed lifecycle step.
type StepRecord struct {
	Out json.RawMessage `json:"out,omitempty"`
	// Inputs fingerprints the settings the step was ensured with.
	Inputs string    `json:"inputs,omitempty"`
	Done   time.Time `json:"done"`
}

// Upgrade brings the state of an older schema to this one, after it was
// read: an ha-aws cluster of schema 1 has no cloud integration, and must
// keep its node names and kubelet settings.
func (c *Cluster) Upgrade() {
	if c.Schema < 2 && c.Spec.Type == spec.TypeHA {
		c.Spec.NoCloudIntegration = true
		for i := range c.Pending {
			c.Pending[i].NoCloudIntegration = true
		}
	}
	if c.Schema < SchemaVersion {
		c.Schema = SchemaVersion
	}
}

// Ref returns the identity of the cluster.
func (c *Cluster) Ref() spec.Ref { return c.Spec.Ref }

// New returns the state of a cluster about to be created.
func New(s spec.Spec, now time.Time) *Cluster {
	return &Cluster{Schema: SchemaVersion, Spec: s, Status: StatusCreating, Created: now.UTC(), Updated: now.UTC(),
		Steps: map[string]StepRecord{}, Secrets: map[string][]byte{}}
}

// Clone returns a deep copy, so a snapshot can be written while steps go on.
func (c *Cluster) Clone() *Cluster {
	d := *c
	d.Spec.SubnetIDs = append([]string(nil), c.Spec.SubnetIDs...)
	d.Pending = append([]spec.Spec(nil), c.Pending...)
	d.Steps = make(map[string]StepRecord, len(c.Steps))
	for k, v := range c.Steps {
		d.Steps[k] = v
	}
	d.Generations = make(map[string]int, len(c.Generations))
	for k, v := range c.Generations {
		d.Generations[k] = v
	}
	d.Secrets = make(map[string][]byte, len(c.Secrets))
	for k, v := range c.Secrets {
		d.Secrets[k] = v
	}
	return &d
}

// Holder says who holds a cluster's lock.
type Holder struct {
	PID     int       `json:"pid"`
	Host    string    `json:"host"`
	User    string    `json:"user,omitempty"`
	Command string    `json:"command,omitempty"`
	Since   time.Time `json:"since"`
}

// String renders the holder for an "in use" message.
func (h Holder) String() string {
	s := fmt.Sprintf("pid %d on %s", h.PID, h.Host)
	if h.User != "" {
		s += " (user " + h.User + ")"
	}
	if h.Command != "" {
		s += fmt.Sprintf(", running %q", h.Command)
	}
	if !h.Since.IsZero() {
		s += " since " + h.Since.UTC().Format(time.RFC3339)
	}
	return s
}

// CurrentHolder describes this process, for taking a lock.
func CurrentHolder(command string) Holder {
	host, _ := os.Hostname()
	return Holder{PID: os.Getpid(), Host: host, User: os.Getenv("USER"), Command: command, Since: time.Now().UTC()}
}

// ErrNotFound is returned when a store holds no state for a cluster.
var ErrNotFound = errors.New("no state for this cluster")

// InUseError is returned by Lock when another process works on the cluster.
type InUseError struct {
	Ref    spec.Ref
	Holder Holder
}

func (e *InUseError) Error() string {
	return fmt.Sprintf("%s is in use by another kforge process (%s); wait for it to finish, or if it is gone, retry", e.Ref, e.Holder)
}

// CorruptError is returned when stored state cannot be read.
type CorruptError struct {
	Where string
	Err   error
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("the state at %s is corrupt (%v); move it aside and run `kforge delete` to find the cluster's resources by their tags", e.Where, e.Err)
}

func (e *CorruptError) Unwrap() error { return e.Err }

// Lock is a held cluster lock.
type Lock interface {
	// Unlock releases the lock. It is safe to call more than once.
	Unlock() error
}

// Store persists cluster state. Implementations write atomically: a reader
// sees the old state or the new one, never a mix.
type Store interface {
	// Get returns a cluster's state with its secrets, or ErrNotFound.
	Get(ctx context.Context, ref spec.Ref) (*Cluster, error)
	// Put writes a cluster's state and secrets.
	Put(ctx context.Context, c *Cluster) error
	// Delete removes a cluster's state and secrets; absent state is no error.
	Delete(ctx context.Context, ref spec.Ref) error
	// List returns every cluster's state without secrets.
	List(ctx context.Context) ([]*Cluster, error)
	// Lock takes the cluster's lock or fails at once with *InUseError.
	Lock(ctx context.Context, ref spec.Ref, h Holder) (Lock, error)
	// Location names where the store keeps its data, for messages.
	Location() string
}
