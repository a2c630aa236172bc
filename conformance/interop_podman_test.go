package conformance_test

import (
	"archive/tar"
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	godigest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// podman runs the podman binary with private storage (the vfs driver, which
// works on any file system and needs no mounts), private configuration
// files and a private runtime directory, so nothing depends on the
// machine's configuration or on a systemd session.
type podman struct {
	t      *testing.T
	env    []string
	global []string
	policy string
}

// newPodman returns a podman with empty storage, logged in to srv with
// podman login in authenticated mode. podman keeps the credentials in
// $REGISTRY_AUTH_FILE, a file of the test's.
func newPodman(t *testing.T, srv *registryUnderTest) *podman {
	t.Helper()
	// podman refuses a run root longer than 50 characters, which a
	// t.TempDir named after a subtest may exceed.
	dir, err := os.MkdirTemp("", "berth-podman-")
	if err != nil {
		t.Fatalf("create podman directory: %v", err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove podman directory: %v", err)
		}
	})
	root := filepath.Join(dir, "root")
	runRoot := filepath.Join(dir, "run")
	for _, d := range []string{root, runRoot, filepath.Join(dir, "xdg")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatalf("create %s: %v", d, err)
		}
	}
	files := map[string]string{
		"registries.conf": "unqualified-search-registries = []\n",
		"auth.json":       `{"auths":{}}`,
		"policy.json":     `{"default":[{"type":"insecureAcceptAnything"}]}`,
		"containers.conf": "[engine]\nevents_logger = \"file\"\ncgroup_manager = \"cgroupfs\"\n",
		"storage.conf":    "[storage]\ndriver = \"vfs\"\nrunroot = \"" + runRoot + "\"\ngraphroot = \"" + root + "\"\n",
	}
	for name, content := range files {
		writeTestFile(t, filepath.Join(dir, name), content)
	}
	p := &podman{
		t: t,
		env: append(clientEnv(t),
			"CONTAINERS_REGISTRIES_CONF="+filepath.Join(dir, "registries.conf"),
			"CONTAINERS_CONF="+filepath.Join(dir, "containers.conf"),
			"CONTAINERS_STORAGE_CONF="+filepath.Join(dir, "storage.conf"),
			"REGISTRY_AUTH_FILE="+filepath.Join(dir, "auth.json"),
			"XDG_RUNTIME_DIR="+filepath.Join(dir, "xdg"),
		),
		global: []string{
			"--root", root,
			"--runroot", runRoot,
			"--storage-driver", "vfs",
			"--cgroup-manager", "cgroupfs",
			"--events-backend", "file",
			"--tmpdir", filepath.Join(dir, "xdg"),
		},
		policy: filepath.Join(dir, "policy.json"),
	}
	srv.login(t, "", p.env, "podman", append(slices.Clone(p.global),
		"login", "--tls-verify=false", "-u", srv.user, "--password-stdin", srv.Addr)...)
	return p
}

// run runs a podman command that must succeed and returns its output.
func (p *podman) run(args ...string) string {
	p.t.Helper()
	return runClientIn(p.t, "", p.env, "podman", append(slices.Clone(p.global), args...)...)
}

// try runs a podman command that may fail.
func (p *podman) try(args ...string) clientResult {
	p.t.Helper()
	return execClient(p.t, "", p.env, "podman", append(slices.Clone(p.global), args...)...)
}

// TestPodmanPullPush pulls an image from Berth with podman and pushes it
// back to another repository, which must then hold a complete, readable
// image with the same contents.
//
// In authenticated mode podman logs in with podman login, and a push
// with an empty auth file must fail.
func TestPodmanPullPush(t *testing.T) { forEachMode(t, testPodmanPullPush) }

func testPodmanPullPush(t *testing.T, srv *registryUnderTest) {
	pm := newPodman(t, srv)
	img := hostImage(t, false)
	d := pushTestImage(t, srv, "podman/img:v1", img).String()
	src := srv.Addr + "/podman/img:v1"

	pm.run("pull", "--tls-verify=false", "--signature-policy", pm.policy, src)
	id := strings.TrimSpace(pm.run("image", "inspect", "--format", "{{.Id}}", src))
	cfg, err := img.ConfigName()
	if err != nil {
		t.Fatalf("config digest: %v", err)
	}
	if id != cfg.Hex {
		t.Errorf("podman image id = %s, want the config digest's hex %s", id, cfg.Hex)
	}
	if got := strings.TrimSpace(pm.run("image", "inspect", "--format", "{{.Digest}}", src)); got != d {
		t.Errorf("podman records digest %s for %s, want %s", got, src, d)
	}

	digestFile := filepath.Join(t.TempDir(), "digest")
	dst := srv.Addr + "/podman/pushed:v1"
	pm.run("push", "--tls-verify=false", "--signature-policy", pm.policy, "--digestfile", digestFile, src, dst)
	pushedDigest, err := os.ReadFile(digestFile)
	if err != nil {
		t.Fatalf("read podman push --digestfile: %v", err)
	}
	got := checkManifestTree(t, srv, "podman/pushed", "v1")
	if got != strings.TrimSpace(string(pushedDigest)) {
		t.Errorf("Berth's digest for podman/pushed:v1 = %s, podman says it pushed %s", got, pushedDigest)
	}
	// podman stores layers uncompressed and may compress them anew, so
	// the manifest may differ; the config and layer contents may not.
	compareContent(t, "image pushed by podman", pullImage(t, srv, dst), img, false)
	if got == d {
		t.Logf("podman pushed the original manifest %s unchanged", d)
	} else {
		t.Logf("podman pushed a new manifest %s (the original is %s)", got, d)
	}

	// An image podman made itself, from a tarball, so that no registry
	// has its layer yet: pushed as an OCI manifest with a zstd layer.
	layerTar, diffID := randomTar(t)
	local := "localhost/berth/imported:v1"
	pm.run("import", "--signature-policy", pm.policy, layerTar, local)
	zstdRef := srv.Addr + "/podman/zstd:v1"
	pm.run("push", "--tls-verify=false", "--signature-policy", pm.policy, "--format", "oci", "--compression-format", "zstd", local, zstdRef)
	checkManifestTree(t, srv, "podman/zstd", "v1")
	// podman's OCI manifests have no mediaType field; Berth must still
	// serve them as OCI manifests.
	hdr, _ := berthGet(t, srv, "/v2/podman/zstd/manifests/v1")
	m := fetchManifest(t, srv, "podman/zstd", "v1")
	if ct := hdr.Get("Content-Type"); ct != ocispec.MediaTypeImageManifest || len(m.Layers) != 1 || m.Layers[0].MediaType != ocispec.MediaTypeImageLayerZstd {
		t.Errorf("podman push --format oci --compression-format zstd stored a %q manifest with layers %+v, want one %s layer", ct, m.Layers, ocispec.MediaTypeImageLayerZstd)
	}
	layers, err := pullImage(t, srv, zstdRef).Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers of %s: %d (err %v), want 1", zstdRef, len(layers), err)
	}
	if got := uncompressedDigest(t, layers[0]); got != diffID {
		t.Errorf("the zstd layer podman pushed decompresses to %s, want the imported tarball %s", got, diffID)
	}

	// From an index, podman pulls the image for the host's platform.
	platforms := []v1.Platform{{OS: "linux", Architecture: runtime.GOARCH}, {OS: "linux", Architecture: "s390x"}}
	if runtime.GOARCH == "s390x" {
		platforms[1].Architecture = "ppc64le"
	}
	idx, images := randomIndex(t, platforms, types.OCIImageIndex, types.OCIManifestSchema1, types.OCIConfigJSON, types.OCILayer)
	pushTestIndex(t, srv, "podman/multi:v1", idx)
	multi := srv.Addr + "/podman/multi:v1"
	pm.run("pull", "--tls-verify=false", "--signature-policy", pm.policy, multi)
	hostCfg, err := images[0].img.ConfigName()
	if err != nil {
		t.Fatalf("config digest: %v", err)
	}
	if id := strings.TrimSpace(pm.run("image", "inspect", "--format", "{{.Id}}", multi)); id != hostCfg.Hex {
		t.Errorf("podman pulled image %s from the index %s, want the host's image %s", id, multi, hostCfg.Hex)
	}

	// And podman can pull what it pushed, into empty storage.
	fresh := newPodman(t, srv)
	fresh.run("pull", "--tls-verify=false", "--signature-policy", fresh.policy, dst)
	if id2 := strings.TrimSpace(fresh.run("image", "inspect", "--format", "{{.Id}}", dst)); id2 != id {
		t.Errorf("image id after pulling %s into empty storage = %s, want %s", dst, id2, id)
	}

	// Without the login, that is with an empty auth file, a push is
	// refused.
	if srv.auth() {
		empty := filepath.Join(t.TempDir(), "auth.json")
		writeTestFile(t, empty, `{"auths":{}}`)
		srv.expectRefused(t, "podman push", pm.try("push", "--tls-verify=false", "--signature-policy", pm.policy,
			"--authfile", empty, src, srv.Addr+"/podman/refused:v1"))
	}
}

// randomTar writes a tarball holding one file of random bytes and returns
// its path and sha256 digest.
func randomTar(t *testing.T) (path, digest string) {
	t.Helper()
	data := make([]byte, 64<<10)
	if _, err := rand.Read(data); err != nil {
		t.Fatalf("random data: %v", err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	hdr := &tar.Header{Name: "berth/random.bin", Mode: 0o644, Size: int64(len(data)), ModTime: time.Unix(1700000000, 0), Typeflag: tar.TypeReg}
	if err := tw.WriteHeader(hdr); err != nil {
		t.Fatalf("write tar header: %v", err)
	}
	if _, err := tw.Write(data); err != nil {
		t.Fatalf("write tar: %v", err)
	}
	if err := tw.Close(); err != nil {
		t.Fatalf("close tar: %v", err)
	}
	path = filepath.Join(t.TempDir(), "layer.tar")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
	return path, godigest.FromBytes(buf.Bytes()).String()
}
