//go:build linux

package conformance_test

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The Docker engine and containerd's CRI plugin are servers the tests
// start themselves, each with private roots and sockets in a temporary
// directory, reachable only through a unix socket, and stopped, killed if
// need be, and unmounted when the test ends. A missing server fails the
// test, naming it: it is never skipped, in CI or not.

// serverPath finds a server binary (dockerd, containerd) on PATH or in the
// sbin directories, failing the test with how to install it.
func serverPath(t *testing.T, name, pkg string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return p
		}
	}
	t.Fatalf("%s is not installed: run 'make debs' (it installs the Debian package %s)", name, pkg)
	return ""
}

// daemonDir makes a short temporary directory for a daemon (a unix socket
// path is limited to about 108 bytes, which a deep t.TempDir may exceed)
// and removes it when the test ends, after unmounting whatever the daemon
// left mounted under it.
func daemonDir(t *testing.T, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatalf("create daemon directory: %v", err)
	}
	t.Cleanup(func() {
		if err := unmountUnder(dir); err != nil {
			t.Errorf("unmount what the daemon left under %s: %v", dir, err)
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove daemon directory: %v", err)
		}
	})
	return dir
}

// unmountUnder unmounts every mount point at or under dir, deepest first,
// and reports any that stays.
func unmountUnder(dir string) error {
	points, err := mountsUnder(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range points {
		if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, err)
		}
	}
	if left, err := mountsUnder(dir); err == nil && len(left) > 0 {
		errs = append(errs, errors.New("still mounted: "+strings.Join(left, ", ")))
	}
	return errors.Join(errs...)
}

// mountsUnder lists the mount points at or under dir, deepest first.
func mountsUnder(dir string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT ...; the mount point escapes
		// spaces as \040, which a temporary directory does not have.
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		if p := fields[4]; p == dir || strings.HasPrefix(p, dir+"/") {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b string) int { return len(b) - len(a) })
	return out, sc.Err()
}

// daemon is a server process started by a test.
type daemon struct {
	name   string
	cmd    *exec.Cmd
	logs   *lockedBuffer
	exited chan struct{}
	err    error
}

// startDaemon starts a server in a process group of its own, killed with
// the test process if that dies first. When the test ends it is sent
// SIGTERM, then SIGKILL (with its whole group) after stopTimeout; an early
// exit fails the test, and the log is shown when the test failed.
func startDaemon(t *testing.T, name string, env []string, stopTimeout time.Duration, path string, args ...string) *daemon {
	t.Helper()
	d := &daemon{name: name, logs: &lockedBuffer{}, exited: make(chan struct{})}
	d.cmd = exec.Command(path, args...)
	d.cmd.Env = append(os.Environ(), env...)
	d.cmd.Stdout, d.cmd.Stderr = d.logs, d.logs
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	d.cmd.WaitDelay = 5 * time.Second
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		d.err = d.cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-d.exited:
			t.Errorf("%s exited before the test ended: %v\n%s", name, d.err, d.logs.String())
			return
		default:
		}
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.exited:
		case <-time.After(stopTimeout):
			_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
			<-d.exited
			t.Errorf("%s did not exit within %s of SIGTERM; killed it", name, stopTimeout)
		}
		// Whatever it started in its group goes with it.
		_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
		if t.Failed() {
			t.Logf("%s log:\n%s", name, d.logs.String())
		}
	})
	return d
}

// waitReady polls ready every 200ms until it returns nil, the daemon
// exits, or timeout passes; the last two fail the test.
func (d *daemon) waitReady(t *testing.T, timeout time.Duration, ready func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-d.exited:
			t.Fatalf("%s exited during start: %v\n%s", d.name, d.err, d.logs.String())
		default:
		}
		err := ready()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not become ready within %s: %v\n%s log:\n%s", d.name, timeout, err, d.name, d.logs.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}
