//go:build tools

// Package tools pins the flannel CNI plugin of
// github.com/containernetworking/plugins v0.9.1 as a dependency of this
// module, so that `go build .../plugins/meta/flannel` builds that version.
package tools

import _ "github.com/containernetworking/plugins/plugins/meta/flannel"
