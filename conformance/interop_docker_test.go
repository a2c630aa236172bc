//go:build linux

package conformance_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

const (
	// dockerdStartTimeout bounds how long a private dockerd may take to
	// answer on its socket.
	dockerdStartTimeout = 60 * time.Second
	// dockerdStopTimeout bounds how long it may take to exit after
	// SIGTERM before it is killed.
	dockerdStopTimeout = 20 * time.Second
)

// dockerEngine is a private Docker engine (dockerd 20.10 from Debian's
// docker.io) for one test: its own data root, exec root (with the
// containerd it starts), socket and trust key in a temporary directory, the
// vfs storage driver, and no networking of its own (no bridge, no
// iptables rules, no IP forwarding), so that it changes nothing on the
// machine. It reaches registries only on loopback: every other host goes
// to the test's tripwire proxy.
type dockerEngine struct {
	cli string
	// env is the environment of every docker command: the daemon's
	// socket, and the private home and proxy of clientEnv.
	env []string
	// home is the private home the commands run in.
	home string
}

// startDockerd starts dockerd, with extra arguments, and waits until it
// answers.
func startDockerd(t *testing.T, extra ...string) *dockerEngine {
	t.Helper()
	bin := serverPath(t, "dockerd", "docker.io")
	dir := daemonDir(t, "berth-dockerd-")
	sock := filepath.Join(dir, "docker.sock")
	// The engine's identity key would go to /etc/docker by default.
	writeTestFile(t, filepath.Join(dir, "daemon.json"), fmt.Sprintf("{%q: %q}\n", "deprecated-key-path", filepath.Join(dir, "key.json")))
	env := clientEnv(t)
	d := startDaemon(t, "dockerd", env, dockerdStopTimeout, bin, append([]string{
		"--data-root", filepath.Join(dir, "root"),
		"--exec-root", filepath.Join(dir, "exec"),
		"--pidfile", filepath.Join(dir, "docker.pid"),
		"--config-file", filepath.Join(dir, "daemon.json"),
		"--host", "unix://" + sock,
		"--storage-driver", "vfs",
		"--bridge", "none",
		"--iptables=false", "--ip6tables=false", "--ip-forward=false", "--ip-masq=false",
		"--userland-proxy=false",
	}, extra...)...,
	)
	e := &dockerEngine{cli: dockerCLI(t), env: append(env, "DOCKER_HOST=unix://"+sock), home: homeOf(env)}
	d.waitReady(t, dockerdStartTimeout, func() error {
		return e.try(t, "", "version", "--format", "{{.Server.Version}}").err
	})
	t.Logf("dockerd %s is up on %s", strings.TrimSpace(e.run(t, "", "version", "--format", "{{.Server.Version}}")), sock)
	return e
}

// dockerCLI is the docker command that comes with the engine (Debian's
// /usr/bin/docker), rather than whatever other docker is first on PATH.
func dockerCLI(t *testing.T) string {
	t.Helper()
	if fi, err := os.Stat("/usr/bin/docker"); err == nil && fi.Mode().IsRegular() {
		return "/usr/bin/docker"
	}
	return clientPath(t, "docker")
}

// homeOf returns the HOME of a clientEnv environment.
func homeOf(env []string) string {
	for _, kv := range env {
		if h, ok := strings.CutPrefix(kv, "HOME="); ok {
			return h
		}
	}
	return ""
}

// config makes a docker client configuration directory of its own (one
// per identity: docker login writes its credentials there), with the
// buildx plugin installed.
func (e *dockerEngine) config(t *testing.T, name string) string {
	t.Helper()
	dir := filepath.Join(e.home, "docker-"+name)
	if err := os.MkdirAll(filepath.Join(dir, "cli-plugins"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(clientPath(t, "buildx"), filepath.Join(dir, "cli-plugins", "docker-buildx")); err != nil {
		t.Fatal(err)
	}
	return dir
}

// try runs a docker command with the client configuration cfg (none if
// empty), which may fail.
func (e *dockerEngine) try(t *testing.T, cfg string, args ...string) clientResult {
	t.Helper()
	return e.tryInput(t, cfg, "", args...)
}

func (e *dockerEngine) tryInput(t *testing.T, cfg, stdin string, args ...string) clientResult {
	t.Helper()
	env := slices.Clone(e.env)
	if cfg != "" {
		env = append(env, "DOCKER_CONFIG="+cfg)
	}
	// The legacy builder: BuildKit would want a builder container.
	env = append(env, "DOCKER_BUILDKIT=0")
	return execClientInput(t, "", env, stdin, e.cli, args...)
}

// run runs a docker command that must succeed and returns its output.
func (e *dockerEngine) run(t *testing.T, cfg string, args ...string) string {
	t.Helper()
	r := e.try(t, cfg, args...)
	if r.err != nil {
		t.Fatalf("docker %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.err, r.stdout, r.stderr)
	}
	return r.stdout
}

// login logs cfg in as user; it must succeed.
func (e *dockerEngine) login(t *testing.T, cfg, addr, user, pass string) {
	t.Helper()
	r := e.tryInput(t, cfg, pass+"\n", "login", addr, "-u", user, "--password-stdin")
	if r.err != nil || !strings.Contains(r.stdout, "Login Succeeded") {
		t.Fatalf("docker login %s as %s: %v\n%s%s", addr, user, r.err, r.stdout, r.stderr)
	}
}

// refused checks that a docker command failed at once with Docker's usual
// wording: its output has want, and no "Retrying in", which Docker prints
// while it retries a push it does not know to be refused for good.
func (e *dockerEngine) refused(t *testing.T, what string, r clientResult, want string) {
	t.Helper()
	out := r.stdout + r.stderr
	switch {
	case r.err == nil:
		t.Errorf("%s succeeded, want a refusal:\n%s", what, out)
	case !strings.Contains(out, want):
		t.Errorf("%s: output lacks %q:\n%s", what, want, out)
	case strings.Contains(out, "Retrying in"):
		t.Errorf("%s: Docker retried a refusal instead of giving up at once:\n%s", what, out)
	default:
		t.Logf("%s refused as Docker words it: %s", what, strings.TrimSpace(lastLine(out)))
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// build builds a FROM scratch image of one file with the legacy builder
// and tags it ref.
func (e *dockerEngine) build(t *testing.T, cfg, ref, content string) {
	t.Helper()
	dir := t.TempDir()
	writeTestFile(t, filepath.Join(dir, "hello.txt"), content)
	writeTestFile(t, filepath.Join(dir, "Dockerfile"), "FROM scratch\nCOPY hello.txt /\nLABEL org.opencontainers.image.title=berth-docker-test\n")
	e.run(t, cfg, "build", "--tag", ref, dir)
}

var pushedDigestRE = regexp.MustCompile(`digest: (sha256:[0-9a-f]{64}) size: \d+`)

// push pushes ref and returns the digest Docker reports.
func (e *dockerEngine) push(t *testing.T, cfg, ref string) (digest, out string) {
	t.Helper()
	out = e.run(t, cfg, "push", ref)
	m := pushedDigestRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("docker push %s printed no digest:\n%s", ref, out)
	}
	return m[1], out
}

// inspect returns a field of a local image, by Go template.
func (e *dockerEngine) inspect(t *testing.T, ref, format string) string {
	t.Helper()
	return strings.TrimSpace(e.run(t, "", "image", "inspect", "--format", format, ref))
}

// TestDockerEngine drives the Docker engine against Berth as developers
// do: build, push, pull after rmi, by digest, every tag, a cross-repository
// push (mounted), a multi-platform index pulled for one platform,
// "docker manifest inspect" and "docker buildx imagetools inspect".
//
// Against a Berth with authentication it does the same after "docker
// login", and checks the refusals a user sees, worded as Docker words
// them and at once (no retries): a push or a pull without logging in, a
// wrong password, a push without the push right, a pull without the pull
// right, and a pull after "docker logout".
func TestDockerEngine(t *testing.T) {
	eng := startDockerd(t)
	t.Run("anonymous", func(t *testing.T) {
		srv := startRegistry(t, anonymousMode)
		dockerRoundTrip(t, eng, srv, eng.config(t, "anonymous"), "docker/app")
	})
	t.Run("authenticated", func(t *testing.T) { testDockerAuthenticated(t, eng) })
}

func testDockerAuthenticated(t *testing.T, eng *dockerEngine) {
	s := startAuthServer(t)
	// writer may push and pull team/**; its credentials also serve the
	// test's own requests.
	srv := &registryUnderTest{Server: s.Server, mode: authenticatedMode, user: "writer", pass: s.users["writer"]}
	addr := srv.Addr
	nobody := eng.config(t, "nobody")
	ref := addr + "/team/docker:v1"
	eng.build(t, nobody, ref, "built before any login\n")

	// Without logging in.
	eng.refused(t, "docker push without login", eng.try(t, nobody, "push", ref), "denied: requested access to the resource is denied")
	eng.refused(t, "docker pull of a private repository without login", eng.try(t, nobody, "pull", addr+"/private/none:v1"),
		"pull access denied for "+addr+"/private/none, repository does not exist or may require 'docker login'")
	eng.refused(t, "docker login with a wrong password", eng.tryInput(t, eng.config(t, "wrong"), "not-the-password\n", "login", addr, "-u", "writer", "--password-stdin"),
		"unauthorized")

	// Logged in as writer: the whole round trip.
	writer := eng.config(t, "writer")
	eng.login(t, writer, addr, "writer", s.users["writer"])
	dockerRoundTrip(t, eng, srv, writer, "team/docker")
	eng.refused(t, "docker pull of a repository writer may not pull", eng.try(t, writer, "pull", addr+"/private/none:v1"),
		"pull access denied for "+addr+"/private/none, repository does not exist or may require 'docker login'")

	// reader may pull team/** but not push there.
	reader := eng.config(t, "reader")
	eng.login(t, reader, addr, "reader", s.users["reader"])
	eng.run(t, reader, "rmi", ref)
	eng.run(t, reader, "pull", ref)
	eng.build(t, reader, addr+"/team/docker:by-reader", "built by reader\n")
	eng.refused(t, "docker push without the push right", eng.try(t, reader, "push", addr+"/team/docker:by-reader"),
		"denied: requested access to the resource is denied")

	// public/** is open to anonymous pulls.
	pub := addr + "/public/docker:v1"
	eng.run(t, writer, "tag", ref, pub)
	eng.push(t, writer, pub)
	eng.run(t, nobody, "rmi", pub)
	eng.run(t, nobody, "pull", pub)

	// After logout, writer is anonymous again.
	if out := eng.run(t, writer, "logout", addr); !strings.Contains(out, "Removing login credentials") {
		t.Errorf("docker logout: %s", out)
	}
	eng.run(t, writer, "rmi", ref)
	eng.refused(t, "docker pull after logout", eng.try(t, writer, "pull", ref),
		"pull access denied for "+addr+"/team/docker, repository does not exist or may require 'docker login'")
}

// dockerRoundTrip builds and pushes repo:v1 with the client configuration
// cfg, and checks every way back.
func dockerRoundTrip(t *testing.T, eng *dockerEngine, srv *registryUnderTest, cfg, repo string) {
	ref := srv.Addr + "/" + repo + ":v1"
	eng.build(t, cfg, ref, "hello from the Docker engine in "+repo+"\n")
	id := eng.inspect(t, ref, "{{.Id}}")
	digest, _ := eng.push(t, cfg, ref)
	if got := checkManifestTree(t, srv, repo, "v1"); got != digest {
		t.Errorf("Berth has %s:v1 = %s, docker pushed %s", repo, got, digest)
	}

	// Pull after rmi, by tag and by digest.
	eng.run(t, cfg, "rmi", ref)
	if out := eng.run(t, cfg, "pull", ref); !strings.Contains(out, "Digest: "+digest) {
		t.Errorf("docker pull %s does not report digest %s:\n%s", ref, digest, out)
	}
	if got := eng.inspect(t, ref, "{{.Id}}"); got != id {
		t.Errorf("pulled image id %s, built %s", got, id)
	}
	eng.run(t, cfg, "rmi", ref)
	byDigest := srv.Addr + "/" + repo + "@" + digest
	eng.run(t, cfg, "pull", byDigest)
	if got := eng.inspect(t, byDigest, "{{.Id}}"); got != id {
		t.Errorf("image pulled by digest has id %s, want %s", got, id)
	}

	// Every tag at once.
	v2 := srv.Addr + "/" + repo + ":v2"
	eng.run(t, cfg, "tag", byDigest, ref)
	eng.run(t, cfg, "tag", byDigest, v2)
	eng.push(t, cfg, v2)
	eng.run(t, cfg, "rmi", ref, v2)
	eng.run(t, cfg, "pull", "--all-tags", srv.Addr+"/"+repo)
	tags := strings.Fields(eng.run(t, cfg, "images", "--format", "{{.Tag}}", srv.Addr+"/"+repo))
	if !slices.Contains(tags, "v1") || !slices.Contains(tags, "v2") {
		t.Errorf("after docker pull --all-tags: tags %q, want v1 and v2", tags)
	}

	// Tagged into another repository of the same registry, the layer is
	// mounted rather than uploaded again.
	copyRef := srv.Addr + "/" + repo + "-copy:v1"
	eng.run(t, cfg, "tag", ref, copyRef)
	copyDigest, out := eng.push(t, cfg, copyRef)
	if copyDigest != digest {
		t.Errorf("pushed to another repository: digest %s, want %s", copyDigest, digest)
	}
	if !strings.Contains(out, "Mounted from "+repo) {
		t.Errorf("docker push to another repository did not mount the layer from %s:\n%s", repo, out)
	}
	checkManifestTree(t, srv, repo+"-copy", "v1")

	// A multi-platform index, pulled for a platform that is not the host's.
	other := v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}
	if runtime.GOARCH == "arm64" {
		other = v1.Platform{OS: "linux", Architecture: "amd64"}
	}
	idx, images := randomIndex(t, []v1.Platform{{OS: "linux", Architecture: runtime.GOARCH}, other},
		types.OCIImageIndex, types.OCIManifestSchema1, types.OCIConfigJSON, types.OCILayer)
	multi := srv.Addr + "/" + repo + "-multi:v1"
	indexDigest := pushTestIndex(t, srv, repo+"-multi:v1", idx).String()
	eng.run(t, cfg, "pull", "--platform", other.OS+"/"+other.Architecture, multi)
	cfgName, err := images[1].img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	if got := eng.inspect(t, multi, "{{.Architecture}}"); got != other.Architecture {
		t.Errorf("docker pull --platform %s/%s gave an image for %s", other.OS, other.Architecture, got)
	}
	if got := eng.inspect(t, multi, "{{.Id}}"); got != cfgName.String() {
		t.Errorf("docker pull --platform: image id %s, want the %s image's config %s", got, other.Architecture, cfgName)
	}
	if got := eng.inspect(t, multi, "{{join .RepoDigests \" \"}}"); !strings.Contains(got, "@"+indexDigest) {
		t.Errorf("pulled image's repository digests %q do not name the index %s", got, indexDigest)
	}

	// docker manifest inspect reads a manifest list. (The docker command
	// of Docker 20.10 asks for the children of a list without accepting
	// OCI image manifests, so it cannot read an OCI index of them from any
	// registry that negotiates content types: a Docker manifest list here.)
	dlist, dimages := randomIndex(t, []v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64", Variant: "v8"}},
		types.DockerManifestList, types.DockerManifestSchema2, types.DockerConfigJSON, types.DockerLayer)
	listRef := srv.Addr + "/" + repo + "-list:v1"
	pushTestIndex(t, srv, repo+"-list:v1", dlist)
	var list struct {
		MediaType string
		Manifests []struct {
			Digest   string
			Platform struct{ Architecture, OS string }
		}
	}
	decodeJSON(t, "docker manifest inspect", eng.run(t, cfg, "manifest", "inspect", "--insecure", listRef), &list)
	if list.MediaType != string(types.DockerManifestList) || len(list.Manifests) != len(dimages) {
		t.Fatalf("docker manifest inspect %s: %s with %d manifests, want a manifest list of %d", listRef, list.MediaType, len(list.Manifests), len(dimages))
	}
	for i, m := range list.Manifests {
		if want := mustDigest(t, dimages[i].img).String(); m.Digest != want || m.Platform.Architecture != dimages[i].platform.Architecture {
			t.Errorf("docker manifest inspect: entry %d = %s %s, want %s %s", i, m.Digest, m.Platform.Architecture, want, dimages[i].platform.Architecture)
		}
	}
	var one struct{ MediaType, SchemaVersion any }
	decodeJSON(t, "docker manifest inspect of an image", eng.run(t, cfg, "manifest", "inspect", "--insecure", ref), &one)
	if one.MediaType != string(types.DockerManifestSchema2) {
		t.Errorf("docker manifest inspect %s: media type %v, want %s", ref, one.MediaType, types.DockerManifestSchema2)
	}

	// And so does buildx's imagetools.
	out = eng.run(t, cfg, "buildx", "imagetools", "inspect", multi)
	for _, want := range []string{"Digest:    " + indexDigest, "linux/" + runtime.GOARCH, fmt.Sprintf("%s/%s", other.OS, other.Architecture)} {
		if !strings.Contains(out, want) {
			t.Errorf("docker buildx imagetools inspect %s lacks %q:\n%s", multi, want, out)
		}
	}
	var raw json.RawMessage
	decodeJSON(t, "docker buildx imagetools inspect --raw", eng.run(t, cfg, "buildx", "imagetools", "inspect", "--raw", multi), &raw)
}
