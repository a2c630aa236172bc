package distribution_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/distribution"
	"github.com/berth-registry/berth/storage"
)

const revision = "org.opencontainers.image.revision"

// denyRepos is an Access that refuses every action on some repositories.
type denyRepos map[string]bool

func (d denyRepos) Allowed(_ context.Context, repo, _ string) bool { return !d[repo] }

func (d denyRepos) Granted(_ context.Context, repo, _ string) bool { return !d[repo] }

// searchResult is a result of GET /v2/_berth/search, as a client reads it.
type searchResult = storage.SearchResult

// pushAnnotated pushes an image whose manifest carries annotations and
// whose config carries labels, under ref (empty: by digest).
func (e *env) pushAnnotated(repo, ref, seed string, annotations, labels map[string]string) digest.Digest {
	e.t.Helper()
	cfg := mustJSON(e.t, map[string]any{"architecture": "amd64", "os": "linux", "seed": seed,
		"created": "2024-02-03T04:05:06Z", "config": map[string]any{"Labels": labels}})
	e.pushBlob(repo, cfg)
	body := mustJSON(e.t, ocispec.Manifest{
		Versioned:   specs.Versioned{SchemaVersion: 2},
		MediaType:   ocispec.MediaTypeImageManifest,
		Config:      descriptor(ocispec.MediaTypeImageConfig, cfg),
		Layers:      []ocispec.Descriptor{},
		Annotations: annotations,
	})
	return e.pushManifest(repo, ref, ocispec.MediaTypeImageManifest, body)
}

// searchAll follows the pages of a search and returns every result.
func (e *env) searchAll(query url.Values) []searchResult {
	e.t.Helper()
	var all []searchResult
	path := "/v2/_berth/search?" + query.Encode()
	linkRE := regexp.MustCompile(`^<([^>]+)>; rel="next"$`)
	for pages := 0; path != ""; pages++ {
		if pages > 100 {
			e.t.Fatal("search pagination does not end")
		}
		r := e.do(http.MethodGet, path, nil)
		wantStatus(e.t, r, http.StatusOK)
		wantHeader(e.t, r, "Content-Type", "application/json")
		var body struct {
			Results []searchResult `json:"results"`
		}
		decode(e.t, r.Body, &body)
		if body.Results == nil {
			e.t.Fatalf("results is not a list: %s", r.Body)
		}
		all = append(all, body.Results...)
		path = ""
		if link := r.Header.Get("Link"); link != "" {
			m := linkRE.FindStringSubmatch(link)
			if m == nil {
				e.t.Fatalf("Link = %q", link)
			}
			path = m[1]
		}
	}
	return all
}

func keys(rs []searchResult) []string {
	out := []string{}
	for _, r := range rs {
		out = append(out, r.Repository+"@"+string(r.Digest))
	}
	return out
}

func TestSearchEndpoint(t *testing.T) {
	e := newEnv(t, distribution.Options{Access: denyRepos{"secret/app": true}})
	sha := strings.Repeat("ab", 20)
	web := e.pushAnnotated("apps/web", "production", "web", map[string]string{revision: sha}, map[string]string{"team": "web"})
	e.pushManifest("apps/web", "v1.0.0", ocispec.MediaTypeImageManifest, e.do(http.MethodGet, "/v2/apps/web/manifests/"+string(web), nil,
		"Accept", ocispec.MediaTypeImageManifest).Body)
	var want []string
	want = append(want, "apps/web@"+string(web))
	for i := range 4 {
		repo := fmt.Sprintf("apps/svc%d", i)
		d := e.pushAnnotated(repo, "", fmt.Sprint("svc", i), map[string]string{revision: sha}, nil)
		want = append(want, repo+"@"+string(d))
	}
	e.pushAnnotated("apps/other", "", "other", map[string]string{revision: "other"}, nil)
	e.pushAnnotated("secret/app", "production", "secret", map[string]string{revision: sha}, nil)
	sort.Strings(want)

	q := url.Values{"annotation": {revision + "=" + sha}}
	got := keys(e.searchAll(q))
	if !slices.Equal(got, want) {
		t.Errorf("by revision: %v, want %v (secret/app hidden)", got, want)
	}
	q.Set("n", "2")
	if got := keys(e.searchAll(q)); !slices.Equal(got, want) {
		t.Errorf("by revision, pages of 2: %v, want %v", got, want)
	}

	// Which digest apps/web:production names, which commit built it, when.
	res := e.searchAll(url.Values{"repository": {"apps/web"}, "tag": {"production"}})
	if len(res) != 1 {
		t.Fatalf("apps/web:production: %+v", res)
	}
	r := res[0]
	if r.Digest != web || r.Annotations[revision] != sha || !r.Created.Equal(time.Date(2024, 2, 3, 4, 5, 6, 0, time.UTC)) ||
		!slices.Equal(r.Tags, []string{"production", "v1.0.0"}) || r.Labels["team"] != "web" || r.MediaType != ocispec.MediaTypeImageManifest {
		t.Errorf("apps/web:production = %+v", r)
	}
	if res := e.searchAll(url.Values{"repository": {"secret/app"}}); len(res) != 0 {
		t.Errorf("hidden repository searched: %+v", res)
	}
	if got := e.searchAll(url.Values{"label": {"team=web"}, "repository": {"apps/**"}}); len(got) != 1 || got[0].Digest != web {
		t.Errorf("by label under apps/: %+v", got)
	}
	if got := e.searchAll(url.Values{"created.after": {"2024-02-03T04:05:07Z"}}); len(got) != 0 {
		t.Errorf("created after every image: %v", keys(got))
	}
	if got := e.searchAll(url.Values{"created.before": {"2024-02-03T04:05:07+00:00"}, "repository": {"apps/other"}}); len(got) != 1 {
		t.Errorf("created before: %v", keys(got))
	}
}

func TestSearchBadParameters(t *testing.T) {
	e := newEnv(t, distribution.Options{})
	for _, c := range []struct {
		query  string
		status int
		code   string
	}{
		{"annotation=novalue", http.StatusBadRequest, "UNSUPPORTED"},
		{"annotation==v", http.StatusBadRequest, "UNSUPPORTED"},
		{"annotation=k=1&annotation=k=2", http.StatusBadRequest, "UNSUPPORTED"},
		{"label=x", http.StatusBadRequest, "UNSUPPORTED"},
		{"created.after=yesterday", http.StatusBadRequest, "UNSUPPORTED"},
		{"created.before=2024-01-01", http.StatusBadRequest, "UNSUPPORTED"},
		{"n=-1", http.StatusBadRequest, "UNSUPPORTED"},
		{"n=many", http.StatusBadRequest, "UNSUPPORTED"},
		{"last=apps/web", http.StatusBadRequest, "UNSUPPORTED"},
		{"last=apps/web@sha256:nothex", http.StatusBadRequest, "UNSUPPORTED"},
		{"tag=" + url.QueryEscape("not a tag"), http.StatusBadRequest, "UNSUPPORTED"},
		{"repository=Apps/Web", http.StatusBadRequest, "NAME_INVALID"},
		{"repository=/**", http.StatusBadRequest, "NAME_INVALID"},
	} {
		r := e.do(http.MethodGet, "/v2/_berth/search?"+c.query, nil)
		entry := wantError(t, r, c.status, c.code)
		if entry.Message == "" {
			t.Errorf("%s: no message", c.query)
		}
	}
	wantError(t, e.do(http.MethodPost, "/v2/_berth/search", nil), http.StatusMethodNotAllowed, "UNSUPPORTED")
	// No filter at all on an empty registry: an empty list.
	if got := e.searchAll(url.Values{}); len(got) != 0 {
		t.Errorf("empty registry: %v", keys(got))
	}
}

// TestSearchTextAndDigest finds manifests by words in any of their fields
// and by digest, page by page however many results the filters drop, and
// never in a hidden repository.
func TestSearchTextAndDigest(t *testing.T) {
	t.Parallel()
	e := newEnv(t, distribution.Options{Access: denyRepos{"secret/app": true}, MaxPageSize: 3})
	sha := "3f2a9c1e" + strings.Repeat("0", 32)
	web := e.pushAnnotated("apps/web", "production", "web", map[string]string{revision: sha}, map[string]string{"Team": "Frontend"})
	var want []string
	want = append(want, "apps/web@"+string(web))
	for i := range 7 {
		repo := fmt.Sprintf("apps/svc%d", i)
		d := e.pushAnnotated(repo, "v1", fmt.Sprint("svc", i), map[string]string{revision: sha}, nil)
		want = append(want, repo+"@"+string(d))
		// Noise the text filter drops, between the matches.
		e.pushAnnotated(repo, "", fmt.Sprint("noise", i), map[string]string{revision: "ffff"}, nil)
	}
	e.pushAnnotated("secret/app", "production", "secret", map[string]string{revision: sha}, map[string]string{"Team": "Frontend"})
	sort.Strings(want)

	for _, c := range []struct {
		text string
		want []string
	}{
		{"3F2A9C1", want},                // a commit prefix, in any case
		{"frontend", want[len(want)-1:]}, // a label value
		{"team", want[len(want)-1:]},     // a label key
		{"PRODUCTION 3f2a", want[len(want)-1:]},
		{"svc3 3f2a", []string{want[3]}},
		{"production ffff", nil},
		{"nowhere", nil},
	} {
		for _, n := range []string{"1", "2", ""} {
			q := url.Values{"text": {c.text}}
			if n != "" {
				q.Set("n", n)
			}
			if got := keys(e.searchAll(q)); !slices.Equal(got, c.want) && (len(got) != 0 || len(c.want) != 0) {
				t.Errorf("text=%q n=%s: %v, want %v", c.text, n, got, c.want)
			}
		}
	}
	q := url.Values{"digest": {string(web)}}
	if got := keys(e.searchAll(q)); !slices.Equal(got, []string{"apps/web@" + string(web)}) {
		t.Errorf("digest=%s: %v", web, got)
	}
	q.Set("repository", "apps/svc0")
	if got := e.searchAll(q); len(got) != 0 {
		t.Errorf("digest of apps/web in apps/svc0: %v", keys(got))
	}
	r := e.do(http.MethodGet, "/v2/_berth/search?digest=sha256:nothex", nil)
	wantError(t, r, http.StatusBadRequest, "DIGEST_INVALID")
	r = e.do(http.MethodGet, "/v2/_berth/search?text="+strings.Repeat("x", 300), nil)
	wantError(t, r, http.StatusBadRequest, "UNSUPPORTED")
}

// TestSearchCursorRevealsNothing pages through a search one result at a
// time across manifests the caller may not see: no Link may name a hidden
// repository or digest, every visible result must still come, and a cursor
// the server did not issue is refused.
func TestSearchCursorRevealsNothing(t *testing.T) {
	e := newEnv(t, distribution.Options{Access: denyRepos{"hidden/b": true, "hidden/c": true}})
	sha := strings.Repeat("cd", 20)
	ann := map[string]string{revision: sha}
	visible := []string{
		"a/first@" + string(e.pushAnnotated("a/first", "v1", "a", ann, nil)),
		"z/last@" + string(e.pushAnnotated("z/last", "v1", "z", ann, nil)),
	}
	var hidden []string
	// More hidden manifests in a row than one request looks through.
	for i := range 14 {
		repo := []string{"hidden/b", "hidden/c"}[i%2]
		d := e.pushAnnotated(repo, "", fmt.Sprint("hidden", i), ann, nil)
		hidden = append(hidden, repo, string(d), strings.TrimPrefix(string(d), "sha256:"))
	}
	path := "/v2/_berth/search?" + url.Values{"annotation": {revision + "=" + sha}, "n": {"1"}}.Encode()
	var got []string
	linkRE := regexp.MustCompile(`^<([^>]+)>; rel="next"$`)
	for pages := 0; path != ""; pages++ {
		if pages > 20 {
			t.Fatal("search pagination does not end")
		}
		r := e.do(http.MethodGet, path, nil)
		wantStatus(t, r, http.StatusOK)
		var body struct{ Results []searchResult }
		decode(t, r.Body, &body)
		got = append(got, keys(body.Results)...)
		link := r.Header.Get("Link")
		for _, h := range hidden {
			for _, leak := range []string{link, string(r.Body)} {
				if strings.Contains(leak, h) || strings.Contains(leak, url.QueryEscape(h)) {
					t.Errorf("page %d reveals %q: Link %q, body %s", pages, h, link, r.Body)
				}
			}
		}
		path = ""
		if link != "" {
			m := linkRE.FindStringSubmatch(link)
			if m == nil {
				t.Fatalf("Link = %q", link)
			}
			path = m[1]
		}
	}
	if !slices.Equal(got, visible) {
		t.Errorf("paged results %v, want %v", got, visible)
	}
	// A cursor in clear, naming a position, is not one the server issued.
	forged := "/v2/_berth/search?" + url.Values{"annotation": {revision + "=" + sha}, "last": {"hidden/b@sha256:" + strings.Repeat("0", 64)}}.Encode()
	wantError(t, e.do(http.MethodGet, forged, nil), http.StatusBadRequest, "UNSUPPORTED")
}

// TestSearchCursorOpensOnEveryReplica: replicas sharing a secret open each
// other's search cursors; one with another secret, or none, refuses them.
func TestSearchCursorOpensOnEveryReplica(t *testing.T) {
	secret := []byte("a secret every replica shares")
	a := newEnv(t, distribution.Options{CursorSecret: secret})
	sha := strings.Repeat("ef", 20)
	ann := map[string]string{revision: sha}
	a.pushAnnotated("a/one", "v1", "one", ann, nil)
	second := a.pushAnnotated("b/two", "v1", "two", ann, nil)
	query := url.Values{"annotation": {revision + "=" + sha}, "n": {"1"}}.Encode()
	first := a.do(http.MethodGet, "/v2/_berth/search?"+query, nil)
	wantStatus(t, first, http.StatusOK)
	m := regexp.MustCompile(`^<([^>]+)>; rel="next"$`).FindStringSubmatch(first.Header.Get("Link"))
	if m == nil {
		t.Fatalf("first page: Link %q, want a next page", first.Header.Get("Link"))
	}
	next := m[1]

	// The other replicas serve the same store.
	replica := func(secret []byte) *env {
		srv := httptest.NewServer(distribution.New(a.store, distribution.Options{CursorSecret: secret}).Handler())
		t.Cleanup(srv.Close)
		return &env{t: t, srv: srv, dir: a.dir}
	}
	b := replica(secret)
	r := b.do(http.MethodGet, next, nil)
	wantStatus(t, r, http.StatusOK)
	var body struct{ Results []searchResult }
	decode(t, r.Body, &body)
	if got := keys(body.Results); !slices.Equal(got, []string{"b/two@" + string(second)}) {
		t.Errorf("the next page on a replica with the same secret: %v, want b/two@%s", got, second)
	}
	for _, other := range [][]byte{[]byte("another secret, just as long"), nil} {
		wantError(t, replica(other).do(http.MethodGet, next, nil), http.StatusBadRequest, "UNSUPPORTED")
	}
}
