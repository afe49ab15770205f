// Module kforge-tools-flannel-cniplugin builds Flannel's CNI plugin (the
// `flannel` binary that kubelets call, which delegates to bridge and
// host-local) for the lab (scripts/build-lab.sh). Its home,
// github.com/flannel-io/cni-plugin, is not served by the Go module proxy;
// the last release of github.com/containernetworking/plugins that still
// holds it (plugins/meta/flannel) is v0.9.1 (it left in v1.0.0), which the
// proxy serves. flanneld requires a newer containernetworking/plugins,
// hence a module of its own.
module kforge-tools-flannel-cniplugin

go 1.26

require github.com/containernetworking/plugins v0.9.1

require (
	github.com/Microsoft/go-winio v0.4.11 // indirect
	github.com/Microsoft/hcsshim v0.8.6 // indirect
	github.com/buger/jsonparser v0.0.0-20180808090653-f4dd9f5a6b44 // indirect
	github.com/containernetworking/cni v0.8.1 // indirect
	github.com/sirupsen/logrus v1.0.6 // indirect
	golang.org/x/crypto v0.0.0-20200622213623-75b288015ac9 // indirect
	golang.org/x/sys v0.0.0-20201117170446-d9b008d0a637 // indirect
)
