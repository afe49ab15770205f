// Package faultproxy is an HTTP proxy on 127.0.0.1 between kforge and the
// AWS emulator that breaks things on purpose, so tests can prove that
// kforge survives what AWS and networks do to it.
//
// It names each request's AWS call (service from the SigV4 scope; action
// from Action= of the query protocols, X-Amz-Target of the JSON protocols,
// or the REST route for EKS and S3), tells mutating calls from reads
// (Describe*, List*, Get*, ...), records and counts them, and applies
// rules: a delay per call, throttling with each service's real throttling
// error, 5xx answers, any other error answer, and dropping the answer of a
// call after forwarding it (the connection is reset: AWS did the work, the
// client never hears of it). Hooks run right after the answer of the Nth
// matching call has been delivered; SignalAfter uses one to SIGKILL or
// SIGINT a kforge process at an exact point of its work. It can also
// enforce EC2's documented request-rate model (RateModel, Proxy.Limit).
//
// Error answers are sent a few milliseconds late: the Go SDK occasionally
// reports "use of closed network connection" instead of an error answered
// at once.
package faultproxy

import (
	"bytes"
	"context"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Fault is what a rule does to a call.
type Fault int

// Faults.
const (
	// Delay waits Rule.Delay before forwarding the call.
	Delay Fault = iota + 1
	// Throttle answers the service's throttling error without forwarding.
	Throttle
	// ServerFault answers an HTTP 500 in the service's shape without
	// forwarding.
	ServerFault
	// Respond answers Rule.Error without forwarding.
	Respond
	// Drop forwards the call, reads the emulator's whole answer, then
	// resets the client's connection instead of answering.
	Drop
	// Limited is not a rule's fault: it records a call that the EC2 rate
	// model (Proxy.Limit) refused with RequestLimitExceeded.
	Limited
)

var faultNames = map[Fault]string{Delay: "delay", Throttle: "throttle", ServerFault: "5xx", Respond: "error", Drop: "drop", Limited: "rate-limit"}

// String names the fault for logs.
func (f Fault) String() string { return faultNames[f] }

// Rule applies a fault to the calls it matches.
type Rule struct {
	// Match selects calls; nil matches every call.
	Match func(Call) bool
	Fault Fault
	// Rate is the fraction of matching calls faulted; 0 means all.
	Rate float64
	// Skip lets the first Skip matching calls through untouched.
	Skip int
	// Times bounds how many calls are faulted; 0 means no bound.
	Times int
	// Delay is the wait of a Delay rule.
	Delay time.Duration
	// Error is the answer of a Respond rule.
	Error APIError
}

type ruleState struct {
	Rule
	seen, applied int
}

type hook struct {
	match func(Call) bool
	n     int
	seen  int
	fn    func(Call)
}

// Record is a call the proxy handled and what it did to it.
type Record struct {
	Call
	// Fault is what was done to the call (0: forwarded as it was; Delay
	// is not recorded).
	Fault Fault
	// Forwarded is true when the emulator carried the call out.
	Forwarded bool
	At        time.Time
}

// Proxy is a running fault proxy.
type Proxy struct {
	// URL is the proxy's endpoint (http://127.0.0.1:port), what kforge's
	// AWS_ENDPOINT_URL must be.
	URL string

	target *url.URL
	ln     net.Listener
	srv    *http.Server
	tr     *http.Transport

	mu      sync.Mutex
	rules   []*ruleState
	hooks   []*hook
	records []Record
	rng     *rand.Rand
	limiter *Limiter

	// inFlight counts the calls being handled; peak is its high mark
	// since the last Clear.
	inFlight, peak int
}

// errorLatency is how late error answers are sent (see the package doc).
const errorLatency = 5 * time.Millisecond

// Start runs a proxy in front of target (the emulator's URL) until the
// test ends.
func Start(t testing.TB, target string) *Proxy {
	t.Helper()
	p, err := New(target)
	if err != nil {
		t.Fatalf("start fault proxy: %v", err)
	}
	t.Cleanup(p.Close)
	return p
}

// New runs a proxy in front of target; the caller closes it.
func New(target string) (*Proxy, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{
		URL:    "http://" + ln.Addr().String(),
		target: u,
		ln:     ln,
		tr:     &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true, ResponseHeaderTimeout: 5 * time.Minute},
		rng:    rand.New(rand.NewPCG(1, 2)),
	}
	p.srv = &http.Server{Handler: p, ErrorLog: log.New(io.Discard, "", 0), ReadHeaderTimeout: time.Minute}
	go func() { _ = p.srv.Serve(ln) }()
	return p, nil
}

// Close stops the proxy.
func (p *Proxy) Close() {
	_ = p.srv.Close()
	p.tr.CloseIdleConnections()
}

// Seed makes the choice of faulted calls (Rule.Rate) repeatable.
func (p *Proxy) Seed(a, b uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rng = rand.New(rand.NewPCG(a, b))
}

// Add adds rules; each call is checked against every rule in order. All
// matching Delay rules apply; the first other fault that applies wins.
func (p *Proxy) Add(rules ...Rule) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range rules {
		p.rules = append(p.rules, &ruleState{Rule: r})
	}
}

// Clear removes every rule and hook, and forgets the recorded calls.
func (p *Proxy) Clear() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules, p.hooks, p.records = nil, nil, nil
	p.peak = p.inFlight
}

// ClearRules removes every rule and hook; the recorded calls stay.
func (p *Proxy) ClearRules() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules, p.hooks = nil, nil
}

// After runs fn once, right after the emulator carried out the nth call
// (counted from now) that match selects and its answer was delivered to
// the client (or dropped, for a Drop rule). The call's handling waits for
// fn.
func (p *Proxy) After(match func(Call) bool, n int, fn func(Call)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hooks = append(p.hooks, &hook{match: match, n: n, fn: fn})
}

// SignalAfter sends sig to the process pid returns (0 until it has
// started: the hook waits for it) right after the nth matching call was
// carried out and answered.
func (p *Proxy) SignalAfter(match func(Call) bool, n int, sig syscall.Signal, pid func() int) {
	p.After(match, n, func(Call) {
		deadline := time.Now().Add(10 * time.Second)
		for pid() == 0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if id := pid(); id > 0 {
			_ = syscall.Kill(id, sig)
		}
	})
}

// PeakInFlight returns the most calls the proxy handled at once since it
// started or was last cleared: a measure of concurrency that does not
// depend on timing.
func (p *Proxy) PeakInFlight() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.peak
}

// Settle waits, up to timeout, until no call is in flight, and reports
// whether none is. A call forwarded for a client that has died goes on to
// the emulator's answer (as AWS completes what it received): a test that
// kills kforge settles the proxy before it runs the next command, so that
// the command sees what the killed one's last calls made, as a user's
// next command, seconds later, would on AWS.
func (p *Proxy) Settle(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		p.mu.Lock()
		n := p.inFlight
		p.mu.Unlock()
		if n == 0 {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Records returns every call handled since the start or the last Clear.
func (p *Proxy) Records() []Record {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Record(nil), p.records...)
}

// Count returns how many calls selected by match the emulator carried
// out.
func (p *Proxy) Count(match func(Call) bool) int {
	n := 0
	for _, r := range p.Records() {
		if r.Forwarded && (match == nil || match(r.Call)) {
			n++
		}
	}
	return n
}

// Faulted returns how many calls selected by match got fault f.
func (p *Proxy) Faulted(f Fault, match func(Call) bool) int {
	n := 0
	for _, r := range p.Records() {
		if r.Fault == f && (match == nil || match(r.Call)) {
			n++
		}
	}
	return n
}

// Mutating selects calls that may change something.
func Mutating(c Call) bool { return c.Mutating }

// Actions selects calls of the named operations, of any service.
func Actions(names ...string) func(Call) bool {
	return func(c Call) bool {
		for _, n := range names {
			if c.Action == n {
				return true
			}
		}
		return false
	}
}

// Service selects the calls of one service (its signing name).
func Service(name string) func(Call) bool {
	return func(c Call) bool { return c.Service == name }
}

// decide applies the rules to a call: the total delay and the fault that
// ends it (0: forward).
func (p *Proxy) decide(c Call) (time.Duration, *ruleState) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var delay time.Duration
	var fault *ruleState
	for _, r := range p.rules {
		if r.Match != nil && !r.Match(c) {
			continue
		}
		if r.Fault != Delay && fault != nil {
			continue
		}
		r.seen++
		if r.seen <= r.Skip || (r.Times > 0 && r.applied >= r.Times) || (r.Rate > 0 && p.rng.Float64() >= r.Rate) {
			continue
		}
		r.applied++
		if r.Fault == Delay {
			delay += r.Delay
			continue
		}
		fault = r
	}
	return delay, fault
}

func (p *Proxy) record(c Call, f Fault, forwarded bool) []func() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.records = append(p.records, Record{Call: c, Fault: f, Forwarded: forwarded, At: time.Now()})
	if !forwarded {
		return nil
	}
	var fire []func()
	for _, h := range p.hooks {
		if h.seen >= h.n || (h.match != nil && !h.match(c)) {
			continue
		}
		h.seen++
		if h.seen == h.n {
			fn := h.fn
			fire = append(fire, func() { fn(c) })
		}
	}
	return fire
}

func sleep(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// hopHeaders are not forwarded.
var hopHeaders = map[string]bool{"Connection": true, "Keep-Alive": true, "Proxy-Connection": true, "Transfer-Encoding": true, "Te": true, "Trailer": true, "Upgrade": true}

// ServeHTTP implements http.Handler.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	p.inFlight++
	p.peak = max(p.peak, p.inFlight)
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.inFlight--
		p.mu.Unlock()
	}()
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	if strings.HasPrefix(r.URL.Path, "/moto-api/") {
		p.forward(w, r, body, Call{Method: r.Method, Path: r.URL.Path}, 0)
		return
	}
	c := identify(r, body)
	delay, rule := p.decide(c)
	sleep(r.Context(), delay)
	if (rule == nil || rule.Fault == Drop) && !p.admit(c) {
		rule = &ruleState{Rule: Rule{Fault: Limited}}
	}
	if rule != nil {
		switch rule.Fault {
		case Throttle, ServerFault, Respond, Limited:
			e := rule.Error
			if rule.Fault == Throttle || rule.Fault == Limited {
				e = Throttled(c, r)
			} else if rule.Fault == ServerFault {
				e = ServerError(c, r)
			}
			sleep(r.Context(), errorLatency)
			// Recorded before the answer, so a client that has its answer
			// finds the call in Records.
			p.record(c, rule.Fault, false)
			e.write(w, c, r)
			return
		case Drop:
			p.forward(w, r, body, c, Drop)
			return
		}
	}
	p.forward(w, r, body, c, 0)
}

// forward sends the request to the emulator and relays (or, for Drop,
// resets instead of relaying) its answer, then runs the hooks the call
// completes.
func (p *Proxy) forward(w http.ResponseWriter, r *http.Request, body []byte, c Call, f Fault) {
	u := *p.target
	u.Path = r.URL.Path
	u.RawPath = r.URL.RawPath
	u.RawQuery = r.URL.RawQuery
	// The call goes on even if the client goes away: AWS does not notice
	// a client that dies after sending.
	out, err := http.NewRequestWithContext(context.WithoutCancel(r.Context()), r.Method, u.String(), bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	for k, vs := range r.Header {
		if !hopHeaders[k] {
			out.Header[k] = vs
		}
	}
	out.Host = r.Host // signed by SigV4
	out.ContentLength = int64(len(body))
	resp, err := p.tr.RoundTrip(out)
	if err != nil {
		http.Error(w, "fault proxy: "+err.Error(), http.StatusBadGateway)
		return
	}
	respBody, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		http.Error(w, "fault proxy: "+err.Error(), http.StatusBadGateway)
		return
	}
	if c.Action == "" { // emulator control, not an AWS call
		copyResponse(w, resp, respBody)
		return
	}
	// Recorded before the answer (a client that has its answer finds the
	// call in Records); the hooks run after it is delivered.
	fire := p.record(c, f, true)
	if f == Drop {
		reset(w)
	} else {
		copyResponse(w, resp, respBody)
		if fl, ok := w.(http.Flusher); ok {
			fl.Flush()
		}
	}
	for _, fn := range fire {
		fn()
	}
}

func copyResponse(w http.ResponseWriter, resp *http.Response, body []byte) {
	for k, vs := range resp.Header {
		if !hopHeaders[k] {
			w.Header()[k] = vs
		}
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(body)
}

// reset closes the client's connection with a TCP reset, answering
// nothing.
func reset(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		return
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		return
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}
