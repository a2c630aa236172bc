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
	// Without access rules every name read is shown, so read only n.
	batch := n
	if a.access != nil {
		batch = a.maxPage
	}
	repos := []string{}
	more := false
scan:
	for scanned := 0; len(repos) < n && scanned < catalogScanLimit; {
		page, pageMore, err := a.store.ListRepositories(r.Context(), last, batch)
		if err != nil {
			a.writeError(w, r, err)
			return
		}
		scanned += len(page)
		for _, repo := range page {
			if len(repos) == n {
				// The page is full and names follow, if perhaps hidden.
				more = true
				break scan
			}
			if a.allowed(r, repo, "pull") {
				repos = append(repos, repo)
			}
		}
		more = pageMore
		if !pageMore || len(page) == 0 {
			break
		}
		last = page[len(page)-1]
	}
	writePage(w, "/v2/_catalog", repos, n, more, catalogList{Repositories: repos})
}
