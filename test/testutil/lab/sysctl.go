//go:build lab && linux

package lab

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// machineSysctls are set on the whole machine when a lab starts. Inside a
// host these files are read-only, and the kubelet (and kube-proxy) write
// them at start when they differ; with the values already in place they
// leave them alone. They are global to the machine and stay set after the
// lab ends (they are harmless there).
var machineSysctls = []struct{ key, value string }{
	{"vm.overcommit_memory", "1"},
	{"kernel.panic", "10"},
	{"kernel.panic_on_oops", "1"},
	{"kernel.keys.root_maxkeys", "1000000"},
	{"kernel.keys.root_maxbytes", "25000000"},
	{"net.netfilter.nf_conntrack_max", strconv.Itoa(kubeProxyConntrackMax())},
}

// kubeProxyConntrackMax is the nf_conntrack_max kube-proxy sets with its
// defaults (32768 per core, at least 131072): it writes the sysctl
// whenever the value differs, which a host cannot (it is global).
func kubeProxyConntrackMax() int { return max(32768*runtime.NumCPU(), 131072) }

// conntrackHashsize is the kernel parameter kube-proxy raises with
// nf_conntrack_max (to at least a quarter of it).
const conntrackHashsize = "/sys/module/nf_conntrack/parameters/hashsize"

// setMachineSysctls sets machineSysctls and the conntrack hash size,
// logging what it changed.
func setMachineSysctls(logf func(string, ...any)) error {
	var errs []error
	for _, s := range machineSysctls {
		p := "/proc/sys/" + strings.ReplaceAll(s.key, ".", "/")
		cur, err := os.ReadFile(p)
		if err != nil {
			errs = append(errs, fmt.Errorf("sysctl %s: %w", s.key, err))
			continue
		}
		if strings.TrimSpace(string(cur)) == s.value {
			continue
		}
		if err := os.WriteFile(p, []byte(s.value), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("sysctl %s=%s: %w", s.key, s.value, err))
			continue
		}
		logf("machine sysctl %s: %s -> %s", s.key, strings.TrimSpace(string(cur)), s.value)
	}
	want := kubeProxyConntrackMax() / 4
	if b, err := os.ReadFile(conntrackHashsize); err == nil {
		if cur, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && cur < want {
			if err := os.WriteFile(conntrackHashsize, []byte(strconv.Itoa(want)), 0o600); err != nil {
				logf("cannot raise %s to %d (kube-proxy may fail to): %v", conntrackHashsize, want, err)
			} else {
				logf("%s: %d -> %d", conntrackHashsize, cur, want)
			}
		}
	}
	return errors.Join(errs...)
}
