package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kforge/kforge/internal/iampolicy"
	"github.com/kforge/kforge/internal/spec"
)

func (a *App) policyCommand() *cobra.Command {
	var o iampolicy.Options
	var explain bool
	c := &cobra.Command{
		Use:   "policy aws|ha-aws|all",
		Short: "Print the one IAM policy kforge needs, as JSON",
		Long: `Print the IAM policy that lets a user (or role) run kforge, as JSON: exactly
the actions kforge calls, for one cluster type or for all. Attach it to the
IAM user or role whose credentials kforge uses; kforge creates and deletes
every other role and instance profile itself.

IAM role and instance-profile actions reach only names starting with
kforge-; iam:PassRole hands kforge-* roles only to eks.amazonaws.com (aws)
and ec2.amazonaws.com (ha-aws). 'kforge preflight' checks that the
credentials in use are allowed all of it.`,
		Example: `  kforge policy ha-aws > kforge-policy.json
  aws iam create-policy --policy-name kforge --policy-document file://kforge-policy.json
  kforge policy all --account 123456789012
  kforge policy aws --explain`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			typ := args[0]
			if typ != spec.TypeEKS && typ != spec.TypeHA && typ != iampolicy.All {
				return spec.Usagef("unknown cluster type %q: use aws, ha-aws or all", typ)
			}
			if o.Partition != "aws" && o.Partition != "aws-cn" && o.Partition != "aws-us-gov" {
				return spec.Usagef("invalid --partition %q: use aws, aws-cn or aws-us-gov", o.Partition)
			}
			doc, err := iampolicy.Policy(typ, o)
			if err != nil {
				return spec.Usagef("%v", err)
			}
			if explain {
				return a.explainPolicy(typ)
			}
			_, err = a.Stdout.Write(doc.JSON())
			return err
		},
	}
	fl := c.Flags()
	fl.StringVar(&o.Account, "account", "", "12-digit AWS account ID to put in the ARNs (default: *)")
	fl.StringVar(&o.Partition, "partition", "aws", "AWS partition of the ARNs: aws, aws-cn or aws-us-gov")
	fl.StringVar(&o.CallerRole, "caller-role", "", "name of the IAM role kforge runs as, if it runs as a role (SSO, instance role): lets preflight read that role's permissions")
	fl.BoolVar(&explain, "explain", false, "print a table of the actions and what kforge needs each for, instead of the policy")
	return c
}

// explainPolicy prints each action of a type's policy with its reason.
func (a *App) explainPolicy(typ string) error {
	perms, err := iampolicy.ForType(typ)
	if err != nil {
		return err
	}
	t := newTable(a.Stdout)
	fmt.Fprintln(t, "ACTION\tTYPES\tWHY")
	for _, p := range perms {
		why := p.Why
		if p.Implicit != "" {
			why = "not called by kforge; " + p.Implicit
		}
		fmt.Fprintf(t, "%s\t%s\t%s\n", p.Action, strings.Join(p.Types, ","), why)
	}
	return t.Flush()
}
