//go:build tools

// Package tools pins the coredns command (the main package at the root of
// github.com/coredns/coredns, with the plugins of its plugin.cfg) as a
// dependency of this module, so that `go build github.com/coredns/coredns`
// builds the version go.mod requires.
package tools

import _ "github.com/coredns/coredns"
