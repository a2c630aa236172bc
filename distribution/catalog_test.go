package distribution_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/berth-registry/berth/distribution"
	"github.com/berth-registry/berth/storage"
)

// countingStore counts the catalog's reads of the repository index.
type countingStore struct {
	*storage.Service
	listRepos atomic.Int64
}

func (c *countingStore) ListRepositories(ctx context.Context, last string, n int) ([]string, bool, error) {
	c.listRepos.Add(1)
	return c.Service.ListRepositories(ctx, last, n)
}

// TestCatalogHidesRepositories lists only the repositories the caller may
// pull, page by page, and reads the index a page at a time however few of
// them the caller may see.
func TestCatalogHidesRepositories(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cs := &countingStore{Service: openStore(t, dir, storage.Options{}, nil)}
	visible := func(repo string) bool { return strings.HasPrefix(repo, "pub/") }
	api := distribution.New(cs, distribution.Options{MaxPageSize: 50,
		Access: accessFunc(func(repo, _ string) bool { return visible(repo) })})
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(srv.Close)
	e := &env{t: t, srv: srv, dir: dir}
	var want []string
	for i := range 120 {
		repo := fmt.Sprintf("hidden/r%03d", i)
		if i%40 == 0 {
			repo = fmt.Sprintf("pub/r%03d", i)
			want = append(want, repo)
		}
		e.pushBlob(repo, []byte(repo))
	}
	reposOf := func(body []byte) []string {
		var l struct {
			Repositories []string `json:"repositories"`
		}
		decode(t, body, &l)
		return l.Repositories
	}
	cs.listRepos.Store(0)
	pages := walkPages(t, e, "/v2/_catalog?n=1", "/v2/_catalog", 1, reposOf)
	if got := slices.Concat(pages...); !slices.Equal(got, want) {
		t.Errorf("walked %v, want %v", got, want)
	}
	// Each page reads the 120 names in pages of 50 at most: 3 reads, not
	// one per hidden name.
	if n := cs.listRepos.Load(); n > int64(3*len(pages)) {
		t.Errorf("%d pages read the index %d times", len(pages), n)
	}
	r := e.do(http.MethodGet, "/v2/_catalog", nil)
	if got := reposOf(r.Body); !slices.Equal(got, want) || r.Header.Get("Link") != "" {
		t.Errorf("catalog = %v, Link %q; want %v and no Link", got, r.Header.Get("Link"), want)
	}
}
