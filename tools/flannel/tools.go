//go:build tools

// Package tools pins the flanneld command (the main package at the root of
// github.com/flannel-io/flannel) as a dependency of this module, so that
// `go build github.com/flannel-io/flannel` builds the version go.mod
// requires.
package tools

import _ "github.com/flannel-io/flannel"
