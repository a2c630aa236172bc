package conformance_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-registry/berth/conformance/internal/berthtest"
)

// A client is a real command-line tool the interoperability tests drive.
type client struct {
	// name is the binary's name.
	name string
	// versionArgs print the client's version.
	versionArgs []string
}

// allClients are every tool the interoperability suite needs. The Go-built
// ones are installed into bin/tools by "make clients"; skopeo, containerd
// (ctr) and podman come from Debian packages.
func allClients() []client {
	return []client{
		{"crane", []string{"version"}},
		{"oras", []string{"version"}},
		{"regctl", []string{"version", "--format", "{{.VCSTag}}"}},
		{"helm", []string{"version", "--short"}},
		{"cosign", []string{"version"}},
		{"skopeo", []string{"--version"}},
		{"containerd", []string{"--version"}},
		{"ctr", []string{"--version"}},
		{"podman", []string{"--version"}},
	}
}

// clientTimeout bounds one client command.
const clientTimeout = 3 * time.Minute

// clientPath finds a client: first in the repository's bin/tools, then on
// PATH. A missing client fails the test, naming it and how to install it.
func clientPath(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(berthtest.RepoRoot(t), "bin", "tools", name)
	if _, err := os.Stat(p); err == nil {
		return p
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	t.Fatalf("client %s is not installed: run 'make clients' (it installs every client the interoperability tests use)", name)
	return ""
}

// clientResult is what one client command did.
type clientResult struct {
	stdout, stderr string
	err            error
}

// execClient runs a client with a bounded time and returns what it did,
// failing the test only if it could not be started.
func execClient(t testing.TB, dir string, env []string, name string, args ...string) clientResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, clientPath(t, name), args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		err = errors.Join(err, ctx.Err())
	}
	return clientResult{stdout: stdout.String(), stderr: stderr.String(), err: err}
}

// runClient runs a client that must succeed and returns its standard
// output. On failure the test fails with the client's name, the exact
// command and everything it printed, so the log says which client failed on
// what.
func runClient(t testing.TB, name string, args ...string) string {
	t.Helper()
	return runClientIn(t, "", nil, name, args...)
}

// runClientIn is runClient in a working directory with extra environment.
func runClientIn(t testing.TB, dir string, env []string, name string, args ...string) string {
	t.Helper()
	r := execClient(t, dir, env, name, args...)
	if r.err != nil {
		t.Fatalf("client %s failed: %s %s: %v\nstdout:\n%s\nstderr:\n%s",
			name, name, strings.Join(args, " "), r.err, r.stdout, r.stderr)
	}
	return r.stdout
}

// TestClientVersions names every client the interoperability suite uses
// and its version, and fails if one is missing.
func TestClientVersions(t *testing.T) {
	for _, c := range allClients() {
		r := execClient(t, "", nil, c.name, c.versionArgs...)
		if r.err != nil {
			t.Errorf("client %s: %s %s failed: %v\n%s%s", c.name, c.name, strings.Join(c.versionArgs, " "), r.err, r.stdout, r.stderr)
			continue
		}
		out := strings.TrimSpace(r.stdout + "\n" + r.stderr)
		t.Logf("client %-10s %s", c.name, strings.Join(strings.Fields(out), " "))
	}
}
