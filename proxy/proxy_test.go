package proxy_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/proxy"
	"github.com/berth-registry/berth/remote"
	"github.com/berth-registry/berth/storage"
)

// TestConfigValidate: every upstream setting that cannot work is refused.
func TestConfigValidate(t *testing.T) {
	up := func(name, ns string) proxy.UpstreamConfig {
		return proxy.UpstreamConfig{Name: name, Config: remote.Config{URL: "https://registry.example.com"}, Namespace: ns}
	}
	for _, tc := range []struct {
		name string
		ups  []proxy.UpstreamConfig
		want string
	}{
		{"two upstreams", []proxy.UpstreamConfig{up("a", "hub"), up("b", "quay.io")}, ""},
		{"no name", []proxy.UpstreamConfig{up("", "hub")}, "name"},
		{"a name with a quote", []proxy.UpstreamConfig{up(`a"b`, "hub")}, "name"},
		{"a name twice", []proxy.UpstreamConfig{up("a", "hub"), up("a", "quay")}, "twice"},
		{"no namespace", []proxy.UpstreamConfig{up("a", "")}, "namespace"},
		{"an upper-case namespace", []proxy.UpstreamConfig{up("a", "Hub")}, "namespace"},
		{"one namespace twice", []proxy.UpstreamConfig{up("a", "hub"), up("b", "hub/")}, "overlaps"},
		{"a namespace inside another", []proxy.UpstreamConfig{up("a", "hub"), up("b", "hub/quay")}, "overlaps"},
		{"a bad url", []proxy.UpstreamConfig{{Name: "a", Namespace: "hub", Config: remote.Config{URL: "ftp://x"}}}, "url"},
		{"a negative ttl", []proxy.UpstreamConfig{{Name: "a", Namespace: "hub", Config: remote.Config{URL: "https://x"}, TagTTL: -time.Second}}, "tagTTL"},
		{"two defaults", func() []proxy.UpstreamConfig {
			a, b := up("a", "hub"), up("b", "quay")
			a.Default, b.Default = true, true
			return []proxy.UpstreamConfig{a, b}
		}(), "default"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := proxy.Config{Upstreams: tc.ups}.Validate()
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("Validate = %v; want an error about %q", err, tc.want)
			}
		})
	}
}

// TestRoute: which requests reach which repository: by namespace, by
// containerd's ns parameter, by the default upstream for names the
// registry does not hold (pulls only), and nothing else.
func TestRoute(t *testing.T) {
	u := startUpstream(t)
	m := startMirror(t, u, time.Hour)
	local := u.push(t, "local/app", "v1", 10) // pushed into the upstream's store: any content will do
	_ = local
	// The mirror holds a repository of its own, local/app.
	img := u.push(t, "seed", "v1", 10)
	if _, err := m.svc.PutBlob(context.Background(), "local/app", img.ld, bytes.NewReader(img.layer), int64(len(img.layer))); err != nil {
		t.Fatal(err)
	}
	var seen string
	h := m.cache.Route(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { seen = r.URL.Path }))
	for _, tc := range []struct {
		method, target, want string
	}{
		{"GET", "/v2/hub/library/alpine/manifests/3.20", "/v2/hub/library/alpine/manifests/3.20"},
		{"GET", "/v2/library/alpine/manifests/3.20?ns=docker.io", "/v2/hub/library/alpine/manifests/3.20"},
		{"GET", "/v2/library/alpine/blobs/sha256:" + strings.Repeat("a", 64) + "?ns=DOCKER.IO", "/v2/hub/library/alpine/blobs/sha256:" + strings.Repeat("a", 64)},
		{"HEAD", "/v2/library/alpine/manifests/3.20?ns=hub", "/v2/hub/library/alpine/manifests/3.20"},
		{"GET", "/v2/library/alpine/manifests/3.20?ns=" + strings.TrimPrefix(u.srv.URL, "http://"), "/v2/hub/library/alpine/manifests/3.20"},
		{"GET", "/v2/hub/library/alpine/manifests/3.20?ns=docker.io", "/v2/hub/library/alpine/manifests/3.20"},
		{"GET", "/v2/library/alpine/manifests/3.20?ns=quay.io", "/v2/library/alpine/manifests/3.20"},
		{"GET", "/v2/library/alpine/manifests/3.20", "/v2/hub/library/alpine/manifests/3.20"},
		{"HEAD", "/v2/library/alpine/tags/list", "/v2/hub/library/alpine/tags/list"},
		{"PUT", "/v2/library/alpine/manifests/3.20", "/v2/library/alpine/manifests/3.20"},
		{"POST", "/v2/library/alpine/blobs/uploads/", "/v2/library/alpine/blobs/uploads/"},
		{"GET", "/v2/local/app/manifests/v1", "/v2/local/app/manifests/v1"},
		{"GET", "/v2/", "/v2/"},
		{"GET", "/v2/_catalog", "/v2/_catalog"},
		{"GET", "/v2/_berth/search?q=x", "/v2/_berth/search"},
		{"GET", "/ui/", "/ui/"},
	} {
		seen = ""
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(tc.method, tc.target, nil))
		if seen != tc.want {
			t.Errorf("%s %s reached %s; want %s", tc.method, tc.target, seen, tc.want)
		}
	}
}

// TestPullThrough: a pull through the mirror fetches the manifest and the
// blobs once, keeps them, and says how each was served.
func TestPullThrough(t *testing.T) {
	u := startUpstream(t)
	m := startMirror(t, u, time.Hour)
	img := u.push(t, "team/app", "v1", 300<<10)

	a := m.do(t, "GET", "/v2/hub/team/app/manifests/v1")
	if a.status != 200 || !bytes.Equal(a.body, img.body) || a.hdr.Get("Docker-Content-Digest") != string(img.digest) {
		t.Fatalf("manifest through the mirror: %d %s", a.status, a.body)
	}
	if cs := a.hdr.Get("Cache-Status"); cs != "berth; fwd=miss; stored" {
		t.Errorf("first manifest pull: Cache-Status %q", cs)
	}
	if cs := m.do(t, "GET", "/v2/hub/team/app/manifests/v1").hdr.Get("Cache-Status"); !strings.HasPrefix(cs, "berth; hit; ttl=") {
		t.Errorf("second manifest pull: Cache-Status %q; want a hit within the ttl", cs)
	}
	if cs := m.do(t, "GET", "/v2/hub/team/app/manifests/"+string(img.digest)).hdr.Get("Cache-Status"); cs != "berth; hit" {
		t.Errorf("manifest by digest: Cache-Status %q; want a hit", cs)
	}
	blob := "/v2/hub/team/app/blobs/" + string(img.ld)
	if h := m.do(t, "HEAD", blob); h.status != 200 || h.hdr.Get("Content-Length") != "307200" {
		t.Errorf("HEAD of an uncached blob: %d, length %s", h.status, h.hdr.Get("Content-Length"))
	}
	if n := u.count("GET", "/v2/team/app/blobs/"+string(img.ld)); n != 0 {
		t.Errorf("a HEAD fetched the blob (%d GETs)", n)
	}
	a = m.do(t, "GET", blob)
	if a.status != 200 || !bytes.Equal(a.body, img.layer) || a.hdr.Get("Cache-Status") != "berth; fwd=miss; stored" {
		t.Fatalf("blob through the mirror: %d, %d bytes, Cache-Status %q", a.status, len(a.body), a.hdr.Get("Cache-Status"))
	}
	// The last byte goes to clients once the content hashes right, while
	// it is made durable: then it is a hit.
	waitStored(t, m, "hub/team/app", img.ld)
	a = m.do(t, "GET", blob)
	if a.status != 200 || !bytes.Equal(a.body, img.layer) || a.hdr.Get("Cache-Status") != "berth; hit" {
		t.Errorf("blob again: %d, Cache-Status %q", a.status, a.hdr.Get("Cache-Status"))
	}
	if n := u.count("GET", "/v2/team/app/blobs/"+string(img.ld)); n != 1 {
		t.Errorf("the upstream served the blob %d times; want once", n)
	}
	// The default upstream serves the name without its namespace.
	if a := m.do(t, "GET", "/v2/team/app/manifests/v1"); a.status != 200 || !bytes.Equal(a.body, img.body) {
		t.Errorf("through the default upstream: %d %s", a.status, a.body)
	}
	// Writes into the namespace are refused.
	if a := m.doBody(t, "PUT", "/v2/hub/team/app/manifests/v2", img.body); a.status != http.StatusForbidden || a.code() != "DENIED" {
		t.Errorf("a push into the namespace: %d %s; want 403 DENIED", a.status, a.body)
	}
	if a := m.do(t, "POST", "/v2/hub/team/app/blobs/uploads/"); a.status != http.StatusForbidden {
		t.Errorf("an upload into the namespace: %d %s; want 403", a.status, a.body)
	}
}

// TestFillShared: clients asking at once for one missing blob share one
// upstream GET, and each gets every byte, read as it arrives.
func TestFillShared(t *testing.T) {
	u := startUpstream(t)
	m := startMirror(t, u, time.Hour)
	img := u.push(t, "team/app", "v1", 3<<20)
	gate := make(chan struct{})
	u.set(func(u *upstream) { u.gate = gate })
	const clients = 8
	type got struct {
		status int
		cache  string
		body   []byte
		err    error
	}
	heads := make(chan struct{}, clients)
	results := make(chan got, clients)
	for range clients {
		go func() {
			resp, err := http.Get(m.srv.URL + "/v2/hub/team/app/blobs/" + string(img.ld))
			if err != nil {
				results <- got{err: err}
				heads <- struct{}{}
				return
			}
			defer resp.Body.Close()
			// The first bytes arrive while the upstream holds the rest.
			first := make([]byte, 1024)
			_, err = io.ReadFull(resp.Body, first)
			heads <- struct{}{}
			if err != nil {
				results <- got{err: err}
				return
			}
			rest, err := io.ReadAll(resp.Body)
			results <- got{status: resp.StatusCode, cache: resp.Header.Get("Cache-Status"), body: append(first, rest...), err: err}
		}()
	}
	for range clients {
		select {
		case <-heads:
		case <-time.After(30 * time.Second):
			t.Fatal("clients did not get their first bytes while the upstream held the blob back")
		}
	}
	close(gate)
	collapsed := 0
	for range clients {
		r := <-results
		if r.err != nil || r.status != 200 || !bytes.Equal(r.body, img.layer) {
			t.Errorf("a client: status %d, %d bytes, %v", r.status, len(r.body), r.err)
		}
		if r.cache == "berth; fwd=miss; collapsed" {
			collapsed++
		}
	}
	if n := u.count("GET", "/v2/team/app/blobs/"+string(img.ld)); n != 1 {
		t.Errorf("%d clients caused %d upstream GETs; want 1", clients, n)
	}
	if collapsed != clients-1 {
		t.Errorf("%d clients said they joined a fetch in progress; want %d", collapsed, clients-1)
	}
}

// TestFillVerifies: content that does not hash to its digest is never
// given whole to a client (the last byte is held back until it verifies)
// and never stored; the next pull fetches again.
func TestFillVerifies(t *testing.T) {
	u := startUpstream(t)
	m := startMirror(t, u, time.Hour)
	img := u.push(t, "team/app", "v1", 1<<20)
	u.set(func(u *upstream) { u.corrupt[img.ld] = true })
	blob := "/v2/hub/team/app/blobs/" + string(img.ld)
	a := m.do(t, "GET", blob)
	if a.err == nil && len(a.body) == len(img.layer) {
		t.Fatalf("a client received all %d bytes of a blob that does not hash to its digest", len(a.body))
	}
	if !bytes.Equal(a.body, img.layer[:min(len(a.body), len(img.layer)/2)]) && len(a.body) <= len(img.layer)/2 {
		t.Errorf("the bytes before the corruption differ")
	}
	if _, err := m.svc.StatBlob(context.Background(), "hub/team/app", img.ld); !errors.Is(err, storage.ErrBlobUnknown) {
		t.Errorf("the corrupt blob is in the store: %v", err)
	}
	u.set(func(u *upstream) { delete(u.corrupt, img.ld) })
	if a := m.do(t, "GET", blob); a.status != 200 || !bytes.Equal(a.body, img.layer) {
		t.Errorf("after the upstream mends: %d, %d bytes, %v", a.status, len(a.body), a.err)
	}
	if n := u.count("GET", "/v2/team/app/blobs/"+string(img.ld)); n != 2 {
		t.Errorf("%d upstream GETs; want 2 (the bad one, then the good one)", n)
	}
}

// TestFillOutlivesClient: a client that goes away does not stop the
// fetch: the blob ends up whole in the store.
func TestFillOutlivesClient(t *testing.T) {
	u := startUpstream(t)
	m := startMirror(t, u, time.Hour)
	img := u.push(t, "team/app", "v1", 2<<20)
	gate := make(chan struct{})
	u.set(func(u *upstream) { u.gate = gate })
	ctx, cancel := context.WithCancel(t.Context())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, m.srv.URL+"/v2/hub/team/app/blobs/"+string(img.ld), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 1024)); err != nil {
		t.Fatal(err)
	}
	cancel()
	resp.Body.Close()
	close(gate)
	waitStored(t, m, "hub/team/app", img.ld)
	a := m.do(t, "GET", "/v2/hub/team/app/blobs/"+string(img.ld))
	if !bytes.Equal(a.body, img.layer) || a.hdr.Get("Cache-Status") != "berth; hit" {
		t.Errorf("the abandoned blob: %d bytes, Cache-Status %q", len(a.body), a.hdr.Get("Cache-Status"))
	}
}

// TestUpstreamFailures: what a client is told when the upstream fails,
// for content never cached (the specification's error, with the
// upstream's reason) and for a cached tag (the cached copy, marked
// stale).
func TestUpstreamFailures(t *testing.T) {
	for _, tc := range []struct {
		name       string
		status     int // the upstream's; 0: unreachable
		uncached   int
		code       string
		staleFresh bool // a cached tag is served stale
	}{
		{"failing", http.StatusServiceUnavailable, http.StatusBadGateway, "UNKNOWN", true},
		{"limiting", http.StatusTooManyRequests, http.StatusTooManyRequests, "TOO_MANY_REQUESTS", true},
		{"refusing Berth's credentials", http.StatusForbidden, http.StatusForbidden, "DENIED", true},
		{"unreachable", 0, http.StatusBadGateway, "UNKNOWN", true},
		{"saying it has no such thing", http.StatusNotFound, http.StatusNotFound, "MANIFEST_UNKNOWN", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := startUpstream(t)
			m := startMirror(t, u, 0) // every pull of a tag asks
			img := u.push(t, "team/app", "v1", 1000)
			if a := m.do(t, "GET", "/v2/hub/team/app/manifests/v1"); a.status != 200 {
				t.Fatalf("caching the tag: %d %s", a.status, a.body)
			}
			if tc.status == 0 {
				u.srv.Close()
			} else {
				u.set(func(u *upstream) { u.fail = tc.status })
			}
			a := m.do(t, "GET", "/v2/hub/team/app/manifests/never")
			if a.status != tc.uncached || a.code() != tc.code {
				t.Errorf("never cached: %d %s; want %d %s", a.status, a.body, tc.uncached, tc.code)
			}
			if tc.status != 0 && !strings.Contains(string(a.body), "upstream up") {
				t.Errorf("the error does not name the upstream: %s", a.body)
			}
			a = m.do(t, "GET", "/v2/hub/team/app/manifests/v1")
			switch {
			case tc.staleFresh && (a.status != 200 || !bytes.Equal(a.body, img.body) || !strings.Contains(a.hdr.Get("Cache-Status"), "fwd=stale")):
				t.Errorf("cached tag: %d, Cache-Status %q; want the cached copy, marked stale", a.status, a.hdr.Get("Cache-Status"))
			case !tc.staleFresh && a.status != http.StatusNotFound:
				t.Errorf("a tag the upstream no longer has: %d; want 404", a.status)
			}
			if a := m.do(t, "GET", "/v2/hub/team/app/manifests/"+string(img.digest)); a.status != 200 {
				t.Errorf("cached digest: %d", a.status)
			}
		})
	}
}

// TestTagTTL: a tag is trusted for tagTTL, then checked with a HEAD; a
// move upstream is seen after it and not before.
func TestTagTTL(t *testing.T) {
	u := startUpstream(t)
	m := startMirror(t, u, time.Minute)
	first := u.push(t, "team/app", "latest", 100)
	get := func() digest.Digest {
		t.Helper()
		a := m.do(t, "GET", "/v2/hub/team/app/manifests/latest")
		if a.status != 200 {
			t.Fatalf("pull: %d %s", a.status, a.body)
		}
		return digest.Digest(a.hdr.Get("Docker-Content-Digest"))
	}
	if d := get(); d != first.digest {
		t.Fatalf("first pull: %s", d)
	}
	second := u.push(t, "team/app", "latest", 100)
	heads := u.count("HEAD", "/v2/team/app/manifests/latest")
	m.clock.advance(59 * time.Second)
	if d := get(); d != first.digest {
		t.Errorf("within tagTTL: %s; want the cached %s", d, first.digest)
	}
	if n := u.count("HEAD", "/v2/team/app/manifests/latest"); n != heads {
		t.Errorf("within tagTTL the upstream was asked %d times", n-heads)
	}
	m.clock.advance(2 * time.Second)
	if d := get(); d != second.digest {
		t.Errorf("after tagTTL: %s; want the moved %s", d, second.digest)
	}
	if n := u.count("HEAD", "/v2/team/app/manifests/latest"); n != heads+1 {
		t.Errorf("after tagTTL the upstream was asked %d times; want one HEAD", n-heads)
	}
	moves, _, err := m.svc.TagHistory(context.Background(), "hub/team/app", "latest", 0, 10)
	if err != nil || len(moves) != 2 || moves[0].Action != storage.MoveMirror {
		t.Errorf("history of the mirrored tag: %+v, %v; want two mirror moves", moves, err)
	}
}

// waitStored waits until the mirror's store holds blob d in repo.
func waitStored(t *testing.T, m *mirror, repo string, d digest.Digest) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := m.svc.StatBlob(context.Background(), repo, d); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("blob %s was not stored within 30 s", d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPrefetch: with prefetch, the GET of an image manifest fetches its
// config and layers, once, before any client asks; without it, a manifest
// GET fetches no blob, and a HEAD never prefetches.
func TestPrefetch(t *testing.T) {
	u := startUpstream(t)
	plain := startMirror(t, u, time.Hour)
	img := u.push(t, "team/app", "v1", 2<<20)
	if a := plain.do(t, "GET", "/v2/hub/team/app/manifests/v1"); a.status != 200 {
		t.Fatalf("manifest: %d", a.status)
	}
	time.Sleep(100 * time.Millisecond)
	if n := u.count("GET", "/v2/team/app/blobs/"+string(img.ld)); n != 0 {
		t.Errorf("without prefetch a manifest GET fetched the layer %d times", n)
	}

	m := startMirrorWith(t, u, func(uc *proxy.UpstreamConfig) { uc.Prefetch = true })
	if a := m.do(t, "HEAD", "/v2/hub/team/app/manifests/v1"); a.status != 200 {
		t.Fatalf("HEAD of the manifest: %d", a.status)
	}
	time.Sleep(100 * time.Millisecond)
	if n := u.count("GET", "/v2/team/app/blobs/"+string(img.ld)); n != 0 {
		t.Errorf("a HEAD prefetched the layer (%d GETs)", n)
	}
	if a := m.do(t, "GET", "/v2/hub/team/app/manifests/v1"); a.status != 200 {
		t.Fatalf("manifest: %d", a.status)
	}
	waitStored(t, m, "hub/team/app", img.ld)
	waitStored(t, m, "hub/team/app", img.config.Digest)
	a := m.do(t, "GET", "/v2/hub/team/app/blobs/"+string(img.ld))
	if !bytes.Equal(a.body, img.layer) || a.hdr.Get("Cache-Status") != "berth; hit" {
		t.Errorf("the prefetched layer: %d bytes, Cache-Status %q", len(a.body), a.hdr.Get("Cache-Status"))
	}
	if n := u.count("GET", "/v2/team/app/blobs/"+string(img.ld)); n != 1 {
		t.Errorf("the layer was fetched %d times; want once", n)
	}
}

// TestFillResumes: an upstream connection that breaks half way is resumed
// with a Range request for the rest, and the client gets every byte.
func TestFillResumes(t *testing.T) {
	u := startUpstream(t)
	m := startMirror(t, u, time.Hour)
	img := u.push(t, "team/app", "v1", 5<<20+3)
	u.set(func(u *upstream) { u.cut[img.ld] = 3<<20 + 1 })
	a := m.do(t, "GET", "/v2/hub/team/app/blobs/"+string(img.ld))
	if a.err != nil || !bytes.Equal(a.body, img.layer) {
		t.Fatalf("after a broken upstream connection: %d bytes, %v", len(a.body), a.err)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	// The rest from where the broken connection stopped (what the
	// upstream flushed before it broke: all of it, on loopback).
	var from int
	if len(u.ranges) != 2 || u.ranges[0] != "" {
		t.Fatalf("the upstream's blob GETs asked for %q; want the whole blob, then a range", u.ranges)
	}
	if _, err := fmt.Sscanf(u.ranges[1], "bytes=%d-", &from); err != nil || from <= 0 || from > 3<<20+1 {
		t.Errorf("the second GET asked for %q; want the rest from at most %d", u.ranges[1], 3<<20+1)
	}
}
