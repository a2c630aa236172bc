package distribution_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/berth-registry/berth/distribution"
)

// TestRoute names requests by the template of the route they match, with
// the repository unescaped, whatever the method; a path no route matches
// has no name.
func TestRoute(t *testing.T) {
	api := distribution.New(nil, distribution.Options{})
	cases := []struct {
		method, path   string
		template, repo string
		ok             bool
	}{
		{http.MethodGet, "/v2/", "/v2/", "", true},
		{http.MethodGet, "/v2/_catalog", "/v2/_catalog", "", true},
		{http.MethodHead, "/v2/apps/web/manifests/latest", "/v2/{name}/manifests/{reference}", "apps/web", true},
		{http.MethodPut, "/v2/apps/web/manifests/sha256:" + zeros, "/v2/{name}/manifests/{reference}", "apps/web", true},
		{http.MethodGet, "/v2/a/b/c/blobs/sha256:" + zeros, "/v2/{name}/blobs/{digest}", "a/b/c", true},
		{http.MethodPatch, "/v2/x/blobs/uploads/0123abcd", "/v2/{name}/blobs/uploads/{id}", "x", true},
		{http.MethodPost, "/v2/x/blobs/uploads/", "/v2/{name}/blobs/uploads/", "x", true},
		{http.MethodGet, "/v2/x/tags/list", "/v2/{name}/tags/list", "x", true},
		{http.MethodGet, "/v2/x%2Fy/tags/list", "/v2/{name}/tags/list", "x%2Fy", true}, // an invalid name, as the API sees it
		{http.MethodPost, "/v2/x/_berth/tags/prod/rollback", "/v2/{name}/_berth/tags/{tag}/rollback", "x", true},
		{http.MethodGet, distribution.SearchPath, distribution.SearchPath, "", true},
		// The method does not matter: the route is named, the API answers 405.
		{http.MethodPost, "/v2/x/tags/list", "/v2/{name}/tags/list", "x", true},
		{http.MethodGet, "/v2/x/unknown", "", "", false},
		{http.MethodGet, "/random/path", "", "", false},
	}
	for _, c := range cases {
		tmpl, repo, ok := api.Route(httptest.NewRequest(c.method, c.path, nil))
		if tmpl != c.template || repo != c.repo || ok != c.ok {
			t.Errorf("Route(%s %s) = %q, %q, %v; want %q, %q, %v", c.method, c.path, tmpl, repo, ok, c.template, c.repo, c.ok)
		}
	}
}

const zeros = "0000000000000000000000000000000000000000000000000000000000000000"
