package iampolicy

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// sdkPrefix maps the AWS SDK's service packages to IAM prefixes.
var sdkPrefix = map[string]string{
	"ec2":                    "ec2",
	"iam":                    "iam",
	"eks":                    "eks",
	"sts":                    "sts",
	"elasticloadbalancing":   "elasticloadbalancing",
	"elasticloadbalancingv2": "elasticloadbalancing",
	"servicequotas":          "servicequotas",
	"s3":                     "s3",
	"dynamodb":               "dynamodb",
}

// excludedFromScan are packages whose AWS calls the policy does not cover,
// with the reason.
var excludedFromScan = map[string]string{
	// The state store's S3/DynamoDB backend works on the bucket and table
	// the user names with --state; its permissions are the user's to grant
	// on those resources, not part of the cluster policy.
	"internal/state": "state store backends",
	// Likewise the bucket etcd snapshots go to (kforge backup --to): the
	// user grants s3:PutObject, s3:GetObject and s3:ListBucket on it.
	"internal/etcdbackup": "etcd snapshots in the user's bucket",
}

// sourceActions finds every AWS operation kforge's code can call: each
// composite literal of an SDK operation input (&ec2.RunInstancesInput{...})
// in the non-test Go files under internal/ and cmd/. Direct calls,
// paginators and waiters all take such an input, so this finds the calls
// of every code path, including those an end-to-end run rarely reaches
// (errors, repairs). It returns action -> files.
func sourceActions(t *testing.T) map[string][]string {
	t.Helper()
	found, _ := scanSource(t)
	return found
}

// scanSource returns sourceActions and, of those, the EC2 calls whose
// input sets TagSpecifications (tag on create).
func scanSource(t *testing.T) (map[string][]string, map[string]bool) {
	t.Helper()
	tagged := map[string]bool{}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	found := map[string][]string{}
	for _, dir := range []string{"internal", "cmd"} {
		err := filepath.WalkDir(filepath.Join(root, dir), func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, path)
			if d.IsDir() {
				if _, skip := excludedFromScan[filepath.ToSlash(rel)]; skip {
					return filepath.SkipDir
				}
				return nil
			}
			if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return nil
			}
			src, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			f, err := parser.ParseFile(token.NewFileSet(), path, src, parser.SkipObjectResolution)
			if err != nil {
				return err
			}
			aliases := map[string]string{} // local name -> IAM prefix
			for _, imp := range f.Imports {
				p, _ := strconv.Unquote(imp.Path.Value)
				const base = "github.com/aws/aws-sdk-go-v2/service/"
				if !strings.HasPrefix(p, base) || strings.Contains(strings.TrimPrefix(p, base), "/") {
					continue
				}
				pkg := strings.TrimPrefix(p, base)
				prefix, ok := sdkPrefix[pkg]
				if !ok {
					t.Errorf("%s imports AWS service package %s, which the test does not know", rel, pkg)
					continue
				}
				name := pkg
				if imp.Name != nil {
					name = imp.Name.Name
				}
				aliases[name] = prefix
			}
			ast.Inspect(f, func(n ast.Node) bool {
				cl, ok := n.(*ast.CompositeLit)
				if !ok {
					return true
				}
				sel, ok := cl.Type.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				x, ok := sel.X.(*ast.Ident)
				if !ok {
					return true
				}
				prefix, ok := aliases[x.Name]
				if !ok || !strings.HasSuffix(sel.Sel.Name, "Input") {
					return true
				}
				action := prefix + ":" + strings.TrimSuffix(sel.Sel.Name, "Input")
				if !slices.Contains(found[action], rel) {
					found[action] = append(found[action], rel)
				}
				for _, el := range cl.Elts {
					if kv, ok := el.(*ast.KeyValueExpr); ok {
						if k, ok := kv.Key.(*ast.Ident); ok && k.Name == "TagSpecifications" {
							tagged[action] = true
						}
					}
				}
				return true
			})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return found, tagged
}

// TestPolicyMatchesSource fails when the code calls an action the policy
// lacks, or the policy lists an action no code calls (other than the
// implicit ones AWS checks on kforge's calls, each with its reason).
func TestPolicyMatchesSource(t *testing.T) {
	called := sourceActions(t)
	if len(called) < 50 {
		t.Fatalf("found only %d AWS operations in the source: the scan is broken", len(called))
	}
	policy, err := Actions(All)
	if err != nil {
		t.Fatal(err)
	}
	// Implicit: no cluster type's code calls it.
	implicit, calledBySome := map[string]string{}, map[string]bool{}
	for _, p := range Permissions() {
		if p.Implicit != "" {
			implicit[p.Action] = p.Implicit
		} else {
			calledBySome[p.Action] = true
		}
	}
	for a := range calledBySome {
		delete(implicit, a)
	}
	var missing, unused, notImplicit []string
	for a, files := range called {
		if !slices.Contains(policy, a) {
			missing = append(missing, a+" (called in "+strings.Join(files, ", ")+")")
		}
		if implicit[a] != "" {
			notImplicit = append(notImplicit, a+" (called in "+strings.Join(files, ", ")+")")
		}
	}
	for _, a := range policy {
		if _, ok := called[a]; !ok && implicit[a] == "" {
			unused = append(unused, a)
		}
	}
	sort.Strings(missing)
	sort.Strings(unused)
	if len(missing) > 0 {
		t.Errorf("kforge calls actions the policy lacks (add them to Permissions in actions.go):\n  %s", strings.Join(missing, "\n  "))
	}
	if len(unused) > 0 {
		t.Errorf("the policy lists actions no code calls (remove them, or mark them Implicit with the reason AWS needs them):\n  %s", strings.Join(unused, "\n  "))
	}
	if len(notImplicit) > 0 {
		t.Errorf("actions marked Implicit are called by kforge:\n  %s", strings.Join(notImplicit, "\n  "))
	}
}

// TestTagOnCreateMatchesSource checks that the ec2:CreateAction condition
// of ec2:CreateTags names exactly the EC2 calls that tag what they create.
func TestTagOnCreateMatchesSource(t *testing.T) {
	_, tagged := scanSource(t)
	if len(tagged) == 0 {
		t.Fatal("found no EC2 call with TagSpecifications: the scan is broken")
	}
	for _, p := range Permissions() {
		if p.TagOnCreate != tagged[p.Action] {
			t.Errorf("%s: TagOnCreate is %v, but the code sets TagSpecifications: %v", p.Action, p.TagOnCreate, tagged[p.Action])
		}
		delete(tagged, p.Action)
	}
	for a := range tagged {
		t.Errorf("%s sets TagSpecifications but is not in the table", a)
	}
}
