package distribution

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

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
//	tag=TAG  artifactType=TYPE  mediaType=TYPE  digest=DIGEST
//	created.after=RFC3339  created.before=RFC3339
//	text=WORDS             (each word, in any case, in the repository, digest,
//	                        a tag, a type, or an annotation or label)
//
// The store answers every filter but digest and text, which are applied to
// its results here. content=DIGEST asks another question: see
// searchContent.
func (a *API) search(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Has("content") {
		a.searchContent(w, r)
		return
	}
	q, f, err := a.searchQuery(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	n := q.N
	results := []storage.SearchResult{}
	next := ""
rounds:
	for round := 0; round < searchRounds && len(results) < n; round++ {
		q.N = n - len(results)
		if f.active() {
			// Most results may be filtered out: read full pages.
			q.N = a.maxPage
		}
		page, pageNext, err := a.store.Search(r.Context(), q)
		if err != nil {
			a.writeError(w, r, err)
			return
		}
		for _, res := range page {
			if len(results) == n {
				// The page is full inside a store page: continue after
				// the last result examined.
				next = q.Last
				break rounds
			}
			q.Last = res.Cursor()
			if f.match(res) && a.allowed(r, res.Repository, "pull") {
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

// holderList is the body of a content search answer.
type holderList struct {
	Results []storage.Holder `json:"results"`
}

// searchContent answers GET /v2/_berth/search?content=DIGEST: the
// artifacts holding that content (as a file or layer, a config, a
// manifest, or through an index) in the repositories the caller may pull,
// each with the tags naming it now and the spans during which tags named
// it before. Pages run with n and a sealed last as for the other
// searches. No other filter combines with content.
func (a *API) searchContent(w http.ResponseWriter, r *http.Request) {
	last, n, err := a.pageRequest(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	v := r.URL.Query()
	for k := range v {
		if k != "content" && k != "n" && k != "last" {
			a.writeError(w, r, newError(CodeUnsupported, map[string]string{"parameter": k},
				"%s: content= takes no other filter (only n and last)", k).withStatus(http.StatusBadRequest))
			return
		}
	}
	d, err := parseDigest(v.Get("content"))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	q := storage.HolderQuery{Digest: d, N: n, Visible: func(repo string) bool { return a.allowed(r, repo, "pull") }}
	if last != "" {
		pos, ok := a.cursors.open(last)
		repo, _, cut := strings.Cut(pos, "@")
		if !ok || !cut || !validName(repo) {
			a.writeError(w, r, newError(CodeUnsupported, map[string]string{"last": last},
				"last: %q is not a cursor from a previous page of this server's answers", last).withStatus(http.StatusBadRequest))
			return
		}
		q.Last = pos
	}
	holders, next, err := a.store.Holders(r.Context(), q)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if next != "" {
		nv := url.Values{"content": {string(d)}, "n": {strconv.Itoa(n)}, "last": {a.cursors.seal(next)}}
		w.Header().Set("Link", fmt.Sprintf(`<%s?%s>; rel="next"`, SearchPath, nv.Encode()))
	}
	writeJSON(w, "application/json", holderList{Results: holders})
}

// resultFilter holds the search filters applied to the store's results.
type resultFilter struct {
	digest digest.Digest
	// words are lower case; each must occur in some field.
	words []string
}

func (f resultFilter) active() bool { return f.digest != "" || len(f.words) > 0 }

// match reports whether res passes the filter.
func (f resultFilter) match(res storage.SearchResult) bool {
	if f.digest != "" && res.Digest != f.digest {
		return false
	}
	if len(f.words) == 0 {
		return true
	}
	fields := []string{res.Repository, string(res.Digest), res.MediaType, res.ArtifactType}
	fields = append(fields, res.Tags...)
	for _, m := range []map[string]string{res.Annotations, res.Labels} {
		for k, v := range m {
			fields = append(fields, k, v)
		}
	}
	for i, s := range fields {
		fields[i] = strings.ToLower(s)
	}
	for _, w := range f.words {
		if !slices.ContainsFunc(fields, func(s string) bool { return strings.Contains(s, w) }) {
			return false
		}
	}
	return true
}

// maxSearchText bounds the text parameter of a search.
const maxSearchText = 256

// searchQuery reads and checks the parameters of a search.
func (a *API) searchQuery(r *http.Request) (storage.Query, resultFilter, error) {
	var q storage.Query
	var f resultFilter
	last, n, err := a.pageRequest(r)
	if err != nil {
		return q, f, err
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
		return q, f, err
	}
	if q.Labels, err = pairs("label"); err != nil {
		return q, f, err
	}
	if repo := v.Get("repository"); repo != "" {
		if !validName(strings.TrimSuffix(repo, "/**")) {
			return q, f, newError(CodeNameInvalid, map[string]string{"repository": repo},
				"repository: %q is not a repository name, nor a name followed by /**", repo)
		}
		q.Repository = repo
	}
	if tag := v.Get("tag"); tag != "" {
		if !validTag(tag) {
			return q, f, bad("tag", tag, "%q is not a valid tag", tag)
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
			return q, f, bad(p.param, s, "want an RFC 3339 time such as 2024-05-01T12:00:00Z, got %q", s)
		}
		*p.dst = t
	}
	if last != "" {
		pos, ok := a.cursors.open(last)
		repo, d, cut := strings.Cut(pos, "@")
		if _, err := parseDigest(d); !ok || !cut || !validName(repo) || err != nil {
			return q, f, bad("last", last, "%q is not a cursor from a previous page of this server's answers", last)
		}
		q.Last = pos
	}
	if s := v.Get("digest"); s != "" {
		if f.digest, err = parseDigest(s); err != nil {
			return q, f, err
		}
	}
	if text := v.Get("text"); text != "" {
		if len(text) > maxSearchText {
			return q, f, bad("text", text[:32]+"...", "at most %d bytes", maxSearchText)
		}
		f.words = strings.Fields(strings.ToLower(text))
	}
	return q, f, nil
}
