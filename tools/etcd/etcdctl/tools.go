//go:build tools

// Package tools pins etcdctl and etcdutl (the main packages at the roots of
// their modules) as dependencies of this module, so that `go build` of
// go.etcd.io/etcd/etcdctl/v3 and go.etcd.io/etcd/etcdutl/v3 builds the
// versions go.mod requires.
package tools

import (
	_ "go.etcd.io/etcd/etcdctl/v3"
	_ "go.etcd.io/etcd/etcdutl/v3"
)
