package cli

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/kforge/kforge/internal/awsx"
	"github.com/kforge/kforge/internal/engine"
)

// progress renders engine events as lines on stderr, and every
// tickEvery reminds which slow steps are still running and for how long.
type progress struct {
	mu      sync.Mutex
	w       io.Writer
	start   time.Time
	running map[string]*runningStep
	stop    chan struct{}
	once    sync.Once
}

type runningStep struct {
	title   string
	msg     string
	started time.Time
}

const tickEvery = 30 * time.Second

func newProgress(w io.Writer) *progress {
	p := &progress{w: w, start: time.Now(), running: map[string]*runningStep{}, stop: make(chan struct{})}
	go p.tick()
	return p
}

func (p *progress) close() { p.once.Do(func() { close(p.stop) }) }

func (p *progress) tick() {
	t := time.NewTicker(tickEvery)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			p.mu.Lock()
			ids := make([]string, 0, len(p.running))
			for id, r := range p.running {
				if time.Since(r.started) >= tickEvery/2 {
					ids = append(ids, id)
				}
			}
			sort.Strings(ids)
			p.tickLine(ids)
			p.mu.Unlock()
		}
	}
}

// tickLine reports the steps that have run for a while: the step with
// what it waits for, or, when several run, one line for all of them (a
// line per step would bury the rest of the progress). p.mu must be held.
func (p *progress) tickLine(ids []string) {
	switch len(ids) {
	case 0:
		return
	case 1:
		r := p.running[ids[0]]
		what := r.msg
		if what == "" {
			what = r.title
		}
		p.line("waiting", ids[0], fmt.Sprintf("%s (%s so far)", what, round(time.Since(r.started))))
		return
	}
	longest := time.Duration(0)
	for _, id := range ids {
		longest = max(longest, time.Since(p.running[id].started))
	}
	shown := ids
	more := ""
	if len(shown) > 6 {
		more = fmt.Sprintf(" and %d more", len(shown)-6)
		shown = shown[:6]
	}
	p.line("waiting", fmt.Sprintf("%d steps", len(ids)), fmt.Sprintf("%s%s still running (the longest for %s)", strings.Join(shown, ", "), more, round(longest)))
}

func round(d time.Duration) time.Duration {
	switch {
	case d > time.Minute:
		return d.Round(time.Second)
	case d > time.Second:
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Millisecond)
}

// line writes one progress line; p.mu must be held.
func (p *progress) line(kind, step, text string) {
	fmt.Fprintf(p.w, "[%7s] %-8s %s  %s\n", round(time.Since(p.start)), kind, step, text)
}

func (p *progress) event(e engine.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch e.Kind {
	case engine.EventStarted:
		p.running[e.Step] = &runningStep{title: e.Title, started: time.Now()}
		verb := "start"
		if e.Deleting {
			verb = "delete"
		}
		p.line(verb, e.Step, e.Title)
	case engine.EventWaiting:
		if r := p.running[e.Step]; r != nil {
			if r.msg == e.Msg {
				return
			}
			r.msg = e.Msg
		}
		p.line("waiting", e.Step, fmt.Sprintf("%s (%s)", e.Msg, round(e.Elapsed)))
	case engine.EventDone:
		delete(p.running, e.Step)
		verb := "done"
		if e.Deleting {
			verb = "deleted"
		}
		p.line(verb, e.Step, fmt.Sprintf("(%s)", round(e.Elapsed)))
	case engine.EventSkipped:
		delete(p.running, e.Step)
		if e.Deleting {
			p.line("absent", e.Step, "nothing to delete")
		}
	case engine.EventDrift:
		p.line("drift", e.Step, e.Msg)
	case engine.EventFailed:
		delete(p.running, e.Step)
		p.line("FAILED", e.Step, fmt.Sprintf("%v (%s)", e.Err, round(e.Elapsed)))
	}
}

// retryNotice reports AWS retries (throttling, server errors) as progress.
func (p *progress) retryNotice() awsx.RetryNotice {
	return func(service, op string, attempt int, err error) {
		p.mu.Lock()
		defer p.mu.Unlock()
		code := awsx.Code(err)
		if code == "" {
			code = "transient error"
		}
		p.line("retry", service+":"+op, fmt.Sprintf("AWS answered %s; retrying with backoff (attempt %d)", code, attempt+1))
	}
}
