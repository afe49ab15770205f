package lifecycle

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/kforge/kforge/internal/spec"
)

// SettingChange is a setting of an existing cluster that a create was
// given another value of.
type SettingChange struct {
	Flag string `json:"flag"`
	Old  string `json:"old"`
	New  string `json:"new"`
	// Command changes it on the existing cluster; empty when only a new
	// cluster can have it.
	Command string `json:"command,omitempty"`
}

// setting is how a create's flag reads a spec.
type setting struct {
	flag string
	get  func(spec.Spec) string
	// command changes the setting of cluster ref to the value v.
	command func(ref spec.Ref, v string) string
}

func itoa(n int) string { return strconv.Itoa(n) }

var settings = []setting{
	{"--vpc-id", func(s spec.Spec) string { return s.VPCID }, nil},
	{"--subnet-ids", func(s spec.Spec) string { return strings.Join(s.SubnetIDs, ",") }, nil},
	{"--k8s-version", func(s spec.Spec) string { return s.Version + s.K8sVersion }, func(ref spec.Ref, v string) string {
		if ref.Type != spec.TypeEKS {
			return ""
		}
		return "kforge upgrade " + ref.Args() + " --k8s-version " + v
	}},
	{"--node-size", func(s spec.Spec) string { return s.NodeSize }, nil},
	{"--nodes", func(s spec.Spec) string { return itoa(s.Nodes) }, func(ref spec.Ref, v string) string {
		return "kforge scale " + ref.Args() + " --nodes " + v
	}},
	{"--bootstrap", func(s spec.Spec) string { return s.Bootstrap }, nil},
	{"--control-planes", func(s spec.Spec) string { return itoa(s.ControlPlanes) }, nil},
	{"--workers", func(s spec.Spec) string { return itoa(s.Workers) }, func(ref spec.Ref, v string) string {
		return "kforge scale " + ref.Args() + " --workers " + v
	}},
	{"--etcd", func(s spec.Spec) string { return itoa(s.Etcd) }, nil},
	{"--cp-size", func(s spec.Spec) string { return s.CPSize }, nil},
	{"--wp-size", func(s spec.Spec) string { return s.WPSize }, nil},
	{"--etcd-size", func(s spec.Spec) string { return s.EtcdSize }, nil},
	{"--lb-size", func(s spec.Spec) string { return s.LBSize }, nil},
	{"--ami", func(s spec.Spec) string { return s.AMI }, nil},
	{"--ssh-cidr", func(s spec.Spec) string { return s.SSHCIDR }, nil},
	{"--artifacts", func(s spec.Spec) string { return s.Artifacts }, nil},
	{"--image-repository", func(s spec.Spec) string { return s.ImageRepository }, nil},
	{"--no-cloud-integration", func(s spec.Spec) string { return strconv.FormatBool(s.NoCloudIntegration) }, nil},
	{"--etcd-backups", func(s spec.Spec) string { return s.EtcdBackups }, nil},
	{"--backup-every", func(s spec.Spec) string {
		if s.BackupEvery == 0 {
			return ""
		}
		return s.BackupEvery.String()
	}, nil},
	{"--backup-keep", func(s spec.Spec) string { return itoa(s.BackupKeep) }, nil},
}

// SettingChanges lists the settings of an existing cluster (old) that a
// create with spec s would change, in the order of the create's flags.
func SettingChanges(old, s spec.Spec) []SettingChange {
	var out []SettingChange
	for _, st := range settings {
		o, n := st.get(old), st.get(s)
		if o == n {
			continue
		}
		c := SettingChange{Flag: st.flag, Old: shown(o), New: shown(n)}
		if st.command != nil {
			c.Command = st.command(s.Ref, n)
		}
		out = append(out, c)
	}
	return out
}

func shown(v string) string {
	if v == "" || v == "0" {
		return "(none)"
	}
	return v
}

// settingsError is the refusal of a create that would change settings
// of an existing cluster: each setting with its old and new value, and
// what changes it, if anything does.
func settingsError(ref spec.Ref, changes []SettingChange, finished bool) error {
	var b strings.Builder
	if finished {
		fmt.Fprintf(&b, "%s already exists with other settings; a create does not change them:", ref)
	} else {
		fmt.Fprintf(&b, "a create of %s with other settings did not finish; run it again with the same flags to continue (see `kforge info %s`), or delete it. It differs in:", ref, ref.Args())
	}
	for _, c := range changes {
		fmt.Fprintf(&b, "\n  %s: %s now, %s asked", c.Flag, c.Old, c.New)
		switch {
		case c.Command != "" && finished:
			fmt.Fprintf(&b, " (change it with `%s`)", c.Command)
		case finished:
			b.WriteString(" (fixed at creation: delete the cluster and create it again to change it)")
		}
	}
	return spec.Usagef("%s", b.String())
}
