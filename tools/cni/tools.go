//go:build tools

// Package tools pins the bridge, host-local, loopback and portmap plugins
// of github.com/containernetworking/plugins as dependencies of this module,
// so that `go build` of their main packages builds the version go.mod
// requires.
package tools

import (
	_ "github.com/containernetworking/plugins/plugins/ipam/host-local"
	_ "github.com/containernetworking/plugins/plugins/main/bridge"
	_ "github.com/containernetworking/plugins/plugins/main/loopback"
	_ "github.com/containernetworking/plugins/plugins/meta/portmap"
)
