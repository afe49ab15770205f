package awsx

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/aws/aws-sdk-go-v2/config"

	"github.com/kforge/kforge/internal/spec"
)

// The AWS profile in use and the shared files that hold the profiles, as
// the SDK finds them: AWS_PROFILE (else AWS_DEFAULT_PROFILE, else
// "default"), AWS_CONFIG_FILE (else ~/.aws/config) and
// AWS_SHARED_CREDENTIALS_FILE (else ~/.aws/credentials). getenv is
// os.Getenv in production. Nothing here calls AWS.

// Profile returns the name of the AWS profile in use and the variable
// that names it ("" for the default profile).
func Profile(getenv func(string) string) (name, from string) {
	for _, v := range []string{"AWS_PROFILE", "AWS_DEFAULT_PROFILE"} {
		if p := getenv(v); p != "" {
			return p, v
		}
	}
	return "default", ""
}

// EnvRegion returns the region the environment names, as the AWS CLI
// reads it: AWS_REGION, else AWS_DEFAULT_REGION; and the variable it came
// from ("" for none).
func EnvRegion(getenv func(string) string) (region, from string) {
	for _, v := range []string{"AWS_REGION", "AWS_DEFAULT_REGION"} {
		if r := getenv(v); r != "" {
			return r, v
		}
	}
	return "", ""
}

// sharedFiles returns the shared config file and the shared credentials
// file.
func sharedFiles(getenv func(string) string) (configFile, credsFile string) {
	home := getenv("HOME")
	if home == "" {
		home, _ = os.UserHomeDir()
	}
	configFile, credsFile = getenv("AWS_CONFIG_FILE"), getenv("AWS_SHARED_CREDENTIALS_FILE")
	if configFile == "" {
		configFile = filepath.Join(home, ".aws", "config")
	}
	if credsFile == "" {
		credsFile = filepath.Join(home, ".aws", "credentials")
	}
	return configFile, credsFile
}

// loadProfile reads the profile in use from the shared files.
func loadProfile(ctx context.Context, getenv func(string) string) (config.SharedConfig, error) {
	name, _ := Profile(getenv)
	configFile, credsFile := sharedFiles(getenv)
	return config.LoadSharedConfigProfile(ctx, name, func(o *config.LoadSharedConfigOptions) {
		o.ConfigFiles = []string{configFile}
		o.CredentialsFiles = []string{credsFile}
	})
}

// ProfileRegion returns the region of the AWS profile in use ("" if it
// has none, or if the default profile does not exist) and the profile's
// name. A profile named by AWS_PROFILE that does not exist is a
// UsageError that lists the profiles there are.
func ProfileRegion(ctx context.Context, getenv func(string) string) (region, profile string, err error) {
	profile, _ = Profile(getenv)
	if err := CheckProfile(ctx, getenv); err != nil {
		return "", profile, err
	}
	sc, err := loadProfile(ctx, getenv)
	var ne config.SharedConfigProfileNotExistError
	switch {
	case errors.As(err, &ne):
		return "", profile, nil
	case err != nil:
		return "", profile, fmt.Errorf("read AWS profile %q: %w", profile, err)
	}
	return sc.Region, profile, nil
}

// CheckProfile returns a UsageError, listing the profiles there are, if
// the environment names a profile that is in neither shared file.
func CheckProfile(ctx context.Context, getenv func(string) string) error {
	name, from := Profile(getenv)
	if from == "" {
		return nil
	}
	_, err := loadProfile(ctx, getenv)
	var ne config.SharedConfigProfileNotExistError
	if !errors.As(err, &ne) {
		return nil // the SDK reports any other problem of the files
	}
	return profileError(name, from, getenv)
}

// profileError says that profile name (named by variable from) does not
// exist, and which profiles do.
func profileError(name, from string, getenv func(string) string) error {
	configFile, credsFile := sharedFiles(getenv)
	where := fmt.Sprintf("%s or %s", configFile, credsFile)
	by := ""
	if from != "" {
		by = " (" + from + ")"
	}
	names := Profiles(getenv)
	if len(names) == 0 {
		return spec.Usagef("AWS profile %q%s does not exist: there is no profile in %s. Create it (aws configure --profile %s, or aws configure sso), or unset %s",
			name, by, where, name, orDefault(from, "AWS_PROFILE"))
	}
	return spec.Usagef("AWS profile %q%s does not exist in %s; the profiles there are: %s. Set %s to one of them, or unset it",
		name, by, where, strings.Join(names, ", "), orDefault(from, "AWS_PROFILE"))
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Profiles lists the profiles of the shared files, sorted: the sections
// `[default]` and `[profile NAME]` of the config file, and every section
// `[NAME]` of the credentials file. Unreadable files add nothing.
func Profiles(getenv func(string) string) []string {
	configFile, credsFile := sharedFiles(getenv)
	set := map[string]bool{}
	for _, s := range iniSections(configFile) {
		switch {
		case s == "default":
			set[s] = true
		case strings.HasPrefix(s, "profile ") || strings.HasPrefix(s, "profile\t"):
			if n := strings.TrimSpace(s[len("profile"):]); n != "" {
				set[n] = true
			}
		}
	}
	for _, s := range iniSections(credsFile) {
		set[s] = true
	}
	out := make([]string, 0, len(set))
	for n := range set {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// iniSections returns the section names of an INI file, trimmed.
func iniSections(path string) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "[") {
			continue
		}
		end := strings.IndexByte(line, ']')
		if end < 0 {
			continue
		}
		if name := strings.TrimSpace(line[1:end]); name != "" {
			out = append(out, name)
		}
	}
	return out
}
