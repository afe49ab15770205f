package cli

import (
	"runtime/debug"
	"testing"
)

func TestVersionOf(t *testing.T) {
	vcs := func(rev, modified string) []debug.BuildSetting {
		return []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: modified}}
	}
	tests := []struct {
		name          string
		b             Build
		info          *debug.BuildInfo
		version, want string
	}{
		{"linker flags win", Build{Version: "v1.2.0", Commit: "abc"},
			&debug.BuildInfo{Main: debug.Module{Version: "v9.9.9"}, Settings: vcs("def", "false")}, "v1.2.0", "abc"},
		{"go install module@version", Build{Version: "dev"},
			&debug.BuildInfo{Main: debug.Module{Version: "v0.4.1"}}, "v0.4.1", ""},
		{"go build in a checkout", Build{Version: "dev"},
			&debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: vcs("0123abcd", "false")}, "dev", "0123abcd"},
		{"uncommitted changes", Build{Version: "dev"},
			&debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: vcs("0123abcd", "true")}, "dev", "0123abcd-dirty"},
		{"no build information", Build{}, nil, "dev", ""},
	}
	for _, tc := range tests {
		v, c := buildVersionOf(tc.b, tc.info, tc.info != nil)
		if v != tc.version || c != tc.want {
			t.Errorf("%s: version %q commit %q, want %q %q", tc.name, v, c, tc.version, tc.want)
		}
	}
}
