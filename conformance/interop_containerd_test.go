package conformance_test

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

const (
	// containerdStartTimeout bounds how long a private containerd may take
	// to answer on its socket.
	containerdStartTimeout = 20 * time.Second
	// containerdStopTimeout bounds how long it may take to exit after
	// SIGTERM before it is killed.
	containerdStopTimeout = 10 * time.Second
	// ctrNamespace is the containerd namespace the tests use.
	ctrNamespace = "berthtest"
)

// containerd is a private containerd daemon for one test: its own root,
// state and sockets in a temporary directory, no CRI plugin, no debug or
// metrics listeners, so it cannot clash with a containerd on the machine.
type containerd struct {
	t           *testing.T
	sock        string
	env         []string
	snapshotter string
}

// startContainerd starts containerd and waits until "ctr version" answers
// on its socket. It is stopped with SIGTERM when the test ends.
func startContainerd(t *testing.T) *containerd {
	t.Helper()
	// A unix socket path is limited to about 108 bytes, which a deep
	// t.TempDir may exceed, so the daemon lives in a short directory.
	dir, err := os.MkdirTemp("", "berth-ctrd-")
	if err != nil {
		t.Fatalf("create containerd directory: %v", err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove containerd directory: %v", err)
		}
	})
	c := &containerd{t: t, sock: filepath.Join(dir, "containerd.sock"), env: clientEnv(t)}
	config := filepath.Join(dir, "config.toml")
	writeTestFile(t, config, fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
temp = %[3]q
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = %[4]q

[ttrpc]
  address = %[5]q

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = %[6]q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), filepath.Join(dir, "tmp"),
		c.sock, c.sock+".ttrpc", filepath.Join(dir, "opt")))

	var logs lockedBuffer
	cmd := exec.Command(clientPath(t, "containerd"), "--config", config)
	cmd.Env = append(os.Environ(), c.env...)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatalf("start containerd: %v", err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		select {
		case <-exited:
			t.Errorf("containerd exited before the test ended: %v\n%s", waitErr, logs.String())
			return
		default:
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(containerdStopTimeout):
			_ = cmd.Process.Kill()
			<-exited
			t.Errorf("containerd did not exit within %s of SIGTERM; killed it", containerdStopTimeout)
		}
		if t.Failed() {
			t.Logf("containerd log:\n%s", logs.String())
		}
	})

	deadline := time.Now().Add(containerdStartTimeout)
	for {
		select {
		case <-exited:
			t.Fatalf("containerd exited during start: %v\n%s", waitErr, logs.String())
		default:
		}
		if _, err := os.Stat(c.sock); err == nil {
			r := c.try("--connect-timeout", "2s", "version")
			if r.err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("containerd did not answer on %s within %s: %v\n%s\ncontainerd log:\n%s", c.sock, containerdStartTimeout, r.err, r.stderr, logs.String())
			}
		} else if time.Now().After(deadline) {
			t.Fatalf("containerd did not create %s within %s\ncontainerd log:\n%s", c.sock, containerdStartTimeout, logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}

	// overlayfs is what a Kubernetes node uses, but it cannot work on
	// every file system (for example on overlayfs itself); then the
	// portable native snapshotter is used.
	c.snapshotter = "native"
	for line := range strings.Lines(c.run("plugins", "ls")) {
		f := strings.Fields(line)
		if len(f) >= 4 && f[0] == "io.containerd.snapshotter.v1" && f[1] == "overlayfs" && f[len(f)-1] == "ok" {
			c.snapshotter = "overlayfs"
		}
	}
	t.Logf("containerd is up on %s; unpacking with the %s snapshotter", c.sock, c.snapshotter)
	return c
}

// ctrArgs prefixes a ctr command line with the daemon's socket and the
// test namespace.
func (c *containerd) ctrArgs(args []string) []string {
	return append([]string{"--address", c.sock, "--namespace", ctrNamespace}, args...)
}

// run runs a ctr command that must succeed and returns its output.
func (c *containerd) run(args ...string) string {
	c.t.Helper()
	return runClientIn(c.t, "", c.env, "ctr", c.ctrArgs(args)...)
}

// try runs a ctr command that may fail.
func (c *containerd) try(args ...string) clientResult {
	c.t.Helper()
	return execClient(c.t, "", c.env, "ctr", c.ctrArgs(args)...)
}

// check runs "ctr images check" and returns the status and unpacked
// columns for ref.
func (c *containerd) check(ref string) (status, unpacked string) {
	c.t.Helper()
	out := c.run("images", "check", "--snapshotter", c.snapshotter, "name=="+ref)
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		// REF TYPE DIGEST STATUS SIZE UNPACKED; STATUS and SIZE contain a
		// space ("complete (3/3)", "1.2 KiB/1.2 KiB").
		if len(f) > 0 && f[0] == ref {
			i := slices.IndexFunc(f, func(s string) bool { return strings.HasPrefix(s, "sha256:") })
			if i < 0 || i+1 >= len(f) {
				break
			}
			return strings.Join(f[i+1:i+3], " "), f[len(f)-1]
		}
	}
	c.t.Fatalf("ctr images check does not list %s:\n%s", ref, out)
	return "", ""
}

// content lists the digests in containerd's content store.
func (c *containerd) content() []string {
	c.t.Helper()
	return strings.Fields(c.run("content", "ls", "--quiet"))
}

// TestContainerdPullPush drives containerd the way a Kubernetes node
// pulls: ctr pulls a multi-platform image from Berth for the host
// platform and unpacks it, then pulls every platform, and pushes the
// image back to another repository, which must hold the same digests.
//
// In authenticated mode containerd gets its credentials the way a node
// does, from its hosts configuration: an Authorization header in the
// hosts.toml of Berth's address (and of the mirrored name), which Berth
// accepts on every request. The push to the second registry gives them
// with ctr --user instead, and a push with neither must fail.
func TestContainerdPullPush(t *testing.T) { forEachMode(t, testContainerdPullPush) }

func testContainerdPullPush(t *testing.T, srv *registryUnderTest) {
	ctrd := startContainerd(t)
	srv2 := srv.another(t)
	hostsDir := writeHostsDir(t, srv, srv2)
	// How ctr reaches Berth directly: over plain HTTP, and in
	// authenticated mode with the hosts directory's credentials.
	direct := []string{"--plain-http"}
	if srv.auth() {
		direct = append(direct, "--hosts-dir", hostsDir)
	}
	ctrArgs := func(args ...string) []string {
		return slices.Concat(args[:2], direct, args[2:])
	}

	platforms := []v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64", Variant: "v8"}}
	if !slices.ContainsFunc(platforms, func(p v1.Platform) bool { return p.Architecture == runtime.GOARCH }) {
		platforms = append(platforms, v1.Platform{OS: "linux", Architecture: runtime.GOARCH})
	}
	idx, images := randomIndex(t, platforms, types.OCIImageIndex, types.OCIManifestSchema1, types.OCIConfigJSON, types.OCILayer)
	indexDigest := pushTestIndex(t, srv, "ctr/multi:v1", idx).String()
	var host, other []string // layer digests of the host's image and of the others
	for _, pi := range images {
		if pi.platform.Architecture == runtime.GOARCH {
			host = append(host, layerDigests(t, pi.img)...)
		} else {
			other = append(other, layerDigests(t, pi.img)...)
		}
	}

	// The host platform, unpacked into a snapshot, as the kubelet has it
	// done, with Berth configured the way Kubernetes nodes configure
	// containerd: a hosts.toml (the CRI plugin's config_path) naming Berth
	// as the mirror of a registry name that does not resolve.
	mirrored := mirrorHost + "/ctr/multi:v1"
	ctrd.run("images", "pull", "--hosts-dir", hostsDir, "--snapshotter", ctrd.snapshotter, mirrored)
	if status, unpacked := ctrd.check(mirrored); !strings.HasPrefix(status, "complete") || unpacked != "true" {
		t.Errorf("after pulling %s: ctr images check says %s, unpacked %s; want complete and unpacked", mirrored, status, unpacked)
	}
	content := ctrd.content()
	for _, d := range host {
		if !slices.Contains(content, d) {
			t.Errorf("host layer %s is not in containerd's content store after the pull", d)
		}
	}
	for _, d := range other {
		if slices.Contains(content, d) {
			t.Errorf("layer %s of another platform was fetched by a pull for the host platform", d)
		}
	}
	if out := ctrd.run("snapshots", "--snapshotter", ctrd.snapshotter, "ls"); len(strings.Split(strings.TrimSpace(out), "\n")) < 2 {
		t.Errorf("no snapshots after unpacking %s:\n%s", mirrored, out)
	}

	// Every platform, by digest.
	byDigest := srv.Addr + "/ctr/multi@" + indexDigest
	ctrd.run(ctrArgs("images", "pull", "--all-platforms", "--snapshotter", ctrd.snapshotter, byDigest)...)
	if status, _ := ctrd.check(byDigest); !strings.HasPrefix(status, "complete") {
		t.Errorf("after pulling all platforms of %s: ctr images check says %s, want complete", byDigest, status)
	}
	content = ctrd.content()
	for _, d := range append(slices.Clone(host), other...) {
		if !slices.Contains(content, d) {
			t.Errorf("layer %s is not in containerd's content store after pulling all platforms", d)
		}
	}
	if out := ctrd.run("images", "ls", "--quiet"); !slices.Contains(strings.Fields(out), mirrored) || !slices.Contains(strings.Fields(out), byDigest) {
		t.Errorf("ctr images ls does not list %s and %s:\n%s", mirrored, byDigest, out)
	}

	// Push the whole index back under a new name: Berth must then hold
	// the same index, images and blobs in the new repository. ctr asks
	// Berth to mount the blobs from the repository they came from.
	pushed := srv.Addr + "/ctr/pushed:v1"
	ctrd.run("images", "tag", byDigest, pushed)
	ctrd.run(ctrArgs("images", "push", pushed)...)
	if got := checkManifestTree(t, srv, "ctr/pushed", "v1"); got != indexDigest {
		t.Errorf("pushed index digest = %s, want %s", got, indexDigest)
	}

	// And to a second, empty Berth, where ctr must upload every blob; in
	// authenticated mode with the credentials given by ctr --user.
	uploaded := srv2.Addr + "/ctr/uploaded:v1"
	ctrd.run("images", "tag", byDigest, uploaded)
	if srv.auth() {
		ctrd.run("images", "push", "--plain-http", "--user", srv2.basicAuth(), uploaded)
	} else {
		ctrd.run("images", "push", "--plain-http", uploaded)
	}
	if got := checkManifestTree(t, srv2, "ctr/uploaded", "v1"); got != indexDigest {
		t.Errorf("index pushed to an empty Berth = %s, want %s", got, indexDigest)
	}
	for _, pi := range images {
		d := mustDigest(t, pi.img).String()
		compareImage(t, "image pushed by ctr for "+pi.platform.String(), pullImage(t, srv2, srv2.Addr+"/ctr/uploaded@"+d), pi.img)
	}

	// Push one platform: ctr then pushes only that platform's image, and
	// the tag names the image manifest rather than the index.
	for _, pi := range images {
		if pi.platform.Architecture != runtime.GOARCH {
			continue
		}
		ctrd.run(ctrArgs("images", "push", "--platform", pi.platform.String(), srv.Addr+"/ctr/host:v1", byDigest)...)
		want := mustDigest(t, pi.img).String()
		if got := checkManifestTree(t, srv, "ctr/host", "v1"); got != want {
			t.Errorf("ctr/host:v1 pushed for %s = %s, want the image manifest %s", pi.platform, got, want)
		}
		compareImage(t, "image pushed by ctr for "+pi.platform.String(), pullImage(t, srv, srv.Addr+"/ctr/host:v1"), pi.img)
	}

	// Without the hosts directory's credentials or --user, a push is
	// refused.
	srv.expectRefusedPush(t, "ctr images push", "ctr/refused", ctrd.try("images", "push", "--plain-http", srv.Addr+"/ctr/refused:v1", byDigest))
}

// mirrorHost is a registry name that cannot resolve (.test is reserved),
// which the tests have containerd reach through a mirror.
const mirrorHost = "registry.berth.test"

// writeHostsDir writes a containerd hosts directory (the format of the CRI
// plugin's config_path) and returns it. It makes srv, over plain HTTP, the
// mirror for mirrorHost: containerd then sends mirrorHost's requests to
// srv with a "ns" query parameter naming mirrorHost. In authenticated mode
// it also gives each registry, srv and others, a hosts.toml of its own
// address, and puts the registries' credentials in every host as an
// Authorization header.
func writeHostsDir(t *testing.T, srv *registryUnderTest, others ...*registryUnderTest) string {
	t.Helper()
	dir := t.TempDir()
	write := func(host, content string) {
		t.Helper()
		hostDir := filepath.Join(dir, host)
		if err := os.MkdirAll(hostDir, 0o700); err != nil {
			t.Fatalf("create hosts directory: %v", err)
		}
		writeTestFile(t, filepath.Join(hostDir, "hosts.toml"), content)
	}
	header := func(table string, reg *registryUnderTest) string {
		if !reg.auth() {
			return ""
		}
		basic := base64.StdEncoding.EncodeToString([]byte(reg.basicAuth()))
		return fmt.Sprintf("\n[%s]\n  Authorization = [\"Basic %s\"]\n", table, basic)
	}
	mirror := fmt.Sprintf("host.\"http://%s\"", srv.Addr)
	write(mirrorHost, fmt.Sprintf(`server = "https://%s"

[%s]
  capabilities = ["pull", "resolve"]
`, mirrorHost, mirror)+header(mirror+".header", srv))
	if srv.auth() {
		// containerd 1.6 requires a host table even when it names the
		// server itself; the header goes there.
		for _, reg := range append([]*registryUnderTest{srv}, others...) {
			host := fmt.Sprintf("host.\"http://%s\"", reg.Addr)
			write(reg.Addr, fmt.Sprintf(`server = "http://%s"

[%s]
  capabilities = ["pull", "resolve", "push"]
`, reg.Addr, host)+header(host+".header", reg))
		}
	}
	return dir
}

// lockedBuffer is a bytes.Buffer safe for a process's concurrent stdout
// and stderr writes.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
