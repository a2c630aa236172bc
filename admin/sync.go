package admin

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/gorilla/mux"

	"github.com/berth-registry/berth/registry/auth"
	"github.com/berth-registry/berth/replication"
)

// SyncPath is where the admin API shows the replication rules and runs
// one:
//
//	GET  /_berth/admin/sync              -> SyncStatus
//	POST /_berth/admin/sync/<rule>/run   -> replication.Report, once the run ended
const SyncPath = auth.AdminPrefix + "sync"

// codeSyncRuleUnknown answers a rule name no rule has.
const codeSyncRuleUnknown = "SYNC_RULE_UNKNOWN"

// Syncer is what the API needs of replication; *replication.Replicator is
// one.
type Syncer interface {
	Status(ctx context.Context) ([]replication.RuleStatus, error)
	Run(ctx context.Context, rule string) (replication.Report, error)
}

// SyncStatus is the answer of GET SyncPath.
type SyncStatus struct {
	Rules []replication.RuleStatus `json:"rules"`
}

// syncStatus serves GET SyncPath.
func (a *api) syncStatus(w http.ResponseWriter, r *http.Request) {
	rules, err := a.Sync.Status(r.Context())
	if err != nil {
		a.failed(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, SyncStatus{Rules: rules})
}

// syncRun serves POST SyncPath/<rule>/run: the run belongs to the server,
// and goes on if the client goes away.
func (a *api) syncRun(w http.ResponseWriter, r *http.Request) {
	name := mux.Vars(r)["rule"]
	rep, err := a.Sync.Run(r.Context(), name)
	switch {
	case errors.Is(err, replication.ErrUnknownRule):
		writeError(w, r, http.StatusNotFound, codeSyncRuleUnknown, err.Error())
		return
	case err != nil:
		a.failed(w, r, err)
		return
	}
	a.Logger.InfoContext(r.Context(), "sync run requested", "rule", name, "tags", len(rep.Tags), "failures", len(rep.Failures),
		"by", auth.IdentityFrom(r.Context()).String())
	writeJSON(w, http.StatusOK, rep)
}

// syncRoutes adds the replication endpoints to m.
func (a *api) syncRoutes(m *mux.Router) {
	base := strings.TrimSuffix(SyncPath, "/")
	m.HandleFunc(base, a.syncStatus).Methods(http.MethodGet)
	m.HandleFunc(base+"/{rule}/run", a.syncRun).Methods(http.MethodPost)
}
