//go:build lab && linux

package lab

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
)

// hostEnv is the environment of commands run in a host: a login's, not
// the test's.
var hostEnv = []string{
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"HOME=/root", "LANG=C.UTF-8", "TERM=dumb",
}

// HostCommand prepares a command that runs inside a host, as root in all
// its namespaces (nsenter into its PID 1), with the machine's
// capabilities. The caller may set Stdin, Stdout and Stderr.
func (l *Lab) HostCommand(ctx context.Context, instanceID string, args ...string) (*exec.Cmd, error) {
	h, err := l.host(instanceID)
	if err != nil {
		return nil, err
	}
	pid, err := h.pid1()
	if err != nil {
		return nil, err
	}
	return hostCommand(ctx, pid, args...), nil
}

func hostCommand(ctx context.Context, pid int, args ...string) *exec.Cmd {
	cmd := command(ctx, "nsenter", append([]string{"-t", strconv.Itoa(pid), "-a", "--"}, args...)...)
	cmd.Env = hostEnv
	return cmd
}

// Exec runs a command inside a host and returns its stdout; an error
// carries the exit status and stderr.
func (l *Lab) Exec(ctx context.Context, instanceID string, args ...string) ([]byte, error) {
	cmd, err := l.HostCommand(ctx, instanceID, args...)
	if err != nil {
		return nil, err
	}
	return runCmd(cmd)
}

// execPID runs a command in the host whose PID 1 is pid.
func (l *Lab) execPID(ctx context.Context, pid int, args ...string) ([]byte, error) {
	return runCmd(hostCommand(ctx, pid, args...))
}

// LabCommand prepares a command that runs on this machine but in the
// lab's network namespace (where the hosts' private and public addresses
// are reachable): kubectl against a load balancer's public IP, curl, ...
func (l *Lab) LabCommand(ctx context.Context, args ...string) *exec.Cmd {
	return command(ctx, "nsenter", append([]string{"--net=" + netnsPath(l.labNS), "--"}, args...)...)
}

// ExecInLab runs a command in the lab's network namespace and returns its
// stdout; an error carries the exit status and stderr.
func (l *Lab) ExecInLab(ctx context.Context, args ...string) ([]byte, error) {
	return runCmd(l.LabCommand(ctx, args...))
}

// DialContext opens a TCP connection from inside the lab's network
// namespace (a host's private or public address): the only way a test
// may reach an address the emulator handed out.
func (l *Lab) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if network != "tcp" && network != "tcp4" {
		return nil, fmt.Errorf("lab: dial %s: only tcp", network)
	}
	return dialIn(ctx, netnsPath(l.labNS), addr)
}

// Stop powers a host off ("systemctl poweroff"; killed if it has not
// stopped within a minute) and keeps its disk, as when a VM is lost; the
// watcher leaves it off until Start, whatever its instance's state.
func (l *Lab) Stop(ctx context.Context, instanceID string) error {
	h, err := l.host(instanceID)
	if err != nil {
		return err
	}
	l.mu.Lock()
	h.held = true
	l.mu.Unlock()
	h.mu.Lock()
	defer h.mu.Unlock()
	if s := l.stateOf(h); s != HostRunning {
		return fmt.Errorf("lab: host of %s is %s, not running", instanceID, s)
	}
	return h.stop(ctx)
}

// Start boots a host stopped by Stop (or by itself) again, from its disk.
func (l *Lab) Start(ctx context.Context, instanceID string) error {
	h, err := l.host(instanceID)
	if err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if s := l.stateOf(h); s != HostStopped && s != HostRunning {
		return fmt.Errorf("lab: host of %s is %s", instanceID, s)
	}
	l.mu.Lock()
	h.held = false
	l.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	return h.start()
}

func (l *Lab) stateOf(h *host) HostState {
	l.mu.Lock()
	defer l.mu.Unlock()
	return h.info.State
}
