package s3store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/kforge/kforge/internal/spec"
	"github.com/kforge/kforge/internal/state"
)

// LockHolder is the content of a cluster's lock object.
type LockHolder struct {
	// ID identifies this taking of the lock.
	ID string `json:"id"`
	// Owner is the user who runs the holding kforge.
	Owner   string    `json:"owner,omitempty"`
	Host    string    `json:"host"`
	PID     int       `json:"pid"`
	Command string    `json:"command,omitempty"`
	Since   time.Time `json:"since"`
	// Expires is the end of the lease; the holder pushes it forward while
	// it works, and after it anyone may take the lock over.
	Expires time.Time `json:"expires"`
}

func (h LockHolder) stateHolder() state.Holder {
	return state.Holder{PID: h.PID, Host: h.Host, User: h.Owner, Command: h.Command, Since: h.Since}
}

// LockedError is returned by Lock when another kforge holds a live lease
// on the cluster. It unwraps to *state.InUseError.
type LockedError struct {
	state.InUseError
	// Expires is when the holder's lease ends unless it renews it.
	Expires time.Time
}

// Error names the holder, its lease, and how to break the lock.
func (e *LockedError) Error() string {
	return fmt.Sprintf("%s is in use by another kforge process (%s); wait for it to finish. If that process is gone, its lock is taken over once its lease expires (%s), or break it now with `kforge state unlock %s`",
		e.Ref, e.Holder, e.Expires.UTC().Format(time.RFC3339), e.Ref.Args())
}

// Unwrap returns the store-independent *state.InUseError.
func (e *LockedError) Unwrap() error { return &e.InUseError }

// ErrNotLocked is returned by ReadLock when nobody holds the cluster's lock.
var ErrNotLocked = errors.New("the cluster is not locked")

// Lock implements state.Store: it creates the cluster's lock object with
// If-None-Match: *, or takes over one whose lease has expired with
// If-Match on its ETag, and renews the lease until Unlock. The returned
// lock has a Lost method whose channel is closed if the lease is lost.
func (s *Store) Lock(ctx context.Context, ref spec.Ref, h state.Holder) (state.Lock, error) {
	key := s.key(ref, lockObject)
	var id [8]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, err
	}
	// Each round either takes the lock or sees it change hands; three
	// rounds without either mean a contention worth reporting.
	for range 3 {
		now := s.opts.Now().UTC()
		lh := LockHolder{ID: hex.EncodeToString(id[:]), Owner: h.User, Host: h.Host, PID: h.PID, Command: h.Command, Since: now, Expires: now.Add(s.opts.Lease)}
		body, err := json.Marshal(lh)
		if err != nil {
			return nil, err
		}
		tag, err := s.putObject(ctx, key, body, "", nil)
		if err == nil {
			return s.hold(ref, key, tag, lh), nil
		}
		if !errors.Is(err, errPrecondition) {
			return nil, fmt.Errorf("take the lock on %s: %w", ref, err)
		}
		cur, err := s.ReadLock(ctx, ref)
		if errors.Is(err, ErrNotLocked) {
			continue // released meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("take the lock on %s: %w", ref, err)
		}
		if now.Before(cur.Holder.Expires) {
			return nil, &LockedError{InUseError: state.InUseError{Ref: ref, Holder: cur.Holder.stateHolder()}, Expires: cur.Holder.Expires}
		}
		tag, err = s.putObject(ctx, key, body, cur.ETag, nil)
		if errors.Is(err, errPrecondition) {
			continue // renewed, released or taken over meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("take over the lock on %s: %w", ref, err)
		}
		if s.opts.Log != nil {
			fmt.Fprintf(s.opts.Log, "Took over the lock on %s from %s: its lease expired at %s.\n", ref, cur.Holder.stateHolder(), cur.Holder.Expires.UTC().Format(time.RFC3339))
		}
		return s.hold(ref, key, tag, lh), nil
	}
	return nil, fmt.Errorf("take the lock on %s: it changed hands repeatedly while kforge tried; run the command again", ref)
}

// LockInfo is a cluster's lock as stored.
type LockInfo struct {
	Holder LockHolder
	// ETag identifies this version of the lock object.
	ETag string
}

// ReadLock returns the cluster's lock, or ErrNotLocked. A lock object that
// cannot be decoded has a zero holder, whose lease has expired.
func (s *Store) ReadLock(ctx context.Context, ref spec.Ref) (LockInfo, error) {
	o, err := s.getObject(ctx, s.key(ref, lockObject))
	if errors.Is(err, errAbsent) {
		return LockInfo{}, ErrNotLocked
	}
	if err != nil {
		return LockInfo{}, err
	}
	info := LockInfo{ETag: o.tag}
	_ = json.Unmarshal(o.body, &info.Holder)
	return info, nil
}

// BreakLock removes the cluster's lock as ReadLock returned it. If the
// lock changed since (renewed, released, taken by another), it is left
// alone and a *ConflictError says so. Its holder, if alive, finds out at
// its next renewal and stops writing.
func (s *Store) BreakLock(ctx context.Context, ref spec.Ref, info LockInfo) error {
	key := s.key(ref, lockObject)
	err := s.deleteObject(ctx, key, info.ETag)
	if errors.Is(err, errPrecondition) {
		return &ConflictError{Ref: ref, Object: key}
	}
	return err
}

// hold records a taken lock and starts renewing its lease.
func (s *Store) hold(ref spec.Ref, key, tag string, h LockHolder) *Lease {
	l := &Lease{s: s, ref: ref, key: key, holder: h, tag: tag, expires: h.Expires,
		lost: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	rs := s.ref(ref)
	rs.mu.Lock()
	rs.lease = l
	rs.mu.Unlock()
	go l.run()
	return l
}

// Lease is a held cluster lock whose lease is renewed in the background.
type Lease struct {
	s      *Store
	ref    spec.Ref
	key    string
	holder LockHolder

	mu      sync.Mutex
	tag     string
	expires time.Time

	lost     chan struct{}
	lostOnce sync.Once
	stop     chan struct{}
	done     chan struct{}
	unlock   sync.Once
}

// Lost returns a channel that is closed when the lock is lost: another
// kforge took it over after the lease expired, or it was broken. The
// operation that holds it must stop; the store refuses its writes.
func (l *Lease) Lost() <-chan struct{} { return l.lost }

func (l *Lease) markLost() { l.lostOnce.Do(func() { close(l.lost) }) }

// isLost reports whether the lock is lost, counting a lease that ran out
// without renewal (the network failed) as lost.
func (l *Lease) isLost() bool {
	select {
	case <-l.lost:
		return true
	default:
	}
	l.mu.Lock()
	exp := l.expires
	l.mu.Unlock()
	if l.s.opts.Now().After(exp) {
		l.markLost()
		return true
	}
	return false
}

// run renews the lease every Renew until Unlock or until it is lost.
func (l *Lease) run() {
	defer close(l.done)
	t := time.NewTicker(l.s.opts.Renew)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		if !l.renew() {
			return
		}
	}
}

// renew pushes the lease forward with If-Match on the lock's ETag. It
// returns false once the lock is lost. A failed call (network) is tried
// again at the next tick, until the lease runs out.
func (l *Lease) renew() bool {
	ctx, cancel := context.WithTimeout(context.Background(), l.s.opts.Renew)
	defer cancel()
	h := l.holder
	h.Expires = l.s.opts.Now().UTC().Add(l.s.opts.Lease)
	body, err := json.Marshal(h)
	if err != nil {
		return true
	}
	l.mu.Lock()
	tag := l.tag
	l.mu.Unlock()
	newTag, err := l.s.putObject(ctx, l.key, body, tag, nil)
	switch {
	case err == nil:
		l.mu.Lock()
		l.tag, l.expires = newTag, h.Expires
		l.mu.Unlock()
		return true
	case errors.Is(err, errPrecondition):
		l.markLost()
		return false
	default:
		return !l.isLost()
	}
}

// Unlock implements state.Lock: it stops the renewal and deletes the lock
// object with If-Match on its ETag, so a lock that another kforge took
// over is left to it. It is safe to call more than once.
func (l *Lease) Unlock() error {
	var err error
	l.unlock.Do(func() {
		close(l.stop)
		<-l.done
		rs := l.s.ref(l.ref)
		rs.mu.Lock()
		if rs.lease == l {
			rs.lease = nil
		}
		rs.mu.Unlock()
		if l.isLost() {
			return
		}
		l.mu.Lock()
		tag := l.tag
		l.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), l.s.opts.Lease)
		defer cancel()
		if e := l.s.deleteObject(ctx, l.key, tag); e != nil && !errors.Is(e, errPrecondition) {
			err = fmt.Errorf("release the lock on %s: %w", l.ref, e)
		}
	})
	return err
}
