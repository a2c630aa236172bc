package conformance_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	ggcrremote "github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	godigest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// This file holds the skopeo tests and the helpers shared by every
// real-client test in interop_*_test.go.

// skopeo runs the skopeo binary with a private trust policy, registries.d,
// auth file and temporary directory, so that nothing depends on the
// machine's /etc/containers configuration. With creds set it gives them on
// every command that talks to a registry, the way users of an
// authenticated registry run skopeo: --creds, or --src-creds and
// --dest-creds for copy.
type skopeo struct {
	t      *testing.T
	env    []string
	global []string
	creds  string
}

// newSkopeo returns a skopeo that passes creds ("user:password"; none if
// empty).
func newSkopeo(t *testing.T, creds string) *skopeo {
	t.Helper()
	dir := t.TempDir()
	policy := filepath.Join(dir, "policy.json")
	writeTestFile(t, policy, `{"default":[{"type":"insecureAcceptAnything"}]}`)
	authFile := filepath.Join(dir, "auth.json")
	writeTestFile(t, authFile, `{"auths":{}}`)
	registriesConf := filepath.Join(dir, "registries.conf")
	writeTestFile(t, registriesConf, "unqualified-search-registries = []\n")
	registriesD := filepath.Join(dir, "registries.d")
	tmp := filepath.Join(dir, "tmp")
	for _, d := range []string{registriesD, tmp, filepath.Join(dir, "run")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatalf("create %s: %v", d, err)
		}
	}
	env := append(clientEnv(t),
		"REGISTRY_AUTH_FILE="+authFile,
		"CONTAINERS_REGISTRIES_CONF="+registriesConf,
		"XDG_RUNTIME_DIR="+filepath.Join(dir, "run"),
	)
	global := []string{
		"--policy", policy,
		"--registries.d", registriesD,
		"--tmpdir", tmp,
		"--command-timeout", interopTimeout.String(),
	}
	return &skopeo{t: t, env: env, global: global, creds: creds}
}

// run runs a skopeo command that must succeed and returns its output.
func (s *skopeo) run(args ...string) string {
	s.t.Helper()
	return runClientIn(s.t, "", s.env, "skopeo", s.args(args)...)
}

// try runs a skopeo command that may fail.
func (s *skopeo) try(args ...string) clientResult {
	s.t.Helper()
	return execClient(s.t, "", s.env, "skopeo", s.args(args)...)
}

// args puts the global options before a command and the credentials after
// its name: for copy, --src-creds and --dest-creds for whichever of the
// source and destination (the last two arguments) is a registry.
func (s *skopeo) args(args []string) []string {
	all := append(slices.Clone(s.global), args[0])
	if s.creds != "" {
		if n := len(args); args[0] == "copy" && n >= 3 {
			if strings.HasPrefix(args[n-2], "docker://") {
				all = append(all, "--src-creds", s.creds)
			}
			if strings.HasPrefix(args[n-1], "docker://") {
				all = append(all, "--dest-creds", s.creds)
			}
		} else if args[0] != "copy" {
			all = append(all, "--creds", s.creds)
		}
	}
	return append(all, args[1:]...)
}

// TestSkopeoCopyDockerArchive copies a docker-archive tarball into Berth
// with skopeo, then copies it back out into an OCI layout, and checks that
// config and layer contents survive both trips.
func TestSkopeoCopyDockerArchive(t *testing.T) { forEachMode(t, testSkopeoCopyDockerArchive) }

func testSkopeoCopyDockerArchive(t *testing.T, srv *registryUnderTest) {
	sk := newSkopeo(t, srv.basicAuth())
	img := hostImage(t, false)

	archive := filepath.Join(t.TempDir(), "img.tar")
	tag, err := name.NewTag("berth.invalid/skopeo/img:v1")
	if err != nil {
		t.Fatalf("parse tag: %v", err)
	}
	if err := tarball.WriteToFile(archive, tag, img); err != nil {
		t.Fatalf("write docker archive: %v", err)
	}
	ref := srv.Addr + "/skopeo/img:v1"
	sk.run("copy", "--dest-tls-verify=false", "docker-archive:"+archive, "docker://"+ref)

	// What Berth now holds has the archive's config and layer contents;
	// skopeo may have recompressed the layers on the way.
	pushed := pullImage(t, srv, ref)
	compareContent(t, "skopeo/img:v1 in Berth", pushed, img, false)

	out := filepath.Join(t.TempDir(), "out")
	sk.run("copy", "--src-tls-verify=false", "docker://"+ref, "oci:"+out+":v1")
	// skopeo converts to an OCI manifest for the layout, but the blobs
	// must be the very bytes Berth served.
	compareContent(t, "OCI layout copied from Berth", layoutImage(t, out, "v1"), pushed, true)

	// Without --dest-creds the same copy is refused.
	srv.expectRefused(t, "skopeo copy", newSkopeo(t, "").try("copy", "--dest-tls-verify=false",
		"docker-archive:"+archive, "docker://"+srv.Addr+"/skopeo/refused:v1"))
}

// TestSkopeoCopyOCILayout copies an OCI layout into Berth and back with
// --preserve-digests: the manifest digest must survive, and every blob must
// be byte-identical.
func TestSkopeoCopyOCILayout(t *testing.T) { forEachMode(t, testSkopeoCopyOCILayout) }

func testSkopeoCopyOCILayout(t *testing.T, srv *registryUnderTest) {
	sk := newSkopeo(t, srv.basicAuth())
	img := hostImage(t, true)

	src := filepath.Join(t.TempDir(), "src")
	p, err := layout.Write(src, empty.Index)
	if err != nil {
		t.Fatalf("create OCI layout: %v", err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{ocispec.AnnotationRefName: "v1"})); err != nil {
		t.Fatalf("write image to OCI layout: %v", err)
	}

	ref := srv.Addr + "/skopeo/oci:v1"
	sk.run("copy", "--preserve-digests", "--dest-tls-verify=false", "oci:"+src+":v1", "docker://"+ref)
	want := mustDigest(t, img)
	if got := manifestDigest(t, srv, "skopeo/oci", "v1"); got != want.String() {
		t.Errorf("Berth's digest for skopeo/oci:v1 = %s, want %s", got, want)
	}
	compareImage(t, "skopeo/oci:v1 in Berth", pullImage(t, srv, ref), img)

	out := filepath.Join(t.TempDir(), "out")
	sk.run("copy", "--preserve-digests", "--src-tls-verify=false", "docker://"+ref, "oci:"+out+":v1")
	compareImage(t, "OCI layout copied from Berth", layoutImage(t, out, "v1"), img)
}

// TestSkopeoCopyMultiPlatform copies an image index from one repository
// of Berth to another with skopeo copy --all --preserve-digests: the index
// and every image in it must keep their digests.
func TestSkopeoCopyMultiPlatform(t *testing.T) { forEachMode(t, testSkopeoCopyMultiPlatform) }

func testSkopeoCopyMultiPlatform(t *testing.T, srv *registryUnderTest) {
	sk := newSkopeo(t, srv.basicAuth())
	platforms := []v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64", Variant: "v8"}}
	_, images := randomIndex(t, platforms, types.OCIImageIndex, types.OCIManifestSchema1, types.OCIConfigJSON, types.OCILayer)

	// skopeo 1.9 drops artifactType from an index's entries when it copies
	// the index, and with --preserve-digests then refuses to copy one that
	// has it, as go-containerregistry's indexes do (a skopeo limitation,
	// not Berth's). So the index is written here without it, and pushed as
	// raw bytes.
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex}
	idx.SchemaVersion = 2
	for _, pi := range images {
		d := mustDigest(t, pi.img)
		pushTestImage(t, srv, "skopeo/multi@"+d.String(), pi.img)
		size, err := pi.img.Size()
		if err != nil {
			t.Fatalf("manifest size: %v", err)
		}
		idx.Manifests = append(idx.Manifests, ocispec.Descriptor{
			MediaType: ocispec.MediaTypeImageManifest,
			Digest:    godigest.Digest(d.String()),
			Size:      size,
			Platform:  &ocispec.Platform{OS: pi.platform.OS, Architecture: pi.platform.Architecture, Variant: pi.platform.Variant},
		})
	}
	rawIndex, err := json.Marshal(idx)
	if err != nil {
		t.Fatalf("encode index: %v", err)
	}
	want := berthPutManifest(t, srv, "skopeo/multi", "v1", ocispec.MediaTypeImageIndex, rawIndex)

	sk.run("copy", "--all", "--preserve-digests", "--src-tls-verify=false", "--dest-tls-verify=false",
		"docker://"+srv.Addr+"/skopeo/multi:v1", "docker://"+srv.Addr+"/skopeo/copy:v1")

	if got := manifestDigest(t, srv, "skopeo/copy", "v1"); got != want {
		t.Errorf("copied index digest = %s, want %s", got, want)
	}
	if raw := sk.run("inspect", "--raw", "--tls-verify=false", "docker://"+srv.Addr+"/skopeo/copy:v1"); raw != string(rawIndex) {
		t.Errorf("skopeo inspect --raw of the copy differs from the pushed index:\n%s\nwant:\n%s", raw, rawIndex)
	}
	for _, pi := range images {
		d := mustDigest(t, pi.img)
		compareImage(t, "copied image for "+pi.platform.String(), pullImage(t, srv, srv.Addr+"/skopeo/copy@"+d.String()), pi.img)
	}
}

// skopeoInspect is the part of "skopeo inspect" output the tests check.
type skopeoInspect struct {
	Name         string
	Digest       string
	RepoTags     []string
	Architecture string
	Os           string
	Layers       []string
}

// TestSkopeoInspectListTagsDelete checks skopeo inspect and list-tags
// against what was pushed, then deletes a manifest with skopeo delete.
func TestSkopeoInspectListTagsDelete(t *testing.T) { forEachMode(t, testSkopeoInspectListTagsDelete) }

func testSkopeoInspectListTagsDelete(t *testing.T, srv *registryUnderTest) {
	sk := newSkopeo(t, srv.basicAuth())
	repo := "skopeo/img"
	first := hostImage(t, false)
	second := hostImage(t, true)
	d1 := pushTestImage(t, srv, repo+":v1", first)
	d2 := pushTestImage(t, srv, repo+":v2", second)
	pushTestImage(t, srv, repo+":latest", second)
	base := "docker://" + srv.Addr + "/" + repo

	var info skopeoInspect
	decodeJSON(t, "skopeo inspect", sk.run("inspect", "--tls-verify=false", base+":v1"), &info)
	if info.Name != srv.Addr+"/"+repo {
		t.Errorf("inspect Name = %q, want %q", info.Name, srv.Addr+"/"+repo)
	}
	if info.Digest != d1.String() {
		t.Errorf("inspect Digest = %q, want %s", info.Digest, d1)
	}
	if want := []string{"latest", "v1", "v2"}; !slices.Equal(sorted(info.RepoTags), want) {
		t.Errorf("inspect RepoTags = %q, want %q", info.RepoTags, want)
	}
	if info.Os != "linux" || info.Architecture != runtime.GOARCH {
		t.Errorf("inspect platform = %s/%s, want linux/%s", info.Os, info.Architecture, runtime.GOARCH)
	}
	if want := layerDigests(t, first); !slices.Equal(info.Layers, want) {
		t.Errorf("inspect Layers = %q, want %q", info.Layers, want)
	}
	wantRaw, err := first.RawManifest()
	if err != nil {
		t.Fatalf("raw manifest: %v", err)
	}
	if raw := sk.run("inspect", "--raw", "--tls-verify=false", base+":v1"); raw != string(wantRaw) {
		t.Errorf("inspect --raw differs from the pushed manifest:\n%s", raw)
	}
	wantCfg, err := first.RawConfigFile()
	if err != nil {
		t.Fatalf("raw config: %v", err)
	}
	if cfg := sk.run("inspect", "--raw", "--config", "--tls-verify=false", base+":v1"); cfg != string(wantCfg) {
		t.Errorf("inspect --raw --config differs from the pushed config:\n%s", cfg)
	}

	listTags := func() []string {
		t.Helper()
		var tags struct {
			Repository string
			Tags       []string
		}
		decodeJSON(t, "skopeo list-tags", sk.run("list-tags", "--tls-verify=false", base), &tags)
		if tags.Repository != srv.Addr+"/"+repo {
			t.Errorf("list-tags Repository = %q, want %q", tags.Repository, srv.Addr+"/"+repo)
		}
		return sorted(tags.Tags)
	}
	if got, want := listTags(), []string{"latest", "v1", "v2"}; !slices.Equal(got, want) {
		t.Errorf("list-tags = %q, want %q", got, want)
	}

	// skopeo delete resolves the tag and deletes the manifest by digest.
	sk.run("delete", "--tls-verify=false", base+":v1")
	r := sk.try("inspect", "--tls-verify=false", base+":v1")
	if r.err == nil {
		t.Errorf("skopeo inspect of the deleted %s:v1 succeeded:\n%s", repo, r.stdout)
	} else if !strings.Contains(r.stderr, "manifest unknown") {
		t.Errorf("skopeo inspect of the deleted %s:v1 failed without saying the manifest is unknown: %v\n%s", repo, r.err, r.stderr)
	}
	if code := berthStatus(t, srv, http.MethodHead, "/v2/"+repo+"/manifests/"+d1.String()); code != http.StatusNotFound {
		t.Errorf("HEAD of the deleted manifest %s: status %d, want 404", d1, code)
	}
	if got, want := listTags(), []string{"latest", "v2"}; !slices.Equal(got, want) {
		t.Errorf("list-tags after delete = %q, want %q", got, want)
	}
	decodeJSON(t, "skopeo inspect", sk.run("inspect", "--tls-verify=false", base+":v2"), &info)
	if info.Digest != d2.String() {
		t.Errorf("inspect of v2 after deleting v1: Digest = %q, want %s", info.Digest, d2)
	}
}

// ---- Helpers shared by the real-client tests in interop_*_test.go. ----

// writeTestFile writes a file a client reads, failing the test on error.
func writeTestFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
}

// hostImage returns a small random image for linux on the host's
// architecture, with OCI or Docker media types.
func hostImage(t *testing.T, oci bool) v1.Image {
	t.Helper()
	host := []v1.Platform{{OS: "linux", Architecture: runtime.GOARCH}}
	var images []platformImage
	if oci {
		_, images = randomIndex(t, host, types.OCIImageIndex, types.OCIManifestSchema1, types.OCIConfigJSON, types.OCILayer)
	} else {
		_, images = randomIndex(t, host, types.DockerManifestList, types.DockerManifestSchema2, types.DockerConfigJSON, types.DockerLayer)
	}
	return images[0].img
}

func parseRef(t *testing.T, ref string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatalf("parse reference %q: %v", ref, err)
	}
	return r
}

// pushTestImage pushes img to repo:tag on srv with go-containerregistry and
// returns its digest.
func pushTestImage(t *testing.T, srv *registryUnderTest, repoTag string, img v1.Image) v1.Hash {
	t.Helper()
	ref := parseRef(t, srv.Addr+"/"+repoTag)
	if err := ggcrremote.Write(ref, img, srv.remoteOptions(t)...); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	return mustDigest(t, img)
}

// pushTestIndex pushes idx and its images to repo:tag on srv with
// go-containerregistry and returns its digest.
func pushTestIndex(t *testing.T, srv *registryUnderTest, repoTag string, idx v1.ImageIndex) v1.Hash {
	t.Helper()
	ref := parseRef(t, srv.Addr+"/"+repoTag)
	if err := ggcrremote.WriteIndex(ref, idx, srv.remoteOptions(t)...); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	return mustDigest(t, idx)
}

// pullImage reads an image from Berth with go-containerregistry.
func pullImage(t *testing.T, srv *registryUnderTest, ref string) v1.Image {
	t.Helper()
	img, err := ggcrremote.Image(parseRef(t, ref), srv.remoteOptions(t)...)
	if err != nil {
		t.Fatalf("pull %s: %v", ref, err)
	}
	return img
}

// layoutImage reads the image tagged tag (org.opencontainers.image.ref.name)
// from the OCI layout at dir.
func layoutImage(t *testing.T, dir, tag string) v1.Image {
	t.Helper()
	p, err := layout.FromPath(dir)
	if err != nil {
		t.Fatalf("open OCI layout %s: %v", dir, err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		t.Fatalf("read OCI layout index: %v", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatalf("parse OCI layout index: %v", err)
	}
	for _, desc := range im.Manifests {
		if desc.Annotations[ocispec.AnnotationRefName] == tag {
			img, err := p.Image(desc.Digest)
			if err != nil {
				t.Fatalf("read image %s from OCI layout: %v", desc.Digest, err)
			}
			return img
		}
	}
	t.Fatalf("OCI layout %s has no image named %q: %+v", dir, tag, im.Manifests)
	return nil
}

// compareContent checks that got has want's config (the same JSON value)
// and uncompressed layer contents; with sameBlobs, also byte-identical
// compressed layers. Unlike compareImage it allows a different manifest (a
// converted media type, a recompressed layer, a re-serialized config).
func compareContent(t *testing.T, what string, got, want v1.Image, sameBlobs bool) {
	t.Helper()
	gotCfg, err := got.RawConfigFile()
	if err != nil {
		t.Fatalf("%s: config: %v", what, err)
	}
	wantCfg, err := want.RawConfigFile()
	if err != nil {
		t.Fatalf("%s: config: %v", what, err)
	}
	if !bytes.Equal(gotCfg, wantCfg) && !sameJSON(gotCfg, wantCfg) {
		t.Errorf("%s: config differs:\n%s\nwant:\n%s", what, gotCfg, wantCfg)
	}
	gotLayers, err := got.Layers()
	if err != nil {
		t.Fatalf("%s: layers: %v", what, err)
	}
	wantLayers, err := want.Layers()
	if err != nil {
		t.Fatalf("%s: layers: %v", what, err)
	}
	if len(gotLayers) != len(wantLayers) {
		t.Fatalf("%s: %d layers, want %d", what, len(gotLayers), len(wantLayers))
	}
	for i := range wantLayers {
		gotDiff, err := gotLayers[i].DiffID()
		if err != nil {
			t.Fatalf("%s: layer %d diff id: %v", what, i, err)
		}
		wantDiff, err := wantLayers[i].DiffID()
		if err != nil {
			t.Fatalf("%s: layer %d diff id: %v", what, i, err)
		}
		if gotDiff != wantDiff {
			t.Errorf("%s: layer %d diff id = %s, want %s", what, i, gotDiff, wantDiff)
		}
		if sum := uncompressedDigest(t, gotLayers[i]); sum != wantDiff.String() {
			t.Errorf("%s: layer %d uncompressed content hashes to %s, want %s", what, i, sum, wantDiff)
		}
		compressed := readLayer(t, gotLayers[i])
		gotDigest := mustDigest(t, gotLayers[i])
		if sum := sha256.Sum256(compressed); "sha256:"+hex.EncodeToString(sum[:]) != gotDigest.String() {
			t.Errorf("%s: layer %d blob hashes to sha256:%x, want %s", what, i, sum, gotDigest)
		}
		if sameBlobs {
			if wantDigest := mustDigest(t, wantLayers[i]); gotDigest != wantDigest {
				t.Errorf("%s: layer %d digest = %s, want %s", what, i, gotDigest, wantDigest)
			}
			if !bytes.Equal(compressed, readLayer(t, wantLayers[i])) {
				t.Errorf("%s: layer %d blob differs", what, i)
			}
		}
	}
}

// sameJSON reports whether a and b are the same JSON value, however
// serialized.
func sameJSON(a, b []byte) bool {
	var va, vb any
	if json.Unmarshal(a, &va) != nil || json.Unmarshal(b, &vb) != nil {
		return false
	}
	return reflect.DeepEqual(va, vb)
}

// uncompressedDigest hashes a layer's uncompressed content.
func uncompressedDigest(t *testing.T, l v1.Layer) string {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatalf("open uncompressed layer: %v", err)
	}
	defer func() { _ = rc.Close() }()
	h := sha256.New()
	if _, err := io.Copy(h, rc); err != nil {
		t.Fatalf("read uncompressed layer: %v", err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// layerDigests lists the digests of an image's layers.
func layerDigests(t *testing.T, img v1.Image) []string {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatalf("manifest: %v", err)
	}
	var ds []string
	for _, l := range m.Layers {
		ds = append(ds, l.Digest.String())
	}
	return ds
}

// manifestAccept is every manifest media type the tests fetch.
var manifestAccept = strings.Join([]string{
	ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageIndex,
	string(types.DockerManifestSchema2), string(types.DockerManifestList),
}, ", ")

// berthGet fetches path from srv over HTTP (manifests with every manifest
// media type accepted) and returns the response headers and body, failing
// the test unless the status is 200.
func berthGet(t *testing.T, srv *registryUnderTest, path string) (http.Header, []byte) {
	t.Helper()
	resp, body := berthDo(t, srv, http.MethodGet, path)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: status %s: %s", path, resp.Status, body)
	}
	return resp.Header, body
}

// berthPutManifest uploads a raw manifest to repo:reference on srv and
// returns the digest Berth reports for it.
func berthPutManifest(t *testing.T, srv *registryUnderTest, repo, reference, mediaType string, body []byte) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), interopTimeout)
	defer cancel()
	path := "/v2/" + repo + "/manifests/" + reference
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, srv.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatalf("PUT %s: %v", path, err)
	}
	req.Header.Set("Content-Type", mediaType)
	resp, err := srv.httpClient(t).Do(req)
	if err != nil {
		t.Fatalf("PUT %s: %v", path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT %s: status %s: %s", path, resp.Status, msg)
	}
	d := resp.Header.Get("Docker-Content-Digest")
	if want := godigest.FromBytes(body).String(); d != want {
		t.Fatalf("PUT %s: Docker-Content-Digest = %q, want %s", path, d, want)
	}
	return d
}

// berthStatus sends one request to srv and returns the status code.
func berthStatus(t *testing.T, srv *registryUnderTest, method, path string) int {
	t.Helper()
	resp, _ := berthDo(t, srv, method, path)
	return resp.StatusCode
}

func berthDo(t *testing.T, srv *registryUnderTest, method, path string) (*http.Response, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), interopTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, srv.URL+path, nil)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	req.Header.Set("Accept", manifestAccept)
	resp, err := srv.httpClient(t).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp, body
}

// manifestDigest returns the digest Berth reports for repo:reference.
func manifestDigest(t *testing.T, srv *registryUnderTest, repo, reference string) string {
	t.Helper()
	resp, body := berthDo(t, srv, http.MethodHead, "/v2/"+repo+"/manifests/"+reference)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("HEAD %s:%s: status %s: %s", repo, reference, resp.Status, body)
	}
	return resp.Header.Get("Docker-Content-Digest")
}

// checkBlob fetches a blob from repo and checks that its content hashes to
// its digest; it returns the content.
func checkBlob(t *testing.T, srv *registryUnderTest, repo, digest string) []byte {
	t.Helper()
	_, body := berthGet(t, srv, "/v2/"+repo+"/blobs/"+digest)
	if sum := sha256.Sum256(body); "sha256:"+hex.EncodeToString(sum[:]) != digest {
		t.Errorf("blob %s in %s hashes to sha256:%x", digest, repo, sum)
	}
	return body
}

// checkManifestTree fetches repo@reference from Berth and, recursively,
// every manifest an index names and every blob a manifest names, checking
// that each is readable in repo and hashes to its digest. It returns the
// digest of the top manifest.
func checkManifestTree(t *testing.T, srv *registryUnderTest, repo, reference string) string {
	t.Helper()
	hdr, body := berthGet(t, srv, "/v2/"+repo+"/manifests/"+reference)
	d := hdr.Get("Docker-Content-Digest")
	if sum := sha256.Sum256(body); "sha256:"+hex.EncodeToString(sum[:]) != d {
		t.Errorf("manifest %s:%s hashes to sha256:%x, but Berth says %s", repo, reference, sum, d)
	}
	var m struct {
		Manifests []ocispec.Descriptor `json:"manifests"`
		Config    *ocispec.Descriptor  `json:"config"`
		Layers    []ocispec.Descriptor `json:"layers"`
	}
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("decode manifest %s:%s: %v", repo, reference, err)
	}
	for _, child := range m.Manifests {
		checkManifestTree(t, srv, repo, child.Digest.String())
	}
	if m.Config != nil {
		checkBlob(t, srv, repo, m.Config.Digest.String())
	}
	for _, l := range m.Layers {
		checkBlob(t, srv, repo, l.Digest.String())
	}
	return d
}

// decodeJSON decodes a client's JSON output, failing the test on error.
func decodeJSON(t *testing.T, what, out string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("decode %s output: %v\n%s", what, err, out)
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// hexOf returns the hex part of a sha256 digest string.
func hexOf(t *testing.T, digest string) string {
	t.Helper()
	h, ok := strings.CutPrefix(digest, "sha256:")
	if !ok {
		t.Fatalf("%q is not a sha256 digest", digest)
	}
	return h
}

// listenLoopback listens on a free loopback port until the test ends.
func listenLoopback(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen on loopback: %v", err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}
