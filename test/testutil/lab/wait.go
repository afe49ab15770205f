//go:build lab && linux

package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// waitInterval is how often the Wait helpers look.
const waitInterval = 100 * time.Millisecond

// WaitState waits until an instance's host is in state, and returns it.
// A host that failed (when failed is not what is waited for) ends the
// wait with its error.
func (l *Lab) WaitState(ctx context.Context, instanceID string, state HostState) (Host, error) {
	var got Host
	err := poll(ctx, waitInterval, fmt.Sprintf("the host of %s to be %s", instanceID, state), func() (bool, error) {
		h, ok := l.Host(instanceID)
		if !ok {
			return false, fmt.Errorf("no host for %s yet", instanceID)
		}
		got = h
		switch {
		case h.State == state:
			return true, nil
		case h.State == HostFailed:
			return true, fmt.Errorf("lab: host %s of %s failed: %w", h.Name, instanceID, h.Err)
		}
		return false, fmt.Errorf("host %s is %s", h.Name, h.State)
	})
	return got, err
}

// WaitHost waits until an instance has a running host (launched; systemd
// may still be booting).
func (l *Lab) WaitHost(ctx context.Context, instanceID string) (Host, error) {
	return l.WaitState(ctx, instanceID, HostRunning)
}

// WaitRemoved waits until an instance's host is gone.
func (l *Lab) WaitRemoved(ctx context.Context, instanceID string) error {
	_, err := l.WaitState(ctx, instanceID, HostRemoved)
	return err
}

// waitEnterable waits until commands can run in a host (its PID 1 exists
// and has set up its mounts).
func (l *Lab) waitEnterable(ctx context.Context, instanceID string) error {
	if _, err := l.WaitHost(ctx, instanceID); err != nil {
		return err
	}
	return poll(ctx, waitInterval, "entering the host of "+instanceID, func() (bool, error) {
		_, err := l.Exec(ctx, instanceID, "test", "-e", "/run/systemd/system")
		return err == nil, err
	})
}

// WaitBooted waits until systemd in a host has finished booting, and
// returns an error listing the failed units if it is not "running".
func (l *Lab) WaitBooted(ctx context.Context, instanceID string) error {
	if err := l.waitEnterable(ctx, instanceID); err != nil {
		return err
	}
	var state string
	err := poll(ctx, waitInterval, "systemd to boot the host of "+instanceID, func() (bool, error) {
		// Exits non-zero unless "running"; the state is on stdout.
		out, err := l.Exec(ctx, instanceID, "systemctl", "is-system-running", "--wait")
		state = strings.TrimSpace(string(out))
		switch state {
		case "running", "degraded", "maintenance", "stopping":
			return true, nil
		}
		return false, err
	})
	if err != nil {
		return err
	}
	if state != "running" {
		failed, _ := l.Exec(ctx, instanceID, "systemctl", "--failed", "--no-legend", "--plain")
		return fmt.Errorf("lab: host of %s is %s; failed units: %s", instanceID, state, strings.TrimSpace(string(failed)))
	}
	return nil
}

// WaitCloudInit waits until cloud-init has finished in a host ("cloud-init
// status --wait", what kforge's first script runs) and returns its long
// status; an error if it did not end "done".
func (l *Lab) WaitCloudInit(ctx context.Context, instanceID string) (string, error) {
	if err := l.waitEnterable(ctx, instanceID); err != nil {
		return "", err
	}
	out, err := l.Exec(ctx, instanceID, "cloud-init", "status", "--wait", "--long")
	if err != nil {
		return string(out), fmt.Errorf("lab: cloud-init on the host of %s: %w\n%s", instanceID, err, out)
	}
	return string(out), nil
}

// WaitSSH waits until a host's sshd answers on its private address, port
// 22 (dialled from the lab's namespace, as the jump host does).
func (l *Lab) WaitSSH(ctx context.Context, instanceID string) error {
	h, err := l.WaitHost(ctx, instanceID)
	if err != nil {
		return err
	}
	addr := net.JoinHostPort(h.PrivateIP, "22")
	return poll(ctx, waitInterval, "sshd of the host of "+instanceID+" at "+addr, func() (bool, error) {
		ok, err := sshBanner(ctx, netnsPath(l.labNS), addr)
		if ok {
			return true, nil
		}
		if err == nil {
			err = errors.New("no SSH banner")
		}
		return false, err
	})
}
