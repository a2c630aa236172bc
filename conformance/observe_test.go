package conformance_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/berth-registry/berth/admin"
	"github.com/berth-registry/berth/conformance/internal/berthtest"
	"github.com/berth-registry/berth/registry/auth"
)

// obsAPI drives a real berth over raw HTTP for the tests of metrics, logs,
// health and webhooks: each request is one the test can count.
type obsAPI struct {
	t          *testing.T
	base       string
	user, pass string
	header     http.Header
}

// do sends one request and reads the whole answer.
func (a obsAPI) do(method, path string, body []byte, header ...string) (*http.Response, []byte) {
	a.t.Helper()
	req, err := http.NewRequest(method, a.base+path, bytes.NewReader(body))
	if err != nil {
		a.t.Fatal(err)
	}
	for k, v := range a.header {
		req.Header[k] = v
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	if a.user != "" {
		req.SetBasicAuth(a.user, a.pass)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp, b
}

// must sends a request that must answer status.
func (a obsAPI) must(status int, method, path string, body []byte, header ...string) (*http.Response, []byte) {
	a.t.Helper()
	resp, b := a.do(method, path, body, header...)
	if resp.StatusCode != status {
		a.t.Fatalf("%s %s: %d %s, want %d", method, path, resp.StatusCode, b, status)
	}
	return resp, b
}

// blob uploads content into repo in two requests (POST, then PUT with the
// digest) and returns its descriptor.
func (a obsAPI) blob(repo, mediaType string, content []byte) ocispec.Descriptor {
	a.t.Helper()
	d := digest.FromBytes(content)
	resp, _ := a.must(http.StatusAccepted, http.MethodPost, "/v2/"+repo+"/blobs/uploads/", nil)
	loc := resp.Header.Get("Location")
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	a.must(http.StatusCreated, http.MethodPut, strings.TrimPrefix(loc, a.base)+sep+"digest="+d.String(), content,
		"Content-Type", "application/octet-stream")
	return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(content))}
}

// image pushes a config and a layer made from seed and a manifest over
// them, under tag (or by digest when tag is empty); it returns the
// manifest's digest and body.
func (a obsAPI) image(repo, seed, tag string) (digest.Digest, []byte) {
	a.t.Helper()
	cfg := a.blob(repo, ocispec.MediaTypeImageConfig, []byte(`{"architecture":"amd64","os":"linux","seed":"`+seed+`"}`))
	layer := a.blob(repo, ocispec.MediaTypeImageLayer, []byte("layer of "+seed))
	body := obsManifest(a.t, cfg, layer)
	d := digest.FromBytes(body)
	ref := tag
	if ref == "" {
		ref = d.String()
	}
	a.must(http.StatusCreated, http.MethodPut, "/v2/"+repo+"/manifests/"+ref, body, "Content-Type", ocispec.MediaTypeImageManifest)
	return d, body
}

func obsManifest(t *testing.T, cfg ocispec.Descriptor, layers ...ocispec.Descriptor) []byte {
	t.Helper()
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: cfg, Layers: layers}
	m.SchemaVersion = 2
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// scrape reads and parses /metrics with the Prometheus text parser.
func (a obsAPI) scrape() map[string]*dto.MetricFamily {
	a.t.Helper()
	_, body := a.must(http.StatusOK, http.MethodGet, "/metrics", nil)
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		a.t.Fatalf("parse /metrics: %v\n%s", err, body)
	}
	return mfs
}

// metricValue is the value of the sample of family name whose labels are
// labels (all of them, given as name, value pairs), or -1 if none.
func metricValue(mfs map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	mf := mfs[name]
	if mf == nil {
		return -1
	}
	for _, m := range mf.GetMetric() {
		if len(m.GetLabel())*2 != len(labels) {
			continue
		}
		match := true
		for _, lp := range m.GetLabel() {
			i := slices.Index(labels, lp.GetName())
			if i < 0 || i%2 != 0 || labels[i+1] != lp.GetValue() {
				match = false
				break
			}
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		case m.Untyped != nil:
			return m.Untyped.GetValue()
		}
	}
	return -1
}

// labelValues lists the values label takes in family name.
func labelValues(mfs map[string]*dto.MetricFamily, name, label string) []string {
	var out []string
	for _, m := range mfs[name].GetMetric() {
		for _, lp := range m.GetLabel() {
			if lp.GetName() == label && !slices.Contains(out, lp.GetValue()) {
				out = append(out, lp.GetValue())
			}
		}
	}
	slices.Sort(out)
	return out
}

// TestMetricsAfterWorkload runs a known workload against a real berth,
// scrapes /metrics, parses it with the Prometheus text parser and checks
// the counts: requests by route template (never a raw path), method,
// status and, only for the configured pattern, repository; the bytes
// received; the store's blobs, manifests and open upload sessions, which a
// restart counts again to the same values; events, garbage collection and
// retention; and the Go runtime's and the process's metrics.
func TestMetricsAfterWorkload(t *testing.T) {
	dir := t.TempDir()
	config := filepath.Join(dir, "berth.yaml")
	writeTestFile(t, config, `metrics:
  repositories: ["apps/**"]
retention:
  policies:
    - repositories: ["ret/**"]
      keepLast: 1
`)
	data := t.TempDir()
	srv := berthtest.Start(t, berthtest.WithArgs("--config", config), berthtest.WithDataDir(data))
	a := obsAPI{t: t, base: srv.URL}

	// The workload.
	web1, body1 := a.image("apps/web", "one", "v1")
	web2, body2 := a.image("apps/web", "two", "v2")
	other, bodyOther := a.image("other/x", "three", "latest")
	for range 5 {
		a.must(http.StatusOK, http.MethodGet, "/v2/apps/web/manifests/v1", nil, "Accept", ocispec.MediaTypeImageManifest)
	}
	a.must(http.StatusOK, http.MethodGet, "/v2/other/x/manifests/latest", nil, "Accept", ocispec.MediaTypeImageManifest)
	a.must(http.StatusNotFound, http.MethodGet, "/v2/apps/web/manifests/nope", nil)
	a.must(http.StatusNotFound, http.MethodGet, "/no/such/path/"+web1.Encoded(), nil)
	// An upload left open.
	a.must(http.StatusAccepted, http.MethodPost, "/v2/apps/web/blobs/uploads/", nil)
	// Retention keeps the newest of three tags; the untagged manifests
	// stay (garbage collection never removes a manifest for that).
	kept := map[digest.Digest][]byte{web1: body1, other: bodyOther}
	for i := range 3 {
		d, b := a.image("ret/r", fmt.Sprint("ret", i), fmt.Sprint("t", i))
		kept[d] = b
		time.Sleep(10 * time.Millisecond) // distinct push times
	}
	_, ret := a.must(http.StatusOK, http.MethodPost, auth.AdminPrefix+"retention?dryRun=false", nil)
	var retRep struct {
		Tags []any `json:"tags"`
	}
	if err := json.Unmarshal(ret, &retRep); err != nil || len(retRep.Tags) != 2 {
		t.Fatalf("retention: %s, %v", ret, err)
	}
	// v2's manifest is deleted, then collected with the blobs only it used.
	a.must(http.StatusAccepted, http.MethodDelete, "/v2/apps/web/manifests/"+web2.String(), nil)
	_, gcBody := a.must(http.StatusOK, http.MethodPost, admin.GCPath+"?grace=0s", nil)
	var gcRes admin.GCResult
	if err := json.Unmarshal(gcBody, &gcRes); err != nil {
		t.Fatal(err)
	}

	mfs := a.scrape()
	for _, c := range []struct {
		what   string
		name   string
		labels []string
		want   float64
	}{
		{"GET of a manifest in a repository the pattern names", "berth_http_requests_total",
			[]string{"route", "/v2/{name}/manifests/{reference}", "method", "GET", "code", "200", "repository", "apps/web"}, 5},
		{"GET of a manifest in a repository no pattern names", "berth_http_requests_total",
			[]string{"route", "/v2/{name}/manifests/{reference}", "method", "GET", "code", "200", "repository", ""}, 1},
		{"GET of an unknown tag", "berth_http_requests_total",
			[]string{"route", "/v2/{name}/manifests/{reference}", "method", "GET", "code", "404", "repository", "apps/web"}, 1},
		{"manifest pushes", "berth_http_requests_total",
			[]string{"route", "/v2/{name}/manifests/{reference}", "method", "PUT", "code", "201", "repository", "apps/web"}, 2},
		{"a path no route knows", "berth_http_requests_total",
			[]string{"route", "other", "method", "GET", "code", "404", "repository", ""}, 1},
		{"upload sessions started in apps/web", "berth_http_requests_total",
			[]string{"route", "/v2/{name}/blobs/uploads/", "method", "POST", "code", "202", "repository", "apps/web"}, 5},
		{"latency observations of manifest GETs", "berth_http_request_duration_seconds",
			[]string{"route", "/v2/{name}/manifests/{reference}", "method", "GET"}, 7},
		{"bytes of the manifests pushed to apps/web", "berth_http_received_bytes_total",
			[]string{"route", "/v2/{name}/manifests/{reference}", "method", "PUT", "repository", "apps/web"}, float64(len(body1) + len(body2))},
		{"bytes of the manifests sent from apps/web", "berth_http_sent_bytes_total",
			[]string{"route", "/v2/{name}/manifests/{reference}", "method", "GET", "repository", "apps/web"}, -2},
		{"the scrape itself in flight", "berth_http_requests_in_flight", nil, 1},
		{"open upload sessions", "berth_upload_sessions", nil, 1},
		{"manifest pushes", "berth_events_total", []string{"action", "push"}, 6},
		{"tags set", "berth_events_total", []string{"action", "tag"}, 6},
		{"retention deletions of tags", "berth_retention_deleted_total", []string{"kind", "tag"}, 2},
		{"retention runs", "berth_retention_runs_total", []string{"result", "success"}, 1},
		{"garbage collections", "berth_gc_runs_total", []string{"result", "success"}, 1},
		{"bytes reclaimed", "berth_gc_reclaimed_bytes_total", nil, float64(gcRes.BytesReclaimed)},
		{"blobs removed by gc", "berth_gc_removed_total", []string{"kind", "blob"}, float64(gcRes.BlobsRemoved)},
	} {
		got := metricValue(mfs, c.name, c.labels...)
		switch {
		case c.want == -2 && got <= 0:
			t.Errorf("%s: %s%v = %v, want some", c.what, c.name, c.labels, got)
		case c.want != -2 && got != c.want:
			t.Errorf("%s: %s%v = %v, want %v", c.what, c.name, c.labels, got, c.want)
		}
	}
	if gcRes.BytesReclaimed == 0 || gcRes.BlobsRemoved == 0 {
		t.Errorf("the collection reclaimed nothing: %+v", gcRes)
	}
	if metricValue(mfs, "berth_gc_last_success_timestamp_seconds") < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Error("berth_gc_last_success_timestamp_seconds is not recent")
	}
	// Routes are templates: no label value holds a tag, a digest or a
	// raw path.
	for _, route := range labelValues(mfs, "berth_http_requests_total", "route") {
		if strings.Contains(route, "sha256") || strings.Contains(route, "apps") || strings.Contains(route, "v1") ||
			strings.Contains(route, "/no/such") {
			t.Errorf("route label %q is a raw path", route)
		}
	}
	if repos := labelValues(mfs, "berth_http_requests_total", "repository"); !slices.Equal(repos, []string{"", "apps/web"}) {
		t.Errorf("repository label values %q, want only the pattern's repository and empty", repos)
	}
	for _, name := range []string{"go_goroutines", "go_memstats_heap_alloc_bytes", "process_resident_memory_bytes", "berth_build_info"} {
		if mfs[name] == nil {
			t.Errorf("no %s", name)
		}
	}

	// The store gauges: what the index holds, counted by the decorator
	// through every change, and again from a walk after a restart.
	blobs, blobBytes, manifestBytes := storeContent(t, kept)
	wantStore := func(mfs map[string]*dto.MetricFamily, when string) {
		t.Helper()
		for name, want := range map[string]float64{"berth_store_blobs": float64(blobs), "berth_store_blob_bytes": float64(blobBytes),
			"berth_store_manifests": float64(len(kept)), "berth_store_manifest_bytes": float64(manifestBytes)} {
			if got := metricValue(mfs, name); got != want {
				t.Errorf("%s: %s = %v, want %v", when, name, got, want)
			}
		}
	}
	wantStore(mfs, "after the workload")
	logScrape(t, "after the workload", a)
	before := metricValue(mfs, "berth_store_blob_bytes")
	srv.Stop()
	srv = berthtest.Start(t, berthtest.WithArgs("--config", config), berthtest.WithDataDir(data))
	a.base = srv.URL
	after := a.scrape()
	wantStore(after, "after a restart")
	if got := metricValue(after, "berth_store_blob_bytes"); got != before {
		t.Errorf("berth_store_blob_bytes: %v before a restart, %v after", before, got)
	}
	if got := metricValue(after, "berth_upload_sessions"); got != 1 {
		t.Errorf("after a restart berth_upload_sessions = %v, want 1", got)
	}
}

// storeContent counts the distinct blobs of the manifests kept (each
// manifest, its config and its layers) and their bytes, and the bytes of
// the manifests.
func storeContent(t *testing.T, kept map[digest.Digest][]byte) (blobs int, blobBytes, manifestBytes int64) {
	t.Helper()
	seen := map[digest.Digest]int64{}
	for d, body := range kept {
		var m ocispec.Manifest
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatal(err)
		}
		seen[d] = int64(len(body))
		manifestBytes += int64(len(body))
		seen[m.Config.Digest] = m.Config.Size
		for _, l := range m.Layers {
			seen[l.Digest] = l.Size
		}
	}
	for _, n := range seen {
		blobBytes += n
	}
	return len(seen), blobBytes, manifestBytes
}

// logScrape writes the berth_ part of a scrape to the test log and, when
// BERTH_METRICS_SCRAPE names a file, there, for the report.
func logScrape(t *testing.T, what string, a obsAPI) {
	t.Helper()
	_, body := a.must(http.StatusOK, http.MethodGet, "/metrics", nil)
	var keep []string
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "berth_") || strings.HasPrefix(line, "# HELP berth_") || strings.HasPrefix(line, "# TYPE berth_") {
			if strings.Contains(line, "_bucket{") {
				continue
			}
			keep = append(keep, line)
		}
	}
	t.Logf("scrape of /metrics %s (histogram buckets left out):\n%s", what, strings.Join(keep, "\n"))
	if path := os.Getenv("BERTH_METRICS_SCRAPE"); path != "" {
		if err := os.WriteFile(path, body, 0o644); err != nil {
			t.Error(err)
		}
	}
}

// TestMetricsAuthAndListener: with authentication on, /metrics on the main
// listener asks for an administrator, and counts failed logins, rate
// limited logins and tokens; with metrics.addr it moves to a listener of
// its own, and the main one no longer serves it.
func TestMetricsAuthAndListener(t *testing.T) {
	dir := t.TempDir()
	htpasswd := filepath.Join(dir, "htpasswd")
	berthCLI(t, "admin-pw\n", nil, "user", "add", "root", "--htpasswd", htpasswd, "--password-stdin")
	berthCLI(t, "user-pw\n", nil, "user", "add", "alice", "--htpasswd", htpasswd, "--password-stdin")
	config := filepath.Join(dir, "berth.yaml")
	writeTestFile(t, config, fmt.Sprintf(`auth:
  htpasswd: %s
  admins: [root]
  login:
    maxFailures: 2
    window: 1h
`, htpasswd))
	srv := berthtest.Start(t, berthtest.WithArgs("--config", config))
	anon := obsAPI{t: t, base: srv.URL}
	resp, _ := anon.do(http.MethodGet, "/metrics", nil)
	if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer ") {
		t.Errorf("anonymous scrape: %d %q, want 401 with a challenge", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	alice := obsAPI{t: t, base: srv.URL, user: "alice", pass: "user-pw"}
	alice.must(http.StatusForbidden, http.MethodGet, "/metrics", nil)
	// Probes need no credentials, even with authentication on.
	anon.must(http.StatusOK, http.MethodGet, "/healthz", nil)
	anon.must(http.StatusOK, http.MethodGet, "/readyz", nil)
	// Two wrong passwords, then the limit refuses a third unchecked.
	for range 2 {
		obsAPI{t: t, base: srv.URL, user: "alice", pass: "wrong"}.must(http.StatusUnauthorized, http.MethodGet, "/auth/token?service=berth", nil)
	}
	obsAPI{t: t, base: srv.URL, user: "alice", pass: "wrong"}.must(http.StatusTooManyRequests, http.MethodGet, "/auth/token?service=berth", nil)
	root := obsAPI{t: t, base: srv.URL, user: "root", pass: "admin-pw"}
	root.must(http.StatusOK, http.MethodGet, "/auth/token?service=berth&scope=repository:x:pull", nil)
	anon.must(http.StatusOK, http.MethodGet, "/auth/token?service=berth", nil)
	mfs := root.scrape()
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"berth_auth_login_failures_total", nil, 2},
		{"berth_auth_login_rate_limited_total", nil, 1},
		{"berth_auth_tokens_issued_total", []string{"type", "access", "subject", "user"}, 1},
		{"berth_auth_tokens_issued_total", []string{"type", "access", "subject", "anonymous"}, 1},
		{"berth_http_requests_total", []string{"route", "/metrics", "method", "GET", "code", "401", "repository", ""}, 1},
	} {
		if got := metricValue(mfs, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	srv.Stop()

	// A listener of its own.
	writeTestFile(t, config, "metrics:\n  addr: 127.0.0.1:0\n")
	srv = berthtest.Start(t, berthtest.WithArgs("--config", config))
	addr := ""
	eventually(t, "the metrics listener's address in the log", func() bool {
		m := regexp.MustCompile(`msg="metrics listening" addr=(\S+)`).FindStringSubmatch(srv.Logs())
		if m != nil {
			addr = m[1]
		}
		return m != nil
	})
	obsAPI{t: t, base: srv.URL}.must(http.StatusNotFound, http.MethodGet, "/metrics", nil)
	if mfs := (obsAPI{t: t, base: "http://" + addr}).scrape(); mfs["berth_http_requests_total"] == nil {
		t.Error("the metrics listener serves no request counts")
	}
}

// TestReadinessDuringShutdown: on SIGTERM a berth with a shutdown delay
// answers /readyz 503 at once, naming the shutdown, while /healthz and
// requests still succeed, then stops cleanly.
func TestReadinessDuringShutdown(t *testing.T) {
	dir := t.TempDir()
	config := filepath.Join(dir, "berth.yaml")
	writeTestFile(t, config, "http:\n  shutdownDelay: 3s\n")
	srv := berthtest.Start(t, berthtest.WithArgs("--config", config))
	a := obsAPI{t: t, base: srv.URL}
	_, body := a.must(http.StatusOK, http.MethodGet, "/readyz", nil)
	var ready struct {
		Status string            `json:"status"`
		Checks map[string]string `json:"checks"`
	}
	if err := json.Unmarshal(body, &ready); err != nil || ready.Status != "ok" || ready.Checks["index"] != "ok" || ready.Checks["blobs"] != "ok" {
		t.Fatalf("/readyz before shutdown: %s", body)
	}
	// A connection of its own, kept alive, as a load balancer's probe.
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	get := func(path string) (int, []byte) {
		resp, err := client.Get(srv.URL + path)
		if err != nil {
			t.Fatalf("GET %s during shutdown: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	get("/readyz")
	var wg sync.WaitGroup
	wg.Go(srv.Stop)
	eventually(t, "/readyz turning 503", func() bool {
		code, b := get("/readyz")
		if code != http.StatusServiceUnavailable {
			return false
		}
		if err := json.Unmarshal(b, &ready); err != nil || ready.Checks["server"] != "shutting down" || ready.Status != "unavailable" {
			t.Errorf("/readyz during shutdown: %s", b)
		}
		return true
	})
	if code, _ := get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz during the shutdown delay: %d", code)
	}
	if code, _ := get("/v2/"); code != http.StatusOK {
		t.Errorf("/v2/ during the shutdown delay: %d", code)
	}
	wg.Wait()
}

// TestRequestLogs: each request gets one access line with its request id
// (the client's X-Request-Id kept, or one made, and returned), method,
// route, repository, status, bytes, duration, identity and client address;
// no line holds a password, a token, a cookie or a secret query value; and
// log.access false keeps only the lines of server failures.
func TestRequestLogs(t *testing.T) {
	dir := t.TempDir()
	htpasswd := filepath.Join(dir, "htpasswd")
	berthCLI(t, "pw-SECRET-1\n", nil, "user", "add", "alice", "--htpasswd", htpasswd, "--password-stdin")
	config := filepath.Join(dir, "berth.yaml")
	writeTestFile(t, config, fmt.Sprintf("auth:\n  htpasswd: %s\n  admins: [alice]\n", htpasswd))
	srv := berthtest.Start(t, berthtest.WithArgs("--config", config))
	alice := obsAPI{t: t, base: srv.URL, user: "alice", pass: "pw-SECRET-1"}

	resp, _ := alice.must(http.StatusOK, http.MethodGet, "/v2/", nil, "X-Request-Id", "req-42.alpha")
	if got := resp.Header.Get("X-Request-Id"); got != "req-42.alpha" {
		t.Errorf("X-Request-Id answered %q, want the client's", got)
	}
	resp, _ = alice.must(http.StatusOK, http.MethodGet, "/v2/", nil)
	made := resp.Header.Get("X-Request-Id")
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(made) {
		t.Errorf("X-Request-Id made %q, want 32 hex digits", made)
	}
	// An id a log line cannot hold is replaced.
	resp, _ = alice.must(http.StatusOK, http.MethodGet, "/v2/", nil, "X-Request-Id", strings.Repeat("x", 200))
	if got := resp.Header.Get("X-Request-Id"); len(got) != 32 {
		t.Errorf("an overlong X-Request-Id came back as %q", got)
	}
	// Secrets in every place a client puts them.
	_, tok := alice.must(http.StatusOK, http.MethodGet, "/auth/token?service=berth&scope=repository:apps/web:push,pull", nil)
	var token struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(tok, &token); err != nil || token.Token == "" {
		t.Fatalf("token: %s", tok)
	}
	bearer := obsAPI{t: t, base: srv.URL}
	bearer.must(http.StatusNotFound, http.MethodGet, "/v2/apps/web/manifests/latest?token=query-SECRET-2&password=query-SECRET-3", nil,
		"Authorization", "Bearer "+token.Token, "Cookie", "berth_session=cookie-SECRET-4", "X-Request-Id", "req-manifest")
	obsAPI{t: t, base: srv.URL, user: "alice", pass: "wrong-SECRET-5"}.must(http.StatusUnauthorized, http.MethodGet, "/v2/", nil)
	alice.image("apps/web", "logged", "v1")
	srv.Stop()

	logs := srv.Logs()
	for _, secret := range []string{"SECRET", token.Token} {
		if strings.Contains(logs, secret) {
			t.Errorf("the log holds %q:\n%s", secret, logs)
		}
	}
	lines := map[string]string{}
	for _, line := range strings.Split(logs, "\n") {
		if m := regexp.MustCompile(`msg=request request_id=(\S+)`).FindStringSubmatch(line); m != nil {
			lines[m[1]] = line
		}
	}
	for id, want := range map[string][]string{
		"req-42.alpha": {"level=INFO", "method=GET", "route=/v2/", "status=200", "identity=user:alice", "client=127.0.0.1", "duration="},
		made:           {"route=/v2/", "status=200"},
		"req-manifest": {"method=GET", "route=/v2/{name}/manifests/{reference}", "path=/v2/apps/web/manifests/latest ",
			"repository=apps/web", "status=404", "identity=user:alice", "sent="},
	} {
		line, ok := lines[id]
		if !ok {
			t.Errorf("no access line for request %s", id)
			continue
		}
		for _, w := range want {
			if !strings.Contains(line, w) {
				t.Errorf("access line of %s lacks %q: %s", id, w, line)
			}
		}
	}
	if n := strings.Count(logs, "msg=request "); n < 10 {
		t.Errorf("%d access lines for at least 10 requests", n)
	}

	// log.access: false.
	writeTestFile(t, config, "log:\n  access: false\n")
	srv = berthtest.Start(t, berthtest.WithArgs("--config", config))
	obsAPI{t: t, base: srv.URL}.must(http.StatusOK, http.MethodGet, "/v2/", nil, "X-Request-Id", "quiet")
	srv.Stop()
	if strings.Contains(srv.Logs(), "request_id=quiet") {
		t.Errorf("log.access false logged a successful request:\n%s", srv.Logs())
	}
}
