//go:build tools

// Package tools pins the kubeadm command of k8s.io/kubernetes as a
// dependency of this module, so that `go build k8s.io/kubernetes/cmd/kubeadm`
// builds the version go.mod requires.
package tools

import _ "k8s.io/kubernetes/cmd/kubeadm"
