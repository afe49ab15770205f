package preflight

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	iamtypes "github.com/aws/aws-sdk-go-v2/service/iam/types"

	"github.com/kforge/kforge/internal/awsx"
	"github.com/kforge/kforge/internal/iampolicy"
)

// principal is the IAM identity behind the caller's ARN.
type principal struct {
	kind    string // "user", "role", "root", or "" when unknown
	name    string // user or role name, without path
	account string
	arn     string // the IAM ARN to simulate (role ARN for an assumed role)
}

// principalOf reads a GetCallerIdentity ARN.
func principalOf(id awsx.Identity) principal {
	p := principal{account: id.Account, arn: id.ARN}
	parts := strings.SplitN(id.ARN, ":", 6)
	if len(parts) < 6 {
		return p
	}
	res := parts[5]
	switch {
	case res == "root":
		p.kind = "root"
	case strings.HasPrefix(res, "user/"):
		p.kind = "user"
		p.name = res[strings.LastIndex(res, "/")+1:]
	case strings.HasPrefix(res, "assumed-role/"):
		// assumed-role/<role name>/<session>
		f := strings.Split(res, "/")
		if len(f) >= 3 {
			p.kind, p.name = "role", f[1]
			p.arn = fmt.Sprintf("arn:%s:iam::%s:role/%s", parts[1], id.Account, f[1])
		}
	}
	return p
}

func (r *run) target() iampolicy.Target {
	names := r.facts.Roles
	return iampolicy.Target{
		Type: r.s.Type, Name: r.s.Name, Region: r.s.Region, Account: r.id.Account, Partition: awsx.Partition(r.s.Region),
		Roles: names, Profiles: names,
	}
}

func (r *run) permissions(ctx context.Context) {
	reqs, err := iampolicy.Requests(r.target())
	if err != nil {
		r.add(CheckPermissions, Fail, err.Error(), "")
		return
	}
	p := principalOf(r.id)
	fix := fmt.Sprintf("attach the policy that `kforge policy %s --account %s` prints to %s (or add the missing actions to its policy)", r.s.Type, r.id.Account, r.id.ARN)
	switch p.kind {
	case "root":
		r.add(CheckPermissions, Warn, "the credentials are the account's root user, which may do everything; AWS recommends an IAM user or role",
			fmt.Sprintf("create an IAM user with the policy of `kforge policy %s` and use its keys", r.s.Type))
		return
	case "":
		r.add(CheckPermissions, Warn, "could not check: "+r.id.ARN+" is neither an IAM user nor a role", fix)
		return
	}
	if p.kind == "role" {
		// The role's path is part of its ARN; GetRole knows it.
		if out, err := r.iam.GetRole(ctx, &iam.GetRoleInput{RoleName: aws.String(p.name)}); err == nil {
			p.arn = aws.ToString(out.Role.Arn)
		}
	}
	decisions, simErr := r.simulate(ctx, p, reqs)
	method := MethodSimulate
	var how string
	if simErr != nil {
		ev, sources, err := r.localEvaluator(ctx, p)
		if err != nil {
			r.setPermissions(MethodNone, nil)
			r.add(CheckPermissions, Warn,
				fmt.Sprintf("could not check: iam:SimulatePrincipalPolicy is unavailable (%s), and the policies of %s could not be read (%v)", ShortErr(simErr), p.arn, err),
				readOwnFix(r.s.Type, p))
			return
		}
		method = MethodLocal
		how = fmt.Sprintf("evaluated locally (iam:SimulatePrincipalPolicy is unavailable: %s) from %s; service control policies and session policies are not seen",
			ShortErr(simErr), strings.Join(sources, ", "))
		decisions = make([]iampolicy.Decision, len(reqs))
		for i, q := range reqs {
			decisions[i] = ev.Decide(q)
		}
	} else {
		how = "simulated with iam:SimulatePrincipalPolicy for " + p.arn
	}
	var denied, deniedReqs []string
	deniedActions := map[string]bool{}
	for i, d := range decisions {
		if d.Allowed {
			continue
		}
		line := reqs[i].String() + ": " + d.Reason
		if len(d.Uncertain) > 0 {
			line += " (" + strings.Join(d.Uncertain, "; ") + ")"
		}
		denied = append(denied, line)
		deniedActions[reqs[i].Action] = true
		deniedReqs = append(deniedReqs, reqs[i].String())
	}
	r.setPermissions(method, deniedReqs)
	actions := map[string]bool{}
	for _, q := range reqs {
		actions[q.Action] = true
	}
	if len(denied) == 0 {
		r.add(CheckPermissions, OK, fmt.Sprintf("all %d actions of `kforge policy %s` are allowed (%s)", len(actions), r.s.Type, how), "")
		return
	}
	missing := sortedKeys(deniedActions)
	sort.Strings(denied)
	r.add(CheckPermissions, Fail,
		fmt.Sprintf("%d of %d actions are not allowed: %s (%s)\n%s", len(missing), len(actions), strings.Join(missing, ", "), how, strings.Join(denied, "\n")),
		fix)
}

// setPermissions records how the permissions were checked and what was
// denied.
func (r *run) setPermissions(method string, denied []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rep.PermissionMethod = method
	r.rep.Denied = denied
}

// readOwnFix says how to let preflight read the caller's permissions.
func readOwnFix(typ string, p principal) string {
	if p.kind == "role" {
		// The name with its path, from the role's ARN when GetRole gave it.
		name := p.name
		if _, after, ok := strings.Cut(p.arn, ":role/"); ok {
			name = after
		}
		return fmt.Sprintf("let kforge read the role's permissions: use the policy of `kforge policy %s --caller-role %s`", typ, name)
	}
	return fmt.Sprintf("attach the policy of `kforge policy %s`: its statement %s lets kforge read the caller's own permissions", typ, iampolicy.SidOwnIdentity)
}

// simulate asks IAM to decide every request. Requests with the same
// resource and context go in one call.
func (r *run) simulate(ctx context.Context, p principal, reqs []iampolicy.Request) ([]iampolicy.Decision, error) {
	type group struct {
		resource string
		ctx      []iamtypes.ContextEntry
		actions  []string
		index    map[string]int // action -> request index
	}
	groups := map[string]*group{}
	var order []string
	for i, q := range reqs {
		var keys []string
		for k := range q.Context {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		key := q.Resource
		var entries []iamtypes.ContextEntry
		for _, k := range keys {
			key += "|" + k + "=" + strings.Join(q.Context[k], ",")
			entries = append(entries, iamtypes.ContextEntry{ContextKeyName: aws.String(k), ContextKeyType: iamtypes.ContextKeyTypeEnumString,
				ContextKeyValues: q.Context[k]})
		}
		g := groups[key]
		if g == nil {
			g = &group{resource: q.Resource, ctx: entries, index: map[string]int{}}
			groups[key] = g
			order = append(order, key)
		}
		g.actions = append(g.actions, q.Action)
		g.index[q.Action] = i
	}
	out := make([]iampolicy.Decision, len(reqs))
	// Each group is one call (or a few pages) and writes its own requests'
	// decisions.
	one := func(g *group) error {
		in := &iam.SimulatePrincipalPolicyInput{PolicySourceArn: aws.String(p.arn), ActionNames: g.actions, ContextEntries: g.ctx}
		if g.resource != "*" {
			in.ResourceArns = []string{g.resource}
		}
		pages := iam.NewSimulatePrincipalPolicyPaginator(r.iam, in)
		for pages.HasMorePages() {
			// One attempt: where simulation fails, local evaluation
			// takes over.
			page, err := pages.NextPage(ctx, func(o *iam.Options) { o.Retryer = aws.NopRetryer{} })
			if err != nil {
				return err
			}
			for _, res := range page.EvaluationResults {
				i, ok := g.index[aws.ToString(res.EvalActionName)]
				if !ok {
					continue
				}
				switch res.EvalDecision {
				case iamtypes.PolicyEvaluationDecisionTypeAllowed:
					out[i] = iampolicy.Decision{Allowed: true, Reason: "allowed"}
				case iamtypes.PolicyEvaluationDecisionTypeExplicitDeny:
					out[i] = iampolicy.Decision{Reason: "explicitly denied" + matched(res.MatchedStatements)}
				default:
					out[i] = iampolicy.Decision{Reason: "no policy allows it"}
				}
			}
		}
		return nil
	}
	// The first group alone: where simulation is unavailable (denied, or
	// an endpoint without it), it fails once instead of once per group.
	// Then the others, a few at a time (IAM's request rate is modest).
	if len(order) == 0 {
		return out, nil
	}
	if err := one(groups[order[0]]); err != nil {
		return nil, err
	}
	errs := make([]error, len(order))
	sem := make(chan struct{}, simulateConcurrency)
	var wg sync.WaitGroup
	for k, key := range order[1:] {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			errs[k] = one(groups[key])
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// simulateConcurrency bounds the SimulatePrincipalPolicy calls in flight.
const simulateConcurrency = 5

func matched(ss []iamtypes.Statement) string {
	var ids []string
	for _, s := range ss {
		if id := aws.ToString(s.SourcePolicyId); id != "" {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return ""
	}
	return " by " + strings.Join(ids, ", ")
}

// localEvaluator reads the principal's identity policies and permissions
// boundary. It returns the names of the policies it read.
func (r *run) localEvaluator(ctx context.Context, p principal) (*iampolicy.Evaluator, []string, error) {
	rd := &reader{iam: r.iam, managed: map[string]string{}}
	var boundary *iampolicy.NamedPolicy
	vars := map[string]string{}
	switch p.kind {
	case "user":
		vars["aws:username"] = p.name
		u, err := r.iam.GetUser(ctx, &iam.GetUserInput{UserName: aws.String(p.name)})
		if err != nil {
			return nil, nil, fmt.Errorf("iam:GetUser: %s", ShortErr(err))
		}
		if b := u.User.PermissionsBoundary; b != nil && b.PermissionsBoundaryArn != nil {
			doc, err := rd.managedDoc(ctx, aws.ToString(b.PermissionsBoundaryArn))
			if err != nil {
				return nil, nil, err
			}
			boundary = &iampolicy.NamedPolicy{Name: "permissions boundary " + aws.ToString(b.PermissionsBoundaryArn), Document: doc}
		}
		if err := rd.user(ctx, p.name); err != nil {
			return nil, nil, err
		}
	case "role":
		out, err := r.iam.GetRole(ctx, &iam.GetRoleInput{RoleName: aws.String(p.name)})
		if err != nil {
			return nil, nil, fmt.Errorf("iam:GetRole: %s", ShortErr(err))
		}
		if b := out.Role.PermissionsBoundary; b != nil && b.PermissionsBoundaryArn != nil {
			doc, err := rd.managedDoc(ctx, aws.ToString(b.PermissionsBoundaryArn))
			if err != nil {
				return nil, nil, err
			}
			boundary = &iampolicy.NamedPolicy{Name: "permissions boundary " + aws.ToString(b.PermissionsBoundaryArn), Document: doc}
		}
		if err := rd.role(ctx, p.name); err != nil {
			return nil, nil, err
		}
	}
	ev, err := iampolicy.NewEvaluator(rd.policies, boundary, vars)
	if err != nil {
		return nil, nil, err
	}
	var names []string
	for _, np := range rd.policies {
		names = append(names, np.Name)
	}
	if boundary != nil {
		names = append(names, boundary.Name)
	}
	if len(names) == 0 {
		names = []string{"no policy at all"}
	}
	return ev, names, nil
}

// reader collects identity policies.
type reader struct {
	iam      *iam.Client
	policies []iampolicy.NamedPolicy
	managed  map[string]string // ARN -> document
}

func (rd *reader) managedDoc(ctx context.Context, arn string) (string, error) {
	if d, ok := rd.managed[arn]; ok {
		return d, nil
	}
	pol, err := rd.iam.GetPolicy(ctx, &iam.GetPolicyInput{PolicyArn: aws.String(arn)})
	if err != nil {
		return "", fmt.Errorf("iam:GetPolicy %s: %s", arn, ShortErr(err))
	}
	v, err := rd.iam.GetPolicyVersion(ctx, &iam.GetPolicyVersionInput{PolicyArn: aws.String(arn), VersionId: pol.Policy.DefaultVersionId})
	if err != nil {
		return "", fmt.Errorf("iam:GetPolicyVersion %s: %s", arn, ShortErr(err))
	}
	d := aws.ToString(v.PolicyVersion.Document)
	rd.managed[arn] = d
	return d, nil
}

func (rd *reader) addManaged(ctx context.Context, owner string, attached []iamtypes.AttachedPolicy) error {
	for _, a := range attached {
		arn := aws.ToString(a.PolicyArn)
		doc, err := rd.managedDoc(ctx, arn)
		if err != nil {
			return err
		}
		rd.policies = append(rd.policies, iampolicy.NamedPolicy{Name: "managed policy " + aws.ToString(a.PolicyName) + " of " + owner, Document: doc})
	}
	return nil
}

func (rd *reader) user(ctx context.Context, name string) error {
	owner := "user " + name
	att := iam.NewListAttachedUserPoliciesPaginator(rd.iam, &iam.ListAttachedUserPoliciesInput{UserName: aws.String(name)})
	for att.HasMorePages() {
		page, err := att.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("iam:ListAttachedUserPolicies: %s", ShortErr(err))
		}
		if err := rd.addManaged(ctx, owner, page.AttachedPolicies); err != nil {
			return err
		}
	}
	inl := iam.NewListUserPoliciesPaginator(rd.iam, &iam.ListUserPoliciesInput{UserName: aws.String(name)})
	for inl.HasMorePages() {
		page, err := inl.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("iam:ListUserPolicies: %s", ShortErr(err))
		}
		for _, pn := range page.PolicyNames {
			out, err := rd.iam.GetUserPolicy(ctx, &iam.GetUserPolicyInput{UserName: aws.String(name), PolicyName: aws.String(pn)})
			if err != nil {
				return fmt.Errorf("iam:GetUserPolicy %s: %s", pn, ShortErr(err))
			}
			rd.policies = append(rd.policies, iampolicy.NamedPolicy{Name: "inline policy " + pn + " of " + owner, Document: aws.ToString(out.PolicyDocument)})
		}
	}
	groups := iam.NewListGroupsForUserPaginator(rd.iam, &iam.ListGroupsForUserInput{UserName: aws.String(name)})
	for groups.HasMorePages() {
		page, err := groups.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("iam:ListGroupsForUser: %s", ShortErr(err))
		}
		for _, g := range page.Groups {
			if err := rd.group(ctx, aws.ToString(g.GroupName)); err != nil {
				return err
			}
		}
	}
	return nil
}

func (rd *reader) group(ctx context.Context, name string) error {
	owner := "group " + name
	att := iam.NewListAttachedGroupPoliciesPaginator(rd.iam, &iam.ListAttachedGroupPoliciesInput{GroupName: aws.String(name)})
	for att.HasMorePages() {
		page, err := att.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("iam:ListAttachedGroupPolicies %s: %s", name, ShortErr(err))
		}
		if err := rd.addManaged(ctx, owner, page.AttachedPolicies); err != nil {
			return err
		}
	}
	inl := iam.NewListGroupPoliciesPaginator(rd.iam, &iam.ListGroupPoliciesInput{GroupName: aws.String(name)})
	for inl.HasMorePages() {
		page, err := inl.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("iam:ListGroupPolicies %s: %s", name, ShortErr(err))
		}
		for _, pn := range page.PolicyNames {
			out, err := rd.iam.GetGroupPolicy(ctx, &iam.GetGroupPolicyInput{GroupName: aws.String(name), PolicyName: aws.String(pn)})
			if err != nil {
				return fmt.Errorf("iam:GetGroupPolicy %s: %s", pn, ShortErr(err))
			}
			rd.policies = append(rd.policies, iampolicy.NamedPolicy{Name: "inline policy " + pn + " of " + owner, Document: aws.ToString(out.PolicyDocument)})
		}
	}
	return nil
}

func (rd *reader) role(ctx context.Context, name string) error {
	owner := "role " + name
	att := iam.NewListAttachedRolePoliciesPaginator(rd.iam, &iam.ListAttachedRolePoliciesInput{RoleName: aws.String(name)})
	for att.HasMorePages() {
		page, err := att.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("iam:ListAttachedRolePolicies: %s", ShortErr(err))
		}
		if err := rd.addManaged(ctx, owner, page.AttachedPolicies); err != nil {
			return err
		}
	}
	inl := iam.NewListRolePoliciesPaginator(rd.iam, &iam.ListRolePoliciesInput{RoleName: aws.String(name)})
	for inl.HasMorePages() {
		page, err := inl.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("iam:ListRolePolicies: %s", ShortErr(err))
		}
		for _, pn := range page.PolicyNames {
			out, err := rd.iam.GetRolePolicy(ctx, &iam.GetRolePolicyInput{RoleName: aws.String(name), PolicyName: aws.String(pn)})
			if err != nil {
				return fmt.Errorf("iam:GetRolePolicy %s: %s", pn, ShortErr(err))
			}
			rd.policies = append(rd.policies, iampolicy.NamedPolicy{Name: "inline policy " + pn + " of " + owner, Document: aws.ToString(out.PolicyDocument)})
		}
	}
	return nil
}
