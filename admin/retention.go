package admin

import (
	"net/http"
	"strconv"

	"github.com/berth-registry/berth/registry/auth"
)

// POST /_berth/admin/retention?dryRun=true|false applies the configured
// retention policies now, or with dryRun=true only plans, and answers 200
// with the retention.Report of what went (or would go). dryRun is
// required, so that no request deletes by omission.

// codeDryRunInvalid answers a retention request without a valid dryRun.
const codeDryRunInvalid = "DRYRUN_INVALID"

func (a *api) runRetention(w http.ResponseWriter, r *http.Request) {
	dryRun, err := strconv.ParseBool(r.URL.Query().Get("dryRun"))
	if err != nil {
		writeError(w, r, http.StatusBadRequest, codeDryRunInvalid, "dryRun: want true or false")
		return
	}
	rep, err := a.Retain(r.Context(), dryRun)
	if err != nil {
		a.failed(w, r, err)
		return
	}
	a.Logger.InfoContext(r.Context(), "retention run", "dryRun", dryRun, "tags", len(rep.Tags),
		"manifests", len(rep.Manifests), "by", auth.IdentityFrom(r.Context()).String())
	writeJSON(w, http.StatusOK, rep)
}
