package lifecycle

import (
	"strings"
	"testing"

	"github.com/kforge/kforge/internal/spec"
	"github.com/kforge/kforge/internal/state"
)

func TestChangedSettings(t *testing.T) {
	old := spec.Spec{Ref: spec.Ref{Type: spec.TypeHA, Name: "prod", Region: "eu-west-1"}, Bootstrap: "kubeadm",
		ControlPlanes: 3, Workers: 2, Etcd: 3, CPSize: "t3.medium", WPSize: "t3.medium", SSHCIDR: "10.0.0.0/8", SSHJump: "a@b"}
	c := &state.Cluster{Spec: old, Status: state.StatusRunning}

	same := old
	same.SSHJump, same.SSHTimeout = "c@d", 5e9
	if err := ChangedSettings(c, same); err != nil {
		t.Fatalf("a jump host or SSH timeout is not a setting of the cluster: %v", err)
	}

	s := old
	s.Workers, s.WPSize, s.SSHCIDR = 5, "t3.large", ""
	err := ChangedSettings(c, s)
	if _, ok := err.(*spec.UsageError); !ok {
		t.Fatalf("changed settings: %v, want a usage error", err)
	}
	for _, want := range []string{
		"--workers: 2 now, 5 asked (change it with `kforge scale ha-aws --name prod --region eu-west-1 --workers 5`)",
		"--wp-size: t3.medium now, t3.large asked (fixed at creation",
		"--ssh-cidr: 10.0.0.0/8 now, (none) asked",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the refusal lacks %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "--cp-size") {
		t.Errorf("the refusal names a setting that did not change:\n%v", err)
	}
	c.Status = state.StatusFailed
	if err := ChangedSettings(c, s); err == nil || !strings.Contains(err.Error(), "did not finish") || !strings.Contains(err.Error(), "--workers: 2 now, 5 asked") {
		t.Errorf("an unfinished create with other settings: %v", err)
	}
}
