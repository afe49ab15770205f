package cli

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/kforge/kforge/internal/awsx"
	"github.com/kforge/kforge/internal/credentials"
	"github.com/kforge/kforge/internal/spec"
)

// credRegion is the region used to check credentials with STS when none is
// given (STS is global; any commercial region answers).
const credRegion = "us-east-1"

func (a *App) credCommand() *cobra.Command {
	var show, del bool
	var region, output string
	c := &cobra.Command{
		Use:   "cred",
		Short: "Store, show or delete the AWS credentials kforge uses",
		Long: `Store, show or delete the AWS credentials kforge uses.

kforge takes credentials, in order, from:
  1. AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN)
  2. what 'kforge cred' stored (KFORGE_HOME/credentials.json, mode 0600)
  3. the AWS SDK's default chain (AWS_PROFILE, shared config, SSO, instance role)

'kforge cred' asks for an access key ID and a secret access key (hidden on a
terminal; two lines on standard input otherwise), checks them with
sts:GetCallerIdentity and stores them only if they work.`,
		Example: `  kforge cred
  printf '%s\n%s\n' "$KEY_ID" "$SECRET" | kforge cred
  kforge cred --show
  kforge cred --delete`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if show && del {
				return spec.Usagef("--show and --delete exclude each other")
			}
			home, err := a.Home()
			if err != nil {
				return err
			}
			switch {
			case del:
				removed, err := credentials.Delete(home)
				if err != nil {
					return fmt.Errorf("delete stored credentials: %w", err)
				}
				if removed {
					fprintf(a.Stderr, "Deleted the stored credentials (%s).\n", credentials.Path(home))
				} else {
					fprintf(a.Stderr, "No credentials were stored.\n")
				}
				return nil
			case show:
				return a.credShow(cmd.Context(), region, output)
			default:
				return a.credStore(cmd.Context(), home, region)
			}
		},
	}
	c.Flags().BoolVar(&show, "show", false, "print which credential source is in use, the account and the caller ARN (never a secret)")
	c.Flags().BoolVar(&del, "delete", false, "remove the stored credentials")
	c.Flags().StringVar(&region, "region", "", "region of the STS endpoint used to check credentials (default: AWS_REGION, AWS_DEFAULT_REGION, the AWS profile's region, else us-east-1)")
	addOutputFlag(c, &output)
	return c
}

func (a *App) credShow(ctx context.Context, region, output string) error {
	if region == "" {
		region = credRegion
	}
	cfg, source, err := a.awsConfig(ctx, region)
	if err != nil {
		return err
	}
	id, err := awsx.WhoAmI(ctx, cfg)
	if err != nil {
		return fmt.Errorf("the credentials from %s do not work: %s", source, awsx.Message(err))
	}
	if output == outputJSON {
		return writeJSON(a.Stdout, map[string]string{"source": source, "account": id.Account, "arn": id.ARN})
	}
	t := newTable(a.Stdout)
	fmt.Fprintf(t, "source:\t%s\naccount:\t%s\narn:\t%s\n", source, id.Account, id.ARN)
	return t.Flush()
}

func (a *App) credStore(ctx context.Context, home, region string) error {
	if region == "" {
		region = credRegion
	}
	keyID, secret, err := a.readKeys()
	if err != nil {
		return err
	}
	creds := credentials.Keys{AccessKeyID: keyID, SecretAccessKey: secret}
	cfg, _, err := a.loadAWS(ctx, awsx.Options{Region: region, Unchecked: true})
	if err != nil {
		return err
	}
	id, err := awsx.VerifyCredentials(ctx, cfg, creds)
	if err != nil {
		if awsx.IsBadCredentials(err) || awsx.IsAccessDenied(err) {
			return spec.Usagef("AWS rejected these credentials (%s); nothing was stored. Check the access key ID and secret, and that the key is active", awsx.Code(err))
		}
		return fmt.Errorf("could not check the credentials with AWS STS, nothing was stored: %w", err)
	}
	if err := credentials.Store(home, creds); err != nil {
		return fmt.Errorf("store credentials: %w", err)
	}
	fprintf(a.Stderr, "Stored credentials of %s (account %s) in %s.\n", id.ARN, id.Account, credentials.Path(home))
	if src, err := credentials.Resolve(a.Getenv, home); err == nil && src.Kind == credentials.Env {
		fprintf(a.Stderr, "Note: AWS_ACCESS_KEY_ID is set in the environment and takes precedence over the stored credentials.\n")
	}
	return nil
}

// readKeys reads the access key ID and secret: prompts with hidden input on
// a terminal, two lines otherwise.
func (a *App) readKeys() (string, string, error) {
	if f, ok := a.Stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fprintf(a.Stderr, "AWS access key ID: ")
		id, err := term.ReadPassword(int(f.Fd()))
		fprintf(a.Stderr, "\n")
		if err != nil {
			return "", "", err
		}
		fprintf(a.Stderr, "AWS secret access key: ")
		secret, err := term.ReadPassword(int(f.Fd()))
		fprintf(a.Stderr, "\n")
		if err != nil {
			return "", "", err
		}
		return validateKeys(string(id), string(secret))
	}
	sc := bufio.NewScanner(a.Stdin)
	var lines []string
	for len(lines) < 2 && sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) < 2 {
		return "", "", spec.Usagef("kforge cred reads two lines on standard input: the access key ID, then the secret access key")
	}
	return validateKeys(lines[0], lines[1])
}

func validateKeys(id, secret string) (string, string, error) {
	id, secret = strings.TrimSpace(id), strings.TrimSpace(secret)
	if id == "" || secret == "" {
		return "", "", spec.Usagef("both the access key ID and the secret access key are needed; nothing was stored")
	}
	if strings.ContainsAny(id, " \t") || strings.ContainsAny(secret, " \t") {
		return "", "", spec.Usagef("credentials contain spaces; nothing was stored")
	}
	return id, secret, nil
}
