package infra

import (
	"bytes"
	"compress/gzip"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"golang.org/x/crypto/ssh"
	"sigs.k8s.io/yaml"

	"github.com/kforge/kforge/internal/awsx"
	"github.com/kforge/kforge/internal/iampolicy"
	"github.com/kforge/kforge/test/testutil/sshfleet"
)

func identities(t *testing.T, n int) []vmIdentity {
	t.Helper()
	vms := make([]vmIdentity, n)
	for i := range vms {
		_, key, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		vms[i] = vmIdentity{Hostname: fmt.Sprintf("demo-wp-%d", 3*i+1), Key: key}
	}
	return vms
}

// decodeBatch decodes a batch's user-data as EC2 hands it over.
func decodeBatch(t *testing.T, ud string) []byte {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(ud)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("the user-data is not gzipped: %v", err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestBatchUserData: each launch index of a batch gets its own hostname and
// host key, in a part of its own that names its index (as the archive
// part's launch-index and inside the #cloud-config), and the SSH double
// reads the same key for each index as cloud-init would keep.
func TestBatchUserData(t *testing.T) {
	vms := identities(t, 5)
	ud, size, err := batchUserData(vms)
	if err != nil {
		t.Fatal(err)
	}
	if size > MaxUserData {
		t.Fatalf("%d bytes for 5 VMs", size)
	}
	data := decodeBatch(t, ud)
	if !bytes.HasPrefix(data, []byte("#cloud-config-archive\n")) {
		t.Fatalf("not a #cloud-config-archive:\n%s", data)
	}
	var parts []struct {
		Type        string `json:"type"`
		LaunchIndex *int   `json:"launch-index"`
		Content     string `json:"content"`
	}
	if err := yaml.Unmarshal(data, &parts); err != nil {
		t.Fatal(err)
	}
	if len(parts) != len(vms) {
		t.Fatalf("%d parts for %d VMs", len(parts), len(vms))
	}
	for i, p := range parts {
		var cc cloudConfig
		if err := yaml.Unmarshal([]byte(p.Content), &cc); err != nil {
			t.Fatalf("part %d: %v", i, err)
		}
		if p.Type != "text/cloud-config" || !strings.HasPrefix(p.Content, "#cloud-config\n") {
			t.Errorf("part %d: type %q, content %.20q", i, p.Type, p.Content)
		}
		if p.LaunchIndex == nil || *p.LaunchIndex != i || cc.LaunchIndex == nil || *cc.LaunchIndex != i {
			t.Errorf("part %d: launch index %v, in its cloud-config %v", i, p.LaunchIndex, cc.LaunchIndex)
		}
		if cc.Hostname != vms[i].Hostname {
			t.Errorf("part %d: hostname %q, want %q", i, cc.Hostname, vms[i].Hostname)
		}
		want, _ := ssh.NewPublicKey(vms[i].Key.Public())
		got, err := sshfleet.ParseUserDataAt(data, i)
		if err != nil {
			t.Fatalf("launch index %d: %v", i, err)
		}
		if !bytes.Equal(got.PublicKey().Marshal(), want.Marshal()) {
			t.Errorf("launch index %d gets another VM's host key", i)
		}
	}
	if _, err := sshfleet.ParseUserDataAt(data, len(vms)); err == nil {
		t.Error("a launch index beyond the batch got a host key")
	}
	// The single VM's user-data stays what it was: no launch index.
	single, err := userData("demo-cp-0", vms[0].Key)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := base64.StdEncoding.DecodeString(single)
	if strings.Contains(string(raw), "launch-index") || !strings.HasPrefix(string(raw), "#cloud-config\nhostname: demo-cp-0\n") {
		t.Errorf("a single VM's user-data changed:\n%s", raw)
	}
}

// TestBatchUserDataFitsEC2: a full batch of VMs with the longest cluster
// names fits in EC2's user-data limit.
func TestBatchUserDataFitsEC2(t *testing.T) {
	vms := identities(t, BatchMax)
	for i := range vms {
		vms[i].Hostname = fmt.Sprintf("%s-wp-%d", strings.Repeat("n", 40), 10000+i)
	}
	_, size, err := batchUserData(vms)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d VMs: %d bytes of user-data (gzipped)", BatchMax, size)
	if size > MaxUserData {
		t.Fatalf("%d VMs take %d bytes, more than EC2's %d", BatchMax, size, MaxUserData)
	}
}

func TestSlotOf(t *testing.T) {
	inst := func(idx int32, tags ...string) ec2types.Instance {
		in := ec2types.Instance{AmiLaunchIndex: aws.Int32(idx)}
		for i := 0; i+1 < len(tags); i += 2 {
			in.Tags = append(in.Tags, ec2types.Tag{Key: aws.String(tags[i]), Value: aws.String(tags[i+1])})
		}
		return in
	}
	batch := []string{awsx.TagRole, RoleWP, TagBatch, "abc", TagBatchSlots, "1,4,7"}
	tests := []struct {
		name  string
		in    ec2types.Instance
		slot  string
		named bool
	}{
		{"named", inst(0, TagSlot, "cp/2", awsx.TagRole, RoleCP), "cp/2", true},
		{"named in a batch", inst(2, append([]string{TagSlot, "wp/7"}, batch...)...), "wp/7", true},
		{"not yet named", inst(1, batch...), "wp/4", false},
		{"index beyond the batch", inst(3, batch...), "", false},
		{"no batch", inst(0, awsx.TagRole, RoleWP), "", false},
	}
	for _, tc := range tests {
		slot, named := slotOf(tc.in)
		if slot != tc.slot || named != tc.named {
			t.Errorf("%s: slotOf = %q, %v; want %q, %v", tc.name, slot, named, tc.slot, tc.named)
		}
	}
}

// TestBatchTagsInPolicy: the policy lets kforge name the VMs of a batch
// with exactly the tags it adds, on instances with the batch's tag.
func TestBatchTagsInPolicy(t *testing.T) {
	if iampolicy.BatchTagKey != TagBatch || !slices.Equal(iampolicy.BatchNameTagKeys, []string{awsx.TagName, TagSlot}) {
		t.Errorf("the policy names batches by %s and their VMs with %v; infra uses %s and %v",
			iampolicy.BatchTagKey, iampolicy.BatchNameTagKeys, TagBatch, []string{awsx.TagName, TagSlot})
	}
}
