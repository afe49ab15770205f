package iampolicy

import (
	"bytes"
	"encoding/json"
	"net/url"
	"slices"
	"sort"
	"strings"
	"testing"
)

func mustPolicy(t *testing.T, typ string, o Options) Document {
	t.Helper()
	d, err := Policy(typ, o)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// parsed is a rendered policy read back as generic JSON.
type parsed struct {
	Version   string
	Statement []struct {
		Sid       string
		Effect    string
		Action    []string
		Resource  []string
		Condition map[string]map[string][]string
	}
}

func readBack(t *testing.T, d Document) parsed {
	t.Helper()
	var p parsed
	dec := json.NewDecoder(bytes.NewReader(d.JSON()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		t.Fatalf("rendered policy is not the expected JSON: %v\n%s", err, d.JSON())
	}
	return p
}

func TestPolicyJSON(t *testing.T) {
	for _, typ := range []string{"aws", "ha-aws", All} {
		t.Run(typ, func(t *testing.T) {
			d := mustPolicy(t, typ, Options{})
			p := readBack(t, d)
			if p.Version != "2012-10-17" {
				t.Errorf("Version %q", p.Version)
			}
			sids := map[string]bool{}
			seen := map[string]bool{}
			for _, s := range p.Statement {
				if s.Effect != "Allow" || len(s.Action) == 0 || len(s.Resource) == 0 {
					t.Errorf("statement %s: effect %s, %d actions, %d resources", s.Sid, s.Effect, len(s.Action), len(s.Resource))
				}
				if sids[s.Sid] || s.Sid == "" || strings.Trim(s.Sid, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") != "" {
					t.Errorf("Sid %q is empty, repeated or not alphanumeric", s.Sid)
				}
				sids[s.Sid] = true
				if !slices.IsSorted(s.Action) {
					t.Errorf("statement %s: actions not sorted", s.Sid)
				}
				for _, a := range s.Action {
					if strings.Contains(a, "*") {
						t.Errorf("statement %s grants a wildcard action %s", s.Sid, a)
					}
					seen[a] = true
				}
			}
			want, _ := Actions(typ)
			var got []string
			for a := range seen {
				got = append(got, a)
			}
			sort.Strings(got)
			if !slices.Equal(got, want) {
				t.Errorf("the policy's actions differ from the table:\n got  %v\n want %v", got, want)
			}
			// A managed policy holds at most 6,144 characters, whitespace
			// not counted.
			var compact bytes.Buffer
			if err := json.Compact(&compact, d.JSON()); err != nil {
				t.Fatal(err)
			}
			if n := len(strings.Join(strings.Fields(compact.String()), "")); n > 6144 {
				t.Errorf("the %s policy is %d characters; a managed policy holds 6144", typ, n)
			}
		})
	}
}

// TestPolicyScoping checks that IAM role and profile actions reach only
// kforge-* names and that roles are passed only to the services that need
// them.
func TestPolicyScoping(t *testing.T) {
	tests := []struct {
		typ, account string
		passedTo     []string
	}{
		{"aws", "", []string{"eks.amazonaws.com"}},
		{"ha-aws", "", []string{"ec2.amazonaws.com"}},
		{All, "123456789012", []string{"eks.amazonaws.com", "ec2.amazonaws.com"}},
	}
	for _, tc := range tests {
		t.Run(tc.typ, func(t *testing.T) {
			p := readBack(t, mustPolicy(t, tc.typ, Options{Account: tc.account}))
			acct := "*"
			if tc.account != "" {
				acct = tc.account
			}
			roleARN := "arn:aws:iam::" + acct + ":role/kforge-*"
			profileARN := "arn:aws:iam::" + acct + ":instance-profile/kforge-*"
			var passRole bool
			for _, s := range p.Statement {
				for _, a := range s.Action {
					if !strings.HasPrefix(a, "iam:") {
						continue
					}
					for _, r := range s.Resource {
						if r == "*" {
							t.Errorf("IAM action %s is granted on *", a)
						}
						if strings.Contains(r, ":role/") && r != roleARN && !strings.Contains(r, ":role/aws-service-role/") {
							t.Errorf("IAM action %s reaches role %s, not only %s", a, r, roleARN)
						}
						if strings.Contains(r, ":instance-profile/") && r != profileARN {
							t.Errorf("IAM action %s reaches instance profile %s", a, r)
						}
						if !strings.HasPrefix(r, "arn:aws:iam::"+acct+":") && !strings.HasPrefix(r, "arn:aws:iam::aws:policy/") {
							t.Errorf("resource %s is not in account %s", r, acct)
						}
					}
				}
				switch s.Sid {
				case SidRoles:
					if !slices.Equal(s.Resource, []string{roleARN}) {
						t.Errorf("role statement resources %v", s.Resource)
					}
					if !slices.Contains(s.Action, "iam:CreateRole") {
						t.Errorf("role statement lacks iam:CreateRole: %v", s.Action)
					}
				case SidPassRole:
					passRole = true
					if !slices.Equal(s.Action, []string{"iam:PassRole"}) || !slices.Equal(s.Resource, []string{roleARN}) {
						t.Errorf("PassRole statement %v on %v", s.Action, s.Resource)
					}
					if got := s.Condition["StringEquals"]["iam:PassedToService"]; !slices.Equal(got, tc.passedTo) {
						t.Errorf("roles passed to %v, want %v", got, tc.passedTo)
					}
				case SidProfiles:
					if tc.typ == "aws" && slices.Contains(s.Action, "iam:CreateInstanceProfile") {
						t.Error("aws clusters have no instance profiles")
					}
				}
			}
			if !passRole {
				t.Error("no iam:PassRole statement")
			}
		})
	}
}

func TestPolicyTypes(t *testing.T) {
	tests := []struct {
		typ         string
		has, hasNot []string
	}{
		{"aws", []string{"eks:CreateCluster", "iam:AttachRolePolicy", "ec2:CreateVpc", "iam:CreateServiceLinkedRole", "eks:TagResource"},
			[]string{"ec2:RunInstances", "iam:CreateInstanceProfile", "iam:PutRolePolicy", "ec2:ImportKeyPair"}},
		{"ha-aws", []string{"ec2:RunInstances", "iam:CreateInstanceProfile", "iam:PutRolePolicy", "ec2:CreateVpc"},
			[]string{"eks:CreateCluster", "iam:AttachRolePolicy", "iam:CreateServiceLinkedRole", "eks:TagResource"}},
	}
	for _, tc := range tests {
		acts, err := Actions(tc.typ)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range tc.has {
			if !slices.Contains(acts, a) {
				t.Errorf("%s policy lacks %s", tc.typ, a)
			}
		}
		for _, a := range tc.hasNot {
			if slices.Contains(acts, a) {
				t.Errorf("%s policy has %s", tc.typ, a)
			}
		}
	}
	if _, err := Policy("gcp", Options{}); err == nil {
		t.Error("unknown type accepted")
	}
	if _, err := Policy("aws", Options{Account: "12345"}); err == nil {
		t.Error("short account accepted")
	}
}

func TestPermissionsTable(t *testing.T) {
	// An action is listed once per cluster type (ec2:CreateTags is
	// implicit for aws, called by ha-aws).
	seen := map[string]bool{}
	for _, p := range Permissions() {
		for _, typ := range p.Types {
			if seen[p.Action+" "+typ] {
				t.Errorf("%s is listed twice for %s", p.Action, typ)
			}
			seen[p.Action+" "+typ] = true
		}
		svc, op, ok := strings.Cut(p.Action, ":")
		if !ok || op == "" || op[0] < 'A' || op[0] > 'Z' {
			t.Errorf("%q is not service:Action", p.Action)
		}
		if _, ok := map[string]bool{"ec2": true, "iam": true, "eks": true, "sts": true, "elasticloadbalancing": true, "servicequotas": true}[svc]; !ok {
			t.Errorf("%s: unexpected service", p.Action)
		}
		if len(p.Types) == 0 {
			t.Errorf("%s serves no cluster type", p.Action)
		}
		if p.Why == "" && p.Implicit == "" {
			t.Errorf("%s says neither why kforge calls it nor why AWS needs it", p.Action)
		}
		if p.TagOnCreate && !strings.HasPrefix(p.Action, "ec2:") {
			t.Errorf("%s: tag on create is for EC2 create calls", p.Action)
		}
	}
}

func TestTagOnCreateCondition(t *testing.T) {
	p := readBack(t, mustPolicy(t, "ha-aws", Options{}))
	for _, s := range p.Statement {
		if s.Sid != SidTagOnCreate {
			continue
		}
		got := s.Condition["StringEquals"]["ec2:CreateAction"]
		want := []string{"AuthorizeSecurityGroupIngress", "CreateInternetGateway", "CreateRouteTable", "CreateSecurityGroup", "CreateSubnet", "CreateVpc", "ImportKeyPair", "RunInstances"}
		if !slices.Equal(got, want) {
			t.Errorf("ec2:CreateAction %v, want %v", got, want)
		}
		return
	}
	t.Error("no tag-on-create statement")
}

func target(typ, name string) Target {
	t := Target{Type: typ, Region: "eu-west-1", Account: "123456789012"}
	if typ == "aws" {
		t.Roles = []string{"kforge-" + name + "-cp-role", "kforge-" + name + "-wp-role"}
	} else {
		t.Roles = []string{"kforge-" + name + "-ha-cp", "kforge-" + name + "-ha-wp"}
	}
	// Delete looks for an instance profile of each role's name.
	t.Profiles = t.Roles
	return t
}

// TestPolicyAllowsItsRequests evaluates each type's rendered policy, as an
// attached managed policy would be, against the requests of a cluster.
func TestPolicyAllowsItsRequests(t *testing.T) {
	for _, typ := range []string{"aws", "ha-aws"} {
		t.Run(typ, func(t *testing.T) {
			for _, acct := range []string{"", "123456789012"} {
				doc := string(mustPolicy(t, typ, Options{Account: acct}).JSON())
				e, err := NewEvaluator([]NamedPolicy{{Name: "kforge", Document: url.QueryEscape(doc)}}, nil, map[string]string{"aws:username": "alice"})
				if err != nil {
					t.Fatal(err)
				}
				reqs, err := Requests(target(typ, "demo"))
				if err != nil {
					t.Fatal(err)
				}
				if len(reqs) < 60 {
					t.Fatalf("only %d requests", len(reqs))
				}
				for _, r := range reqs {
					if d := e.Decide(r); !d.Allowed {
						t.Errorf("account %q: %s is not allowed: %s %v", acct, r, d.Reason, d.Uncertain)
					}
				}
				// Outside kforge's names and services, the policy grants nothing.
				for _, r := range []Request{
					{Action: "iam:CreateRole", Resource: "arn:aws:iam::123456789012:role/admin"},
					{Action: "iam:DeleteRole", Resource: "arn:aws:iam::123456789012:role/other-kforge-x"},
					{Action: "iam:PassRole", Resource: "arn:aws:iam::123456789012:role/kforge-demo-x", Context: map[string][]string{KeyPassedToService: {"lambda.amazonaws.com"}}},
					{Action: "iam:CreateUser", Resource: "arn:aws:iam::123456789012:user/x"},
					{Action: "ec2:CreateTags", Resource: "*", Context: map[string][]string{KeyCreateAction: {"CreateVolume"}}},
					{Action: "ec2:CreateTags", Resource: "*"},
					{Action: "iam:GetUser", Resource: "arn:aws:iam::123456789012:user/bob"},
					{Action: "s3:GetObject", Resource: "*"},
				} {
					if d := e.Decide(r); d.Allowed {
						t.Errorf("%s is allowed (%s)", r, d.Reason)
					}
				}
			}
		})
	}
}

func TestRequestsCoverEveryPermission(t *testing.T) {
	for _, typ := range []string{"aws", "ha-aws"} {
		reqs, _ := Requests(target(typ, "x"))
		got := map[string]bool{}
		for _, r := range reqs {
			got[r.Action] = true
		}
		perms, _ := ForType(typ)
		for _, p := range perms {
			ownOnly := len(p.Scopes) == 1 && p.Scopes[0] == ScopeOwnIdentity
			if got[p.Action] == ownOnly {
				t.Errorf("%s: %s requested=%v, own-identity only=%v", typ, p.Action, got[p.Action], ownOnly)
			}
		}
	}
}

func TestActionOf(t *testing.T) {
	tests := []struct{ svc, op, want string }{
		{"EC2", "RunInstances", "ec2:RunInstances"},
		{"Elastic Load Balancing v2", "DescribeTags", "elasticloadbalancing:DescribeTags"},
		{"Elastic Load Balancing", "DeleteLoadBalancer", "elasticloadbalancing:DeleteLoadBalancer"},
		{"Service Quotas", "GetServiceQuota", "servicequotas:GetServiceQuota"},
		{"IAM", "SimulatePrincipalPolicy", "iam:SimulatePrincipalPolicy"},
		{"Lambda", "Invoke", ""},
	}
	for _, tc := range tests {
		got, ok := ActionOf(tc.svc, tc.op)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("ActionOf(%q, %q) = %q, %v", tc.svc, tc.op, got, ok)
		}
	}
}

// TestCallerRole: with --caller-role, preflight may read that role's own
// permissions, and nothing more.
func TestCallerRole(t *testing.T) {
	doc := string(mustPolicy(t, "ha-aws", Options{Account: "123456789012", CallerRole: "ci/deployer"}).JSON())
	e, err := NewEvaluator([]NamedPolicy{{Name: "kforge", Document: doc}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		r    Request
		want bool
	}{
		{Request{Action: "iam:GetRolePolicy", Resource: "arn:aws:iam::123456789012:role/ci/deployer"}, true},
		{Request{Action: "iam:SimulatePrincipalPolicy", Resource: "arn:aws:iam::123456789012:role/ci/deployer"}, true},
		{Request{Action: "iam:GetRolePolicy", Resource: "arn:aws:iam::123456789012:role/admin"}, false},
		{Request{Action: "iam:PutRolePolicy", Resource: "arn:aws:iam::123456789012:role/ci/deployer"}, false},
	} {
		if d := e.Decide(tc.r); d.Allowed != tc.want {
			t.Errorf("%s: allowed=%v, want %v", tc.r, d.Allowed, tc.want)
		}
	}
	without := string(mustPolicy(t, "ha-aws", Options{Account: "123456789012"}).JSON())
	e, _ = NewEvaluator([]NamedPolicy{{Name: "kforge", Document: without}}, nil, nil)
	if d := e.Decide(Request{Action: "iam:GetRolePolicy", Resource: "arn:aws:iam::123456789012:role/ci/deployer"}); d.Allowed {
		t.Error("without --caller-role, the policy reads a role's policies")
	}
	if _, err := Policy("aws", Options{CallerRole: "arn:aws:iam::1:role/x"}); err == nil {
		t.Error("an ARN was accepted as a role name")
	}
}
