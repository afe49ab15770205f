// Package iamrole reconciles the IAM roles and instance profiles a cluster
// runs with, as engine steps. IAM names are global to the account, so every
// role and profile kforge makes is named kforge-<cluster>-<suffix> and
// tagged with its cluster; kforge never touches one tagged for another.
package iamrole

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"path"
	"reflect"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	iamtypes "github.com/aws/aws-sdk-go-v2/service/iam/types"

	"github.com/kforge/kforge/internal/awsx"
	"github.com/kforge/kforge/internal/engine"
	"github.com/kforge/kforge/internal/spec"
)

// Role is the wanted state of a role.
type Role struct {
	// Suffix makes the name: kforge-<cluster>-<suffix>.
	Suffix string
	// Service is the principal trusted to assume the role
	// ("eks.amazonaws.com", "ec2.amazonaws.com").
	Service string
	// Managed lists AWS managed policy names to attach
	// ("AmazonEKSClusterPolicy"), with their path for a policy under one
	// ("service-role/AmazonEBSCSIDriverPolicy").
	Managed []string
	// Inline is an inline policy document (JSON), put as policy "kforge".
	// Empty means the role carries no policy "kforge": one found on it is
	// drift, and is deleted.
	Inline string
	// Profile makes an instance profile of the same name holding the role.
	Profile bool
}

// Out is the output of a role step.
type Out struct {
	Name       string `json:"name"`
	ARN        string `json:"arn"`
	ProfileARN string `json:"profileArn,omitempty"`
	// ProfileID is the instance profile's unique ID: a profile deleted and
	// made again has the same ARN but another ID.
	ProfileID string `json:"profileId,omitempty"`
}

// InlinePolicyName is the name of the inline policy kforge puts on a role.
const InlinePolicyName = "kforge"

// Add adds role r of cluster ref to g as a resource with step ID id. Every
// run finds the role again: a role or instance profile deleted outside
// kforge is made again, a managed policy detached is attached again, an
// inline policy changed is put back (or, where r wants none, deleted), and
// a role or profile that carries another cluster's tags stops the run.
func Add(g *engine.Graph, c *iam.Client, ref spec.Ref, id string, r Role, needs ...engine.Dep) engine.Ref[Out] {
	name := awsx.IAMName(ref.Name, r.Suffix)
	title := fmt.Sprintf("IAM role %s (trusted by %s)", name, r.Service)
	if r.Profile {
		title = fmt.Sprintf("IAM role and instance profile %s (trusted by %s)", name, r.Service)
	}
	return engine.Add(g, engine.Resource[Out]{
		ID:     id,
		Needs:  needs,
		Title:  title,
		Inputs: r,
		Find: func(ctx context.Context, _ *engine.Run, prev *Out) (engine.Observation[Out], error) {
			return find(ctx, c, ref, name, r, prev)
		},
		Create: func(ctx context.Context, _ *engine.Run) (Out, error) { return create(ctx, c, ref, name, r) },
		Update: func(ctx context.Context, _ *engine.Run, _ Out) (Out, error) { return ensure(ctx, c, ref, name, r) },
		Delete: func(ctx context.Context, _ *engine.Run, _ *Out) error { return Delete(ctx, c, ref, name) },
	})
}

// find observes role name and its profile, and says how they differ from r.
func find(ctx context.Context, c *iam.Client, ref spec.Ref, name string, r Role, prev *Out) (engine.Observation[Out], error) {
	got, err := c.GetRole(ctx, &iam.GetRoleInput{RoleName: aws.String(name)})
	switch {
	case awsx.IsNotFound(err) && prev != nil:
		return engine.Gone[Out]("IAM role %s was deleted outside kforge", name), nil
	case awsx.IsNotFound(err):
		return engine.Missing[Out](), nil
	case err != nil:
		return engine.Observation[Out]{}, fmt.Errorf("look up IAM role %s: %w", name, err)
	}
	if o := owner(got.Role.Tags); o != ref {
		return engine.Unsafe[Out]("%v", &OwnerError{Kind: "role", Name: name, Owner: o}), nil
	}
	out := Out{Name: name, ARN: aws.ToString(got.Role.Arn)}
	var drift []string
	if len(r.Managed) > 0 {
		attached, err := awsx.Collect(ctx, iam.NewListAttachedRolePoliciesPaginator(c, &iam.ListAttachedRolePoliciesInput{RoleName: aws.String(name)}),
			func(o *iam.ListAttachedRolePoliciesOutput) []iamtypes.AttachedPolicy { return o.AttachedPolicies })
		if err != nil {
			return engine.Observation[Out]{}, fmt.Errorf("list policies of IAM role %s: %w", name, err)
		}
		for _, p := range r.Managed {
			// A policy under a path (service-role/...) is named by its
			// last element.
			if !slices.ContainsFunc(attached, func(a iamtypes.AttachedPolicy) bool { return aws.ToString(a.PolicyName) == path.Base(p) }) {
				drift = append(drift, "policy "+p+" is not attached")
			}
		}
	}
	if r.Inline != "" {
		pol, err := c.GetRolePolicy(ctx, &iam.GetRolePolicyInput{RoleName: aws.String(name), PolicyName: aws.String(InlinePolicyName)})
		switch {
		case awsx.IsNotFound(err):
			drift = append(drift, "its inline policy "+InlinePolicyName+" was deleted")
		case err != nil:
			return engine.Observation[Out]{}, fmt.Errorf("read the inline policy of IAM role %s: %w", name, err)
		case !samePolicy(aws.ToString(pol.PolicyDocument), r.Inline):
			drift = append(drift, "its inline policy "+InlinePolicyName+" was changed")
		}
	} else {
		// A role that should carry none may still have one: put there
		// outside kforge, or by an earlier release that granted more.
		has, err := hasInline(ctx, c, name)
		if err != nil {
			return engine.Observation[Out]{}, err
		}
		if has {
			drift = append(drift, "it has an inline policy "+InlinePolicyName+" it should not have")
		}
	}
	if r.Profile {
		prof, err := c.GetInstanceProfile(ctx, &iam.GetInstanceProfileInput{InstanceProfileName: aws.String(name)})
		switch {
		case awsx.IsNotFound(err):
			drift = append(drift, "instance profile "+name+" was deleted outside kforge")
		case err != nil:
			return engine.Observation[Out]{}, fmt.Errorf("look up instance profile %s: %w", name, err)
		default:
			p := prof.InstanceProfile
			if o := owner(p.Tags); o != ref && len(p.Tags) > 0 {
				return engine.Unsafe[Out]("%v", &OwnerError{Kind: "instance profile", Name: name, Owner: o}), nil
			}
			out.ProfileARN, out.ProfileID = aws.ToString(p.Arn), aws.ToString(p.InstanceProfileId)
			if !slices.ContainsFunc(p.Roles, func(x iamtypes.Role) bool { return aws.ToString(x.RoleName) == name }) {
				drift = append(drift, "the role is not in instance profile "+name)
			}
		}
	}
	if len(drift) > 0 {
		return engine.Drifted(out, "IAM role %s: %s", name, strings.Join(drift, "; ")), nil
	}
	return engine.InSync(out), nil
}

// samePolicy reports whether two policy documents say the same. IAM
// returns documents URL-encoded and may reformat them.
func samePolicy(got, want string) bool {
	if u, err := url.QueryUnescape(got); err == nil {
		got = u
	}
	var g, w any
	if json.Unmarshal([]byte(got), &g) != nil || json.Unmarshal([]byte(want), &w) != nil {
		return got == want
	}
	return reflect.DeepEqual(g, w)
}

// PolicyARN returns the ARN of an AWS managed policy in region's partition.
func PolicyARN(region, policy string) string {
	return fmt.Sprintf("arn:%s:iam::aws:policy/%s", awsx.Partition(region), policy)
}

func trustPolicy(service string) string {
	doc := map[string]any{
		"Version": "2012-10-17",
		"Statement": []map[string]any{{
			"Effect":    "Allow",
			"Principal": map[string]any{"Service": service},
			"Action":    "sts:AssumeRole",
		}},
	}
	b, _ := json.Marshal(doc)
	return string(b)
}

// OwnerError says that an IAM name belongs to another cluster (or to
// no kforge cluster).
type OwnerError struct {
	Kind, Name string
	Owner      spec.Ref
}

func (e *OwnerError) Error() string {
	if e.Owner.Name == "" {
		return fmt.Sprintf("IAM %s %s exists but was not made by kforge; kforge will not use or change it: pick another cluster name", e.Kind, e.Name)
	}
	return fmt.Sprintf("IAM %s %s belongs to %s (IAM names are global to the account): pick another cluster name, or delete that cluster", e.Kind, e.Name, e.Owner)
}

func owner(tags []iamtypes.Tag) spec.Ref {
	var r spec.Ref
	for _, t := range tags {
		switch aws.ToString(t.Key) {
		case awsx.TagCluster:
			r.Name = aws.ToString(t.Value)
		case awsx.TagType:
			r.Type = aws.ToString(t.Value)
		case awsx.TagRegion:
			r.Region = aws.ToString(t.Value)
		}
	}
	return r
}

// CheckOwner returns an *OwnerError if the role name exists and is not
// ref's; nil if it is absent or ref's.
func CheckOwner(ctx context.Context, c *iam.Client, ref spec.Ref, suffix string) error {
	name := awsx.IAMName(ref.Name, suffix)
	out, err := c.GetRole(ctx, &iam.GetRoleInput{RoleName: aws.String(name)})
	if awsx.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up IAM role %s: %w", name, err)
	}
	if o := owner(out.Role.Tags); o != ref {
		return &OwnerError{Kind: "role", Name: name, Owner: o}
	}
	return nil
}

func ensure(ctx context.Context, c *iam.Client, ref spec.Ref, name string, r Role) (Out, error) {
	out := Out{Name: name}
	got, err := c.GetRole(ctx, &iam.GetRoleInput{RoleName: aws.String(name)})
	switch {
	case awsx.IsNotFound(err):
		created, err := c.CreateRole(ctx, &iam.CreateRoleInput{
			RoleName:                 aws.String(name),
			AssumeRolePolicyDocument: aws.String(trustPolicy(r.Service)),
			Description:              aws.String(fmt.Sprintf("kforge %s cluster %s in %s", ref.Type, ref.Name, ref.Region)),
			Tags:                     awsx.IAMTags(awsx.Tags(ref, name)),
		})
		if awsx.Code(err) == "EntityAlreadyExists" {
			// A concurrent or lost earlier call made it: adopt it after
			// checking whose it is.
			return ensure(ctx, c, ref, name, r)
		}
		if err != nil {
			return out, fmt.Errorf("create IAM role %s: %w", name, err)
		}
		out.ARN = aws.ToString(created.Role.Arn)
	case err != nil:
		return out, fmt.Errorf("look up IAM role %s: %w", name, err)
	default:
		if o := owner(got.Role.Tags); o != ref {
			return out, &OwnerError{Kind: "role", Name: name, Owner: o}
		}
		out.ARN = aws.ToString(got.Role.Arn)
	}
	if err := policies(ctx, c, ref, name, r); err != nil {
		return out, err
	}
	if r.Inline == "" {
		if err := dropInline(ctx, c, name); err != nil {
			return out, err
		}
	}
	if r.Profile {
		prof, err := profile(ctx, c, ref, name, false)
		if err != nil {
			return out, err
		}
		if err := addRole(ctx, c, name, prof); err != nil {
			return out, err
		}
		out.ProfileARN, out.ProfileID = aws.ToString(prof.Arn), aws.ToString(prof.InstanceProfileId)
	}
	return out, nil
}

// create makes a role that Find saw missing, without looking it up again:
// the role with its policies and the instance profile side by side (the
// profile does not need the role), then the role goes into the profile.
// What a lost earlier call made (EntityAlreadyExists) is adopted once its
// owner is checked.
func create(ctx context.Context, c *iam.Client, ref spec.Ref, name string, r Role) (Out, error) {
	out := Out{Name: name}
	var prof *iamtypes.InstanceProfile
	err := awsx.All(ctx, func(ctx context.Context) error {
		created, err := c.CreateRole(ctx, &iam.CreateRoleInput{
			RoleName:                 aws.String(name),
			AssumeRolePolicyDocument: aws.String(trustPolicy(r.Service)),
			Description:              aws.String(fmt.Sprintf("kforge %s cluster %s in %s", ref.Type, ref.Name, ref.Region)),
			Tags:                     awsx.IAMTags(awsx.Tags(ref, name)),
		})
		if awsx.Code(err) == "EntityAlreadyExists" {
			role := r
			role.Profile = false
			got, err := ensure(ctx, c, ref, name, role)
			out.ARN = got.ARN
			return err
		}
		if err != nil {
			return fmt.Errorf("create IAM role %s: %w", name, err)
		}
		out.ARN = aws.ToString(created.Role.Arn)
		return policies(ctx, c, ref, name, r)
	}, func(ctx context.Context) (err error) {
		if r.Profile {
			prof, err = profile(ctx, c, ref, name, true)
		}
		return err
	})
	if err != nil || !r.Profile {
		return out, err
	}
	if err := addRole(ctx, c, name, prof); err != nil {
		return out, err
	}
	out.ProfileARN, out.ProfileID = aws.ToString(prof.Arn), aws.ToString(prof.InstanceProfileId)
	return out, nil
}

// policies attaches role name's managed policies and puts its inline one,
// all at once.
func policies(ctx context.Context, c *iam.Client, ref spec.Ref, name string, r Role) error {
	var calls []func(context.Context) error
	for _, p := range r.Managed {
		calls = append(calls, func(ctx context.Context) error {
			if _, err := c.AttachRolePolicy(ctx, &iam.AttachRolePolicyInput{RoleName: aws.String(name), PolicyArn: aws.String(PolicyARN(ref.Region, p))}); err != nil {
				return fmt.Errorf("attach %s to IAM role %s: %w", p, name, err)
			}
			return nil
		})
	}
	if r.Inline != "" {
		calls = append(calls, func(ctx context.Context) error {
			if _, err := c.PutRolePolicy(ctx, &iam.PutRolePolicyInput{RoleName: aws.String(name), PolicyName: aws.String(InlinePolicyName), PolicyDocument: aws.String(r.Inline)}); err != nil {
				return fmt.Errorf("put the inline policy of IAM role %s: %w", name, err)
			}
			return nil
		})
	}
	return awsx.All(ctx, calls...)
}

// hasInline reports whether role name has the inline policy kforge puts
// (InlinePolicyName). It lists the role's inline policies rather than
// reading that one, so that a role without one costs one call, allowed on
// every kforge role.
func hasInline(ctx context.Context, c *iam.Client, name string) (bool, error) {
	pages := iam.NewListRolePoliciesPaginator(c, &iam.ListRolePoliciesInput{RoleName: aws.String(name)})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return false, fmt.Errorf("list inline policies of IAM role %s: %w", name, err)
		}
		if slices.Contains(page.PolicyNames, InlinePolicyName) {
			return true, nil
		}
	}
	return false, nil
}

// dropInline deletes the inline policy kforge puts on role name, if the
// role has it: for a role that should carry none. Other inline policies
// are not kforge's and stay.
func dropInline(ctx context.Context, c *iam.Client, name string) error {
	has, err := hasInline(ctx, c, name)
	if err != nil || !has {
		return err
	}
	_, err = c.DeleteRolePolicy(ctx, &iam.DeleteRolePolicyInput{RoleName: aws.String(name), PolicyName: aws.String(InlinePolicyName)})
	if err != nil && !awsx.IsNotFound(err) {
		return fmt.Errorf("delete inline policy %s of IAM role %s: %w", InlinePolicyName, name, err)
	}
	return nil
}

// profile returns the instance profile of name, made if it is missing
// (with missing, without looking it up first).
func profile(ctx context.Context, c *iam.Client, ref spec.Ref, name string, missing bool) (*iamtypes.InstanceProfile, error) {
	if !missing {
		got, err := c.GetInstanceProfile(ctx, &iam.GetInstanceProfileInput{InstanceProfileName: aws.String(name)})
		switch {
		case err == nil:
			prof := got.InstanceProfile
			if o := owner(prof.Tags); o != ref && len(prof.Tags) > 0 {
				return nil, &OwnerError{Kind: "instance profile", Name: name, Owner: o}
			}
			return prof, nil
		case !awsx.IsNotFound(err):
			return nil, fmt.Errorf("look up instance profile %s: %w", name, err)
		}
	}
	created, err := c.CreateInstanceProfile(ctx, &iam.CreateInstanceProfileInput{
		InstanceProfileName: aws.String(name),
		Tags:                awsx.IAMTags(awsx.Tags(ref, name)),
	})
	if awsx.Code(err) == "EntityAlreadyExists" {
		return profile(ctx, c, ref, name, false)
	}
	if err != nil {
		return nil, fmt.Errorf("create instance profile %s: %w", name, err)
	}
	return created.InstanceProfile, nil
}

// addRole puts role name into its instance profile, unless it is there.
func addRole(ctx context.Context, c *iam.Client, name string, prof *iamtypes.InstanceProfile) error {
	for _, r := range prof.Roles {
		if aws.ToString(r.RoleName) == name {
			return nil
		}
	}
	_, err := c.AddRoleToInstanceProfile(ctx, &iam.AddRoleToInstanceProfileInput{InstanceProfileName: aws.String(name), RoleName: aws.String(name)})
	if err != nil && awsx.Code(err) != "LimitExceeded" {
		return fmt.Errorf("add role %s to its instance profile: %w", name, err)
	}
	return nil
}

// Delete removes role name and the instance profile of the same name:
// detaches managed policies, deletes inline ones, takes the role out of
// every instance profile, then deletes both. Absent is engine.ErrAbsent; a
// role of another owner is refused.
func Delete(ctx context.Context, c *iam.Client, ref spec.Ref, name string) error {
	deleted := false
	prof, err := c.GetInstanceProfile(ctx, &iam.GetInstanceProfileInput{InstanceProfileName: aws.String(name)})
	switch {
	case awsx.IsNotFound(err):
	case err != nil:
		return fmt.Errorf("look up instance profile %s: %w", name, err)
	default:
		if o := owner(prof.InstanceProfile.Tags); o != ref && len(prof.InstanceProfile.Tags) > 0 {
			return &OwnerError{Kind: "instance profile", Name: name, Owner: o}
		}
		for _, r := range prof.InstanceProfile.Roles {
			if err := removeFromProfile(ctx, c, name, aws.ToString(r.RoleName)); err != nil {
				return fmt.Errorf("remove role from instance profile %s: %w", name, err)
			}
		}
		if _, err := c.DeleteInstanceProfile(ctx, &iam.DeleteInstanceProfileInput{InstanceProfileName: aws.String(name)}); err != nil && !awsx.IsNotFound(err) {
			return fmt.Errorf("delete instance profile %s: %w", name, err)
		}
		deleted = true
	}

	role, err := c.GetRole(ctx, &iam.GetRoleInput{RoleName: aws.String(name)})
	if awsx.IsNotFound(err) {
		if deleted {
			return nil
		}
		return engine.ErrAbsent
	}
	if err != nil {
		return fmt.Errorf("look up IAM role %s: %w", name, err)
	}
	if o := owner(role.Role.Tags); o != ref {
		return &OwnerError{Kind: "role", Name: name, Owner: o}
	}
	attached := iam.NewListAttachedRolePoliciesPaginator(c, &iam.ListAttachedRolePoliciesInput{RoleName: aws.String(name)})
	for attached.HasMorePages() {
		page, err := attached.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("list policies of IAM role %s: %w", name, err)
		}
		for _, p := range page.AttachedPolicies {
			if _, err := c.DetachRolePolicy(ctx, &iam.DetachRolePolicyInput{RoleName: aws.String(name), PolicyArn: p.PolicyArn}); err != nil && !awsx.IsNotFound(err) {
				return fmt.Errorf("detach %s from IAM role %s: %w", aws.ToString(p.PolicyName), name, err)
			}
		}
	}
	inline := iam.NewListRolePoliciesPaginator(c, &iam.ListRolePoliciesInput{RoleName: aws.String(name)})
	for inline.HasMorePages() {
		page, err := inline.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("list inline policies of IAM role %s: %w", name, err)
		}
		for _, p := range page.PolicyNames {
			if _, err := c.DeleteRolePolicy(ctx, &iam.DeleteRolePolicyInput{RoleName: aws.String(name), PolicyName: aws.String(p)}); err != nil && !awsx.IsNotFound(err) {
				return fmt.Errorf("delete inline policy %s of IAM role %s: %w", p, name, err)
			}
		}
	}
	profiles, err := c.ListInstanceProfilesForRole(ctx, &iam.ListInstanceProfilesForRoleInput{RoleName: aws.String(name)})
	if err != nil && !awsx.IsNotFound(err) {
		return fmt.Errorf("list instance profiles of IAM role %s: %w", name, err)
	}
	if profiles != nil {
		for _, p := range profiles.InstanceProfiles {
			if err := removeFromProfile(ctx, c, aws.ToString(p.InstanceProfileName), name); err != nil {
				return fmt.Errorf("remove IAM role %s from instance profile %s: %w", name, aws.ToString(p.InstanceProfileName), err)
			}
		}
	}
	if _, err := c.DeleteRole(ctx, &iam.DeleteRoleInput{RoleName: aws.String(name)}); err != nil && !awsx.IsNotFound(err) {
		return fmt.Errorf("delete IAM role %s: %w", name, err)
	}
	return nil
}

// removeFromProfile takes a role out of an instance profile. A lost
// answer is not retried blindly: the profile is read again and the role
// found gone is success (a second RemoveRoleFromInstanceProfile of a role
// already removed is NoSuchEntity on AWS, and an HTTP 500 on the
// emulator).
func removeFromProfile(ctx context.Context, c *iam.Client, profile, role string) error {
	removed := func(ctx context.Context) (struct{}, bool, error) {
		out, err := c.GetInstanceProfile(ctx, &iam.GetInstanceProfileInput{InstanceProfileName: aws.String(profile)})
		if awsx.IsNotFound(err) {
			return struct{}{}, true, nil
		}
		if err != nil {
			return struct{}{}, false, err
		}
		for _, r := range out.InstanceProfile.Roles {
			if aws.ToString(r.RoleName) == role {
				return struct{}{}, false, nil
			}
		}
		return struct{}{}, true, nil
	}
	_, err := awsx.CreateOnce(ctx, removed, func(ctx context.Context) (struct{}, error) {
		_, err := c.RemoveRoleFromInstanceProfile(ctx, &iam.RemoveRoleFromInstanceProfileInput{
			InstanceProfileName: aws.String(profile), RoleName: aws.String(role)}, func(o *iam.Options) { o.Retryer = awsx.SafeRetryer(o.Retryer) })
		if awsx.IsNotFound(err) {
			return struct{}{}, nil
		}
		return struct{}{}, err
	})
	return err
}
