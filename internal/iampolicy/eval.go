package iampolicy

import (
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// This file evaluates identity-based policies locally, for accounts where
// iam:SimulatePrincipalPolicy is unavailable. It follows AWS's evaluation
// logic for one principal's identity policies: an explicit Deny wins, then
// an Allow is needed, and a permissions boundary, if any, must allow too.
// Action, NotAction, Resource and NotResource take the wildcards * and ?
// (actions case-insensitively); ${aws:username} and the escapes ${*},
// ${?}, ${$} are substituted in resources and condition values.
//
// Conditions: StringEquals, StringNotEquals, StringEqualsIgnoreCase,
// StringNotEqualsIgnoreCase, StringLike, StringNotLike, ArnEquals,
// ArnLike, ArnNotEquals, ArnNotLike, Bool and Null, with IfExists and
// ForAnyValue:/ForAllValues:, on the keys whose value kforge knows for its
// calls (aws:RequestedRegion, iam:PassedToService, iam:AWSServiceName,
// ec2:CreateAction). A condition it cannot decide (another key or
// operator) is treated conservatively: an Allow under it does not count,
// a Deny under it does, and the decision names the condition as
// uncertain. Not seen locally, and so not evaluated: service control
// policies, session policies and resource-based policies.

// NamedPolicy is a policy document with where it came from ("user policy
// admin of alice", "managed policy arn:...").
type NamedPolicy struct {
	Name     string
	Document string
}

type statement struct {
	effect                         string
	actions, resources             []string
	notAction, notResource, anyRes bool
	conditions                     []condition
}

type condition struct {
	op     string // as written, for messages
	base   string // operator without set prefix and IfExists, lower case
	set    string // "", "foranyvalue", "forallvalues"
	ifEx   bool
	key    string // lower case
	values []string
}

type policy struct {
	name  string
	stmts []statement
}

// Evaluator decides requests against one principal's identity policies.
type Evaluator struct {
	policies []policy
	boundary *policy
	vars     map[string]string
}

// NewEvaluator parses the principal's policies and its permissions
// boundary (nil if none). vars are policy variables without ${}, such as
// "aws:username". Documents may be URL-encoded, as the IAM API returns
// them.
func NewEvaluator(policies []NamedPolicy, boundary *NamedPolicy, vars map[string]string) (*Evaluator, error) {
	e := &Evaluator{vars: map[string]string{}}
	for k, v := range vars {
		e.vars[strings.ToLower(k)] = v
	}
	for _, p := range policies {
		pp, err := parsePolicy(p)
		if err != nil {
			return nil, err
		}
		e.policies = append(e.policies, pp)
	}
	if boundary != nil {
		pp, err := parsePolicy(*boundary)
		if err != nil {
			return nil, err
		}
		e.boundary = &pp
	}
	return e, nil
}

// Decision is the outcome of a request.
type Decision struct {
	Allowed bool `json:"allowed"`
	// Reason says which policy allowed or denied it, or that none
	// allowed it.
	Reason string `json:"reason"`
	// Uncertain names conditions the evaluator could not decide, which
	// made it deny conservatively (or that might have allowed it).
	Uncertain []string `json:"uncertain,omitempty"`
}

// Decide evaluates one request.
func (e *Evaluator) Decide(r Request) Decision {
	d := decide(e.policies, r, e.vars)
	if !d.Allowed || e.boundary == nil {
		return d
	}
	b := decide([]policy{*e.boundary}, r, e.vars)
	if !b.Allowed {
		b.Reason = "the permissions boundary does not allow it: " + b.Reason
		return b
	}
	return d
}

func decide(policies []policy, r Request, vars map[string]string) Decision {
	var allowedBy string
	var uncertainDeny, uncertainAllow []string
	for _, p := range policies {
		for i, s := range p.stmts {
			if !s.matchesAction(r.Action) || !s.matchesResource(r.Resource, vars) {
				continue
			}
			ok, unsure := s.conditionsHold(r, vars)
			where := fmt.Sprintf("%s (statement %d)", p.name, i+1)
			switch {
			case s.effect == "deny" && ok:
				return Decision{Allowed: false, Reason: "explicitly denied by " + where}
			case s.effect == "deny" && unsure != "":
				uncertainDeny = append(uncertainDeny, where+": "+unsure)
			case s.effect == "allow" && ok:
				if allowedBy == "" {
					allowedBy = where
				}
			case s.effect == "allow" && unsure != "":
				uncertainAllow = append(uncertainAllow, where+": "+unsure)
			}
		}
	}
	switch {
	case len(uncertainDeny) > 0:
		return Decision{Reason: "a Deny may apply under a condition kforge cannot evaluate locally", Uncertain: uncertainDeny}
	case allowedBy != "":
		return Decision{Allowed: true, Reason: "allowed by " + allowedBy}
	case len(uncertainAllow) > 0:
		return Decision{Reason: "allowed only under a condition kforge cannot evaluate locally", Uncertain: uncertainAllow}
	}
	return Decision{Reason: "no policy allows it"}
}

func (s statement) matchesAction(action string) bool {
	m := false
	for _, a := range s.actions {
		if glob(strings.ToLower(a), strings.ToLower(action)) {
			m = true
			break
		}
	}
	return m != s.notAction
}

func (s statement) matchesResource(resource string, vars map[string]string) bool {
	if s.anyRes {
		return true
	}
	m := false
	for _, pat := range s.resources {
		p, ok := substitute(pat, vars)
		if !ok {
			// An unresolvable variable matches nothing; for NotResource
			// that means the statement applies.
			continue
		}
		if glob(p, resource) {
			m = true
			break
		}
	}
	return m != s.notResource
}

// conditionsHold reports whether every condition holds (ok), or, when it
// cannot tell, which one it could not decide (unsure).
func (s statement) conditionsHold(r Request, vars map[string]string) (ok bool, unsure string) {
	ctx := map[string][]string{}
	for k, v := range r.Context {
		ctx[strings.ToLower(k)] = v
	}
	known := map[string]bool{}
	for _, k := range knownKeys() {
		known[k] = true
	}
	for _, c := range s.conditions {
		vals, present := ctx[c.key]
		if !present && !known[c.key] {
			return false, fmt.Sprintf("%s on %s", c.op, c.key)
		}
		res, decided := c.eval(vals, present, vars)
		if !decided {
			return false, fmt.Sprintf("%s on %s", c.op, c.key)
		}
		if !res {
			return false, ""
		}
	}
	return true, ""
}

// eval decides one condition for the request's values of its key.
func (c condition) eval(vals []string, present bool, vars map[string]string) (result, decided bool) {
	if c.base == "null" {
		want := len(c.values) > 0 && strings.EqualFold(c.values[0], "true")
		return !present == want, true
	}
	negated := strings.Contains(c.base, "not")
	if !present {
		if c.ifEx || c.set == "forallvalues" {
			return true, true
		}
		// AWS: a missing key fails a positive operator and satisfies a
		// negated one.
		return negated, true
	}
	match, ok := matcher(strings.Replace(c.base, "not", "", 1))
	if !ok {
		return false, false
	}
	var want []string
	for _, v := range c.values {
		s, ok := substitute(v, vars)
		if !ok {
			return false, false
		}
		want = append(want, s)
	}
	one := func(v string) bool {
		for _, w := range want {
			if match(w, v) {
				return true
			}
		}
		return false
	}
	switch c.set {
	case "forallvalues":
		for _, v := range vals {
			if one(v) == negated {
				return false, true
			}
		}
		return true, true
	default: // single-valued keys and ForAnyValue
		matched := false
		for _, v := range vals {
			if one(v) {
				matched = true
				break
			}
		}
		return matched != negated, true
	}
}

// matcher returns how a positive operator compares a policy value w with a
// request value v.
func matcher(op string) (func(w, v string) bool, bool) {
	switch op {
	case "stringequals", "arnequals":
		return func(w, v string) bool { return w == v }, true
	case "stringequalsignorecase":
		return strings.EqualFold, true
	case "stringlike", "arnlike":
		return glob, true
	case "bool":
		return strings.EqualFold, true
	}
	return nil, false
}

// glob matches s against a pattern with * (any run) and ? (one character).
func glob(pattern, s string) bool {
	var b strings.Builder
	b.WriteString("^")
	for _, r := range pattern {
		switch r {
		case '*':
			b.WriteString(".*")
		case '?':
			b.WriteString(".")
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	b.WriteString("$")
	re, err := regexp.Compile(b.String())
	return err == nil && re.MatchString(s)
}

var varRE = regexp.MustCompile(`\$\{([^}]*)\}`)

// substitute replaces policy variables; ok is false when one is unknown.
func substitute(s string, vars map[string]string) (string, bool) {
	ok := true
	out := varRE.ReplaceAllStringFunc(s, func(m string) string {
		name := strings.ToLower(m[2 : len(m)-1])
		switch name {
		case "*", "?", "$":
			// Escapes of literal characters; * and ? then stay wildcards,
			// which is close enough for the policies kforge reads.
			return name
		}
		if v, found := vars[name]; found {
			return v
		}
		ok = false
		return m
	})
	return out, ok
}

// parsePolicy reads a policy document: JSON, possibly URL-encoded, whose
// Statement is one object or a list, and whose Action, Resource and
// condition values are a string or a list.
func parsePolicy(p NamedPolicy) (policy, error) {
	doc := strings.TrimSpace(p.Document)
	if !strings.HasPrefix(doc, "{") {
		if d, err := url.QueryUnescape(doc); err == nil {
			doc = d
		}
	}
	var raw struct {
		Statement json.RawMessage `json:"Statement"`
	}
	if err := json.Unmarshal([]byte(doc), &raw); err != nil {
		return policy{}, fmt.Errorf("read %s: not a JSON policy document: %w", p.Name, err)
	}
	var list []map[string]json.RawMessage
	if err := json.Unmarshal(raw.Statement, &list); err != nil {
		var one map[string]json.RawMessage
		if err := json.Unmarshal(raw.Statement, &one); err != nil {
			return policy{}, fmt.Errorf("read %s: Statement is neither an object nor a list", p.Name)
		}
		list = []map[string]json.RawMessage{one}
	}
	out := policy{name: p.Name}
	for i, m := range list {
		s, err := parseStatement(m)
		if err != nil {
			return policy{}, fmt.Errorf("read %s, statement %d: %w", p.Name, i+1, err)
		}
		out.stmts = append(out.stmts, s)
	}
	return out, nil
}

func parseStatement(m map[string]json.RawMessage) (statement, error) {
	var s statement
	var effect string
	if err := json.Unmarshal(m["Effect"], &effect); err != nil {
		return s, fmt.Errorf("no Effect")
	}
	s.effect = strings.ToLower(effect)
	if s.effect != "allow" && s.effect != "deny" {
		return s, fmt.Errorf("invalid Effect %q", effect)
	}
	var err error
	switch {
	case m["Action"] != nil:
		s.actions, err = stringList(m["Action"])
	case m["NotAction"] != nil:
		s.notAction = true
		s.actions, err = stringList(m["NotAction"])
	default:
		return s, fmt.Errorf("no Action or NotAction")
	}
	if err != nil {
		return s, fmt.Errorf("Action: %w", err)
	}
	switch {
	case m["Resource"] != nil:
		s.resources, err = stringList(m["Resource"])
	case m["NotResource"] != nil:
		s.notResource = true
		s.resources, err = stringList(m["NotResource"])
	default:
		s.anyRes = true // identity policies always have one; be lenient
	}
	if err != nil {
		return s, fmt.Errorf("Resource: %w", err)
	}
	if c := m["Condition"]; c != nil {
		var block map[string]map[string]json.RawMessage
		if err := json.Unmarshal(c, &block); err != nil {
			return s, fmt.Errorf("Condition: %w", err)
		}
		ops := make([]string, 0, len(block))
		for op := range block {
			ops = append(ops, op)
		}
		sort.Strings(ops)
		for _, op := range ops {
			keys := make([]string, 0, len(block[op]))
			for k := range block[op] {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				vals, err := stringList(block[op][k])
				if err != nil {
					return s, fmt.Errorf("Condition %s %s: %w", op, k, err)
				}
				s.conditions = append(s.conditions, newCondition(op, k, vals))
			}
		}
	}
	return s, nil
}

func newCondition(op, key string, vals []string) condition {
	c := condition{op: op, key: strings.ToLower(key), values: vals}
	base := strings.ToLower(op)
	if set, rest, ok := strings.Cut(base, ":"); ok {
		c.set, base = set, rest
	}
	if strings.HasSuffix(base, "ifexists") {
		c.ifEx = true
		base = strings.TrimSuffix(base, "ifexists")
	}
	c.base = base
	return c
}

// stringList reads a JSON string, number, bool or a list of them.
func stringList(raw json.RawMessage) ([]string, error) {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, err
	}
	one := func(x any) (string, error) {
		switch t := x.(type) {
		case string:
			return t, nil
		case bool:
			return strconv.FormatBool(t), nil
		case float64:
			return strconv.FormatFloat(t, 'f', -1, 64), nil
		}
		return "", fmt.Errorf("unexpected value %v", x)
	}
	if l, ok := v.([]any); ok {
		out := make([]string, 0, len(l))
		for _, x := range l {
			s, err := one(x)
			if err != nil {
				return nil, err
			}
			out = append(out, s)
		}
		return out, nil
	}
	s, err := one(v)
	if err != nil {
		return nil, err
	}
	return []string{s}, nil
}
