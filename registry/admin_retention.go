package registry

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/berth-registry/berth/registry/auth"
)

// POST /_berth/admin/retention?dryRun=true|false applies the configured
// retention policies now, or with dryRun=true only plans, and answers 200
// with the storage.RetentionReport of what went (or would go). dryRun is
// required, so that no request deletes by omission.

// codeDryRunInvalid answers a retention request without a valid dryRun.
const codeDryRunInvalid = "DRYRUN_INVALID"

func (a *adminAPI) runRetention(w http.ResponseWriter, r *http.Request) {
	dryRun, err := strconv.ParseBool(r.URL.Query().Get("dryRun"))
	if err != nil {
		writeAdminError(w, r, http.StatusBadRequest, codeDryRunInvalid, "dryRun: want true or false")
		return
	}
	ret := a.retention
	if ret == nil { // no policies configured: nothing goes
		ret = &retention{store: a.store, log: a.log}
	}
	rep, err := ret.run(r.Context(), dryRun)
	if err != nil {
		a.storeError(w, r, err)
		return
	}
	a.log.InfoContext(r.Context(), "retention run", "dryRun", dryRun, "tags", len(rep.Tags),
		"manifests", len(rep.Manifests), "by", auth.IdentityFrom(r.Context()).String())
	writeAdminJSON(w, http.StatusOK, rep)
}

// withoutRobots answers the robot endpoints of the admin API 404
// UNSUPPORTED: without authentication there are no robot tokens.
func withoutRobots(admin http.Handler) http.Handler {
	mux := http.NewServeMux()
	robots := auth.AdminPrefix + "robots"
	unsupported := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeAdminError(w, r, http.StatusNotFound, codeUnsupported,
			fmt.Sprintf("robot tokens need authentication: %s %s", r.Method, r.URL.Path))
	})
	mux.Handle(robots, unsupported)
	mux.Handle(robots+"/", unsupported)
	mux.Handle("/", admin)
	return mux
}
