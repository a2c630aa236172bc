// Package process holds what Berth's test servers share about the
// processes they run: the output kept for the messages of tests that fail,
// a graceful stop with a deadline, and free loopback ports to listen on.
// The servers themselves are in the packages beside it (postgres,
// versitygw).
package process

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// maxKept caps the output a Buffer keeps.
const maxKept = 1 << 20

// Buffer keeps a process's output, at most 1 MiB of its end. It is safe
// for concurrent use, as a command's Stdout and Stderr are.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p, dropping the older half of what is kept when the cap
// would be passed.
func (l *Buffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.buf.Len()+len(p) > maxKept {
		keep := bytes.Clone(l.buf.Bytes()[l.buf.Len()/2:])
		l.buf.Reset()
		l.buf.Write(keep)
	}
	return l.buf.Write(p)
}

// String returns what is kept.
func (l *Buffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// Tail returns the end of what is kept, for an error message, or
// "(no output)".
func (l *Buffer) Tail() string {
	s := strings.TrimSpace(l.String())
	if len(s) > 4000 {
		s = "..." + s[len(s)-4000:]
	}
	if s == "" {
		return "(no output)"
	}
	return s
}

// FreePort returns a port of 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Stop asks cmd, named name, to stop with sig and waits for done (closed
// when the process has exited) until timeout has passed; then it kills the
// process. A process that exited before it was asked is an error that
// quotes the end of out.
func Stop(name string, cmd *exec.Cmd, done <-chan struct{}, sig os.Signal, timeout time.Duration, out *Buffer) error {
	select {
	case <-done:
		return fmt.Errorf("%s exited before it was stopped: %s", name, out.Tail())
	default:
	}
	if err := cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("stop %s: %w", name, err)
	}
	select {
	case <-done:
		return nil
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		<-done
		return fmt.Errorf("%s did not stop within %s of %v; killed it", name, timeout, sig)
	}
}
