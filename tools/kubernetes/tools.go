//go:build tools

// Package tools pins the commands of k8s.io/kubernetes that kforge's tests
// and lab build as dependencies of this module, so that
// `go build k8s.io/kubernetes/cmd/<name>` builds the version go.mod
// requires. scripts/build-kubeadm.sh builds kubeadm from it, and
// scripts/build-lab.sh builds all of them.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubeadm"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
