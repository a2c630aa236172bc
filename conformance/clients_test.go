package conformance_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"debug/buildinfo"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	ggcrremote "github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/crypto/bcrypt"

	"github.com/berth-registry/berth/conformance/internal/berthtest"
)

// A client is a real command-line tool the interoperability tests drive.
type client struct {
	// name is the binary's name.
	name string
	// versionArgs print the client's version; without them the version is
	// read from the binary's Go build information (for clients that
	// "go install" builds without their release's version stamp).
	versionArgs []string
}

// allClients are every tool the interoperability suite needs. The Go-built
// ones are installed into bin/tools by "make clients"; skopeo, containerd
// (ctr), podman, dockerd (docker.io), curl and wget come from Debian
// packages.
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
		{"dockerd", []string{"--version"}},
		{"crictl", nil},
		{"buildx", nil},
		{"curl", []string{"--version"}},
		{"wget", []string{"--version"}},
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
	return execClientInput(t, dir, env, "", name, args...)
}

// execClientInput is execClient with stdin as the client's standard input
// (for a password read with --password-stdin).
func execClientInput(t testing.TB, dir string, env []string, stdin, name string, args ...string) clientResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, clientPath(t, name), args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		err = errors.Join(err, ctx.Err())
	}
	return clientResult{stdout: stdout.String(), stderr: stderr.String(), err: err}
}

// runClientIn runs a client that must succeed, in a working directory (the
// test's if empty) with extra environment, and returns its standard output.
// On failure the test fails with the client's name, the exact command and
// everything it printed, so the log says which client failed on what.
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
		if c.versionArgs == nil {
			info, err := buildinfo.ReadFile(clientPath(t, c.name))
			if err != nil || !versionRE.MatchString(info.Main.Version) {
				t.Errorf("client %s: no module version in its build information (%v)", c.name, err)
				continue
			}
			t.Logf("client %-10s %s (%s)", c.name, info.Main.Version, info.Main.Path)
			continue
		}
		r := execClient(t, "", nil, c.name, c.versionArgs...)
		if r.err != nil {
			t.Errorf("client %s: %s %s failed: %v\n%s%s", c.name, c.name, strings.Join(c.versionArgs, " "), r.err, r.stdout, r.stderr)
			continue
		}
		out := r.stdout + "\n" + r.stderr
		v := versionRE.FindString(out)
		if v == "" {
			t.Errorf("client %s: no version in %q", c.name, out)
			continue
		}
		t.Logf("client %-10s %s", c.name, v)
	}
}

// versionRE finds a version number in a client's version output.
var versionRE = regexp.MustCompile(`v?\d+\.\d+(\.\d+)?([~+-][0-9A-Za-z.~+-]+)?`)

// ---- The registry under test: anonymous or authenticated. ----

// registryMode is how the berth a client test talks to is set up.
type registryMode struct {
	// name names the subtest.
	name string
	// auth turns authentication on: then only the user interopUser may
	// do anything, and anonymous callers may do nothing.
	auth bool
	// s3 keeps the blobs in a fresh bucket of the tests' S3 server
	// rather than under the data directory; with redirect, blob GETs are
	// redirected to it.
	s3, redirect bool
}

var (
	anonymousMode     = registryMode{name: "anonymous"}
	authenticatedMode = registryMode{name: "authenticated", auth: true}
	// registryModes are the modes every interoperability test runs in.
	registryModes = []registryMode{anonymousMode, authenticatedMode}
)

// interopUser is the user the clients log in as in authenticated mode.
const interopUser = "interop"

// registryUnderTest is a berth started for one mode, with the credentials
// of interopUser when authentication is on.
type registryUnderTest struct {
	*berthtest.Server
	mode registryMode
	// user and pass are interopUser's credentials in authenticated mode,
	// empty in anonymous mode.
	user, pass string
	// bucket holds the blobs in the s3 modes.
	bucket string
}

// forEachMode runs fn as the subtests "anonymous" and "authenticated", each
// against a berth of its own started in that mode.
func forEachMode(t *testing.T, fn func(t *testing.T, reg *registryUnderTest)) {
	t.Helper()
	for _, mode := range registryModes {
		t.Run(mode.name, func(t *testing.T) {
			fn(t, startRegistry(t, mode))
		})
	}
}

// startRegistry starts a berth in mode. In authenticated mode it is given
// an htpasswd file holding interopUser with a random password, and one rule
// granting that user pull, push and delete on every repository and
// anonymous callers nothing.
func startRegistry(t *testing.T, mode registryMode) *registryUnderTest {
	t.Helper()
	pass := ""
	if mode.auth {
		b := make([]byte, 16)
		if _, err := rand.Read(b); err != nil {
			t.Fatalf("random password: %v", err)
		}
		pass = hex.EncodeToString(b)
	}
	return startRegistryWith(t, mode, pass)
}

// another starts a second, empty berth in the same mode and with the same
// credentials, for tests that copy between registries.
func (r *registryUnderTest) another(t *testing.T) *registryUnderTest {
	t.Helper()
	return startRegistryWith(t, r.mode, r.pass)
}

func startRegistryWith(t *testing.T, mode registryMode, pass string) *registryUnderTest {
	t.Helper()
	reg := &registryUnderTest{mode: mode}
	var opts []berthtest.Option
	var config strings.Builder
	if mode.auth {
		reg.user, reg.pass = interopUser, pass
		dir := t.TempDir()
		hash, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.MinCost)
		if err != nil {
			t.Fatalf("hash password: %v", err)
		}
		htpasswd := filepath.Join(dir, "htpasswd")
		writeTestFile(t, htpasswd, interopUser+":"+string(hash)+"\n")
		fmt.Fprintf(&config, `auth:
  htpasswd: %s
  rules:
    - repositories: ["**"]
      grants:
        user:%s: [pull, push, delete]
`, htpasswd, interopUser)
	}
	if mode.s3 {
		// The keys come from the environment, as a deployment's secrets
		// may.
		yaml, bucket, env := s3Storage(t, mode.redirect)
		reg.bucket = bucket
		config.WriteString(yaml)
		opts = append(opts, berthtest.WithEnv(env...))
	}
	if config.Len() > 0 {
		path := filepath.Join(t.TempDir(), "berth.yaml")
		writeTestFile(t, path, config.String())
		opts = append(opts, berthtest.WithArgs("--config", path))
	}
	reg.Server = berthtest.Start(t, opts...)
	// A client may retry past a server error and still succeed, which
	// would hide the fault: berth must log no warning and no error.
	t.Cleanup(func() {
		for line := range strings.SplitSeq(reg.Logs(), "\n") {
			if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
				t.Errorf("berth %s logged: %s", reg.Addr, line)
			}
		}
	})
	return reg
}

// auth reports whether the registry requires authentication.
func (r *registryUnderTest) auth() bool { return r.mode.auth }

// login runs a client's login command in authenticated mode, with the
// password on its standard input (for --password-stdin and the like); in
// anonymous mode it does nothing.
func (r *registryUnderTest) login(t *testing.T, dir string, env []string, name string, args ...string) {
	t.Helper()
	if !r.auth() {
		return
	}
	res := execClientInput(t, dir, env, r.pass+"\n", name, args...)
	if res.err != nil {
		t.Fatalf("client %s failed to log in: %s %s: %v\nstdout:\n%s\nstderr:\n%s",
			name, name, strings.Join(args, " "), res.err, res.stdout, res.stderr)
	}
}

// basicAuth is "user:password" in authenticated mode, for the clients that
// take credentials on the command line (skopeo --creds, ctr --user), and
// empty in anonymous mode.
func (r *registryUnderTest) basicAuth() string {
	if !r.auth() {
		return ""
	}
	return r.user + ":" + r.pass
}

// refusedWithoutLogin matches what clients print when Berth asks them to
// authenticate, or refuses the anonymous token they fetched
// (insufficient_scope, which containerd and Docker word as a denial).
var refusedWithoutLogin = regexp.MustCompile(`(?i)\b401\b|unauthori[sz]ed|authentication required|insufficient_scope|requested access to the resource is denied`)

// expectRefused checks the negative half of authenticated mode: what a
// client did without logging in (a push from a fresh, empty configuration)
// failed, and failed because Berth asked for credentials, not for another
// reason. In anonymous mode it does nothing.
func (r *registryUnderTest) expectRefused(t *testing.T, what string, res clientResult) {
	t.Helper()
	if !r.auth() {
		return
	}
	switch {
	case res.err == nil:
		t.Errorf("%s without logging in succeeded against a berth that requires authentication:\nstdout:\n%s\nstderr:\n%s", what, res.stdout, res.stderr)
	case !refusedWithoutLogin.MatchString(res.stdout + res.stderr):
		t.Errorf("%s without logging in failed, but not for want of credentials: %v\nstdout:\n%s\nstderr:\n%s", what, res.err, res.stdout, res.stderr)
	default:
		t.Logf("%s without logging in was refused, as it must be: %s", what, refusalLine(res.stdout+res.stderr))
	}
}

// expectRefusedPush is expectRefused for a push into repo by a client
// that sends its requests concurrently (ctr): when Berth refuses one, the
// client may cancel the others and report that cancellation ("context
// canceled") rather than the refusal. Such a push counts as refused for
// want of credentials when Berth's log shows it denied the anonymous push
// into repo.
func (r *registryUnderTest) expectRefusedPush(t *testing.T, what, repo string, res clientResult) {
	t.Helper()
	out := res.stdout + res.stderr
	if r.auth() && res.err != nil && !refusedWithoutLogin.MatchString(out) && strings.Contains(out, "context canceled") &&
		strings.Contains(r.Logs(), `msg="access denied" identity=anonymous scope=repository:`+repo+":push") {
		t.Logf("%s without logging in was refused, as it must be: Berth denied the anonymous push into %s, and the client reported %s",
			what, repo, strings.TrimSpace(lastLine(out)))
		return
	}
	r.expectRefused(t, what, res)
}

// refusalLine is the first line of a client's output that says it was
// asked for credentials.
func refusalLine(out string) string {
	for line := range strings.Lines(out) {
		if refusedWithoutLogin.MatchString(line) {
			return strings.TrimSpace(line)
		}
	}
	return ""
}

// expectRefusedErr is expectRefused for a library call's error.
func (r *registryUnderTest) expectRefusedErr(t *testing.T, what string, err error) {
	t.Helper()
	if !r.auth() {
		return
	}
	switch {
	case err == nil:
		t.Errorf("%s without credentials succeeded against a berth that requires authentication", what)
	case !refusedWithoutLogin.MatchString(err.Error()):
		t.Errorf("%s without credentials failed, but not for want of credentials: %v", what, err)
	default:
		t.Logf("%s without credentials was refused, as it must be: %v", what, err)
	}
}

// httpClient returns an HTTP client for the test's own requests to the
// registry: in authenticated mode it sends interopUser's credentials as
// HTTP Basic on every request, which Berth accepts directly.
func (r *registryUnderTest) httpClient(t *testing.T) *http.Client {
	t.Helper()
	var tr http.RoundTripper = newTransport(t)
	if r.auth() {
		tr = basicAuthTransport{base: tr, user: r.user, pass: r.pass}
	}
	return &http.Client{Transport: tr}
}

type basicAuthTransport struct {
	base       http.RoundTripper
	user, pass string
}

func (b basicAuthTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.SetBasicAuth(b.user, b.pass)
	return b.base.RoundTrip(req)
}

// remoteOptions are go-containerregistry options for one test's traffic to
// the registry, bounded by interopTimeout. In authenticated mode they carry
// interopUser's credentials, which go-containerregistry exchanges for a
// token at Berth's token service.
func (r *registryUnderTest) remoteOptions(t *testing.T) []ggcrremote.Option {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), interopTimeout)
	t.Cleanup(cancel)
	opts := []ggcrremote.Option{ggcrremote.WithContext(ctx), ggcrremote.WithTransport(newTransport(t))}
	if r.auth() {
		opts = append(opts, ggcrremote.WithAuth(&authn.Basic{Username: r.user, Password: r.pass}))
	}
	return opts
}

// ---- The clients' environment. ----

// clientEnv gives one test's clients a private, empty home: their
// configuration, credentials and caches go to a temporary directory, never
// to the user's. It also sends every HTTP request a client makes to a host
// other than loopback through a local tripwire proxy, which refuses it;
// Berth on 127.0.0.1 is never proxied. The test fails if a client tried to
// reach an outside host, so a client that would silently contact the
// Internet is caught at once instead of hanging, or passing only on a
// machine with network access.
//
// Clients that need more (skopeo, podman, cosign, containerd) append their
// own variables.
func clientEnv(t *testing.T) []string {
	t.Helper()
	home := t.TempDir()
	env := []string{
		"HOME=" + home,
		"DOCKER_CONFIG=" + filepath.Join(home, ".docker"),
		"XDG_CONFIG_HOME=" + filepath.Join(home, ".config"),
		"XDG_CACHE_HOME=" + filepath.Join(home, ".cache"),
		"XDG_DATA_HOME=" + filepath.Join(home, ".local", "share"),
		"REGCTL_CONFIG=" + filepath.Join(home, ".regctl", "config.json"),
		"HELM_CONFIG_HOME=" + filepath.Join(home, "helm", "config"),
		"HELM_CACHE_HOME=" + filepath.Join(home, "helm", "cache"),
		"HELM_DATA_HOME=" + filepath.Join(home, "helm", "data"),
		"HELM_REGISTRY_CONFIG=" + filepath.Join(home, "helm", "registry.json"),
	}
	return append(env, tripwireProxyEnv(t)...)
}

// tripwireProxyEnv starts the tripwire proxy of clientEnv and returns the
// proxy variables that point at it.
func tripwireProxyEnv(t *testing.T) []string {
	t.Helper()
	var (
		mu    sync.Mutex
		tried []string
	)
	proxy := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		tried = append(tried, r.Method+" "+r.Host)
		mu.Unlock()
		http.Error(w, "Berth's interoperability tests must not reach outside hosts", http.StatusForbidden)
	})}
	ln := listenLoopback(t)
	go func() { _ = proxy.Serve(ln) }()
	t.Cleanup(func() {
		_ = proxy.Close()
		mu.Lock()
		defer mu.Unlock()
		if len(tried) > 0 {
			t.Errorf("a client tried to reach outside hosts (refused by the test's proxy): %q", tried)
		}
	})
	url := "http://" + ln.Addr().String()
	const noProxy = "127.0.0.1,localhost,::1"
	return []string{
		"HTTP_PROXY=" + url, "http_proxy=" + url,
		"HTTPS_PROXY=" + url, "https_proxy=" + url,
		"NO_PROXY=" + noProxy, "no_proxy=" + noProxy,
		"ALL_PROXY=", "all_proxy=",
	}
}
