package distribution

import "net/http"

type tagList struct {
	Name string   `json:"name"`
	Tags []string `json:"tags"`
}

// listTags answers GET /v2/<name>/tags/list in lexical order, paginated.
func (a *API) listTags(w http.ResponseWriter, r *http.Request) {
	repo, err := repoName(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	last, n, err := a.pageRequest(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	tags, more, err := a.store.ListTags(r.Context(), repo, last, n)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writePage(w, "/v2/"+repo+"/tags/list", tags, n, more, tagList{Name: repo, Tags: tags})
}
