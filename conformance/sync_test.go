package conformance_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	ggcrremote "github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-registry/berth/conformance/internal/berthtest"
)

// The replication tests run berth processes on loopback: a source or
// destination registry that requires authentication (startUpstream, in
// mirror_test.go) and a berth with sync rules, driven by berth sync run
// and berth sync status, and checked with real clients (cosign, crane
// through go-containerregistry).

// syncBerth starts a berth whose configuration holds the sync rules given
// (YAML list items under sync.rules), in dataDir when set.
func syncBerth(t *testing.T, rules, dataDir string, opts ...berthtest.Option) *berthtest.Server {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "berth.yaml")
	writeTestFile(t, cfg, "sync:\n  rules:\n"+rules)
	opts = append([]berthtest.Option{berthtest.WithArgs("--config", cfg)}, opts...)
	if dataDir != "" {
		opts = append(opts, berthtest.WithDataDir(dataDir))
	}
	return berthtest.Start(t, opts...)
}

// remoteYAML is the remote: block of a rule reaching url as the
// upstream's user.
func remoteYAML(url, pass string) string {
	return fmt.Sprintf("        url: %s\n        username: %s\n        password: %s\n", url, upstreamUser, pass)
}

// syncRun runs berth sync run rule against srv and returns its report.
func syncRun(t *testing.T, srv *berthtest.Server, rule string) syncReport {
	t.Helper()
	out := berthCLI(t, "", []string{"BERTH_REGISTRY=" + srv.URL}, "sync", "run", "--json", rule)
	var rep syncReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("berth sync run %s: %v\n%s", rule, err, out)
	}
	return rep
}

// syncReport is what the test reads of berth sync run --json.
type syncReport struct {
	Tags []struct {
		Repository string `json:"repository"`
		Tag        string `json:"tag"`
		Digest     string `json:"digest"`
	} `json:"tags"`
	Unsigned  int               `json:"unsigned"`
	Failures  []json.RawMessage `json:"failures"`
	Manifests int               `json:"manifests"`
	Blobs     int               `json:"blobs"`
}

// tagNames lists the repository:tag of each tag of a report, sorted.
func (r syncReport) tagNames() []string {
	var out []string
	for _, t := range r.Tags {
		out = append(out, t.Repository+":"+t.Tag)
	}
	slices.Sort(out)
	return out
}

// syncStatus is what the test reads of berth sync status --json.
type syncStatus struct {
	Rules []struct {
		Name        string `json:"name"`
		Running     bool   `json:"running"`
		Interrupted bool   `json:"interrupted"`
		Pending     int    `json:"pending"`
		Delivered   int    `json:"delivered"`
		LastRun     *struct {
			Finished *time.Time `json:"finished"`
			Error    string     `json:"error"`
			Tags     int        `json:"tags"`
		} `json:"lastRun"`
	} `json:"rules"`
}

func readSyncStatus(t *testing.T, srv *berthtest.Server) syncStatus {
	t.Helper()
	out := berthCLI(t, "", []string{"BERTH_REGISTRY=" + srv.URL}, "sync", "status", "--json")
	var st syncStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("berth sync status: %v\n%s", err, out)
	}
	return st
}

// tagsOf lists the tags of repo on the berth at addr.
func tagsOf(t *testing.T, addr, repo string) []string {
	t.Helper()
	status, _, body := get(t, http.MethodGet, "http://"+addr+"/v2/"+repo+"/tags/list", nil)
	if status == http.StatusNotFound {
		return nil
	}
	var list struct {
		Tags []string `json:"tags"`
	}
	if status != http.StatusOK || json.Unmarshal(body, &list) != nil {
		t.Fatalf("tags of %s: %d %s", repo, status, body)
	}
	slices.Sort(list.Tags)
	return list.Tags
}

// historyOf returns the actions and actors of the moves of repo:tag,
// newest first.
func historyOf(t *testing.T, addr, repo, tag string) []string {
	t.Helper()
	_, _, body := get(t, http.MethodGet, "http://"+addr+"/v2/"+repo+"/_berth/tags/"+tag+"/history", nil)
	var hist struct {
		History []struct {
			Action string `json:"action"`
			Actor  struct {
				Name string `json:"name"`
			} `json:"actor"`
		} `json:"history"`
	}
	if err := json.Unmarshal(body, &hist); err != nil {
		t.Fatalf("history of %s:%s: %v: %s", repo, tag, err, body)
	}
	var out []string
	for _, m := range hist.History {
		out = append(out, m.Action+" by "+m.Actor.Name)
	}
	return out
}

// requestsTo counts the requests of method to paths matching pathRE in a
// berth's request log.
func requestsTo(logs, method, pathRE string) int {
	re := regexp.MustCompile(`msg=request .*\bmethod=` + method + ` .*\bpath=` + pathRE + ` .*\bstatus=`)
	return len(re.FindAllString(logs, -1))
}

// cosignVerify verifies ref with the key of cs, offline.
func cosignVerify(t *testing.T, cs *cosign, ref string) clientResult {
	t.Helper()
	writeTestFile(t, filepath.Join(cs.dir, "trusted_root.json"), `{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1"}`)
	return cs.try("verify", "--key", "cosign.pub", "--trusted-root", "trusted_root.json", "--insecure-ignore-tlog=true",
		"--offline=true", "--allow-http-registry", ref)
}

// TestSyncPullSemverSigned: a pull rule with a semver range copies exactly
// the tags within it, with their cosign signatures and OCI referrers, so
// that cosign verify passes in the target; with signedOnly it leaves out
// the unsigned ones. A second run is a no-op (no blob fetched, no history
// written); a tag moved on the source is moved by the next run, recorded
// as a sync move.
func TestSyncPullSemverSigned(t *testing.T) {
	up := startUpstream(t)
	const repo = "team/app"
	digests := map[string]v1.Hash{}
	for _, tag := range []string{"1.0.0", "1.2.0", "1.4.1", "v1.5.3", "2.0.0", "1.6.0-rc.1", "latest"} {
		digests[tag] = up.push(t, repo+":"+tag, randomImage(t, 2000))
	}
	other := up.push(t, "team/other:1.3.0", randomImage(t, 1000))
	up.push(t, "elsewhere/app:1.3.0", randomImage(t, 1000))
	// cosign signs some of them on the source (tag-schema signatures).
	cs := newCosignNoLogin(t)
	cs.run("login", up.Addr, "-u", upstreamUser, "-p", up.pass)
	for _, tag := range []string{"1.2.0", "v1.5.3", "2.0.0", "1.6.0-rc.1"} {
		cs.sign(nil, up.Addr+"/"+repo+"@"+digests[tag].String())
	}
	cs.sign(nil, up.Addr+"/team/other@"+other.String())
	// An SBOM refers to v1.5.3 through the referrers API.
	subject, err := ggcrremote.Head(mustRef(t, up.Addr+"/"+repo+":v1.5.3"), up.remoteOpts(t)...)
	if err != nil {
		t.Fatal(err)
	}
	sbom := mutate.Subject(mutate.ConfigMediaType(mutate.MediaType(randomImage(t, 300), types.OCIManifestSchema1), "application/spdx+json"), *subject).(v1.Image)
	sbomDigest := mustDigest(t, sbom)
	if err := ggcrremote.Write(mustRef(t, up.Addr+"/"+repo+"@"+sbomDigest.String()), sbom, up.remoteOpts(t)...); err != nil {
		t.Fatal(err)
	}

	dst := syncBerth(t, fmt.Sprintf(`    - name: signed
      direction: pull
      remote:
%s      repositories: ["team/*"]
      semver: ">=1.2.0, <2.0.0"
      signedOnly: true
      prefix: signed
    - name: all
      direction: pull
      remote:
%s      repositories: ["team/app"]
      semver: ">=1.2.0, <2.0.0"
      prefix: all
`, remoteYAML(up.URL, up.pass), remoteYAML(up.URL, up.pass)), "")

	sig := func(tag string) string { return "sha256-" + digests[tag].Hex + ".sig" }
	rep := syncRun(t, dst, "signed")
	if got, want := rep.tagNames(), []string{"signed/team/app:1.2.0", "signed/team/app:v1.5.3", "signed/team/other:1.3.0"}; !slices.Equal(got, want) {
		t.Errorf("signed rule set %q; want %q", got, want)
	}
	if rep.Unsigned != 1 || len(rep.Failures) != 0 {
		t.Errorf("signed rule: %d unsigned, failures %s; want 1 (1.4.1) and none", rep.Unsigned, rep.Failures)
	}
	want := []string{"1.2.0", sig("1.2.0"), sig("v1.5.3"), "v1.5.3"}
	slices.Sort(want)
	if got := tagsOf(t, dst.Addr, "signed/"+repo); !slices.Equal(got, want) {
		t.Errorf("tags of signed/%s: %q; want exactly %q", repo, got, want)
	}
	if got := tagsOf(t, dst.Addr, "signed/elsewhere/app"); got != nil {
		t.Errorf("a repository outside the patterns was copied: %q", got)
	}
	rep = syncRun(t, dst, "all")
	if got, want := rep.tagNames(), []string{"all/team/app:1.2.0", "all/team/app:1.4.1", "all/team/app:v1.5.3"}; !slices.Equal(got, want) {
		t.Errorf("all rule set %q; want %q", got, want)
	}

	// The copies are the source's, byte for byte, and cosign verifies the
	// signed ones in the target; an unsigned one does not verify.
	for _, tag := range []string{"1.2.0", "v1.5.3"} {
		pullThrough(t, dst.Addr+"/signed/"+repo+":"+tag, mustImage(t, up, repo+":"+tag))
		if r := cosignVerify(t, cs, dst.Addr+"/signed/"+repo+":"+tag); r.err != nil {
			t.Errorf("cosign verify of signed/%s:%s in the target: %v\n%s", repo, tag, r.err, r.stderr)
		}
	}
	if r := cosignVerify(t, cs, dst.Addr+"/all/"+repo+":1.4.1"); r.err == nil {
		t.Error("cosign verify of the unsigned 1.4.1 succeeded: the check above proves nothing")
	}
	status, _, body := get(t, http.MethodGet, dst.URL+"/v2/signed/"+repo+"/referrers/"+digests["v1.5.3"].String(), nil)
	if status != http.StatusOK || !strings.Contains(string(body), sbomDigest.String()) {
		t.Errorf("referrers of v1.5.3 in the target: %d %s; want the SBOM %s", status, body, sbomDigest)
	}
	if h := historyOf(t, dst.Addr, "signed/"+repo, "v1.5.3"); !slices.Equal(h, []string{"sync by sync:signed"}) {
		t.Errorf("history of signed/%s:v1.5.3: %q; want one sync move", repo, h)
	}

	// A second run copies nothing: no blob fetched, no tag moved.
	blobGets := requestsTo(up.Logs(), "GET", `/v2/team/[a-z]+/blobs/\S+`)
	rep = syncRun(t, dst, "signed")
	if len(rep.Tags) != 0 || rep.Manifests != 0 || rep.Blobs != 0 || len(rep.Failures) != 0 {
		t.Errorf("second run: %+v; want nothing copied", rep)
	}
	if n := requestsTo(up.Logs(), "GET", `/v2/team/[a-z]+/blobs/\S+`); n != blobGets {
		t.Errorf("the second run fetched %d blobs from the source; want none", n-blobGets)
	}
	if h := historyOf(t, dst.Addr, "signed/"+repo, "v1.5.3"); len(h) != 1 {
		t.Errorf("history of signed/%s:v1.5.3 after a second run: %q", repo, h)
	}

	// A tag moved on the source (and signed again) moves in the target.
	moved := randomImage(t, 2000)
	md := up.push(t, repo+":v1.5.3", moved)
	cs.sign(nil, up.Addr+"/"+repo+"@"+md.String())
	rep = syncRun(t, dst, "signed")
	if got := rep.tagNames(); !slices.Equal(got, []string{"signed/team/app:v1.5.3"}) {
		t.Errorf("run after a move set %q; want only v1.5.3", got)
	}
	pullThrough(t, dst.Addr+"/signed/"+repo+":v1.5.3", moved)
	if r := cosignVerify(t, cs, dst.Addr+"/signed/"+repo+":v1.5.3"); r.err != nil {
		t.Errorf("cosign verify of the moved tag in the target: %v\n%s", r.err, r.stderr)
	}
	if h := historyOf(t, dst.Addr, "signed/"+repo, "v1.5.3"); !slices.Equal(h, []string{"sync by sync:signed", "sync by sync:signed"}) {
		t.Errorf("history of the moved tag: %q; want two sync moves", h)
	}
	st := readSyncStatus(t, dst)
	if len(st.Rules) != 2 || st.Rules[0].LastRun == nil || st.Rules[0].LastRun.Finished == nil || st.Rules[0].LastRun.Tags != 1 {
		t.Errorf("berth sync status: %+v", st)
	}
}

// mustRef parses a reference to a loopback registry.
func mustRef(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// mustImage reads an image from the upstream.
func mustImage(t *testing.T, up *upstreamBerth, ref string) v1.Image {
	t.Helper()
	img, err := ggcrremote.Image(mustRef(t, up.Addr+"/"+ref), up.remoteOpts(t)...)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// relay is a reverse proxy on loopback in front of a registry, standing
// for the network between two: it can slow blob bodies down and fail
// every request, and it counts the blob GETs it relayed whole.
type relay struct {
	url string

	mu      sync.Mutex
	failing bool
	rate    int // bytes per second of blob bodies; 0: as fast as it goes
	whole   map[string]int
}

// startRelay starts a relay to the berth at addr.
func startRelay(t *testing.T, addr string) *relay {
	t.Helper()
	target, err := url.Parse("http://" + addr)
	if err != nil {
		t.Fatal(err)
	}
	rl := &relay{whole: map[string]int{}}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ModifyResponse = func(resp *http.Response) error {
		req := resp.Request
		if req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/blobs/sha256:") && resp.StatusCode == http.StatusOK {
			resp.Body = &relayBody{rl: rl, rc: resp.Body, path: req.URL.Path, left: resp.ContentLength}
		}
		return nil
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rl.mu.Lock()
		failing := rl.failing
		rl.mu.Unlock()
		if failing {
			http.Error(w, "relay: the network is down", http.StatusServiceUnavailable)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	rl.url = srv.URL
	return rl
}

func (rl *relay) set(failing bool, rate int) {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	rl.failing, rl.rate = failing, rate
}

// wholeGets returns how many times each blob path was relayed whole.
func (rl *relay) wholeGets() map[string]int {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	out := map[string]int{}
	for k, v := range rl.whole {
		out[k] = v
	}
	return out
}

// relayBody relays a blob's body at the relay's rate, and counts it once
// read to its end.
type relayBody struct {
	rl   *relay
	rc   io.ReadCloser
	path string
	left int64
}

func (b *relayBody) Read(p []byte) (int, error) {
	b.rl.mu.Lock()
	rate := b.rl.rate
	b.rl.mu.Unlock()
	if rate > 0 {
		p = p[:min(len(p), rate/50)]
		time.Sleep(20 * time.Millisecond)
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	if b.left == 0 && n > 0 {
		b.rl.mu.Lock()
		b.rl.whole[b.path]++
		b.rl.mu.Unlock()
	}
	return n, err
}

func (b *relayBody) Close() error { return b.rc.Close() }

// TestSyncPullResumes: a pull run killed half way (SIGKILL, while a slow
// network brings the layers in) is resumed by the next process at its
// start, without fetching again the layers it had stored; the image then
// pulls whole.
func TestSyncPullResumes(t *testing.T) {
	up := startUpstream(t)
	const layers, layerSize = 6, 8 << 20
	sizes := make([]int64, layers)
	for i := range sizes {
		sizes[i] = layerSize
	}
	img := randomImage(t, sizes...)
	up.push(t, "big/app:1.0.0", img)
	rl := startRelay(t, up.Addr)
	rl.set(false, 16<<20) // 16 MiB/s: half a second a layer
	data := t.TempDir()
	rules := fmt.Sprintf(`    - name: big
      direction: pull
      remote:
%s      repositories: ["big/app"]
      interval: 1h
`, remoteYAML(rl.url, up.pass))
	dst := syncBerth(t, rules, data)

	// The first run starts with the server; kill it once two layers are in.
	layerPath := func(l v1.Layer) string {
		d, _ := l.Digest()
		return "/v2/big/app/blobs/" + d.String()
	}
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	// stored reports which layers the syncing server holds: what a run
	// resumed after a kill must not fetch again. A layer the relay has
	// sent whole may not be stored yet (its commit was in flight at the
	// kill): that one may be fetched again, once.
	stored := func() map[string]bool {
		in := map[string]bool{}
		for _, l := range ls {
			req, _ := http.NewRequest(http.MethodHead, "http://"+dst.Addr+layerPath(l), nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				continue
			}
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				in[layerPath(l)] = true
			}
		}
		return in
	}
	deadline := time.Now().Add(60 * time.Second)
	for len(stored()) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the scheduled run did not store two layers within a minute; log:\n%s", dst.LogTail(40))
		}
		time.Sleep(20 * time.Millisecond)
	}
	had := stored()
	dst.Kill()
	before := rl.wholeGets()
	if len(had) == layers {
		t.Fatalf("all %d layers were stored before the kill: the test interrupted nothing", layers)
	}
	t.Logf("killed with %d of %d layers stored", len(had), layers)

	rl.set(false, 0)
	dst = syncBerth(t, rules, data)
	deadline = time.Now().Add(60 * time.Second)
	for {
		st := readSyncStatus(t, dst)
		if lr := st.Rules[0].LastRun; lr != nil && lr.Finished != nil {
			if lr.Error != "" || lr.Tags != 1 {
				t.Fatalf("the resumed run: %+v", *lr)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the interrupted run was not resumed within a minute; log:\n%s", dst.LogTail(40))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(dst.Logs(), "resuming an interrupted sync run") {
		t.Error("the server did not log that it resumed the run")
	}
	pullThrough(t, dst.Addr+"/big/app:1.0.0", img)
	after := rl.wholeGets()
	resumed := 0
	for i, l := range ls {
		p := layerPath(l)
		again := after[p] - before[p]
		switch {
		case had[p] && again != 0:
			t.Errorf("layer %d, stored before the kill, was fetched whole %d more times after it; want none", i, again)
		case again > 1:
			t.Errorf("layer %d was fetched whole %d times after the kill; want at most once", i, again)
		}
		resumed += again
	}
	if resumed == 0 {
		t.Error("the resumed run fetched no layer: nothing was resumed")
	}
}

// TestSyncPush: a push rule delivers an image pushed here, with its cosign
// signature, to the remote, where cosign verify passes; a delivery the
// remote could not take survives a SIGKILL of the server and is made by
// the next process; berth sync run is then a no-op.
func TestSyncPush(t *testing.T) {
	remoteBerth := startUpstream(t)
	rl := startRelay(t, remoteBerth.Addr)
	data := t.TempDir()
	rules := fmt.Sprintf(`    - name: out
      direction: push
      remote:
%s      repositories: ["apps/**"]
      tags: ["v*"]
      prefix: replica
`, remoteYAML(rl.url, remoteBerth.pass))
	src := syncBerth(t, rules, data)

	push := func(ref string, img v1.Image) v1.Hash {
		t.Helper()
		if err := ggcrremote.Write(mustRef(t, src.Addr+"/"+ref), img, anonymous(t)...); err != nil {
			t.Fatal(err)
		}
		return mustDigest(t, img)
	}
	remoteDigest := func(ref string) string {
		t.Helper()
		desc, err := ggcrremote.Head(mustRef(t, remoteBerth.Addr+"/"+ref), remoteBerth.remoteOpts(t)...)
		if err != nil {
			return ""
		}
		return desc.Digest.String()
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within a minute; log:\n%s", what, src.LogTail(40))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	img := randomImage(t, 50000, 3000)
	d1 := push("apps/web:v1", img)
	push("apps/web:dev", randomImage(t, 1000)) // outside the tag patterns
	cs := newCosignNoLogin(t)
	cs.sign(nil, src.Addr+"/apps/web@"+d1.String())
	sigTag := "sha256-" + d1.Hex + ".sig"
	waitFor("v1 and its signature delivered", func() bool {
		return remoteDigest("replica/apps/web:v1") == d1.String() && remoteDigest("replica/apps/web:"+sigTag) != ""
	})
	compareImage(t, "replica/apps/web:v1", mustImage(t, remoteBerth, "replica/apps/web:v1"), img)
	cs.run("login", remoteBerth.Addr, "-u", upstreamUser, "-p", remoteBerth.pass)
	if r := cosignVerify(t, cs, remoteBerth.Addr+"/replica/apps/web:v1"); r.err != nil {
		t.Errorf("cosign verify on the remote: %v\n%s", r.err, r.stderr)
	}
	if got := tagsOf(t, src.Addr, "apps/web"); !slices.Contains(got, "dev") {
		t.Fatalf("tags here: %q", got)
	}
	if d := remoteDigest("replica/apps/web:dev"); d != "" {
		t.Errorf("dev, outside the tag patterns, was delivered (%s)", d)
	}

	// The remote cannot be reached: v2 waits. The server dies; the next
	// one delivers v2 once the remote is back.
	rl.set(true, 0)
	img2 := randomImage(t, 20000)
	d2 := push("apps/web:v2", img2)
	waitFor("the failed delivery recorded", func() bool {
		st := readSyncStatus(t, src)
		return st.Rules[0].LastRun != nil && st.Rules[0].LastRun.Error != ""
	})
	src.Kill()
	rl.set(false, 0)
	src = syncBerth(t, rules, data)
	waitFor("v2 delivered by the next process", func() bool { return remoteDigest("replica/apps/web:v2") == d2.String() })
	compareImage(t, "replica/apps/web:v2", mustImage(t, remoteBerth, "replica/apps/web:v2"), img2)

	// Everything is delivered: a run sends nothing.
	waitFor("nothing pending", func() bool {
		st := readSyncStatus(t, src)
		return !st.Rules[0].Running && st.Rules[0].Pending == 0 && st.Rules[0].Delivered == 2
	})
	puts := requestsTo(remoteBerth.Logs(), "(PUT|POST|PATCH)", `\S+`)
	rep := syncRun(t, src, "out")
	if len(rep.Tags) != 0 || rep.Blobs != 0 || rep.Manifests != 0 || len(rep.Failures) != 0 {
		t.Errorf("berth sync run after everything was delivered: %+v; want nothing", rep)
	}
	if n := requestsTo(remoteBerth.Logs(), "(PUT|POST|PATCH)", `\S+`); n != puts {
		t.Errorf("the run sent %d writes to the remote; want none", n-puts)
	}
}
