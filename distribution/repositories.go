package distribution

import (
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/berth-registry/berth/storage"
)

// RepositoriesPath is where Berth's repository summaries answer: the
// catalog, with each repository's tag and manifest counts and its last
// push, for people browsing a registry.
const RepositoriesPath = "/v2/_berth/repositories"

// maxSummaryPage bounds a page of repository summaries: each one reads its
// repository's tags and manifests.
const maxSummaryPage = 100

// repositorySummary describes one repository.
type repositorySummary struct {
	Name string `json:"name"`
	// Tags counts the repository's tags.
	Tags int `json:"tags"`
	// Manifests counts its manifests and indexes, tagged or not.
	Manifests int `json:"manifests"`
	// LastPush is when the newest of its manifests entered it; absent
	// when it holds none (only blobs).
	LastPush *time.Time `json:"lastPush,omitempty"`
}

// repositoryList is the body of a summaries answer.
type repositoryList struct {
	Repositories []repositorySummary `json:"repositories"`
}

// repositories answers GET /v2/_berth/repositories: the repositories the
// caller may pull, in lexical order, each with its tag and manifest counts
// and last push, paginated with n (at most 100) and last like the catalog.
// q, if set, keeps the names containing it.
//
// The counts are read through the store's tag listing and metadata
// search, so a page costs a walk over the tags and manifests of the
// repositories on it.
func (a *API) repositories(w http.ResponseWriter, r *http.Request) {
	last, n, err := a.pageRequest(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	n = min(n, maxSummaryPage)
	var keep func(string) bool
	if q := strings.ToLower(strings.TrimSpace(r.URL.Query().Get("q"))); q != "" {
		keep = func(repo string) bool { return strings.Contains(repo, q) }
	}
	names, more, err := a.visibleRepositories(r, last, n, keep)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	list := repositoryList{Repositories: make([]repositorySummary, 0, len(names))}
	for _, name := range names {
		s, err := a.summarize(r, name)
		if err != nil {
			a.writeError(w, r, err)
			return
		}
		list.Repositories = append(list.Repositories, s)
	}
	keepQuery := url.Values{}
	if q := r.URL.Query().Get("q"); q != "" {
		keepQuery.Set("q", q)
	}
	writePageQuery(w, RepositoriesPath, keepQuery, names, n, more, list)
}

// summarize counts the tags and manifests of repo and finds its last push.
func (a *API) summarize(r *http.Request, repo string) (repositorySummary, error) {
	s := repositorySummary{Name: repo}
	for last := ""; ; {
		tags, more, err := a.store.ListTags(r.Context(), repo, last, a.maxPage)
		if err != nil {
			return s, err
		}
		s.Tags += len(tags)
		if !more || len(tags) == 0 {
			break
		}
		last = tags[len(tags)-1]
	}
	q := storage.Query{Repository: repo, N: a.maxPage}
	for {
		page, next, err := a.store.Search(r.Context(), q)
		if err != nil {
			return s, err
		}
		s.Manifests += len(page)
		for _, res := range page {
			if s.LastPush == nil || res.Pushed.After(*s.LastPush) {
				t := res.Pushed
				s.LastPush = &t
			}
		}
		if next == "" {
			return s, nil
		}
		q.Last = next
	}
}
