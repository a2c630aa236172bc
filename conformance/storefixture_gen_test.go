package conformance_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/conformance/internal/berthtest"
)

// TestMakeStoreFixture writes testdata/store-v1 with the berth of this
// tree (BERTH_BIN, or built): it runs a real berth with the fixture's
// configuration, fills it through the HTTP API and the berth command as
// several users, robots and anonymous callers would, stops it, copies
// the data directory, plans the questions on a copy of what it saved,
// then serves two fresh copies, asks each the same questions and writes
// the answers, which must agree, as golden.json. It runs only with
// BERTH_MAKE_FIXTURE=1: the fixture is meant to keep the format of the
// Berth that made it, not to follow the current one (see
// testdata/store-v1/README.md).
func TestMakeStoreFixture(t *testing.T) {
	if os.Getenv(fixtureEnv) != "1" {
		t.Skipf("%s=1 regenerates %s", fixtureEnv, fixtureRoot)
	}
	g := newFixtureGen(t)
	g.fill()
	g.srv.Stop()
	if t.Failed() {
		t.FailNow()
	}
	g.save()

	data, config := copyFixtureStore(t)
	srv := startFixtureServer(t, data, config)
	plan := g.plan(srv.URL)
	srv.Stop()
	first := observeTwice(t, g.meta.Identities, plan)
	checkCoverage(t, first)
	if t.Failed() {
		t.FailNow()
	}
	writeGolden(t, first)
	t.Logf("wrote %s: %d observations", fixtureRoot, len(first))
}

// TestReobserveStoreFixture re-records golden.json from the fixture as it
// is, with the berth of this tree (BERTH_BIN, or built): it asks the
// questions golden.json asks, following pages as TestStoreFixture does, of
// two fresh copies of data/, whose answers must agree, and writes them as
// golden.json. It never touches data/, htpasswd or fixture.json, and logs
// every observation whose answer changed. It runs only with
// BERTH_REOBSERVE_FIXTURE=1, for a change of the answers that is intended
// and named in the commit, never to make a storage change pass (see
// testdata/store-v1/README.md).
func TestReobserveStoreFixture(t *testing.T) {
	if os.Getenv(reobserveEnv) != "1" {
		t.Skipf("%s=1 re-records %s", reobserveEnv, filepath.Join(fixtureRoot, "golden.json"))
	}
	var meta fxMeta
	var golden fxGolden
	readFixtureJSON(t, "fixture.json", &meta)
	readFixtureJSON(t, "golden.json", &golden)
	old := golden.Observations
	now := observeTwice(t, meta.Identities, old)
	checkCoverage(t, now)
	checkRobotsUnchanged(t, old, now)
	changed := 0
	for i := range old {
		o, n := old[i], now[i]
		if n.Path == fxNoNextPage || o.As != n.As || o.Method != n.Method || o.Accept != n.Accept {
			t.Errorf("observation %d: asked %s, the golden file asks %s: the questions changed, which takes a new fixture", i+1, n.fxRequest, o.fxRequest)
			continue
		}
		if d := diffObservation(o, n); d != "" {
			changed++
			t.Logf("observation %d, %s, answers differently (-old +new):\n%s", i+1, o.fxRequest, d)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	writeGolden(t, now)
	t.Logf("re-recorded %s: %d observations, %d of them changed", filepath.Join(fixtureRoot, "golden.json"), len(now), changed)
}

// observeTwice serves two fresh copies of the fixture in turn, asks each
// the questions of script (see observeAll) and returns the first one's
// answers. The two must agree: what varies between two servers of the
// same store is no observation.
func observeTwice(t *testing.T, ids map[string]fxIdentity, script []fxObservation) []fxObservation {
	t.Helper()
	var runs [2][]fxObservation
	for i := range runs {
		data, config := copyFixtureStore(t)
		srv := startFixtureServer(t, data, config)
		runs[i] = newObserver(srv.URL, ids).observeAll(t, script)
		srv.Stop()
	}
	compareObservations(t, runs[0], runs[1])
	return runs[0]
}

// checkRobotsUnchanged fails unless the robot listings of old and now give
// every robot the same state: once a robot has expired, its answers are
// what ageObservations derives from the golden file, not new ones.
func checkRobotsUnchanged(t *testing.T, old, now []fxObservation) {
	t.Helper()
	states := func(obs []fxObservation) map[string]string {
		out := map[string]string{}
		for _, o := range obs {
			var robots []fxRobotListing
			if o.Path == "/_berth/admin/robots" && o.Status == http.StatusOK && json.Unmarshal(o.Body, &robots) == nil {
				for _, r := range robots {
					out[r.Name] = r.Status
				}
			}
		}
		return out
	}
	before, after := states(old), states(now)
	if len(before) == 0 || !maps.Equal(before, after) {
		t.Errorf("robot states were %v and are now %v: re-recording would record what ageing changed", before, after)
	}
}

// fxLedger is what the generator put in one repository, in order.
type fxLedger struct {
	manifests, blobs, tags []string
}

func addOnce(list *[]string, v string) {
	if !slices.Contains(*list, v) {
		*list = append(*list, v)
	}
}

// fxGen fills a berth with the fixture's content.
type fxGen struct {
	t     *testing.T
	dir   string // holds data/, htpasswd and berth.yaml
	srv   *berthtest.Server
	meta  fxMeta
	obs   *fxObserver
	repos map[string]*fxLedger
}

func newFixtureGen(t *testing.T) *fxGen {
	g := &fxGen{t: t, dir: t.TempDir(), repos: map[string]*fxLedger{}}
	g.meta = fxMeta{Identities: map[string]fxIdentity{}, Digests: map[string]string{}}
	g.meta.Berth = strings.TrimSpace(berthCLI(t, "", nil, "version"))
	htpasswd := filepath.Join(g.dir, "htpasswd")
	for _, u := range []string{"admin", "alice", "bob"} {
		pw := u + "-store-v1-password"
		berthCLI(t, pw+"\n", nil, "user", "add", u, "--htpasswd", htpasswd, "--password-stdin")
		g.meta.Identities[u] = fxIdentity{User: u, Password: pw}
	}
	config := filepath.Join(g.dir, "berth.yaml")
	if err := os.WriteFile(config, []byte(fixtureConfig(htpasswd)), 0o600); err != nil {
		t.Fatal(err)
	}
	g.srv = startFixtureServer(t, filepath.Join(g.dir, "data"), config)
	g.obs = newObserver(g.srv.URL, g.meta.Identities)
	return g
}

func (g *fxGen) ledger(repo string) *fxLedger {
	l, ok := g.repos[repo]
	if !ok {
		l = &fxLedger{}
		g.repos[repo] = l
	}
	return l
}

// do sends a request as identity as and requires one of the statuses.
func (g *fxGen) do(as, method, path string, body []byte, want int, header ...string) (*http.Response, []byte) {
	g.t.Helper()
	resp, b := g.obs.client(g.t, as).do(g.t, method, path, body, header...)
	mustStatus(g.t, as+" "+method+" "+path, resp, b, want)
	return resp, b
}

// cli runs a berth command against the server as identity as.
func (g *fxGen) cli(as string, args ...string) string {
	g.t.Helper()
	id := g.meta.Identities[as]
	env := []string{"BERTH_REGISTRY=" + g.srv.URL, "BERTH_USERNAME=" + id.User}
	return berthCLI(g.t, id.Password+"\n", env, append(args, "--password-stdin")...)
}

// location is the path of a Location header.
func (g *fxGen) location(resp *http.Response) string {
	return strings.TrimPrefix(resp.Header.Get("Location"), g.srv.URL)
}

// blob uploads content in one POST, under sha256 or the algorithm given.
func (g *fxGen) blob(as, repo string, content []byte, alg ...digest.Algorithm) ocispec.Descriptor {
	g.t.Helper()
	a := digest.Canonical
	if len(alg) > 0 {
		a = alg[0]
	}
	d := a.FromBytes(content)
	g.do(as, http.MethodPost, "/v2/"+repo+"/blobs/uploads/?digest="+d.String(), content, http.StatusCreated,
		"Content-Type", "application/octet-stream")
	addOnce(&g.ledger(repo).blobs, d.String())
	return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: d, Size: int64(len(content))}
}

// startUpload opens an upload session and returns its path.
func (g *fxGen) startUpload(as, repo string) string {
	g.t.Helper()
	resp, _ := g.do(as, http.MethodPost, "/v2/"+repo+"/blobs/uploads/", nil, http.StatusAccepted)
	return g.location(resp)
}

// patch sends content as the chunk at offset and returns the next path.
func (g *fxGen) patch(as, loc string, offset int, content []byte) string {
	g.t.Helper()
	resp, _ := g.do(as, http.MethodPatch, loc, content, http.StatusAccepted, "Content-Type", "application/octet-stream",
		"Content-Range", fmt.Sprintf("%d-%d", offset, offset+len(content)-1))
	return g.location(resp)
}

// blobChunked uploads content in chunks of size chunk.
func (g *fxGen) blobChunked(as, repo string, content []byte, chunk int) ocispec.Descriptor {
	g.t.Helper()
	loc := g.startUpload(as, repo)
	for off := 0; off < len(content); off += chunk {
		loc = g.patch(as, loc, off, content[off:min(off+chunk, len(content))])
	}
	d := digest.FromBytes(content)
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	g.do(as, http.MethodPut, loc+sep+"digest="+d.String(), nil, http.StatusCreated)
	addOnce(&g.ledger(repo).blobs, d.String())
	return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: d, Size: int64(len(content))}
}

// mount links a blob of repository from into repo.
func (g *fxGen) mount(as, repo, from string, d ocispec.Descriptor) {
	g.t.Helper()
	g.do(as, http.MethodPost, "/v2/"+repo+"/blobs/uploads/?"+url.Values{"mount": {d.Digest.String()}, "from": {from}}.Encode(), nil, http.StatusCreated)
	addOnce(&g.ledger(repo).blobs, d.Digest.String())
}

// manifest pushes m under ref (a tag or "" for its digest), with the
// further tags as tag parameters, and returns its descriptor.
func (g *fxGen) manifest(as, repo, ref string, m any, tags ...string) ocispec.Descriptor {
	g.t.Helper()
	body, err := json.Marshal(m)
	if err != nil {
		g.t.Fatal(err)
	}
	var head struct {
		MediaType    string `json:"mediaType"`
		ArtifactType string `json:"artifactType"`
	}
	_ = json.Unmarshal(body, &head)
	d := digest.FromBytes(body)
	path := "/v2/" + repo + "/manifests/" + ref
	if ref == "" {
		path += d.String()
	}
	if len(tags) > 0 {
		path += "?" + url.Values{"tag": tags}.Encode()
	}
	g.do(as, http.MethodPut, path, body, http.StatusCreated, "Content-Type", head.MediaType)
	l := g.ledger(repo)
	addOnce(&l.manifests, d.String())
	for _, tag := range append([]string{ref}, tags...) {
		if tag != "" {
			addOnce(&l.tags, tag)
		}
	}
	return ocispec.Descriptor{MediaType: head.MediaType, ArtifactType: head.ArtifactType, Digest: d, Size: int64(len(body))}
}

// config uploads an image config with labels, and its creation time if
// created is not empty.
func (g *fxGen) config(as, repo, mediaType, arch, created string, labels map[string]string) ocispec.Descriptor {
	g.t.Helper()
	img := ocispec.Image{Platform: ocispec.Platform{Architecture: arch, OS: "linux"},
		Config: ocispec.ImageConfig{Labels: labels}, RootFS: ocispec.RootFS{Type: "layers"}}
	if created != "" {
		tm, err := time.Parse(time.RFC3339, created)
		if err != nil {
			g.t.Fatal(err)
		}
		img.Created = &tm
	}
	body, err := json.Marshal(img)
	if err != nil {
		g.t.Fatal(err)
	}
	d := g.blob(as, repo, body)
	d.MediaType = mediaType
	return d
}

// ociImage is an OCI image manifest.
func ociImage(config ocispec.Descriptor, layers []ocispec.Descriptor, ann map[string]string) ocispec.Manifest {
	return ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		Config: config, Layers: layers, Annotations: ann}
}

// withType is d with another media type.
func withType(d ocispec.Descriptor, mediaType string) ocispec.Descriptor {
	d.MediaType = mediaType
	return d
}

// fxContent is n bytes of text naming what it is.
func fxContent(name string, n int) []byte {
	return bytes.Repeat([]byte(name+"\n"), n/(len(name)+1)+1)[:n]
}

const (
	typeSignature = "application/vnd.example.signature.v1+json"
	typeSBOM      = "application/spdx+json"
	typeChart     = "application/vnd.example.chart.v1"
	typeDocker    = "application/vnd.docker.distribution.manifest.v2+json"
	typeDockerCfg = "application/vnd.docker.container.image.v1+json"
	typeDockerLyr = "application/vnd.docker.image.rootfs.diff.tar.gzip"
	typeDockerLst = "application/vnd.docker.distribution.manifest.list.v2+json"
	typeCosign    = "application/vnd.dev.cosign.simplesigning.v1+json"
	revWeb1       = "5f1c2a7e9b3d4c6a8e0f1b2c3d4e5f60718293a4"
	revWeb2       = "8a6f2d5bd187e0bc7f5414d5e1ec584df9624232"
	revWebTemp    = "0b7e3c1f2a4d6e8f0a1b2c3d4e5f6a7b8c9d0e1f"
	revAPI1       = "c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4"
	revAPI2       = "d4c5b6a7f8e9d0c1b2a3f4e5d6c7b8a9f0e1d2c3"
	teamLabel     = "com.example.team"
	longKey       = "com.example.long"
)

// longValue is an annotation too long for the search index: found by scan.
func longValue() string { return strings.Repeat("a value past the search index's limit; ", 30) }

// fill writes the fixture's content, each record kind at least once.
func (g *fxGen) fill() {
	g.keysAndRobots()
	g.collected()
	g.retained()
	g.web()
	g.api()
	g.legacy()
	g.chart()
	g.publicAndSandbox()
	g.cli("admin", "token", "revoke", "retired")
	g.openUpload()
}

// keysAndRobots rotates the signing key once (keys.json then lists a
// retired key) and creates the robots: deployer stays active, builder is
// rotated later, retired is revoked at the end, lapsed expires at once.
func (g *fxGen) keysAndRobots() {
	t := g.t
	out := berthCLI(t, "", nil, "keys", "rotate", "--data", g.srv.DataDir)
	fields := strings.Fields(out)
	kid := fields[len(fields)-1]
	admin := g.meta.Identities["admin"]
	eventually(t, "the server signs with the rotated key", func() bool {
		return strings.Contains(jwtHeader(t, tokenFor(t, g.srv.URL, admin.User, admin.Password, "repository:apps/web:pull")), kid)
	})
	robot := func(name, scope, expires string) {
		secret := strings.TrimSpace(g.cli("admin", "token", "create", "--name", name, "--scope", scope, "--expires", expires))
		g.meta.Identities["robot:"+name] = fxIdentity{User: name, Password: secret, Robot: name}
	}
	robot("deployer", "repository:apps/**:pull,push", "8760h")
	robot("builder", "repository:legacy/**:pull,push", "8760h")
	robot("retired", "repository:apps/web:pull", "720h")
	robot("lapsed", "repository:public/**:pull", "1s")
	time.Sleep(1100 * time.Millisecond)
}

// collected leaves the work of a garbage collection: a subject deleted,
// and its tagged referrer removed by gc, with the tag's last move.
func (g *fxGen) collected() {
	const repo = "scratch/gc"
	cfg := g.config("alice", repo, ocispec.MediaTypeImageConfig, "amd64", "", nil)
	layer := g.blob("alice", repo, fxContent("scratch/gc layer", 300))
	subject := g.manifest("alice", repo, "subject", ociImage(cfg, []ocispec.Descriptor{layer}, nil))
	ref := ociImage(withType(g.blob("alice", repo, []byte("{}")), ocispec.MediaTypeEmptyJSON),
		[]ocispec.Descriptor{withType(g.blob("alice", repo, []byte(`{"note":"about the subject"}`)), "application/json")}, nil)
	ref.ArtifactType, ref.Subject = "application/vnd.example.note.v1", &subject
	g.manifest("alice", repo, "note", ref)
	g.do("alice", http.MethodDelete, "/v2/"+repo+"/manifests/"+subject.Digest.String(), nil, http.StatusAccepted)
	g.do("admin", http.MethodPost, "/_berth/admin/gc?grace=0s", nil, http.StatusOK)
	if h := tagHistory(g.t, g.obs.client(g.t, "admin"), repo, "note"); h[0].Action != "gc" {
		g.t.Fatalf("the collected referrer's tag: newest move %+v, want gc", h[0])
	}
}

// retained leaves a retention run's deletions: of three tags, the policy
// keeps the newest.
func (g *fxGen) retained() {
	const repo = "scratch/ci"
	cfg := g.config("alice", repo, ocispec.MediaTypeImageConfig, "amd64", "", map[string]string{teamLabel: "ci"})
	layer := g.blob("alice", repo, fxContent("scratch/ci layer", 200))
	for i := 1; i <= 3; i++ {
		g.manifest("alice", repo, fmt.Sprintf("build-%d", i), ociImage(cfg, []ocispec.Descriptor{layer}, map[string]string{"com.example.build": fmt.Sprint(i)}))
	}
	_, body := g.do("admin", http.MethodPost, "/_berth/admin/retention?dryRun=false", nil, http.StatusOK)
	var rep struct {
		Tags []struct{ Tag string } `json:"tags"`
	}
	if err := json.Unmarshal(body, &rep); err != nil || len(rep.Tags) != 2 {
		g.t.Fatalf("retention: want two tags deleted: %s (%v)", body, err)
	}
}

// web is apps/web, the busiest repository: an image with labels and
// annotations, moved, rolled back and promoted; referrers; a cosign
// signature tag moved twice; a tag deleted; a manifest deleted with its
// tags; an unreferenced blob. apps/web-prod gets promotions.
func (g *fxGen) web() {
	const repo, prod = "apps/web", "apps/web-prod"
	base := g.blob("alice", repo, fxContent("apps/web base layer", 700))
	app := g.blobChunked("alice", repo, fxContent("apps/web application layer", 900), 256)
	cfg1 := g.config("alice", repo, ocispec.MediaTypeImageConfig, "amd64", "2026-01-10T09:30:00Z",
		map[string]string{"org.opencontainers.image.version": "1.0.0", "com.example.component": "web"})
	ann1 := map[string]string{ocispec.AnnotationRevision: revWeb1, ocispec.AnnotationCreated: "2026-01-10T10:00:00Z",
		teamLabel: "storefront", longKey: longValue()}
	w1 := g.manifest("alice", repo, "v1.0.0", ociImage(cfg1, []ocispec.Descriptor{base, app}, ann1))
	g.manifest("alice", repo, "latest", ociImage(cfg1, []ocispec.Descriptor{base, app}, ann1))
	g.meta.Digests["apps/web config"], g.meta.Digests["apps/web base layer"] = cfg1.Digest.String(), base.Digest.String()

	cfg2 := g.config("bob", repo, ocispec.MediaTypeImageConfig, "amd64", "2026-02-14T11:00:00Z",
		map[string]string{"org.opencontainers.image.version": "1.1.0", "com.example.component": "web"})
	patch := g.blob("bob", repo, fxContent("apps/web patch layer", 400))
	ann2 := map[string]string{ocispec.AnnotationRevision: revWeb2, ocispec.AnnotationCreated: "2026-02-14T12:00:00Z", teamLabel: "storefront"}
	w2 := g.manifest("bob", repo, "", ociImage(cfg2, []ocispec.Descriptor{base, app, patch}, ann2), "v1.1.0", "latest")
	g.cli("alice", "tag", "rollback", repo+":latest")

	// Referrers of v1.0.0: a signature and an SBOM.
	empty := withType(g.blob("alice", repo, []byte("{}")), ocispec.MediaTypeEmptyJSON)
	sig := ociImage(empty, []ocispec.Descriptor{withType(g.blob("alice", repo, []byte(`{"signature":"MEUCIQD-store-v1"}`)), typeSignature)},
		map[string]string{ocispec.AnnotationCreated: "2026-01-10T10:05:00Z"})
	sig.ArtifactType, sig.Subject = typeSignature, &w1
	g.manifest("alice", repo, "", sig)
	sbom := ociImage(empty, []ocispec.Descriptor{withType(g.blob("alice", repo, []byte(`{"spdxVersion":"SPDX-2.3","name":"apps/web"}`)), typeSBOM)},
		map[string]string{ocispec.AnnotationCreated: "2026-01-10T10:06:00Z"})
	sbom.ArtifactType, sbom.Subject = typeSBOM, &w1
	g.manifest("alice", repo, "", sbom)

	// cosign's tag fallback: the signature tag moves as signatures are added.
	sigTag := "sha256-" + w1.Digest.Encoded() + ".sig"
	cosignCfg := g.config("bob", repo, ocispec.MediaTypeImageConfig, "", "", nil)
	var sigLayers []ocispec.Descriptor
	for i := 1; i <= 2; i++ {
		payload := fmt.Sprintf(`{"critical":{"image":{"docker-manifest-digest":"%s"},"type":"cosign container image signature"},"optional":{"n":%d}}`, w1.Digest, i)
		l := withType(g.blob("bob", repo, []byte(payload)), typeCosign)
		l.Annotations = map[string]string{"dev.cosignproject.cosign/signature": fmt.Sprintf("MEQCIF-signature-%d", i)}
		sigLayers = append(sigLayers, l)
		g.manifest("bob", repo, sigTag, ociImage(cosignCfg, sigLayers, nil))
	}

	// A robot pushes staging; the admin promotes within the repository.
	g.manifest("robot:deployer", repo, "staging", ociImage(cfg2, []ocispec.Descriptor{base, app, patch}, ann2))
	g.do("admin", http.MethodPost, "/v2/"+repo+"/_berth/tags/staging/promote", []byte(`{"repository":"apps/web","reference":"v1.0.0"}`),
		http.StatusCreated, "Content-Type", "application/json")

	// Promotions to production by the robot, and a rollback by bob.
	g.cli("robot:deployer", "promote", repo+":v1.0.0", prod+":production")
	g.cli("robot:deployer", "promote", repo+"@"+w2.Digest.String(), prod+":production")
	g.do("bob", http.MethodPost, "/v2/"+prod+"/_berth/tags/production/rollback", []byte(`{"to":"`+w1.Digest.String()+`"}`),
		http.StatusOK, "Content-Type", "application/json")
	addOnce(&g.ledger(prod).tags, "production")

	// A tag pushed and deleted; its manifest stays, untagged.
	temp := g.manifest("alice", repo, "temp", ociImage(cfg1, []ocispec.Descriptor{base}, map[string]string{ocispec.AnnotationRevision: revWebTemp}))
	g.do("alice", http.MethodDelete, "/v2/"+repo+"/manifests/temp", nil, http.StatusAccepted)
	g.meta.Digests["apps/web untagged"], g.meta.Digests["apps/web untagged revision"] = temp.Digest.String(), revWebTemp

	// A manifest deleted with its two tags; its own layer stays behind.
	nightly := g.blob("bob", repo, fxContent("apps/web nightly layer", 300))
	gone := g.manifest("bob", repo, "nightly", ociImage(cfg2, []ocispec.Descriptor{base, nightly}, map[string]string{teamLabel: "nightly"}), "edge")
	g.do("alice", http.MethodDelete, "/v2/"+repo+"/manifests/"+gone.Digest.String(), nil, http.StatusAccepted)

	// A blob no manifest references.
	g.blob("alice", repo, []byte("release notes, uploaded and never referenced\n"))
}

// api is apps/api: a multi-platform OCI index, whose arm64 layer has a
// sha512 digest, sharing the base layer with apps/web by a mount.
func (g *fxGen) api() {
	const repo = "apps/api"
	base := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: digest.Digest(g.meta.Digests["apps/web base layer"]), Size: 700}
	g.mount("alice", repo, "apps/web", base)
	var children []ocispec.Descriptor
	for _, arch := range []string{"amd64", "arm64"} {
		cfg := g.config("alice", repo, ocispec.MediaTypeImageConfig, arch, "2026-02-01T11:00:00Z", map[string]string{"com.example.component": "api"})
		alg := digest.Canonical
		if arch == "arm64" {
			alg = digest.SHA512
		}
		layer := g.blob("alice", repo, fxContent("apps/api "+arch+" layer", 500), alg)
		child := g.manifest("alice", repo, "", ociImage(cfg, []ocispec.Descriptor{base, layer}, nil))
		child.Platform = &ocispec.Platform{Architecture: arch, OS: "linux"}
		children = append(children, child)
	}
	index := func(ann map[string]string) ocispec.Index {
		return ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: children, Annotations: ann}
	}
	g.manifest("alice", repo, "v2.0.0", index(map[string]string{ocispec.AnnotationRevision: revAPI1, ocispec.AnnotationCreated: "2026-02-01T12:00:00Z"}), "latest")
	g.manifest("bob", repo, "latest", index(map[string]string{ocispec.AnnotationRevision: revAPI2}))
}

// legacy is legacy/tool: Docker schema 2 manifests pushed by a robot
// before and after its secret was rotated, and a Docker manifest list.
func (g *fxGen) legacy() {
	const repo = "legacy/tool"
	cfg := g.config("robot:builder", repo, typeDockerCfg, "amd64", "2025-11-02T08:00:00Z", map[string]string{"maintainer": "legacy-team"})
	l1 := withType(g.blob("robot:builder", repo, fxContent("legacy/tool layer one", 600)), typeDockerLyr)
	docker := func(cfg ocispec.Descriptor, layers ...ocispec.Descriptor) ocispec.Manifest {
		m := ociImage(cfg, layers, nil)
		m.MediaType = typeDocker
		return m
	}
	d1 := g.manifest("robot:builder", repo, "1.0", docker(cfg, l1), "stable")
	secret := strings.TrimSpace(g.cli("admin", "token", "rotate", "builder"))
	old := g.meta.Identities["robot:builder"]
	g.meta.Identities["robot:builder(rotated out)"] = old
	old.Password = secret
	g.meta.Identities["robot:builder"] = old
	delete(g.obs.clients, "robot:builder")

	cfg2 := g.config("robot:builder", repo, typeDockerCfg, "arm64", "2025-12-01T08:00:00Z", map[string]string{"maintainer": "legacy-team"})
	l2 := withType(g.blob("robot:builder", repo, fxContent("legacy/tool layer two", 650)), typeDockerLyr)
	d2 := g.manifest("robot:builder", repo, "1.1", docker(cfg2, l1, l2))
	g.manifest("robot:builder", repo, "stable", docker(cfg2, l1, l2))
	d1.Platform = &ocispec.Platform{Architecture: "amd64", OS: "linux"}
	d2.Platform = &ocispec.Platform{Architecture: "arm64", OS: "linux"}
	g.manifest("alice", repo, "multi", ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: typeDockerLst,
		Manifests: []ocispec.Descriptor{d1, d2}})
}

// chart is artifacts/chart: OCI artifacts with an artifactType and the
// empty config.
func (g *fxGen) chart() {
	const repo = "artifacts/chart"
	empty := withType(g.blob("bob", repo, []byte("{}")), ocispec.MediaTypeEmptyJSON)
	for i, created := range []string{"2026-02-20T08:00:00Z", "2026-03-05T08:00:00Z"} {
		layer := withType(g.blob("bob", repo, fxContent(fmt.Sprintf("chart 0.%d.0 archive", i+1), 350)), "application/vnd.example.chart.content.v1.tar+gzip")
		m := ociImage(empty, []ocispec.Descriptor{layer}, map[string]string{ocispec.AnnotationCreated: created, ocispec.AnnotationTitle: "chart"})
		m.ArtifactType = typeChart
		g.manifest("bob", repo, fmt.Sprintf("0.%d.0", i+1), m, "current")
	}
}

// publicAndSandbox: a public image moved by bob, and a repository where
// anonymous callers push and move a tag.
func (g *fxGen) publicAndSandbox() {
	for i, r := range []struct{ repo, as, tag string }{
		{"public/docs", "alice", "v1"}, {"public/docs", "bob", "v1"},
		{"sandbox/scratchpad", "anonymous", "anon"}, {"sandbox/scratchpad", "anonymous", "anon"},
	} {
		cfg := g.config(r.as, r.repo, ocispec.MediaTypeImageConfig, "amd64", "", map[string]string{"com.example.component": r.repo})
		layer := g.blob(r.as, r.repo, fxContent(fmt.Sprintf("%s layer %d by %s", r.repo, i, r.as), 250))
		g.manifest(r.as, r.repo, r.tag, ociImage(cfg, []ocispec.Descriptor{layer}, map[string]string{"com.example.pusher": r.as}))
	}
}

// openUpload leaves an upload session open after its first chunk.
func (g *fxGen) openUpload() {
	const repo, offset = "apps/web", 1500
	loc := g.startUpload("alice", repo)
	loc = g.patch("alice", loc, 0, fixtureResumeBlob()[:offset])
	g.meta.Upload = fxUpload{As: "alice", Path: loc, Offset: offset}
	addOnce(&g.ledger(repo).blobs, digest.FromBytes(fixtureResumeBlob()).String())
}

// save replaces the fixture with the stopped server's data directory
// (index, blobs, open uploads, signing keys: not its temporary files),
// the users file and fixture.json.
func (g *fxGen) save() {
	t := g.t
	for _, name := range []string{"data", "htpasswd", "fixture.json", "golden.json"} {
		if err := os.RemoveAll(filepath.Join(fixtureRoot, name)); err != nil {
			t.Fatal(err)
		}
	}
	src, dst := g.srv.DataDir, filepath.Join(fixtureRoot, "data")
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	copyFile(t, filepath.Join(src, "index.db"), filepath.Join(dst, "index.db"))
	for _, dir := range []string{"blobs", "uploads", "keys"} {
		if err := os.CopyFS(filepath.Join(dst, dir), os.DirFS(filepath.Join(src, dir))); err != nil {
			t.Fatalf("copy %s: %v", dir, err)
		}
	}
	copyFile(t, filepath.Join(g.dir, "htpasswd"), filepath.Join(fixtureRoot, "htpasswd"))
	meta, err := json.MarshalIndent(g.meta, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(fixtureRoot, "fixture.json"), append(meta, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// fxPlanner lists the questions of the golden file, following pages on a
// server of the saved fixture.
type fxPlanner struct {
	t      *testing.T
	o      *fxObserver
	script []fxObservation
	seen   map[fxRequest]bool
}

// add asks a question, adds it and its answer to the script unless it is
// there already, and returns the answer and the path of the next page its
// Link names. A question asked as a robot is asked as the expired robot
// too: it is what the robot answers once expired.
func (p *fxPlanner) add(as, method, path, accept string) (fxObservation, string) {
	r := fxRequest{As: as, Method: method, Path: path, Accept: accept}
	o, next := p.o.observe(p.t, r)
	if !p.seen[r] {
		p.seen[r] = true
		p.script = append(p.script, o)
	}
	if strings.HasPrefix(as, "robot:") && as != fixtureLapsed {
		p.add(fixtureLapsed, method, path, accept)
	}
	return o, next
}

// pages adds path and every next page its Link headers lead to.
func (p *fxPlanner) pages(as, path string) {
	for i := 0; path != "" && i < 100; i++ {
		_, path = p.add(as, http.MethodGet, path, "")
	}
}

// plan lists the questions: logins of every identity, catalog pages, and
// for every repository its tag pages, every tag, manifest and blob it
// holds or held (and those of the repository it was promoted from), tag
// histories, referrers with and without filters, the open upload, search
// queries and the robot listing. It returns them with the answers of the
// server at base, which observeAll follows pages by.
func (g *fxGen) plan(base string) []fxObservation {
	p := &fxPlanner{t: g.t, o: newObserver(base, g.meta.Identities), seen: map[fxRequest]bool{}}
	ids := []string{"anonymous"}
	for id := range g.meta.Identities {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		p.add(id, http.MethodGet, "/v2/", "")
		p.add(id, http.MethodGet, "/auth/token?"+url.Values{"service": {"berth"}, "scope": {"repository:apps/web:pull,push"}}.Encode(), "")
	}
	p.add("alice", http.MethodGet, "/auth/token?"+url.Values{"service": {"berth"}, "scope": {"repository:apps/api:pull"}, "offline_token": {"true"}}.Encode(), "")

	for _, as := range []string{"admin", "alice", "anonymous", "robot:deployer"} {
		p.add(as, http.MethodGet, "/v2/_catalog", "")
	}
	p.pages("admin", "/v2/_catalog?n=2")

	repos := slices.Sorted(func(yield func(string) bool) {
		for r := range g.repos {
			if !yield(r) {
				return
			}
		}
	})
	from := map[string]string{"apps/web-prod": "apps/web"}
	for _, repo := range repos {
		l := *g.repos[repo]
		if src, ok := from[repo]; ok {
			for _, v := range g.repos[src].manifests {
				addOnce(&l.manifests, v)
			}
			for _, v := range g.repos[src].blobs {
				addOnce(&l.blobs, v)
			}
		}
		o, _ := p.add("admin", http.MethodGet, "/v2/"+repo+"/tags/list", "")
		var listed struct {
			Tags []string `json:"tags"`
		}
		_ = json.Unmarshal(o.Body, &listed)
		tags := slices.Clone(l.tags)
		for _, tag := range listed.Tags {
			addOnce(&tags, tag)
		}
		slices.Sort(tags)
		p.pages("admin", "/v2/"+repo+"/tags/list?n=2")
		for _, tag := range tags {
			p.add("admin", http.MethodGet, "/v2/"+repo+"/manifests/"+tag, fixtureAccept)
			p.add("admin", http.MethodHead, "/v2/"+repo+"/manifests/"+tag, fixtureAccept)
			p.add("admin", http.MethodGet, "/v2/"+repo+"/_berth/tags/"+tag+"/history", "")
			p.pages("admin", "/v2/"+repo+"/_berth/tags/"+tag+"/history?n=2")
		}
		for _, d := range l.manifests {
			p.add("admin", http.MethodGet, "/v2/"+repo+"/manifests/"+d, fixtureAccept)
			p.add("admin", http.MethodHead, "/v2/"+repo+"/manifests/"+d, fixtureAccept)
			o, _ := p.add("admin", http.MethodGet, "/v2/"+repo+"/referrers/"+d, "")
			var idx ocispec.Index
			_ = json.Unmarshal(o.Body, &idx)
			var types []string
			for _, m := range idx.Manifests {
				addOnce(&types, m.ArtifactType)
			}
			if len(types) > 0 {
				for _, at := range append(types, "application/vnd.example.none") {
					p.add("admin", http.MethodGet, "/v2/"+repo+"/referrers/"+d+"?"+url.Values{"artifactType": {at}}.Encode(), "")
				}
			}
		}
		for _, d := range l.blobs {
			p.add("admin", http.MethodGet, "/v2/"+repo+"/blobs/"+d, "")
			p.add("admin", http.MethodHead, "/v2/"+repo+"/blobs/"+d, "")
		}
	}

	// Refusals and absences.
	web := g.repos["apps/web"]
	p.add("admin", http.MethodGet, "/v2/apps/web/manifests/v1.0.0", typeDocker)
	p.add("admin", http.MethodGet, "/v2/legacy/tool/blobs/"+g.meta.Digests["apps/web base layer"], "")
	p.add("admin", http.MethodGet, "/v2/nope/nothing/tags/list", "")
	p.add("admin", http.MethodGet, "/v2/apps/web/manifests/never-pushed", fixtureAccept)
	p.add("admin", http.MethodGet, "/v2/apps/web/_berth/tags/never-pushed/history", "")
	p.add("alice", http.MethodGet, "/v2/legacy/tool/manifests/1.0", fixtureAccept)
	p.add("anonymous", http.MethodGet, "/v2/public/docs/manifests/v1", fixtureAccept)
	p.add("anonymous", http.MethodGet, "/v2/apps/web/manifests/"+web.manifests[0], fixtureAccept)
	p.add("robot:deployer", http.MethodGet, "/v2/apps/web/manifests/latest", fixtureAccept)
	p.add("robot:builder", http.MethodGet, "/v2/apps/web/manifests/latest", fixtureAccept)

	// The open upload.
	p.add("alice", http.MethodGet, g.meta.Upload.Path, "")
	p.add("admin", http.MethodGet, g.meta.Upload.Path, "")

	// Search.
	search := func(as string, q url.Values) {
		path := "/v2/_berth/search"
		if len(q) > 0 {
			path += "?" + q.Encode()
		}
		p.pages(as, path)
	}
	search("admin", url.Values{})
	search("admin", url.Values{"n": {"4"}})
	search("admin", url.Values{"annotation": {ocispec.AnnotationRevision + "=" + revWeb1}})
	search("admin", url.Values{"annotation": {teamLabel + "=storefront"}})
	search("admin", url.Values{"annotation": {teamLabel + "=storefront", ocispec.AnnotationRevision + "=" + revWeb2}})
	search("admin", url.Values{"annotation": {longKey + "=" + longValue()}})
	search("admin", url.Values{"label": {"com.example.component=web"}})
	search("admin", url.Values{"label": {"maintainer=legacy-team"}})
	search("admin", url.Values{"repository": {"apps/**"}})
	search("admin", url.Values{"repository": {"apps/**"}, "n": {"1"}})
	search("admin", url.Values{"repository": {"apps/web"}, "tag": {"latest"}})
	search("admin", url.Values{"tag": {"latest"}})
	search("admin", url.Values{"artifactType": {typeSBOM}})
	search("admin", url.Values{"artifactType": {typeChart}})
	search("admin", url.Values{"mediaType": {typeDocker}})
	search("admin", url.Values{"created.after": {"2026-01-01T00:00:00Z"}, "created.before": {"2026-03-01T00:00:00Z"}})
	search("admin", url.Values{"created.after": {"not a time"}})
	search("anonymous", url.Values{})
	search("alice", url.Values{"label": {"com.example.component=api"}})

	p.add("admin", http.MethodGet, "/_berth/admin/robots", "")
	p.add("alice", http.MethodGet, "/_berth/admin/robots", "")
	return p.script
}

// checkCoverage fails unless the observations show every kind of tag
// move, by every kind of actor, and robots in every state.
func checkCoverage(t *testing.T, obs []fxObservation) {
	t.Helper()
	seen := map[string]bool{}
	for _, o := range obs {
		var body struct {
			History []struct {
				Action string `json:"action"`
				Actor  struct {
					Kind string `json:"kind"`
				} `json:"actor"`
			} `json:"history"`
		}
		if strings.Contains(o.Path, "/_berth/tags/") && json.Unmarshal(o.Body, &body) == nil {
			for _, m := range body.History {
				seen["action "+m.Action], seen["actor "+m.Actor.Kind] = true, true
			}
		}
		var robots []fxRobotListing
		if o.Path == "/_berth/admin/robots" && json.Unmarshal(o.Body, &robots) == nil {
			for _, r := range robots {
				seen["robot "+r.Status] = true
				if r.Rotated != nil {
					seen["robot rotated"] = true
				}
			}
		}
	}
	for _, want := range []string{"action push", "action delete", "action delete-manifest", "action promote", "action rollback",
		"action retention", "action gc", "actor user", "actor robot", "actor anonymous", "actor system",
		"robot active", "robot revoked", "robot expired", "robot rotated"} {
		if !seen[want] {
			t.Errorf("the fixture has no %s", want)
		}
	}
}

// writeGolden writes golden.json, one observation a line.
func writeGolden(t *testing.T, obs []fxObservation) {
	t.Helper()
	var buf bytes.Buffer
	buf.WriteString("{\"observations\":[\n")
	for i, o := range obs {
		var line bytes.Buffer
		enc := json.NewEncoder(&line)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(o); err != nil {
			t.Fatal(err)
		}
		buf.Write(bytes.TrimSuffix(line.Bytes(), []byte("\n")))
		if i < len(obs)-1 {
			buf.WriteByte(',')
		}
		buf.WriteByte('\n')
	}
	buf.WriteString("]}\n")
	if err := os.WriteFile(filepath.Join(fixtureRoot, "golden.json"), buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}
