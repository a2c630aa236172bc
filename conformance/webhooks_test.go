package conformance_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/admin"
	"github.com/berth-registry/berth/conformance/internal/berthtest"
	"github.com/berth-registry/berth/notify"
	"github.com/berth-registry/berth/registry/auth"
	"github.com/berth-registry/berth/storage"
)

// hookReceiver is a webhook endpoint on loopback, in the test process. It
// serves one endpoint per path (/NAME), checks each request's signature
// against that endpoint's secret, and records what it accepts in order of
// arrival.
type hookReceiver struct {
	t       *testing.T
	secrets map[string]string // by endpoint name
	ln      net.Listener
	srv     *http.Server

	mu sync.Mutex
	// arrivals are the events accepted, per endpoint, in order, duplicates
	// included.
	arrivals map[string][]hookArrival
	badSigs  int
	// refuse, when set, decides per request whether to answer 503
	// instead of accepting.
	refuse func(endpoint string) bool
	// hang, when set, holds requests of endpoint until release is closed
	// or the client gives up.
	hang    map[string]bool
	release chan struct{}
	refused int
}

// hookArrival is one accepted request.
type hookArrival struct {
	ID    string
	Event storage.Event
	// Dist is the event in the distribution envelope, for endpoints of
	// that format.
	Dist *notify.DistributionEvent
}

// newHookReceiver listens on addr ("127.0.0.1:0" for any port).
func newHookReceiver(t *testing.T, addr string, secrets map[string]string) *hookReceiver {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("receiver: listen on %s: %v", addr, err)
	}
	r := &hookReceiver{t: t, secrets: secrets, ln: ln, arrivals: map[string][]hookArrival{},
		hang: map[string]bool{}, release: make(chan struct{})}
	r.srv = &http.Server{Handler: http.HandlerFunc(r.serve), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = r.srv.Serve(ln) }()
	t.Cleanup(r.close)
	return r
}

// close stops the receiver, releasing held requests.
func (r *hookReceiver) close() {
	r.mu.Lock()
	select {
	case <-r.release:
	default:
		close(r.release)
	}
	r.mu.Unlock()
	_ = r.srv.Close()
}

// url is the URL of endpoint name.
func (r *hookReceiver) url(name string) string { return "http://" + r.ln.Addr().String() + "/" + name }

func (r *hookReceiver) serve(w http.ResponseWriter, req *http.Request) {
	name := strings.TrimPrefix(req.URL.Path, "/")
	body, err := io.ReadAll(req.Body)
	if err != nil {
		return
	}
	r.mu.Lock()
	secret, known := r.secrets[name]
	if !known || !notify.Verify([]byte(secret), body, req.Header.Get(notify.SignatureHeader)) {
		r.badSigs++
		r.mu.Unlock()
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	hang, release := r.hang[name], r.release
	refuse := r.refuse != nil && r.refuse(name)
	if refuse {
		r.refused++
	}
	r.mu.Unlock()
	if hang {
		select {
		case <-release:
		case <-req.Context().Done():
			return
		}
	}
	if refuse {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	var a hookArrival
	switch req.Header.Get("Content-Type") {
	case notify.CloudEventsContentType:
		var ce notify.CloudEvent
		if err := json.Unmarshal(body, &ce); err != nil || ce.SpecVersion != "1.0" || ce.ID != req.Header.Get(notify.EventIDHeader) {
			r.t.Errorf("receiver: bad cloud event %s (%v)", body, err)
		}
		a = hookArrival{ID: ce.ID, Event: ce.Data}
	case notify.DistributionContentType:
		var env notify.Envelope
		if err := json.Unmarshal(body, &env); err != nil || len(env.Events) != 1 {
			r.t.Errorf("receiver: bad envelope %s (%v)", body, err)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		a = hookArrival{ID: env.Events[0].ID, Dist: &env.Events[0]}
	default:
		r.t.Errorf("receiver: content type %q", req.Header.Get("Content-Type"))
	}
	r.mu.Lock()
	r.arrivals[name] = append(r.arrivals[name], a)
	r.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// unique returns the events endpoint accepted, the first arrival of each
// event id, in order of arrival.
func (r *hookReceiver) unique(endpoint string) []hookArrival {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := map[string]bool{}
	var out []hookArrival
	for _, a := range r.arrivals[endpoint] {
		if !seen[a.ID] {
			seen[a.ID] = true
			out = append(out, a)
		}
	}
	return out
}

// hookKey names what an event reports, for comparisons.
func hookKey(e storage.Event) string {
	s := e.Action + " " + e.Repo
	if e.Tag != "" {
		s += ":" + e.Tag
	}
	if e.Digest != "" {
		s += " " + string(e.Digest)
	}
	if e.Previous != "" {
		s += " (was " + string(e.Previous) + ")"
	}
	return s
}

// blobsOf lists the config and layer digests of a manifest body.
func blobsOf(t *testing.T, body []byte) []digest.Digest {
	t.Helper()
	var m ocispec.Manifest
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	out := []digest.Digest{m.Config.Digest}
	for _, l := range m.Layers {
		out = append(out, l.Digest)
	}
	return out
}

// hookEndpoint is the configuration of an endpoint of the receiver, with
// short retries.
func hookEndpoint(r *hookReceiver, name, extra string) string {
	return fmt.Sprintf(`    - name: %s
      url: %s
      secret: %s
      timeout: 2s
      backoff: 50ms
      maxBackoff: 250ms
      maxAttempts: 100
%s`, name, r.url(name), r.secrets[name], extra)
}

// TestWebhooksEveryChange: a receiver on loopback that checks signatures
// gets every push, tag move, delete, promotion, rollback, retention and
// garbage collection deletion, at least once and in order per repository,
// and nothing for refused writes; a second endpoint in the distribution
// format gets only what its filters pass.
func TestWebhooksEveryChange(t *testing.T) {
	rcv := newHookReceiver(t, "127.0.0.1:0", map[string]string{"all": "s3cret-all", "dist": "s3cret-dist"})
	dir := t.TempDir()
	config := filepath.Join(dir, "berth.yaml")
	writeTestFile(t, config, `tags:
  immutable:
    - repositories: ["apps/**"]
      tags: ["v*.*.*"]
retention:
  policies:
    - repositories: ["ret/**"]
      keepLast: 1
      deleteUntaggedAfter: 1ns
notifications:
  endpoints:
`+hookEndpoint(rcv, "all", "")+hookEndpoint(rcv, "dist", `      format: distribution
      actions: [tag, promote, rollback, untag]
      repositories: ["apps/**"]
      tags: ["latest", "live"]
`))
	srv := berthtest.Start(t, berthtest.WithArgs("--config", config))
	a := obsAPI{t: t, base: srv.URL}
	var want []storage.Event // in commit order
	image := func(repo, seed, tag string) (digest.Digest, []byte) {
		t.Helper()
		d, body := a.image(repo, seed, tag)
		for _, b := range blobsOf(t, body) {
			want = append(want, storage.Event{Action: storage.EventBlobPush, Repo: repo, Digest: b})
		}
		want = append(want, storage.Event{Action: storage.EventPush, Repo: repo, Digest: d})
		return d, body
	}
	tagged := func(action, repo, tag string, d, prev digest.Digest) {
		want = append(want, storage.Event{Action: action, Repo: repo, Tag: tag, Digest: d, Previous: prev})
	}

	m1, _ := image("apps/web", "one", "v1.0.0")
	tagged(storage.EventTag, "apps/web", "v1.0.0", m1, "")
	m2, _ := image("apps/web", "two", "latest")
	tagged(storage.EventTag, "apps/web", "latest", m2, "")
	m3, _ := image("apps/web", "three", "latest")
	tagged(storage.EventTag, "apps/web", "latest", m3, m2)

	// Refused writes: moving an immutable tag (its blobs are stored, the
	// manifest is not), and a manifest whose layer is missing.
	cfg := a.blob("apps/web", ocispec.MediaTypeImageConfig, []byte(`{"refused":true}`))
	want = append(want, storage.Event{Action: storage.EventBlobPush, Repo: "apps/web", Digest: cfg.Digest})
	refused := obsManifest(t, cfg)
	a.must(http.StatusConflict, http.MethodPut, "/v2/apps/web/manifests/v1.0.0", refused, "Content-Type", ocispec.MediaTypeImageManifest)
	missing := obsManifest(t, cfg, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: digest.FromString("missing"), Size: 7})
	a.must(http.StatusBadRequest, http.MethodPut, "/v2/apps/web/manifests/broken", missing, "Content-Type", ocispec.MediaTypeImageManifest)
	a.must(http.StatusConflict, http.MethodDelete, "/v2/apps/web/manifests/v1.0.0", nil)

	// Deletes: a tag, then a manifest.
	a.must(http.StatusAccepted, http.MethodDelete, "/v2/apps/web/manifests/latest", nil)
	tagged(storage.EventUntag, "apps/web", "latest", "", m3)
	a.must(http.StatusAccepted, http.MethodDelete, "/v2/apps/web/manifests/"+m2.String(), nil)
	want = append(want, storage.Event{Action: storage.EventDeleteManifest, Repo: "apps/web", Digest: m2})

	// Promotion and rollback.
	promote := func(src, ref string) {
		t.Helper()
		body, _ := json.Marshal(map[string]string{"repository": src, "reference": ref})
		resp, b := a.do(http.MethodPost, "/v2/apps/prod/_berth/tags/live/promote", body, "Content-Type", "application/json")
		if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated {
			t.Fatalf("promote %s:%s: %d %s", src, ref, resp.StatusCode, b)
		}
	}
	promote("apps/web", "v1.0.0")
	tagged(storage.EventPromote, "apps/prod", "live", m1, "")
	promote("apps/web", m3.String())
	tagged(storage.EventPromote, "apps/prod", "live", m3, m1)
	a.must(http.StatusOK, http.MethodPost, "/v2/apps/prod/_berth/tags/live/rollback", []byte(`{}`), "Content-Type", "application/json")
	tagged(storage.EventRollback, "apps/prod", "live", m1, m3)

	// Retention: of two tags the newest stays; the other tag goes, then
	// its manifest, untagged.
	r0, _ := image("ret/r", "r0", "t0")
	tagged(storage.EventTag, "ret/r", "t0", r0, "")
	time.Sleep(20 * time.Millisecond)
	r1, _ := image("ret/r", "r1", "t1")
	tagged(storage.EventTag, "ret/r", "t1", r1, "")
	a.must(http.StatusOK, http.MethodPost, auth.AdminPrefix+"retention?dryRun=false", nil)
	tagged(storage.EventRetention, "ret/r", "t0", "", r0)
	want = append(want, storage.Event{Action: storage.EventRetention, Repo: "ret/r", Digest: r0})

	// Garbage collection of what the deletions left.
	_, gcBody := a.must(http.StatusOK, http.MethodPost, admin.GCPath+"?grace=0s", nil)
	var gcRes admin.GCResult
	if err := json.Unmarshal(gcBody, &gcRes); err != nil {
		t.Fatal(err)
	}
	gcEvents := gcRes.ManifestsRemoved + gcRes.LinksRemoved + gcRes.BlobsRemoved
	if gcRes.LinksRemoved == 0 || gcRes.BlobsRemoved == 0 {
		t.Fatalf("garbage collection removed nothing: %+v", gcRes)
	}

	eventually(t, "every event at the receiver", func() bool { return len(rcv.unique("all")) >= len(want)+gcEvents })
	got := rcv.unique("all")
	if len(got) != len(want)+gcEvents {
		t.Errorf("%d events, want %d and %d of garbage collection", len(got), len(want), gcEvents)
	}
	// Per repository, the events in the order of their changes, and the
	// collection's last.
	byRepo := func(es []storage.Event) map[string][]string {
		out := map[string][]string{}
		for _, e := range es {
			out[e.Repo] = append(out[e.Repo], hookKey(storage.Event{Action: e.Action, Repo: e.Repo, Tag: e.Tag, Digest: e.Digest, Previous: e.Previous}))
		}
		return out
	}
	var gotEvents []storage.Event
	gcSeen := 0
	for _, arr := range got {
		e := arr.Event
		if e.Action == storage.EventGC {
			gcSeen++
			if e.Actor.Kind != storage.ActorSystem {
				t.Errorf("gc event by %+v", e.Actor)
			}
			continue
		}
		if gcSeen > 0 && e.Repo != "" {
			// A gc event of a repository comes after all its others.
			for _, prev := range got {
				if prev.ID == arr.ID {
					break
				}
				if prev.Event.Action == storage.EventGC && prev.Event.Repo == e.Repo {
					t.Errorf("%s arrived after a gc event of its repository", hookKey(e))
				}
			}
		}
		gotEvents = append(gotEvents, e)
	}
	if gcSeen != gcEvents {
		t.Errorf("%d gc events, want %d (%+v)", gcSeen, gcEvents, gcRes)
	}
	gotBy, wantBy := byRepo(gotEvents), byRepo(want)
	for repo, w := range wantBy {
		if !slices.Equal(gotBy[repo], w) {
			t.Errorf("repository %s: events arrived as\n  %s\nwant\n  %s", repo, strings.Join(gotBy[repo], "\n  "), strings.Join(w, "\n  "))
		}
	}
	for repo := range gotBy {
		if wantBy[repo] == nil {
			t.Errorf("events of an unexpected repository %s: %v", repo, gotBy[repo])
		}
	}
	// Nothing of the refused writes: they name no manifest pushed.
	for _, e := range gotEvents {
		if e.Digest == digest.FromBytes(refused) || e.Digest == digest.FromBytes(missing) || e.Tag == "broken" {
			t.Errorf("an event of a refused write: %s", hookKey(e))
		}
		if e.Actor.Kind == "" || e.Time.IsZero() {
			t.Errorf("event without actor or time: %+v", e)
		}
	}

	// The distribution endpoint: tag events of latest and live in apps/**.
	var wantDist []string
	for _, e := range want {
		if slices.Contains([]string{"tag", "promote", "rollback", "untag"}, e.Action) && strings.HasPrefix(e.Repo, "apps/") &&
			(e.Tag == "latest" || e.Tag == "live") {
			action, d := "push", e.Digest
			if e.Action == storage.EventUntag {
				action, d = "delete", e.Previous
			}
			wantDist = append(wantDist, action+" "+e.Repo+":"+e.Tag+" "+string(d))
		}
	}
	eventually(t, "the distribution endpoint's events", func() bool { return len(rcv.unique("dist")) >= len(wantDist) })
	var gotDist []string
	for _, arr := range rcv.unique("dist") {
		de := arr.Dist
		gotDist = append(gotDist, de.Action+" "+de.Target.Repository+":"+de.Target.Tag+" "+de.Target.Digest)
		if de.ID == "" || de.Timestamp == "" || de.Source.Addr == "" {
			t.Errorf("distribution event %+v", de)
		}
	}
	if !slices.Equal(gotDist, wantDist) {
		t.Errorf("distribution endpoint got\n  %s\nwant\n  %s", strings.Join(gotDist, "\n  "), strings.Join(wantDist, "\n  "))
	}
	rcv.mu.Lock()
	if rcv.badSigs != 0 {
		t.Errorf("%d requests with a bad signature", rcv.badSigs)
	}
	rcv.mu.Unlock()

	// Once delivered, nothing is left in the outbox, and the metrics say
	// what was delivered.
	env := []string{"BERTH_REGISTRY=" + srv.URL}
	eventually(t, "an empty outbox", func() bool {
		var l notify.Listing
		return json.Unmarshal([]byte(berthCLI(t, "", env, "events", "list", "--json")), &l) == nil && len(l.Records) == 0
	})
	mfs := a.scrape()
	if got := metricValue(mfs, "berth_webhook_delivered_total", "endpoint", "all"); got < float64(len(want)+gcEvents) {
		t.Errorf("berth_webhook_delivered_total{endpoint=all} = %v, want at least %d", got, len(want)+gcEvents)
	}
}

// tagEvents lists the tag events of repo among arrivals, as "tag digest".
func tagEvents(arrivals []hookArrival, repo string) []string {
	var out []string
	for _, a := range arrivals {
		if a.Event.Repo == repo && a.Event.Action == storage.EventTag {
			out = append(out, a.Event.Tag+" "+string(a.Event.Digest))
		}
	}
	return out
}

// TestWebhooksReceiverDownThenUp: a receiver that refuses everything for a
// while gets every event once it answers, in order per repository; the
// failed attempts are counted as retries.
func TestWebhooksReceiverDownThenUp(t *testing.T) {
	rcv := newHookReceiver(t, "127.0.0.1:0", map[string]string{"hooks": "k"})
	rcv.mu.Lock()
	rcv.refuse = func(string) bool { return true }
	rcv.mu.Unlock()
	dir := t.TempDir()
	config := filepath.Join(dir, "berth.yaml")
	writeTestFile(t, config, "notifications:\n  endpoints:\n"+hookEndpoint(rcv, "hooks", ""))
	srv := berthtest.Start(t, berthtest.WithArgs("--config", config))
	a := obsAPI{t: t, base: srv.URL}
	const rounds = 6
	var wantA, wantB []string
	for i := range rounds {
		d, _ := a.image("team/a", fmt.Sprint("a", i), "latest")
		wantA = append(wantA, "latest "+d.String())
		d, _ = a.image("team/b", fmt.Sprint("b", i), fmt.Sprint("v", i%2))
		wantB = append(wantB, fmt.Sprintf("v%d %s", i%2, d))
	}
	eventually(t, "refused attempts", func() bool {
		rcv.mu.Lock()
		defer rcv.mu.Unlock()
		return rcv.refused >= 10
	})
	if n := len(rcv.unique("hooks")); n != 0 {
		t.Fatalf("%d events accepted while refusing", n)
	}
	rcv.mu.Lock()
	rcv.refuse = nil
	rcv.mu.Unlock()
	total := rounds * 2 * 4 // each image: two blobs, a manifest, a tag
	eventually(t, "every event after the outage", func() bool { return len(rcv.unique("hooks")) >= total })
	got := rcv.unique("hooks")
	if len(got) != total {
		t.Errorf("%d events, want %d", len(got), total)
	}
	if g := tagEvents(got, "team/a"); !slices.Equal(g, wantA) {
		t.Errorf("team/a tags arrived as %v, want %v", g, wantA)
	}
	if g := tagEvents(got, "team/b"); !slices.Equal(g, wantB) {
		t.Errorf("team/b tags arrived as %v, want %v", g, wantB)
	}
	mfs := a.scrape()
	if r := metricValue(mfs, "berth_webhook_retries_total", "endpoint", "hooks"); r < 10 {
		t.Errorf("berth_webhook_retries_total = %v, want at least the 10 refusals", r)
	}
}

// freePort returns a loopback address whose port was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// TestWebhooksSurviveSIGKILL: events of a push whose endpoint is not up yet
// wait in the outbox; berth is killed with SIGKILL before delivering them;
// once the endpoint is up and berth restarted on the same data, they are
// delivered.
func TestWebhooksSurviveSIGKILL(t *testing.T) {
	addr := freePort(t)
	secrets := map[string]string{"hooks": "kill-secret"}
	dir := t.TempDir()
	config := filepath.Join(dir, "berth.yaml")
	writeTestFile(t, config, fmt.Sprintf(`notifications:
  endpoints:
    - name: hooks
      url: http://%s/hooks
      secret: kill-secret
      timeout: 1s
      backoff: 100ms
      maxBackoff: 500ms
      maxAttempts: 100
`, addr))
	data := t.TempDir()
	srv := berthtest.Start(t, berthtest.WithArgs("--config", config), berthtest.WithDataDir(data))
	a := obsAPI{t: t, base: srv.URL}
	d, _ := a.image("apps/kill", "k", "v1")
	env := []string{"BERTH_REGISTRY=" + srv.URL}
	var pending notify.Listing
	// The four events of the push wait, the oldest (the only one of its
	// repository that may be attempted) failing again and again.
	eventually(t, "four deliveries in the outbox, the first failed", func() bool {
		if err := json.Unmarshal([]byte(berthCLI(t, "", env, "events", "list", "--pending", "--json")), &pending); err != nil {
			t.Fatal(err)
		}
		return len(pending.Records) == 4 && pending.Records[0].Attempts > 0
	})
	ids := map[string]bool{}
	for i, r := range pending.Records {
		ids[r.EventID] = true
		if (i == 0) != (r.LastError != "") || r.Endpoint != "hooks" || r.Event.Repo != "apps/kill" {
			t.Errorf("pending delivery %d: %+v", i, r)
		}
	}
	srv.Kill()

	rcv := newHookReceiver(t, addr, secrets)
	berthtest.Start(t, berthtest.WithArgs("--config", config), berthtest.WithDataDir(data))
	eventually(t, "the events of the push before the kill", func() bool { return len(rcv.unique("hooks")) >= 4 })
	got := rcv.unique("hooks")
	if len(got) != 4 {
		t.Errorf("%d events after the restart, want 4", len(got))
	}
	for _, arr := range got {
		if !ids[arr.ID] {
			t.Errorf("event %s (%s) was not among those pending before the kill", arr.ID, hookKey(arr.Event))
		}
	}
	if tags := tagEvents(got, "apps/kill"); !slices.Equal(tags, []string{"v1 " + d.String()}) {
		t.Errorf("tag events after the restart: %v", tags)
	}
}

// TestWebhooksDeadEndpoint: an endpoint that never answers ends in the dead
// letters after its attempts while another endpoint gets everything;
// `berth events` lists the dead letters, drops one, and retries the rest
// once the endpoint answers.
func TestWebhooksDeadEndpoint(t *testing.T) {
	rcv := newHookReceiver(t, "127.0.0.1:0", map[string]string{"dead": "d", "live": "l"})
	rcv.mu.Lock()
	rcv.hang["dead"] = true
	rcv.mu.Unlock()
	dir := t.TempDir()
	config := filepath.Join(dir, "berth.yaml")
	writeTestFile(t, config, fmt.Sprintf(`notifications:
  endpoints:
    - name: dead
      url: %s
      secret: d
      timeout: 300ms
      backoff: 50ms
      maxBackoff: 100ms
      maxAttempts: 2
%s`, rcv.url("dead"), hookEndpoint(rcv, "live", "")))
	srv := berthtest.Start(t, berthtest.WithArgs("--config", config))
	a := obsAPI{t: t, base: srv.URL}
	for i := range 3 {
		a.image(fmt.Sprintf("apps/r%d", i), fmt.Sprint("dead", i), "latest")
	}
	const total = 3 * 4
	eventually(t, "the live endpoint", func() bool { return len(rcv.unique("live")) == total })
	env := []string{"BERTH_REGISTRY=" + srv.URL}
	var dead notify.Listing
	eventually(t, "every delivery to the dead endpoint in the dead letters", func() bool {
		if err := json.Unmarshal([]byte(berthCLI(t, "", env, "events", "list", "--dead", "--json")), &dead); err != nil {
			t.Fatal(err)
		}
		return len(dead.Records) == total
	})
	for _, r := range dead.Records {
		if r.Endpoint != "dead" || r.Attempts != 2 || !strings.Contains(r.LastError, "no answer within 300ms") || r.Died == nil {
			t.Errorf("dead letter %+v", r)
		}
	}
	table := berthCLI(t, "", env, "events", "list", "--dead")
	if !strings.Contains(table, "SEQ") || strings.Count(table, "dead ") < total {
		t.Errorf("berth events list --dead:\n%s", table)
	}
	mfs := a.scrape()
	if got := metricValue(mfs, "berth_webhook_dead_lettered_total", "endpoint", "dead"); got != total {
		t.Errorf("berth_webhook_dead_lettered_total{endpoint=dead} = %v, want %d", got, total)
	}

	// Drop one, make the endpoint answer, retry the others.
	dropped := dead.Records[0]
	out := berthCLI(t, "", env, "events", "drop", fmt.Sprint(dropped.Seq))
	if !strings.Contains(out, "dropped") {
		t.Errorf("berth events drop: %q", out)
	}
	rcv.mu.Lock()
	rcv.hang["dead"] = false
	rcv.mu.Unlock()
	out = berthCLI(t, "", env, "events", "retry", "--all")
	if !strings.Contains(out, fmt.Sprintf("%d dead letters back", total-1)) {
		t.Errorf("berth events retry --all: %q", out)
	}
	eventually(t, "the retried events", func() bool { return len(rcv.unique("dead")) == total-1 })
	for _, arr := range rcv.unique("dead") {
		if arr.ID == dropped.EventID {
			t.Errorf("the dropped event %s was delivered", arr.ID)
		}
	}
	var after notify.Listing
	eventually(t, "nothing left", func() bool {
		return json.Unmarshal([]byte(berthCLI(t, "", env, "events", "list", "--json")), &after) == nil && len(after.Records) == 0
	})
	// The admin API refuses what it cannot do.
	a.must(http.StatusNotFound, http.MethodDelete, admin.EventsPath+"/999999", nil)
	a.must(http.StatusBadRequest, http.MethodDelete, admin.EventsPath, nil)
	a.must(http.StatusBadRequest, http.MethodGet, admin.EventsPath+"?state=lost", nil)
}
