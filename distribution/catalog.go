package distribution

import "net/http"

type catalogList struct {
	Repositories []string `json:"repositories"`
}

// catalog answers GET /v2/_catalog in lexical order, paginated. Each page is
// a cursor walk in the index, so its cost does not grow with the number of
// repositories.
func (a *API) catalog(w http.ResponseWriter, r *http.Request) {
	last, n, err := a.pageRequest(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	repos, more, err := a.store.ListRepositories(r.Context(), last, n)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writePage(w, "/v2/_catalog", repos, n, more, catalogList{Repositories: repos})
}
