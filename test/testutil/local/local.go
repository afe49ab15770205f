// Package local has small helpers for tests that run servers and
// processes on this machine: a free loopback port, and a buffer that a
// child process and the test can share.
package local

import (
	"bytes"
	"fmt"
	"net"
	"strconv"
	"sync"
)

// FreePort returns a TCP port that is free on every given loopback
// address (127.0.0.1 if none is given).
func FreePort(ips ...string) (int, error) {
	if len(ips) == 0 {
		ips = []string{"127.0.0.1"}
	}
	for range 50 {
		l, err := net.Listen("tcp", net.JoinHostPort(ips[0], "0"))
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		ok := true
		var others []net.Listener
		for _, ip := range ips[1:] {
			o, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
			if err != nil {
				ok = false
				break
			}
			others = append(others, o)
		}
		for _, o := range others {
			o.Close()
		}
		l.Close()
		if ok {
			return port, nil
		}
	}
	return 0, fmt.Errorf("no port free on all of %v", ips)
}

// Buffer collects output written concurrently (a child process's) and
// read by the test.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write implements io.Writer.
func (l *Buffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns what was written so far.
func (l *Buffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
