package distribution

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
)

// pageRequest reads the n and last parameters of a paginated listing. n
// defaults to, and is capped at, the API's page size.
func (a *API) pageRequest(r *http.Request) (last string, n int, err error) {
	q := r.URL.Query()
	last = q.Get("last")
	n = a.maxPage
	if s := q.Get("n"); s != "" {
		v, perr := strconv.Atoi(s)
		if perr != nil || v < 0 {
			return "", 0, newError(CodeUnsupported, map[string]string{"n": s},
				"n must be a non-negative integer, got %q", s).withStatus(http.StatusBadRequest)
		}
		n = min(v, a.maxPage)
	}
	return last, n, nil
}

// writePage answers a listing as JSON, with a Link header to the next page
// when there is one.
func writePage(w http.ResponseWriter, path string, items []string, n int, more bool, body any) {
	writePageQuery(w, path, nil, items, n, more, body)
}

// writePageQuery is writePage for a listing whose next page keeps the
// query parameters in keep (a filter) besides last and n.
func writePageQuery(w http.ResponseWriter, path string, keep url.Values, items []string, n int, more bool, body any) {
	if more && len(items) > 0 {
		q := url.Values{}
		for k, v := range keep {
			q[k] = v
		}
		q.Set("last", items[len(items)-1])
		q.Set("n", strconv.Itoa(n))
		w.Header().Set("Link", fmt.Sprintf(`<%s?%s>; rel="next"`, path, q.Encode()))
	}
	writeJSON(w, "application/json", body)
}

// writeJSON answers 200 with v as JSON of the given content type.
func writeJSON(w http.ResponseWriter, contentType string, v any) {
	buf, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "encode response", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(buf)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(buf)
}
