package proxy

import (
	"context"
	"net/http"
	"strings"

	"github.com/berth-registry/berth/storage/meta"
)

// resources are what follows a repository name in an API path.
var resources = []string{"/manifests/", "/blobs/", "/tags/list", "/referrers/"}

// Route rewrites the requests that reach an upstream without naming its
// namespace, then calls next; it must come before authentication, so that
// access rules see the name the store uses:
//
//   - /v2/<name>/...?ns=<host>, containerd's mirror request, when <host>
//     is one of an upstream's hosts, becomes /v2/<namespace>/<name>/...;
//   - with a default upstream, a pull of a name outside every namespace
//     that the registry does not hold (Docker's registry-mirrors asks for
//     library/alpine) becomes a pull of <namespace>/<name>.
//
// It also lets the cache tell each request's client how it was served.
func (c *Cache) Route(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if name, rest, ok := splitPath(r.URL.Path); ok {
			if to := c.rewrite(r, name); to != "" {
				r = r.Clone(r.Context())
				r.URL.Path = "/v2/" + to + rest
				r.URL.RawPath = ""
			}
			r = r.WithContext(context.WithValue(r.Context(), outcomeKey{}, &outcome{hdr: w.Header()}))
		}
		next.ServeHTTP(w, r)
	})
}

// splitPath splits an API path into the repository name and the rest.
func splitPath(p string) (name, rest string, ok bool) {
	tail, ok := strings.CutPrefix(p, "/v2/")
	if !ok || strings.HasPrefix(tail, "_") {
		return "", "", false
	}
	// The API's routes take the longest name that matches, as this does.
	best := -1
	for _, res := range append(resources, "/_berth/") {
		best = max(best, strings.LastIndex(tail, res))
	}
	if best <= 0 {
		return "", "", false
	}
	return tail[:best], tail[best:], true
}

// rewrite returns the name r's repository name becomes, or "".
func (c *Cache) rewrite(r *http.Request, name string) string {
	if u, _ := c.upstreamOf(name); u != nil {
		return ""
	}
	if ns := r.URL.Query().Get("ns"); ns != "" {
		for _, u := range c.ups {
			for _, h := range u.hosts {
				if strings.EqualFold(h, ns) {
					return u.ns + "/" + name
				}
			}
		}
		return ""
	}
	if c.def == nil || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
		return ""
	}
	var held bool
	err := c.View(r.Context(), func(tx meta.Tx) error {
		var err error
		held, err = tx.Repository(name)
		return err
	})
	if err != nil || held {
		return ""
	}
	return c.def.ns + "/" + name
}
