package conformance_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	ggcrremote "github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/crypto/bcrypt"

	"github.com/berth-registry/berth/conformance/internal/berthtest"
)

// The pull-through cache's tests run several berth processes on loopback:
// an upstream that requires authentication (Berth's token service, the
// Bearer flow Docker Hub uses), a mirror of it, and a mirror of the
// mirror. The upstream logs every request, so that a test can count what
// reached it.

// upstreamUser is the account the mirrors use on the upstream.
const upstreamUser = "mirror"

// upstreamBerth is a berth that only upstreamUser may use.
type upstreamBerth struct {
	*berthtest.Server
	pass string
}

// startUpstream starts the upstream, logging every request.
func startUpstream(t *testing.T, opts ...berthtest.Option) *upstreamBerth {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	pass := hex.EncodeToString(b)
	dir := t.TempDir()
	hash, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	writeTestFile(t, filepath.Join(dir, "htpasswd"), upstreamUser+":"+string(hash)+"\n")
	writeTestFile(t, filepath.Join(dir, "berth.yaml"), fmt.Sprintf(`auth:
  htpasswd: %s
  rules:
    - repositories: ["**"]
      grants:
        user:%s: [pull, push, delete]
`, filepath.Join(dir, "htpasswd"), upstreamUser))
	opts = append([]berthtest.Option{berthtest.WithArgs("--config", filepath.Join(dir, "berth.yaml"), "--log-level", "debug")}, opts...)
	return &upstreamBerth{Server: berthtest.Start(t, opts...), pass: pass}
}

// remoteOpts are go-containerregistry options for the upstream, as its
// user.
func (u *upstreamBerth) remoteOpts(t *testing.T) []ggcrremote.Option {
	return []ggcrremote.Option{ggcrremote.WithContext(t.Context()), ggcrremote.WithTransport(newTransport(t)),
		ggcrremote.WithAuth(&authn.Basic{Username: upstreamUser, Password: u.pass})}
}

// push pushes img to the upstream as ref (repository:tag).
func (u *upstreamBerth) push(t *testing.T, ref string, img v1.Image) v1.Hash {
	t.Helper()
	r, err := name.ParseReference(u.Addr+"/"+ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := ggcrremote.Write(r, img, u.remoteOpts(t)...); err != nil {
		t.Fatalf("push %s to the upstream: %v", ref, err)
	}
	return mustDigest(t, img)
}

// blobGets counts the requests of the upstream's log that transferred
// the content of blob d of repo.
func (u *upstreamBerth) blobGets(repo string, d v1.Hash) int {
	re := regexp.MustCompile(`msg=request .*\bmethod=GET .*\bpath=/v2/` + regexp.QuoteMeta(repo) + `/blobs/` + regexp.QuoteMeta(d.String()) + ` .*\bstatus=(200|206) `)
	return len(re.FindAllString(u.Logs(), -1))
}

// mirrorConfig writes the configuration of a berth that mirrors the
// berth at upstreamAddr under namespace ns, and returns its path.
func mirrorConfig(t *testing.T, upstreamAddr, user, pass, ns, extra string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "mirror.yaml")
	creds := ""
	if user != "" {
		creds = fmt.Sprintf("      username: %s\n      password: %s\n", user, pass)
	}
	writeTestFile(t, path, fmt.Sprintf(`proxy:
  upstreams:
    - name: up
      url: http://%s
      namespace: %s
%s%s`, upstreamAddr, ns, creds, extra))
	return path
}

// startMirror starts a berth mirroring up under hub/.
func startMirror(t *testing.T, up *upstreamBerth, extra string, opts ...berthtest.Option) *berthtest.Server {
	t.Helper()
	cfg := mirrorConfig(t, up.Addr, upstreamUser, up.pass, "hub", extra)
	return berthtest.Start(t, append([]berthtest.Option{berthtest.WithArgs("--config", cfg)}, opts...)...)
}

// anonymous are go-containerregistry options for a mirror.
func anonymous(t *testing.T) []ggcrremote.Option {
	return []ggcrremote.Option{ggcrremote.WithContext(t.Context()), ggcrremote.WithTransport(newTransport(t))}
}

// pullImage pulls ref (host/repository:tag or @digest) and reads every
// layer, failing the test unless it is want, byte for byte.
func pullThrough(t *testing.T, ref string, want v1.Image) {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ggcrremote.Image(r, anonymous(t)...)
	if err != nil {
		t.Fatalf("pull %s: %v", ref, err)
	}
	compareImage(t, ref, got, want)
}

// randomImage is a random image of layers of the given sizes, with Docker
// media types (which every client pulls).
func randomImage(t *testing.T, sizes ...int64) v1.Image {
	t.Helper()
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.DockerManifestSchema2), types.DockerConfigJSON)
	for _, n := range sizes {
		l, err := random.Layer(n, types.DockerLayer)
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", "amd64"
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// get sends a GET (or HEAD) to url and returns the status, the
// Cache-Status header and the body.
func get(t *testing.T, method, url string, hdr http.Header) (int, string, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := (&http.Client{Transport: newTransport(t), Timeout: time.Minute}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return resp.StatusCode, resp.Header.Get("Cache-Status"), body
}

var mirrorAccept = http.Header{"Accept": {string(types.DockerManifestSchema2), string(types.OCIManifestSchema1), string(types.OCIImageIndex), string(types.DockerManifestList)}}

// TestMirrorPullThrough pulls an image from an authenticated upstream
// through a mirror and through a mirror of the mirror, byte for byte; with
// the upstream stopped, both still serve it by tag and by digest, saying
// that the copy is stale; what was never cached answers the
// specification's error with the upstream's reason, and pushes into the
// mirrored namespace are refused.
func TestMirrorPullThrough(t *testing.T) {
	up := startUpstream(t)
	img := randomImage(t, 3000, 70000)
	d := up.push(t, "library/app:v1", img)
	// tagTTL 0: every pull of a tag asks the upstream, so that the
	// stopped upstream shows at once.
	mirror := startMirror(t, up, "      tagTTL: 0s\n")
	second := berthtest.Start(t, berthtest.WithArgs("--config",
		mirrorConfig(t, mirror.Addr, "", "", "hub", "      remoteNamespace: hub\n      tagTTL: 0s\n")))

	for _, host := range []string{mirror.Addr, second.Addr} {
		pullThrough(t, host+"/hub/library/app:v1", img)
		pullThrough(t, host+"/hub/library/app@"+d.String(), img)
	}
	// crane, a real client, pulls through the second level.
	out := filepath.Join(t.TempDir(), "app.tar")
	runClientIn(t, "", clientEnv(t), "crane", "pull", "--insecure", "--format", "tarball", second.Addr+"/hub/library/app:v1", out)
	if dg := strings.TrimSpace(runClientIn(t, "", clientEnv(t), "crane", "digest", "--insecure", second.Addr+"/hub/library/app:v1")); dg != d.String() {
		t.Errorf("crane digest through two mirrors = %s, want %s", dg, d)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	ld, _ := layers[1].Digest()
	if n := up.blobGets("library/app", ld); n != 1 {
		t.Errorf("the upstream served layer %s %d times to two levels of mirrors; want once", ld, n)
	}

	// The cached content is ordinary content: listed.
	if _, _, body := get(t, http.MethodGet, "http://"+mirror.Addr+"/v2/hub/library/app/tags/list", nil); !strings.Contains(string(body), `"v1"`) {
		t.Errorf("the mirror's tag list: %s", body)
	}

	// Pushes into the namespace are refused, and say why.
	r, err := name.ParseReference(mirror.Addr+"/hub/library/app:mine", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := ggcrremote.Write(r, randomImage(t, 100), anonymous(t)...); err == nil || !strings.Contains(err.Error(), "cache of upstream up") {
		t.Errorf("push into the mirrored namespace: %v; want a refusal naming the upstream", err)
	}

	up.Stop()
	for _, host := range []string{mirror.Addr, second.Addr} {
		pullThrough(t, host+"/hub/library/app:v1", img)
		pullThrough(t, host+"/hub/library/app@"+d.String(), img)
	}
	// The first level says its copy is stale; the second got an answer.
	status, cache, _ := get(t, http.MethodGet, "http://"+mirror.Addr+"/v2/hub/library/app/manifests/v1", mirrorAccept)
	if status != http.StatusOK || !strings.Contains(cache, "fwd=stale") {
		t.Errorf("tag with the upstream down: %d, Cache-Status %q; want 200 saying stale", status, cache)
	}
	// With both levels above it down, the second level serves its own
	// copy, and says so too.
	mirror.Stop()
	pullThrough(t, second.Addr+"/hub/library/app:v1", img)
	status, cache, _ = get(t, http.MethodGet, "http://"+second.Addr+"/v2/hub/library/app/manifests/v1", mirrorAccept)
	if status != http.StatusOK || !strings.Contains(cache, "fwd=stale") {
		t.Errorf("second level, both above down: %d, Cache-Status %q; want 200 saying stale", status, cache)
	}
	if !strings.Contains(mirror.Logs(), "serving the cached copy") || !strings.Contains(second.Logs(), "serving the cached copy") {
		t.Error("the mirror did not log that it served a stale copy")
	}
	status, _, body := get(t, http.MethodGet, "http://"+second.Addr+"/v2/hub/library/other/manifests/v1", mirrorAccept)
	if status != http.StatusBadGateway || !strings.Contains(string(body), "upstream up is unreachable") {
		t.Errorf("never cached, upstream down: %d %s; want 502 naming the unreachable upstream", status, body)
	}
}

// TestMirrorOneFetchPerBlob: 16 clients pulling one uncached 64 MiB blob
// at once cause one upstream GET, and each gets the right bytes; a client
// killed mid-pull still leaves the complete blob in the cache.
func TestMirrorOneFetchPerBlob(t *testing.T) {
	up := startUpstream(t)
	img := randomImage(t, 64<<20, 32<<20)
	up.push(t, "library/big:v1", img)
	mirror := startMirror(t, up, "")
	// The manifest first, as clients do: the blob requests follow it.
	if status, _, body := get(t, http.MethodGet, "http://"+mirror.Addr+"/v2/hub/library/big/manifests/v1", mirrorAccept); status != http.StatusOK {
		t.Fatalf("manifest through the mirror: %d %s", status, body)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	ld, _ := layers[0].Digest()
	size, _ := layers[0].Size()
	url := "http://" + mirror.Addr + "/v2/hub/library/big/blobs/" + ld.String()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get(url)
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			h, n, err := v1.SHA256(resp.Body)
			if err != nil || resp.StatusCode != http.StatusOK || h != ld || n != size {
				errs <- fmt.Errorf("status %d, %d bytes of %d hashing to %s, want %s (%v)", resp.StatusCode, n, resp.ContentLength, h, ld, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("a concurrent pull: %v", err)
	}
	if n := up.blobGets("library/big", ld); n != 1 {
		t.Errorf("16 concurrent pulls of an uncached blob caused %d upstream GETs; want 1", n)
	}

	// A client that goes away after a few bytes.
	ld2, _ := layers[1].Digest()
	url2 := "http://" + mirror.Addr + "/v2/hub/library/big/blobs/" + ld2.String()
	ctx, cancel := context.WithCancel(t.Context())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url2, nil)
	tr := &http.Transport{}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	cancel()
	resp.Body.Close()
	tr.CloseIdleConnections()
	// The fill goes on: the blob becomes a hit, whole.
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, cache, _ := get(t, http.MethodHead, url2, nil)
		if cache == "berth; hit" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the blob a client abandoned was not cached within a minute (Cache-Status %q)", cache)
		}
		time.Sleep(200 * time.Millisecond)
	}
	up.Stop() // from now on the mirror alone has it
	status, cache, body := get(t, http.MethodGet, url2, nil)
	if h, _, _ := v1.SHA256(strings.NewReader(string(body))); status != http.StatusOK || h != ld2 || cache != "berth; hit" {
		t.Errorf("the blob a client abandoned: %d, %d bytes hashing to %s, Cache-Status %q", status, len(body), h, cache)
	}
	if n := up.blobGets("library/big", ld2); n != 1 {
		t.Errorf("the abandoned pull caused %d upstream GETs; want 1", n)
	}
}

// TestMirrorTagTTL: a tag moved on the upstream is seen through the mirror
// once tagTTL has passed, and not before.
func TestMirrorTagTTL(t *testing.T) {
	up := startUpstream(t)
	first, second := randomImage(t, 1000), randomImage(t, 1000)
	d1 := up.push(t, "library/app:latest", first)
	const ttl = 4 * time.Second
	mirror := startMirror(t, up, fmt.Sprintf("      tagTTL: %s\n", ttl))
	digestOf := func() (string, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodHead, "http://"+mirror.Addr+"/v2/hub/library/app/manifests/latest", nil)
		req.Header = mirrorAccept.Clone()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.Header.Get("Docker-Content-Digest"), resp.Header.Get("Cache-Status")
	}
	if got, _ := digestOf(); got != d1.String() {
		t.Fatalf("first pull: %s, want %s", got, d1)
	}
	moved := time.Now()
	d2 := up.push(t, "library/app:latest", second)
	got, cache := digestOf()
	if time.Since(moved) < ttl && (got != d1.String() || !strings.Contains(cache, "hit")) {
		t.Errorf("within tagTTL the mirror answered %s (Cache-Status %q); want the cached %s", got, cache, d1)
	}
	time.Sleep(time.Until(moved.Add(ttl + 500*time.Millisecond)))
	if got, _ := digestOf(); got != d2.String() {
		t.Errorf("after tagTTL the mirror answered %s; want the moved tag's %s", got, d2)
	}
	pullThrough(t, mirror.Addr+"/hub/library/app:latest", second)
}
