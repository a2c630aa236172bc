package admin

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/berth-registry/berth/registry/auth"
	"github.com/berth-registry/berth/storage/gc"
)

// GCPath is where the admin API runs a garbage collection:
//
//	POST /_berth/admin/gc?grace=<duration>&dryRun=<bool>
//
// grace defaults to the configured gc.grace; the answer is a GCResult.
const GCPath = auth.AdminPrefix + "gc"

// codeGraceInvalid answers a grace or dryRun parameter that does not parse.
const codeGraceInvalid = "GRACE_INVALID"

// GCResult is the answer of a garbage collection in the admin API.
type GCResult struct {
	gc.Report
	// Grace is the grace period the collection used, as a Go duration.
	Grace string `json:"grace"`
	// Took is the collection's duration, as a Go duration.
	Took string `json:"took"`
}

// collectGarbage serves POST GCPath.
func (a *api) collectGarbage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	grace := a.Grace
	if v := q.Get("grace"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			writeError(w, r, http.StatusBadRequest, codeGraceInvalid, "grace "+strconv.Quote(v)+": want a duration such as 1h, not negative")
			return
		}
		grace = d
	}
	dry := false
	if v := q.Get("dryRun"); v != "" {
		b, err := strconv.ParseBool(strings.TrimSpace(v))
		if err != nil {
			writeError(w, r, http.StatusBadRequest, codeGraceInvalid, "dryRun "+strconv.Quote(v)+": want true or false")
			return
		}
		dry = b
	}
	rep, err := a.Collect(r.Context(), grace, dry)
	if errors.Is(err, gc.ErrGraceTooShort) {
		writeError(w, r, http.StatusBadRequest, codeGraceInvalid, err.Error())
		return
	}
	if err != nil {
		a.failed(w, r, err)
		return
	}
	a.Logger.InfoContext(r.Context(), "garbage collection requested", "grace", grace, "dryRun", dry,
		"bytes", rep.BytesReclaimed, "by", auth.IdentityFrom(r.Context()).String())
	writeJSON(w, http.StatusOK, GCResult{Report: rep, Grace: grace.String(), Took: rep.Duration.String()})
}
