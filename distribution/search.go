package distribution

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/berth-registry/berth/storage"
)

// SearchPath is where Berth's metadata search answers.
const SearchPath = "/v2/_berth/search"

// searchRounds bounds how many store searches one request makes while
// filling a page with results the caller may see.
const searchRounds = 10

// searchList is the body of a search answer.
type searchList struct {
	Results []storage.SearchResult `json:"results"`
}

// search answers GET /v2/_berth/search: the manifests whose annotations,
// config labels, repository, tag, types and created time match the query,
// in order of repository then digest, paginated with n and last like the
// catalog (but last is an opaque cursor from the Link of the previous
// page), and limited to the repositories the caller may pull.
//
//	annotation=KEY=VALUE   (repeatable; all must match)
//	label=KEY=VALUE        (repeatable; image config labels)
//	repository=NAME        (exact, or NAME/** for every repository under NAME)
//	tag=TAG  artifactType=TYPE  mediaType=TYPE
//	created.after=RFC3339  created.before=RFC3339
func (a *API) search(w http.ResponseWriter, r *http.Request) {
	q, err := a.searchQuery(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	n := q.N
	results := []storage.SearchResult{}
	next := ""
	for round := 0; round < searchRounds && len(results) < n; round++ {
		q.N = n - len(results)
		page, pageNext, err := a.store.Search(r.Context(), q)
		if err != nil {
			a.writeError(w, r, err)
			return
		}
		for _, res := range page {
			if a.allowed(r, res.Repository, "pull") {
				results = append(results, res)
			}
		}
		next = pageNext
		if next == "" {
			break
		}
		q.Last = next
	}
	if next != "" {
		// next may be a position the caller may not see: sealed, it
		// names nothing.
		v := r.URL.Query()
		v.Set("last", a.cursors.seal(next))
		v.Set("n", strconv.Itoa(n))
		w.Header().Set("Link", fmt.Sprintf(`<%s?%s>; rel="next"`, SearchPath, v.Encode()))
	}
	writeJSON(w, "application/json", searchList{Results: results})
}

// searchQuery reads and checks the parameters of a search.
func (a *API) searchQuery(r *http.Request) (storage.Query, error) {
	var q storage.Query
	last, n, err := a.pageRequest(r)
	if err != nil {
		return q, err
	}
	q.Last, q.N = last, n
	v := r.URL.Query()
	bad := func(param, value, format string, args ...any) error {
		return newError(CodeUnsupported, map[string]string{param: value}, "%s: "+format, append([]any{param}, args...)...).
			withStatus(http.StatusBadRequest)
	}
	pairs := func(param string) (map[string]string, error) {
		out := map[string]string{}
		for _, s := range v[param] {
			k, val, ok := strings.Cut(s, "=")
			if !ok || k == "" {
				return nil, bad(param, s, "want KEY=VALUE, got %q", s)
			}
			if prev, dup := out[k]; dup && prev != val {
				return nil, bad(param, s, "key %q given twice with different values", k)
			}
			out[k] = val
		}
		return out, nil
	}
	if q.Annotations, err = pairs("annotation"); err != nil {
		return q, err
	}
	if q.Labels, err = pairs("label"); err != nil {
		return q, err
	}
	if repo := v.Get("repository"); repo != "" {
		if !validName(strings.TrimSuffix(repo, "/**")) {
			return q, newError(CodeNameInvalid, map[string]string{"repository": repo},
				"repository: %q is not a repository name, nor a name followed by /**", repo)
		}
		q.Repository = repo
	}
	if tag := v.Get("tag"); tag != "" {
		if !validTag(tag) {
			return q, bad("tag", tag, "%q is not a valid tag", tag)
		}
		q.Tag = tag
	}
	q.ArtifactType = v.Get("artifactType")
	q.MediaType = v.Get("mediaType")
	for _, p := range []struct {
		param string
		dst   *time.Time
	}{{"created.after", &q.CreatedAfter}, {"created.before", &q.CreatedBefore}} {
		s := v.Get(p.param)
		if s == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			return q, bad(p.param, s, "want an RFC 3339 time such as 2024-05-01T12:00:00Z, got %q", s)
		}
		*p.dst = t
	}
	if last != "" {
		pos, ok := a.cursors.open(last)
		repo, d, cut := strings.Cut(pos, "@")
		if _, err := parseDigest(d); !ok || !cut || !validName(repo) || err != nil {
			return q, bad("last", last, "%q is not a cursor from a previous page of this server's answers", last)
		}
		q.Last = pos
	}
	return q, nil
}
