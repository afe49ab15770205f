package iampolicy

import (
	"net/url"
	"strings"
	"testing"
)

func TestEvaluator(t *testing.T) {
	const role = "arn:aws:iam::123456789012:role/kforge-demo-ha-cp"
	region := map[string][]string{KeyRequestedRegion: {"eu-west-1"}}
	passTo := func(svc string) map[string][]string {
		return map[string][]string{KeyRequestedRegion: {"us-east-1"}, KeyPassedToService: {svc}}
	}
	tests := []struct {
		name     string
		policies []string
		boundary string
		req      Request
		allowed  bool
		reason   string // substring of the decision's reason
		unsure   bool
	}{
		{"no policy", nil, "", Request{Action: "ec2:RunInstances", Resource: "*"}, false, "no policy allows it", false},
		{"exact allow", []string{`{"Statement":[{"Effect":"Allow","Action":"ec2:RunInstances","Resource":"*"}]}`}, "",
			Request{Action: "ec2:RunInstances", Resource: "*"}, true, "p1 (statement 1)", false},
		{"single statement object", []string{`{"Statement":{"Effect":"Allow","Action":["ec2:RunInstances"],"Resource":["*"]}}`}, "",
			Request{Action: "ec2:RunInstances", Resource: "*"}, true, "", false},
		{"action is case-insensitive", []string{`{"Statement":[{"Effect":"Allow","Action":"EC2:runinstances","Resource":"*"}]}`}, "",
			Request{Action: "ec2:RunInstances", Resource: "*"}, true, "", false},
		{"action wildcard", []string{`{"Statement":[{"Effect":"Allow","Action":"ec2:Describe*","Resource":"*"}]}`}, "",
			Request{Action: "ec2:DescribeVpcs", Resource: "*"}, true, "", false},
		{"action wildcard does not reach others", []string{`{"Statement":[{"Effect":"Allow","Action":"ec2:Describe*","Resource":"*"}]}`}, "",
			Request{Action: "ec2:RunInstances", Resource: "*"}, false, "no policy allows it", false},
		{"question mark", []string{`{"Statement":[{"Effect":"Allow","Action":"iam:?etRole","Resource":"*"}]}`}, "",
			Request{Action: "iam:GetRole", Resource: role}, true, "", false},
		{"admin", []string{`{"Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}`}, "",
			Request{Action: "iam:CreateRole", Resource: role}, true, "", false},
		{"resource wildcard", []string{`{"Statement":[{"Effect":"Allow","Action":"iam:CreateRole","Resource":"arn:aws:iam::*:role/kforge-*"}]}`}, "",
			Request{Action: "iam:CreateRole", Resource: role}, true, "", false},
		{"resource does not match", []string{`{"Statement":[{"Effect":"Allow","Action":"iam:CreateRole","Resource":"arn:aws:iam::*:role/other-*"}]}`}, "",
			Request{Action: "iam:CreateRole", Resource: role}, false, "no policy allows it", false},
		{"resource is case-sensitive", []string{`{"Statement":[{"Effect":"Allow","Action":"iam:CreateRole","Resource":"arn:aws:iam::*:role/KFORGE-*"}]}`}, "",
			Request{Action: "iam:CreateRole", Resource: role}, false, "", false},
		{"deny wins over allow", []string{
			`{"Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}`,
			`{"Statement":[{"Effect":"Deny","Action":"iam:*","Resource":"*"}]}`}, "",
			Request{Action: "iam:CreateRole", Resource: role}, false, "explicitly denied by p2 (statement 1)", false},
		{"deny of another action", []string{
			`{"Statement":[{"Effect":"Allow","Action":"*","Resource":"*"},{"Effect":"Deny","Action":"iam:DeleteRole","Resource":"*"}]}`}, "",
			Request{Action: "iam:CreateRole", Resource: role}, true, "", false},
		{"NotAction allow", []string{`{"Statement":[{"Effect":"Allow","NotAction":["iam:*","organizations:*"],"Resource":"*"}]}`}, "",
			Request{Action: "ec2:RunInstances", Resource: "*"}, true, "", false},
		{"NotAction excludes", []string{`{"Statement":[{"Effect":"Allow","NotAction":["iam:*","organizations:*"],"Resource":"*"}]}`}, "",
			Request{Action: "iam:CreateRole", Resource: role}, false, "", false},
		{"NotAction deny", []string{
			`{"Statement":[{"Effect":"Allow","Action":"*","Resource":"*"},{"Effect":"Deny","NotAction":"ec2:*","Resource":"*"}]}`}, "",
			Request{Action: "iam:PassRole", Resource: role, Context: passTo("ec2.amazonaws.com")}, false, "explicitly denied", false},
		{"NotResource", []string{`{"Statement":[{"Effect":"Allow","Action":"iam:*","NotResource":"arn:aws:iam::*:role/admin*"}]}`}, "",
			Request{Action: "iam:DeleteRole", Resource: role}, true, "", false},
		{"NotResource excludes", []string{`{"Statement":[{"Effect":"Allow","Action":"iam:*","NotResource":"arn:aws:iam::*:role/kforge-*"}]}`}, "",
			Request{Action: "iam:DeleteRole", Resource: role}, false, "", false},
		{"PassRole to the right service", []string{`{"Statement":[{"Effect":"Allow","Action":"iam:PassRole","Resource":"arn:aws:iam::*:role/kforge-*","Condition":{"StringEquals":{"iam:PassedToService":"ec2.amazonaws.com"}}}]}`}, "",
			Request{Action: "iam:PassRole", Resource: role, Context: passTo("ec2.amazonaws.com")}, true, "", false},
		{"PassRole to another service", []string{`{"Statement":[{"Effect":"Allow","Action":"iam:PassRole","Resource":"*","Condition":{"StringEquals":{"iam:PassedToService":["eks.amazonaws.com"]}}}]}`}, "",
			Request{Action: "iam:PassRole", Resource: role, Context: passTo("ec2.amazonaws.com")}, false, "no policy allows it", false},
		{"condition key names are case-insensitive", []string{`{"Statement":[{"Effect":"Allow","Action":"iam:PassRole","Resource":"*","Condition":{"StringLike":{"IAM:PassedToService":"ec2.*"}}}]}`}, "",
			Request{Action: "iam:PassRole", Resource: role, Context: passTo("ec2.amazonaws.com")}, true, "", false},
		{"region deny with StringNotEquals", []string{
			`{"Statement":[{"Effect":"Allow","Action":"*","Resource":"*"},{"Effect":"Deny","Action":"*","Resource":"*","Condition":{"StringNotEquals":{"aws:RequestedRegion":["us-east-1","us-west-2"]}}}]}`}, "",
			Request{Action: "ec2:RunInstances", Resource: "*", Context: region}, false, "explicitly denied", false},
		{"region deny does not apply", []string{
			`{"Statement":[{"Effect":"Allow","Action":"*","Resource":"*"},{"Effect":"Deny","Action":"*","Resource":"*","Condition":{"StringNotEquals":{"aws:RequestedRegion":["eu-west-1"]}}}]}`}, "",
			Request{Action: "ec2:RunInstances", Resource: "*", Context: region}, true, "", false},
		{"known absent key fails a positive operator", []string{`{"Statement":[{"Effect":"Allow","Action":"ec2:CreateTags","Resource":"*","Condition":{"StringEquals":{"ec2:CreateAction":"RunInstances"}}}]}`}, "",
			Request{Action: "ec2:CreateTags", Resource: "*", Context: region}, false, "no policy allows it", false},
		{"IfExists on an absent key", []string{`{"Statement":[{"Effect":"Allow","Action":"ec2:CreateTags","Resource":"*","Condition":{"StringEqualsIfExists":{"ec2:CreateAction":"RunInstances"}}}]}`}, "",
			Request{Action: "ec2:CreateTags", Resource: "*", Context: region}, true, "", false},
		{"Null", []string{`{"Statement":[{"Effect":"Allow","Action":"iam:PassRole","Resource":"*","Condition":{"Null":{"iam:PassedToService":"false"}}}]}`}, "",
			Request{Action: "iam:PassRole", Resource: role, Context: passTo("ec2.amazonaws.com")}, true, "", false},
		{"ForAnyValue", []string{`{"Statement":[{"Effect":"Allow","Action":"iam:PassRole","Resource":"*","Condition":{"ForAnyValue:StringLike":{"iam:PassedToService":["eks.*","ec2.*"]}}}]}`}, "",
			Request{Action: "iam:PassRole", Resource: role, Context: passTo("ec2.amazonaws.com")}, true, "", false},
		{"unknown key: allow does not count", []string{`{"Statement":[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"Bool":{"aws:MultiFactorAuthPresent":"true"}}}]}`}, "",
			Request{Action: "ec2:RunInstances", Resource: "*", Context: region}, false, "allowed only under a condition", true},
		{"unknown key: deny counts", []string{
			`{"Statement":[{"Effect":"Allow","Action":"*","Resource":"*"},{"Effect":"Deny","Action":"*","Resource":"*","Condition":{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}}]}`}, "",
			Request{Action: "ec2:RunInstances", Resource: "*", Context: region}, false, "a Deny may apply", true},
		{"unsupported operator on a known key", []string{`{"Statement":[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"NumericLessThan":{"aws:RequestedRegion":"3"}}}]}`}, "",
			Request{Action: "ec2:RunInstances", Resource: "*", Context: region}, false, "allowed only under a condition", true},
		{"policy variable", []string{`{"Statement":[{"Effect":"Allow","Action":"iam:GetUser","Resource":"arn:aws:iam::*:user/${aws:username}"}]}`}, "",
			Request{Action: "iam:GetUser", Resource: "arn:aws:iam::123456789012:user/alice"}, true, "", false},
		{"policy variable of another user", []string{`{"Statement":[{"Effect":"Allow","Action":"iam:GetUser","Resource":"arn:aws:iam::*:user/${aws:username}"}]}`}, "",
			Request{Action: "iam:GetUser", Resource: "arn:aws:iam::123456789012:user/bob"}, false, "", false},
		{"unknown policy variable matches nothing", []string{`{"Statement":[{"Effect":"Allow","Action":"iam:GetUser","Resource":"arn:aws:iam::*:user/${aws:PrincipalTag/team}"}]}`}, "",
			Request{Action: "iam:GetUser", Resource: "arn:aws:iam::123456789012:user/alice"}, false, "", false},
		{"boundary allows", []string{`{"Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}`},
			`{"Statement":[{"Effect":"Allow","Action":["ec2:*","iam:*"],"Resource":"*"}]}`,
			Request{Action: "ec2:RunInstances", Resource: "*"}, true, "p1", false},
		{"boundary limits", []string{`{"Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}`},
			`{"Statement":[{"Effect":"Allow","Action":["ec2:*"],"Resource":"*"}]}`,
			Request{Action: "iam:CreateRole", Resource: role}, false, "the permissions boundary does not allow it", false},
		{"URL-encoded document", []string{url.QueryEscape(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"eks:CreateCluster","Resource":"*"}]}`)}, "",
			Request{Action: "eks:CreateCluster", Resource: "*"}, true, "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var ps []NamedPolicy
			for i, p := range tc.policies {
				ps = append(ps, NamedPolicy{Name: "p" + string(rune('1'+i)), Document: p})
			}
			var b *NamedPolicy
			if tc.boundary != "" {
				b = &NamedPolicy{Name: "boundary", Document: tc.boundary}
			}
			e, err := NewEvaluator(ps, b, map[string]string{"aws:username": "alice"})
			if err != nil {
				t.Fatal(err)
			}
			d := e.Decide(tc.req)
			if d.Allowed != tc.allowed || !strings.Contains(d.Reason, tc.reason) || (len(d.Uncertain) > 0) != tc.unsure {
				t.Errorf("Decide(%s) = %+v; want allowed=%v, reason containing %q, uncertain=%v", tc.req, d, tc.allowed, tc.reason, tc.unsure)
			}
		})
	}
}

func TestEvaluatorRejectsBadDocuments(t *testing.T) {
	for _, doc := range []string{
		`not json`,
		`{"Statement":[{"Action":"*","Resource":"*"}]}`,
		`{"Statement":[{"Effect":"Maybe","Action":"*","Resource":"*"}]}`,
		`{"Statement":[{"Effect":"Allow","Resource":"*"}]}`,
		`{"Statement":[{"Effect":"Allow","Action":{"a":1},"Resource":"*"}]}`,
	} {
		if _, err := NewEvaluator([]NamedPolicy{{Name: "bad", Document: doc}}, nil, nil); err == nil {
			t.Errorf("accepted %s", doc)
		}
	}
}
