package sshfleet

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/kforge/kforge/internal/sshx"
)

// serveJump serves one client connection to the jump host.
func (f *Fleet) serveJump(c net.Conn) {
	conf := &ssh.ServerConfig{
		PublicKeyCallback: func(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			if f.opts.JumpUser != "" && meta.User() != f.opts.JumpUser {
				return nil, fmt.Errorf("user %q may not log in to the jump host", meta.User())
			}
			if f.jumpKeyAllowed(key) {
				return nil, nil
			}
			return nil, errors.New("key not authorized on the jump host")
		},
	}
	conf.AddHostKey(f.hostKey)
	sc, chans, reqs, err := ssh.NewServerConn(c, conf)
	if err != nil {
		return
	}
	defer sc.Close()
	f.mu.Lock()
	f.jumpLogins++
	f.mu.Unlock()
	f.goTracked(func() { ssh.DiscardRequests(reqs) })
	for nc := range chans {
		if nc.ChannelType() != "direct-tcpip" {
			_ = nc.Reject(ssh.Prohibited, "this jump host only forwards to VMs (direct-tcpip)")
			continue
		}
		f.goTracked(func() { f.forward(nc) })
	}
}

// jumpKeyAllowed reports whether key may log in to the jump host.
func (f *Fleet) jumpKeyAllowed(key ssh.PublicKey) bool {
	for _, k := range f.opts.AuthorizedKeys {
		if sshx.SameKey(k, key) {
			return true
		}
	}
	if !f.opts.AuthorizeKeyPairs || f.ec2 == nil {
		return false
	}
	keys, err := f.keyPairKeys()
	if err != nil {
		f.logf("jump login: %v", err)
		return false
	}
	for _, k := range keys {
		if sshx.SameKey(k, key) {
			return true
		}
	}
	return false
}

// forward answers a direct-tcpip request by serving the VM itself; it
// never dials.
func (f *Fleet) forward(nc ssh.NewChannel) {
	var req struct {
		Host     string
		Port     uint32
		OrigHost string
		OrigPort uint32
	}
	if err := ssh.Unmarshal(nc.ExtraData(), &req); err != nil {
		_ = nc.Reject(ssh.ConnectionFailed, "malformed direct-tcpip request")
		return
	}
	id, reason := f.open(req.Host, req.Port)
	if id == nil {
		_ = nc.Reject(ssh.ConnectionFailed, reason)
		return
	}
	ch, chReqs, err := nc.Accept()
	if err != nil {
		return
	}
	f.goTracked(func() { ssh.DiscardRequests(chReqs) })
	conn := &channelConn{Channel: ch, addr: &net.TCPAddr{IP: net.ParseIP(req.Host), Port: int(req.Port)}}
	defer conn.Close()
	f.serveVM(conn, id)
}

// open decides whether a connection to host:port reaches a VM, applying
// its faults. It returns the VM, or nil and the reason the connection
// fails, worded as OpenSSH words it.
func (f *Fleet) open(host string, port uint32) (*identity, string) {
	refused := fmt.Sprintf("connect to host %s port %d: Connection refused", host, port)
	if port != 22 {
		f.logf("refused %s: only port 22 of a VM is served", net.JoinHostPort(host, strconv.Itoa(int(port))))
		return nil, refused
	}
	id, err := f.lookup(host)
	if err != nil {
		f.logf("refused %s:22: %v", host, err)
		return nil, refused
	}
	fault := f.fault(id.vm.InstanceID)
	f.mu.Lock()
	f.attempts[id.vm.InstanceID]++
	n := f.attempts[id.vm.InstanceID]
	f.mu.Unlock()
	if n <= fault.RefuseFirst {
		return nil, refused
	}
	if fault.Delay > 0 {
		timer := time.NewTimer(fault.Delay)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-f.ctx.Done():
			return nil, "jump host shutting down"
		}
	}
	return id, ""
}

// serveVM is the VM's sshd on c.
func (f *Fleet) serveVM(c net.Conn, id *identity) {
	fault := f.fault(id.vm.InstanceID)
	f.mu.Lock()
	f.authTries[id.vm.InstanceID]++
	rejectLogin := f.authTries[id.vm.InstanceID] <= fault.RejectLoginFirst
	f.mu.Unlock()
	conf := &ssh.ServerConfig{
		PublicKeyCallback: func(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			switch {
			case meta.User() != VMUser:
				return nil, fmt.Errorf("no user %q on the VM", meta.User())
			case rejectLogin:
				return nil, errors.New("login refused (fault)")
			case !sshx.SameKey(key, id.login):
				return nil, errors.New("key is not the instance's key pair")
			}
			return nil, nil
		},
	}
	if fault.WrongHostKey {
		conf.AddHostKey(f.wrongKey)
	} else {
		conf.AddHostKey(id.hostKey)
	}
	sc, chans, reqs, err := ssh.NewServerConn(c, conf)
	if err != nil {
		return
	}
	defer sc.Close()
	f.mu.Lock()
	f.logins[id.vm.InstanceID]++
	f.mu.Unlock()
	f.goTracked(func() { ssh.DiscardRequests(reqs) })
	for nc := range chans {
		if nc.ChannelType() != "session" {
			_ = nc.Reject(ssh.Prohibited, "the emulated VM serves sessions only")
			continue
		}
		f.goTracked(func() { f.session(nc, id) })
	}
}

// session serves one session channel: a single exec request.
func (f *Fleet) session(nc ssh.NewChannel, id *identity) {
	ch, reqs, err := nc.Accept()
	if err != nil {
		return
	}
	started := false
	for req := range reqs {
		if req.Type != "exec" || started {
			// env, pty-req, shell, signal...: not served.
			if req.WantReply {
				_ = req.Reply(false, nil)
			}
			continue
		}
		var p struct{ Command string }
		if err := ssh.Unmarshal(req.Payload, &p); err != nil {
			_ = req.Reply(false, nil)
			continue
		}
		_ = req.Reply(true, nil)
		started = true
		at := time.Now()
		f.goTracked(func() { f.exec(ch, id, p.Command, at) })
	}
	_ = ch.Close()
}

// exec runs one command: reads stdin to its end, asks the responder,
// records the call and sends the output and exit status.
func (f *Fleet) exec(ch ssh.Channel, id *identity, command string, at time.Time) {
	defer ch.Close()
	stdin, err := io.ReadAll(ch)
	if err != nil {
		return
	}
	recipe := sshx.RecipeName(string(stdin))
	f.mu.Lock()
	f.running++
	f.maxRunning = max(f.maxRunning, f.running)
	r := f.handlers[recipe]
	if r == nil || recipe == "" {
		r = f.responder
	}
	f.mu.Unlock()
	var stdout, stderr []byte
	exit := 0
	if r != nil {
		stdout, stderr, exit = r(id.vm, command, stdin)
	}
	f.mu.Lock()
	f.calls = append(f.calls, Call{VM: id.vm, Command: command, Stdin: stdin, Recipe: recipe, Stdout: stdout, Exit: exit, Time: at})
	f.running--
	f.mu.Unlock()
	if _, err := ch.Write(stdout); err != nil {
		return
	}
	if _, err := ch.Stderr().Write(stderr); err != nil {
		return
	}
	_ = ch.CloseWrite()
	_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{uint32(exit)}))
}

// channelConn adapts a forwarded channel to the net.Conn an SSH server
// runs on.
type channelConn struct {
	ssh.Channel
	addr net.Addr
}

func (c *channelConn) LocalAddr() net.Addr                { return c.addr }
func (c *channelConn) RemoteAddr() net.Addr               { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }
func (c *channelConn) SetDeadline(t time.Time) error      { return nil }
func (c *channelConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *channelConn) SetWriteDeadline(t time.Time) error { return nil }
