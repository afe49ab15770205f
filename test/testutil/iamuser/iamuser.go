// Package iamuser makes IAM users with given policies in the AWS emulator,
// and edits policy documents for tests: without one action, or widened
// where the emulator cannot evaluate resource-level permissions.
package iamuser

import (
	"context"
	"encoding/json"
	"slices"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/iam"
)

// Keys are an access key of a user.
type Keys struct {
	User            string
	AccessKeyID     string
	SecretAccessKey string
}

// Env returns the environment variables that make a kforge process use
// the keys.
func (k Keys) Env() []string {
	return []string{"AWS_ACCESS_KEY_ID=" + k.AccessKeyID, "AWS_SECRET_ACCESS_KEY=" + k.SecretAccessKey}
}

// Config returns cfg with the keys as its credentials.
func (k Keys) Config(cfg aws.Config) aws.Config {
	cfg = cfg.Copy()
	cfg.Credentials = aws.NewCredentialsCache(credentials.NewStaticCredentialsProvider(k.AccessKeyID, k.SecretAccessKey, ""))
	return cfg
}

// Options choose how the user gets its policy.
type Options struct {
	// Group, if set, puts the policy on this group (made if needed) and
	// the user in it, instead of on the user.
	Group string
	// Inline puts the policy inline instead of as a managed policy.
	Inline bool
}

// Create makes user name with policy doc (a managed policy attached to
// the user, unless o says otherwise) and returns an access key of it.
// admin must be allowed to manage IAM.
func Create(t testing.TB, admin aws.Config, name string, doc []byte, o Options) Keys {
	t.Helper()
	ctx := context.Background()
	c := iam.NewFromConfig(admin)
	if _, err := c.CreateUser(ctx, &iam.CreateUserInput{UserName: aws.String(name)}); err != nil {
		t.Fatalf("create user %s: %v", name, err)
	}
	policyName := name + "-policy"
	switch {
	case o.Group != "":
		if _, err := c.GetGroup(ctx, &iam.GetGroupInput{GroupName: aws.String(o.Group)}); err != nil {
			if _, err := c.CreateGroup(ctx, &iam.CreateGroupInput{GroupName: aws.String(o.Group)}); err != nil {
				t.Fatalf("create group %s: %v", o.Group, err)
			}
		}
		if _, err := c.AddUserToGroup(ctx, &iam.AddUserToGroupInput{GroupName: aws.String(o.Group), UserName: aws.String(name)}); err != nil {
			t.Fatal(err)
		}
		if o.Inline {
			if _, err := c.PutGroupPolicy(ctx, &iam.PutGroupPolicyInput{GroupName: aws.String(o.Group), PolicyName: aws.String(policyName), PolicyDocument: aws.String(string(doc))}); err != nil {
				t.Fatal(err)
			}
		} else {
			arn := createPolicy(t, c, policyName, doc)
			if _, err := c.AttachGroupPolicy(ctx, &iam.AttachGroupPolicyInput{GroupName: aws.String(o.Group), PolicyArn: aws.String(arn)}); err != nil {
				t.Fatal(err)
			}
		}
	case o.Inline:
		if _, err := c.PutUserPolicy(ctx, &iam.PutUserPolicyInput{UserName: aws.String(name), PolicyName: aws.String(policyName), PolicyDocument: aws.String(string(doc))}); err != nil {
			t.Fatal(err)
		}
	default:
		arn := createPolicy(t, c, policyName, doc)
		if _, err := c.AttachUserPolicy(ctx, &iam.AttachUserPolicyInput{UserName: aws.String(name), PolicyArn: aws.String(arn)}); err != nil {
			t.Fatal(err)
		}
	}
	out, err := c.CreateAccessKey(ctx, &iam.CreateAccessKeyInput{UserName: aws.String(name)})
	if err != nil {
		t.Fatal(err)
	}
	return Keys{User: name, AccessKeyID: aws.ToString(out.AccessKey.AccessKeyId), SecretAccessKey: aws.ToString(out.AccessKey.SecretAccessKey)}
}

func createPolicy(t testing.TB, c *iam.Client, name string, doc []byte) string {
	t.Helper()
	out, err := c.CreatePolicy(context.Background(), &iam.CreatePolicyInput{PolicyName: aws.String(name), PolicyDocument: aws.String(string(doc))})
	if err != nil {
		t.Fatalf("create policy %s: %v", name, err)
	}
	return aws.ToString(out.Policy.Arn)
}

// Admin makes a user allowed everything, for test code that reads and
// sets up the emulator while IAM enforcement is on.
func Admin(t testing.TB, cfg aws.Config, name string) Keys {
	t.Helper()
	return Create(t, cfg, name, []byte(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}`), Options{Inline: true})
}

// statement is a policy statement whose fields keep their JSON form.
type statement map[string]any

type document struct {
	Version   string      `json:"Version"`
	Statement []statement `json:"Statement"`
}

func parse(t testing.TB, doc []byte) document {
	t.Helper()
	var d document
	if err := json.Unmarshal(doc, &d); err != nil {
		t.Fatalf("policy document: %v", err)
	}
	return d
}

func render(t testing.TB, d document) []byte {
	t.Helper()
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func stringList(v any) []string {
	switch x := v.(type) {
	case string:
		return []string{x}
	case []any:
		var out []string
		for _, e := range x {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// Without returns doc without action; a statement left with no action is
// dropped. It fails the test if doc does not grant action.
func Without(t testing.TB, doc []byte, action string) []byte {
	t.Helper()
	d := parse(t, doc)
	var out []statement
	found := false
	for _, s := range d.Statement {
		acts := stringList(s["Action"])
		if i := slices.Index(acts, action); i >= 0 {
			found = true
			acts = slices.Delete(acts, i, i+1)
			if len(acts) == 0 {
				continue
			}
			s["Action"] = acts
		}
		out = append(out, s)
	}
	if !found {
		t.Fatalf("the policy does not grant %s", action)
	}
	d.Statement = out
	return render(t, d)
}

// ForEmulator returns doc with every Resource widened to "*", keeping
// actions and conditions. moto 5.2 evaluates a call against the resource
// "*" whenever it cannot name the resource (every IAM call that does not
// act on an existing role: CreateRole, CreateInstanceProfile, GetUser,
// ...), so a statement scoped to arn:aws:iam::*:role/kforge-* never
// matches those calls there, although it does on AWS. Actions are what the
// emulator can prove: a user with ForEmulator(policy) minus one action
// lacks exactly that action. Resource scoping is proven by the tests of
// internal/iampolicy and by TestPolicyScopingInEmulator.
func ForEmulator(t testing.TB, doc []byte) []byte {
	t.Helper()
	d := parse(t, doc)
	for _, s := range d.Statement {
		s["Resource"] = "*"
	}
	return render(t, d)
}
