package distribution_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/distribution"
	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/pulls"
)

// newPullsEnv is a registry with the pull record on, written by a
// recorder that runs until the test ends.
func newPullsEnv(t *testing.T, opts distribution.Options) (*env, *pulls.Recorder) {
	t.Helper()
	dir := t.TempDir()
	store := openStore(t, dir, storage.Options{}, nil)
	rec := pulls.New(store, pulls.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		rec.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	opts.Pulls = rec
	api := distribution.New(store, opts).Handler()
	// A request with X-Test-Browsing is made as the web interface makes
	// its own.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Test-Browsing") != "" {
			r = r.WithContext(distribution.Browsing(r.Context()))
		}
		api.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return &env{t: t, srv: srv, dir: dir}, rec
}

// pullEntries reads a repository's pull record through the API.
func (e *env) pullEntries(repo, query string) []pulls.Entry {
	e.t.Helper()
	r := e.do(http.MethodGet, "/v2/"+repo+"/_berth/pulls"+query, nil)
	wantStatus(e.t, r, http.StatusOK)
	var l struct {
		Name  string        `json:"name"`
		Pulls []pulls.Entry `json:"pulls"`
	}
	decode(e.t, r.Body, &l)
	if l.Name != repo || l.Pulls == nil {
		e.t.Fatalf("pulls of %s: %s", repo, r.Body)
	}
	return l.Pulls
}

// A manifest GET is recorded, a HEAD is not, nor a GET of the web
// interface browsing; the record is read back per
// repository, per digest and per identity, with the tags naming each
// manifest now.
func TestPullRecordEndpoint(t *testing.T) {
	e, rec := newPullsEnv(t, distribution.Options{})
	one := e.pushImage("apps/web", "1.0.0", "one")
	two := e.pushImage("apps/web", "2.0.0", "two")
	wantStatus(t, e.do(http.MethodHead, "/v2/apps/web/manifests/2.0.0", nil), http.StatusOK)
	wantStatus(t, e.do(http.MethodGet, "/v2/apps/web/manifests/2.0.0", nil, "X-Test-Browsing", "1"), http.StatusOK)
	wantStatus(t, e.do(http.MethodGet, "/v2/apps/web/manifests/1.0.0", nil), http.StatusOK)
	wantStatus(t, e.do(http.MethodGet, "/v2/apps/web/manifests/"+string(one.Digest), nil), http.StatusOK)
	for range 500 {
		if rec.Written() >= 1 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	got := e.pullEntries("apps/web", "")
	if len(got) != 1 || got[0].Digest != one.Digest || got[0].Actor.Kind != storage.ActorAnonymous ||
		!slices.Equal(got[0].Tags, []string{"1.0.0"}) || got[0].Time.IsZero() {
		t.Fatalf("pulls after a GET by tag and by digest and a HEAD = %+v, want one anonymous pull of 1.0.0", got)
	}
	if got := e.pullEntries("apps/web", "?digest="+string(two.Digest)); len(got) != 0 {
		t.Errorf("pulls of the manifest only HEAD and browsing asked for = %+v", got)
	}
	if got := e.pullEntries("apps/web", "?actor=anonymous"); len(got) != 1 {
		t.Errorf("pulls by anonymous = %+v", got)
	}
	if got := e.pullEntries("apps/web", "?actor=robot:prod"); len(got) != 0 {
		t.Errorf("pulls by robot:prod = %+v", got)
	}
	// A repository pulled never, and one that does not exist.
	e.pushImage("apps/api", "v1", "api")
	if got := e.pullEntries("apps/api", ""); len(got) != 0 {
		t.Errorf("pulls of a repository never pulled = %+v", got)
	}
	wantError(t, e.do(http.MethodGet, "/v2/apps/none/_berth/pulls", nil), http.StatusNotFound, "NAME_UNKNOWN")
	wantError(t, e.do(http.MethodGet, "/v2/apps/web/_berth/pulls?digest=sha256:nope", nil), http.StatusBadRequest, "DIGEST_INVALID")
	wantError(t, e.do(http.MethodGet, "/v2/apps/web/_berth/pulls?actor=prod", nil), http.StatusBadRequest, "UNSUPPORTED")
	wantError(t, e.do(http.MethodGet, "/v2/Apps/_berth/pulls", nil), http.StatusBadRequest, "NAME_INVALID")
}

// Without the pull record, the endpoint answers an empty record.
func TestPullRecordOff(t *testing.T) {
	e := newEnv(t, distribution.Options{})
	img := e.pushImage("apps/web", "v1", "one")
	wantStatus(t, e.do(http.MethodGet, "/v2/apps/web/manifests/"+string(img.Digest), nil), http.StatusOK)
	if got := e.pullEntries("apps/web", ""); len(got) != 0 {
		t.Errorf("pulls without a record = %+v", got)
	}
}

// holder is a result of a content search, as a client reads it.
type holder = storage.Holder

// contentAll follows the pages of a content search.
func (e *env) contentAll(d digest.Digest, n int) []holder {
	e.t.Helper()
	var all []holder
	path := "/v2/_berth/search?" + url.Values{"content": {string(d)}, "n": {strconv.Itoa(n)}}.Encode()
	linkRE := regexp.MustCompile(`^<([^>]+)>; rel="next"$`)
	for pages := 0; path != ""; pages++ {
		if pages > 50 {
			e.t.Fatal("content search pagination does not end")
		}
		r := e.do(http.MethodGet, path, nil)
		wantStatus(e.t, r, http.StatusOK)
		var l struct{ Results []holder }
		decode(e.t, r.Body, &l)
		all = append(all, l.Results...)
		path = ""
		if m := linkRE.FindStringSubmatch(r.Header.Get("Link")); m != nil {
			path = m[1]
		}
	}
	return all
}

// The content search finds the manifests holding a blob in the
// repositories the caller may pull, page by page, and never shows a
// hidden repository, in a result or a cursor.
func TestSearchContent(t *testing.T) {
	e := newEnv(t, distribution.Options{Access: denyRepos{"hidden/app": true}})
	layer := content("shared layer", 500)
	var want []string
	for _, repo := range []string{"apps/a", "apps/b", "hidden/app", "apps/c"} {
		e.pushBlob(repo, layer)
		cfg := []byte(`{"repo":"` + repo + `"}`)
		e.pushBlob(repo, cfg)
		body := imageManifest(t, descriptor("application/vnd.oci.image.config.v1+json", cfg), nil, "",
			descriptor("application/vnd.oci.image.layer.v1.tar", layer))
		d := e.pushManifest(repo, "v1", "application/vnd.oci.image.manifest.v1+json", body)
		if repo != "hidden/app" {
			want = append(want, repo+"@"+string(d))
		}
	}
	slices.Sort(want)
	for _, n := range []int{1, 2, 100} {
		got := e.contentAll(digest.FromBytes(layer), n)
		var keys []string
		for _, h := range got {
			keys = append(keys, h.Repository+"@"+string(h.Digest))
			if h.As != storage.HoldsLayer || !slices.Equal(h.Tags, []string{"v1"}) || len(h.History) != 1 {
				t.Errorf("n=%d: holder %+v, want a layer tagged v1 with one span", n, h)
			}
		}
		if !slices.Equal(keys, want) {
			t.Errorf("n=%d: holders %q, want %q", n, keys, want)
		}
	}
	// Content nobody holds: an empty list.
	if got := e.contentAll(digest.FromString("nothing"), 10); len(got) != 0 {
		t.Errorf("holders of unknown content = %+v", got)
	}
	wantError(t, e.do(http.MethodGet, "/v2/_berth/search?content=sha256:short", nil), http.StatusBadRequest, "DIGEST_INVALID")
	wantError(t, e.do(http.MethodGet, "/v2/_berth/search?content="+string(digest.FromBytes(layer))+"&repository=apps/a", nil),
		http.StatusBadRequest, "UNSUPPORTED")
	wantError(t, e.do(http.MethodGet, "/v2/_berth/search?content="+string(digest.FromBytes(layer))+"&last=apps/a@x", nil),
		http.StatusBadRequest, "UNSUPPORTED")
}
