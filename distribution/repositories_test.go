package distribution_test

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/distribution"
)

// summary is one entry of GET /v2/_berth/repositories, as a client reads it.
type summary struct {
	Name      string     `json:"name"`
	Tags      int        `json:"tags"`
	Manifests int        `json:"manifests"`
	LastPush  *time.Time `json:"lastPush"`
}

func summariesOf(t *testing.T, body []byte) []summary {
	t.Helper()
	var l struct {
		Repositories []summary `json:"repositories"`
	}
	decode(t, body, &l)
	if l.Repositories == nil {
		t.Fatalf("repositories is not a list: %s", body)
	}
	return l.Repositories
}

// TestRepositorySummaries lists the repositories the caller may pull with
// their tag and manifest counts and last push, filtered and paginated,
// and never counts or names a hidden repository.
func TestRepositorySummaries(t *testing.T) {
	t.Parallel()
	e := newEnv(t, distribution.Options{Access: denyRepos{"secret/app": true}})
	before := time.Now().Add(-time.Second)
	web := e.pushImage("apps/web", "v1", "web1")
	e.pushManifest("apps/web", "production", ocispec.MediaTypeImageManifest, web.Body)
	e.pushImage("apps/web", "", "web-untagged")
	e.pushImage("apps/api", "v1", "api1")
	e.pushImage("secret/app", "v1", "secret")
	e.pushBlob("blobs/only", []byte("a blob and no manifest"))
	after := time.Now().Add(time.Second)

	r := e.do(http.MethodGet, distribution.RepositoriesPath, nil)
	wantStatus(t, r, http.StatusOK)
	wantHeader(t, r, "Content-Type", "application/json")
	got := summariesOf(t, r.Body)
	var names []string
	for _, s := range got {
		names = append(names, s.Name)
	}
	if want := []string{"apps/api", "apps/web", "blobs/only"}; !slices.Equal(names, want) {
		t.Fatalf("repositories = %v, want %v (secret/app hidden)", names, want)
	}
	if s := got[1]; s.Tags != 2 || s.Manifests != 2 || s.LastPush == nil || s.LastPush.Before(before) || s.LastPush.After(after) {
		t.Errorf("apps/web = %+v, want 2 tags, 2 manifests, a last push now", s)
	}
	if s := got[0]; s.Tags != 1 || s.Manifests != 1 || s.LastPush == nil {
		t.Errorf("apps/api = %+v, want 1 tag, 1 manifest", s)
	}
	if s := got[2]; s.Tags != 0 || s.Manifests != 0 || s.LastPush != nil {
		t.Errorf("blobs/only = %+v, want no tags, manifests or push", s)
	}
	if strings.Contains(string(r.Body), "secret") {
		t.Errorf("answer mentions the hidden repository: %s", r.Body)
	}

	// The filter keeps names containing q, and the next page keeps it.
	r = e.do(http.MethodGet, distribution.RepositoriesPath+"?q=APPS&n=1", nil)
	wantStatus(t, r, http.StatusOK)
	if got := summariesOf(t, r.Body); len(got) != 1 || got[0].Name != "apps/api" {
		t.Errorf("q=APPS n=1: %+v", got)
	}
	wantNext := "<" + distribution.RepositoriesPath + "?" + url.Values{"q": {"APPS"}, "last": {"apps/api"}, "n": {"1"}}.Encode() + `>; rel="next"`
	wantHeader(t, r, "Link", wantNext)
	r = e.do(http.MethodGet, distribution.RepositoriesPath+"?"+url.Values{"q": {"APPS"}, "last": {"apps/api"}, "n": {"1"}}.Encode(), nil)
	if got := summariesOf(t, r.Body); len(got) != 1 || got[0].Name != "apps/web" {
		t.Errorf("second page: %+v", got)
	}
	// A filter matching only the hidden repository finds nothing, and
	// says nothing about it.
	r = e.do(http.MethodGet, distribution.RepositoriesPath+"?q=secret", nil)
	if got := summariesOf(t, r.Body); len(got) != 0 || r.Header.Get("Link") != "" {
		t.Errorf("q=secret: %+v, Link %q", got, r.Header.Get("Link"))
	}

	wantError(t, e.do(http.MethodGet, distribution.RepositoriesPath+"?n=x", nil), http.StatusBadRequest, "UNSUPPORTED")
	wantError(t, e.do(http.MethodPost, distribution.RepositoriesPath, nil), http.StatusMethodNotAllowed, "UNSUPPORTED")
}

// TestRepositorySummaryPageBound caps a page of summaries at 100.
func TestRepositorySummaryPageBound(t *testing.T) {
	t.Parallel()
	e := newEnv(t, distribution.Options{})
	for i := range 101 {
		e.pushBlob("many/r"+string(rune('a'+i/26))+string(rune('a'+i%26)), []byte{byte(i)})
	}
	r := e.do(http.MethodGet, distribution.RepositoriesPath+"?n=500", nil)
	if got := summariesOf(t, r.Body); len(got) != 100 {
		t.Errorf("n=500: %d summaries, want 100", len(got))
	}
	if r.Header.Get("Link") == "" {
		t.Error("no Link to the 101st repository")
	}
}
