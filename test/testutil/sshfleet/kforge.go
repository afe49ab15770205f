package sshfleet

import (
	"path/filepath"
	"testing"
)

// AdminKubeconfig stands in for the admin kubeconfig that a cluster's
// first control plane holds (what kforge's fetch-kubeconfig recipe reads).
const AdminKubeconfig = `apiVersion: v1
kind: Config
clusters:
- name: default
  cluster:
    server: https://127.0.0.1:6443
    certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUIKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo=
contexts:
- name: default
  context:
    cluster: default
    user: default
current-context: default
users:
- name: default
  user:
    client-certificate-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUIKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo=
    client-key-data: LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0tCk1JSUIKLS0tLS1FTkQgUFJJVkFURSBLRVktLS0tLQo=
`

// ServeKforge readies the fleet for kforge processes whose HOME is home:
// the fleet's host key goes into home/.ssh/known_hosts (kforge checks a
// jump host's key there), and a first control plane answers
// fetch-kubeconfig with AdminKubeconfig.
func (f *Fleet) ServeKforge(t testing.TB, home string) {
	t.Helper()
	f.Handle("fetch-kubeconfig", Reply(AdminKubeconfig))
	f.WriteKnownHosts(t, filepath.Join(home, ".ssh", "known_hosts"))
}
