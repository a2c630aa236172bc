package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"

	"github.com/berth-registry/berth/replication"
)

// fakeSyncer is a Syncer with one rule, "base", that records its runs.
type fakeSyncer struct{ runs []string }

func (f *fakeSyncer) Status(context.Context) ([]replication.RuleStatus, error) {
	return []replication.RuleStatus{{Name: "base", Direction: replication.Pull, Remote: "registry.example.com", Delivered: 3}}, nil
}

func (f *fakeSyncer) Run(_ context.Context, rule string) (replication.Report, error) {
	if rule != "base" {
		return replication.Report{}, fmt.Errorf("%w: %q", replication.ErrUnknownRule, rule)
	}
	f.runs = append(f.runs, rule)
	return replication.Report{Rule: rule, Direction: replication.Pull, Tags: []replication.TagResult{{Repository: "a", Tag: "v1"}}}, nil
}

// TestAdminSync: the status lists the rules; a run of a rule answers its
// report; an unknown rule is SYNC_RULE_UNKNOWN; without replication the
// endpoints are unknown.
func TestAdminSync(t *testing.T) {
	f := &fakeSyncer{}
	h := Handler(Options{Sync: f})
	rec := adminDo(t, h, http.MethodGet, SyncPath, "")
	var st SyncStatus
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &st) != nil || len(st.Rules) != 1 || st.Rules[0].Delivered != 3 {
		t.Fatalf("status: %d %s", rec.Code, rec.Body)
	}
	rec = adminDo(t, h, http.MethodPost, SyncPath+"/base/run", "")
	var rep replication.Report
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &rep) != nil || rep.Rule != "base" || len(rep.Tags) != 1 {
		t.Fatalf("run: %d %s", rec.Code, rec.Body)
	}
	if code := adminErrorCode(t, adminDo(t, h, http.MethodPost, SyncPath+"/nope/run", ""), http.StatusNotFound); code != codeSyncRuleUnknown {
		t.Errorf("unknown rule: %s", code)
	}
	adminErrorCode(t, adminDo(t, h, http.MethodGet, SyncPath+"/base/run", ""), http.StatusMethodNotAllowed)
	if len(f.runs) != 1 {
		t.Errorf("runs %q; want one of base", f.runs)
	}
	adminErrorCode(t, adminDo(t, Handler(Options{}), http.MethodGet, SyncPath, ""), http.StatusNotFound)
}
