// Package process holds what Berth's test servers share about the
// processes they run: the output kept for the messages of tests that fail,
// a graceful stop with a deadline, and free loopback ports to listen on.
// The servers themselves are in the packages beside it (postgres,
// versitygw).
package process

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
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

// RunThenStop runs m's tests, then stop, and returns the exit code: the
// tests' own, or 1 when they passed but the server named name did not
// stop cleanly.
func RunThenStop(m *testing.M, name string, stop func() error) int {
	code := m.Run()
	if err := stop(); err != nil {
		fmt.Fprintf(os.Stderr, "testserver/%s: %v\n", name, err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// Need ends t when the server named name could not give it what it asked
// for (err): it skips t when the server is not installed (notInstalled)
// outside CI, and fails it otherwise, so that CI never skips a test for
// want of a server.
func Need(t testing.TB, name string, err, notInstalled error) {
	t.Helper()
	if err == nil {
		return
	}
	if errors.Is(err, notInstalled) && os.Getenv("CI") != "true" {
		t.Skipf("testserver/%s: %v", name, err)
		return
	}
	t.Fatalf("testserver/%s: %v", name, err)
}
