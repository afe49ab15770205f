//go:build tools

// Package tools pins the etcd server command (the main package at the root
// of go.etcd.io/etcd/server/v3) as a dependency of this module, so that
// `go build go.etcd.io/etcd/server/v3` builds the version go.mod requires.
package tools

import _ "go.etcd.io/etcd/server/v3"
