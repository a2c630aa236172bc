package conformance_test

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/berth-registry/berth/conformance/internal/berthtest"
	"github.com/berth-registry/berth/registry/auth"
)

// userCLI runs berth user commands in a temporary working directory.
type userCLI struct {
	t   *testing.T
	bin string
	dir string
}

func newUserCLI(t *testing.T) *userCLI {
	return &userCLI{t: t, bin: berthtest.Build(t), dir: t.TempDir()}
}

// run runs "berth user ARGS..." with stdin (nil for none) and returns its
// stdout, stderr and exit code.
func (c *userCLI) run(stdin *string, args ...string) (stdout, stderr string, code int) {
	c.t.Helper()
	cmd := exec.Command(c.bin, append([]string{"user"}, args...)...)
	cmd.Dir = c.dir
	// BERTH_CONFIG would name a configuration when --config is not given.
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "BERTH_") })
	if stdin != nil {
		cmd.Stdin = strings.NewReader(*stdin)
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(time.Minute):
		_ = cmd.Process.Kill()
		c.t.Fatalf("berth user %s did not finish", strings.Join(args, " "))
	}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		code = exit.ExitCode()
	default:
		c.t.Fatalf("berth user %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), errOut.String(), code
}

// ok runs a command that must succeed and print a line containing want.
func (c *userCLI) ok(stdin *string, want string, args ...string) {
	c.t.Helper()
	stdout, stderr, code := c.run(stdin, args...)
	if code != 0 {
		c.t.Fatalf("berth user %s: exit %d: %s", strings.Join(args, " "), code, stderr)
	}
	if strings.Count(stdout, "\n") != 1 || !strings.Contains(stdout, want) {
		c.t.Errorf("berth user %s printed %q, want one line with %q", strings.Join(args, " "), stdout, want)
	}
}

// fails runs a command that must exit 1 with an error containing want,
// and checks that it left the file at path as it was.
func (c *userCLI) fails(path string, stdin *string, want string, args ...string) {
	c.t.Helper()
	before, beforeErr := os.ReadFile(path)
	stdout, stderr, code := c.run(stdin, args...)
	if code != 1 {
		c.t.Errorf("berth user %s: exit %d, want 1 (stdout %q, stderr %q)", strings.Join(args, " "), code, stdout, stderr)
	}
	if !strings.HasPrefix(stderr, "berth: ") || !strings.Contains(stderr, want) {
		c.t.Errorf("berth user %s: stderr %q, want an error containing %q", strings.Join(args, " "), stderr, want)
	}
	after, afterErr := os.ReadFile(path)
	if !bytes.Equal(before, after) || (beforeErr == nil) != (afterErr == nil) {
		c.t.Errorf("berth user %s changed %s", strings.Join(args, " "), path)
	}
}

func line(s string) *string { return &s }

// readHtpasswd parses the file as the server does.
func readHtpasswd(t *testing.T, path string) *auth.Users {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u, err := auth.ParseUsers(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return u
}

// assertBcrypt checks that every user line of the file holds a bcrypt hash.
func assertBcrypt(t *testing.T, path string) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		name, hash, _ := strings.Cut(l, ":")
		if c, err := bcrypt.Cost([]byte(hash)); err != nil || c < bcrypt.DefaultCost {
			t.Errorf("user %s: hash %q: cost %d, %v", name, hash, c, err)
		}
	}
}

func TestUserCLIWithHtpasswd(t *testing.T) {
	c := newUserCLI(t)
	path := filepath.Join(c.dir, "htpasswd")

	c.ok(line("alice-pw\n"), "alice", "add", "alice", "--htpasswd", path, "--password-stdin")
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("add did not create the file: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("file mode %v, want 0600", fi.Mode().Perm())
	}
	// The password is one line: a final CRLF is stripped, no newline is
	// needed at the end of input.
	c.ok(line("bob-pw\r\n"), "bob", "add", "bob", "--htpasswd", path, "--password-stdin")
	c.ok(line("carol pw"), "carol", "add", "carol", "--htpasswd", path, "--password-stdin")
	assertBcrypt(t, path)
	u := readHtpasswd(t, path)
	if !slices.Equal(u.Names(), []string{"alice", "bob", "carol"}) {
		t.Fatalf("users %q", u.Names())
	}
	if !u.Verify("alice", "alice-pw") || !u.Verify("bob", "bob-pw") || !u.Verify("carol", "carol pw") {
		t.Error("added passwords do not verify")
	}
	if u.Verify("bob", "bob-pw\r") || u.Verify("alice", "alice-pw\n") {
		t.Error("the line ending became part of the password")
	}

	c.ok(line("alice-new\n"), "alice", "passwd", "alice", "--htpasswd", path, "--password-stdin")
	u = readHtpasswd(t, path)
	if u.Verify("alice", "alice-pw") || !u.Verify("alice", "alice-new") || !u.Verify("bob", "bob-pw") {
		t.Error("passwd did not change just alice's password")
	}

	c.ok(nil, "bob", "remove", "bob", "--htpasswd", path)
	u = readHtpasswd(t, path)
	if !slices.Equal(u.Names(), []string{"alice", "carol"}) || !u.Verify("alice", "alice-new") {
		t.Errorf("after remove: users %q", u.Names())
	}
	assertBcrypt(t, path)

	// Nothing is left behind but the file.
	entries, _ := os.ReadDir(c.dir)
	if len(entries) != 1 {
		t.Errorf("working directory holds %d entries, want just htpasswd", len(entries))
	}
}

func TestUserCLIWithConfig(t *testing.T) {
	c := newUserCLI(t)
	// A relative htpasswd is taken from the working directory, as the
	// server does.
	cfg := filepath.Join(c.dir, "berth.yaml")
	if err := os.WriteFile(cfg, []byte("addr: 127.0.0.1:0\nauth:\n  htpasswd: users.htpasswd\n  admins: [alice]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(c.dir, "users.htpasswd")
	comment := "# managed by berth user\n"
	if err := os.WriteFile(path, []byte(comment), 0o600); err != nil {
		t.Fatal(err)
	}

	c.ok(line("pw-1\n"), "alice", "add", "alice", "--config", cfg, "--password-stdin")
	c.ok(line("pw-2\n"), "bob", "add", "bob", "--config", cfg, "--password-stdin")
	c.ok(line("pw-3\n"), "bob", "passwd", "bob", "--config", cfg, "--password-stdin")
	c.ok(nil, "alice", "remove", "alice", "--config", cfg)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(raw), comment) {
		t.Errorf("the comment was lost:\n%s", raw)
	}
	assertBcrypt(t, path)
	u := readHtpasswd(t, path)
	if !slices.Equal(u.Names(), []string{"bob"}) || !u.Verify("bob", "pw-3") {
		t.Errorf("users %q", u.Names())
	}

	// --htpasswd wins over --config.
	other := filepath.Join(c.dir, "other.htpasswd")
	c.ok(line("pw\n"), "carol", "add", "carol", "--config", cfg, "--htpasswd", other, "--password-stdin")
	if u := readHtpasswd(t, other); !u.Verify("carol", "pw") {
		t.Error("--htpasswd did not take precedence over --config")
	}
	if readHtpasswd(t, path).Has("carol") {
		t.Error("carol was added to the configured file too")
	}
}

func TestUserCLIErrors(t *testing.T) {
	c := newUserCLI(t)
	path := filepath.Join(c.dir, "htpasswd")
	c.ok(line("pw\n"), "alice", "add", "alice", "--htpasswd", path, "--password-stdin")

	c.fails(path, line("other\n"), "user already exists: alice", "add", "alice", "--htpasswd", path, "--password-stdin")
	c.fails(path, line("pw\n"), "no such user: bob", "passwd", "bob", "--htpasswd", path, "--password-stdin")
	c.fails(path, nil, "no such user: bob", "remove", "bob", "--htpasswd", path)
	c.fails(path, line("\n"), "empty password", "add", "bob", "--htpasswd", path, "--password-stdin")
	c.fails(path, line(""), "empty password", "passwd", "alice", "--htpasswd", path, "--password-stdin")
	c.fails(path, line("pw\n"), "no password", "add", "bob", "--htpasswd", path)
	c.fails(path, line("pw\n"), "no password", "passwd", "alice", "--htpasswd", path)
	c.fails(path, line("pw\n"), "user name", "add", "bad name", "--htpasswd", path, "--password-stdin")
	c.fails(path, line(strings.Repeat("x", 73)+"\n"), "72 bytes", "add", "bob", "--htpasswd", path, "--password-stdin")

	missing := filepath.Join(c.dir, "missing")
	c.fails(missing, line("pw\n"), "no such file", "passwd", "alice", "--htpasswd", missing, "--password-stdin")
	c.fails(missing, nil, "no such file", "remove", "alice", "--htpasswd", missing)

	// No htpasswd configured: neither flag, or a configuration without
	// auth.htpasswd.
	c.fails(path, line("pw\n"), "no htpasswd file: use --htpasswd or --config", "add", "bob", "--password-stdin")
	c.fails(path, nil, "no htpasswd file: use --htpasswd or --config", "remove", "alice")
	noAuth := filepath.Join(c.dir, "no-auth.yaml")
	if err := os.WriteFile(noAuth, []byte("addr: 127.0.0.1:0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c.fails(path, line("pw\n"), "does not set auth.htpasswd", "add", "bob", "--config", noAuth, "--password-stdin")
	c.fails(path, nil, "read config", "remove", "alice", "--config", filepath.Join(c.dir, "missing.yaml"))

	// Usage errors.
	c.fails(path, nil, "accepts 1 arg", "remove", "--htpasswd", path)

	u := readHtpasswd(t, path)
	if !slices.Equal(u.Names(), []string{"alice"}) || !u.Verify("alice", "pw") {
		t.Errorf("failed commands changed the users: %q", u.Names())
	}
}
