package distribution

import "net/http"

type catalogList struct {
	Repositories []string `json:"repositories"`
}

// catalogScanLimit bounds how many repository names one catalog request
// reads from the index while looking for ones the caller may see.
const catalogScanLimit = 100_000

// catalog answers GET /v2/_catalog in lexical order, paginated, listing
// only the repositories the caller may pull. Each page is a cursor walk in
// the index, so its cost does not grow with the number of repositories the
// caller may see; a caller who may see few of many reads further to fill a
// page, a full page of names at a time, up to catalogScanLimit names.
func (a *API) catalog(w http.ResponseWriter, r *http.Request) {
	last, n, err := a.pageRequest(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	repos, more, err := a.visibleRepositories(r, last, n, nil)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writePage(w, "/v2/_catalog", repos, n, more, catalogList{Repositories: repos})
}

// visibleRepositories walks the repository index after last and returns up
// to n names the caller may pull and keep (if not nil) accepts. more
// reports that names follow, perhaps hidden ones: it tells the caller no
// more than that a next page may exist.
func (a *API) visibleRepositories(r *http.Request, last string, n int, keep func(string) bool) (repos []string, more bool, err error) {
	// Without access rules or a filter every name read is shown, so read
	// only n.
	batch := n
	if a.access != nil || keep != nil {
		batch = a.maxPage
	}
	repos = []string{}
	for scanned := 0; len(repos) < n && scanned < catalogScanLimit; {
		page, pageMore, err := a.store.ListRepositories(r.Context(), last, batch)
		if err != nil {
			return nil, false, err
		}
		scanned += len(page)
		for _, repo := range page {
			if len(repos) == n {
				// The page is full and names follow, if perhaps hidden.
				return repos, true, nil
			}
			if (keep == nil || keep(repo)) && a.allowed(r, repo, "pull") {
				repos = append(repos, repo)
			}
		}
		more = pageMore
		if !pageMore || len(page) == 0 {
			break
		}
		last = page[len(page)-1]
	}
	return repos, more, nil
}
