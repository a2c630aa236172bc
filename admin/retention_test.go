package admin

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/gc"
	"github.com/berth-registry/berth/storage/retention"
)

func TestAdminRetention(t *testing.T) {
	opts := adminStore(t).options(nil)
	opts.Robots = nil // authentication off
	h := Handler(opts)
	// dryRun is required.
	if code := adminErrorCode(t, adminDo(t, h, http.MethodPost, "/_berth/admin/retention", ""), http.StatusBadRequest); code != codeDryRunInvalid {
		t.Fatalf("code %s", code)
	}
	// No policies: an empty report.
	rec := adminDo(t, h, http.MethodPost, "/_berth/admin/retention?dryRun=true", "")
	var rep retention.Report
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &rep) != nil || !rep.DryRun || len(rep.Tags) != 0 {
		t.Fatalf("status %d, body %s", rec.Code, rec.Body)
	}
	// Without authentication there are no robot tokens.
	for _, p := range []string{robotsPath, robotsPath + "/ci", robotsPath + "/ci/rotate"} {
		if code := adminErrorCode(t, adminDo(t, h, http.MethodGet, p, ""), http.StatusNotFound); code != codeUnsupported {
			t.Errorf("%s: code %s", p, code)
		}
	}
}

// matchAll is a retention.Matcher that matches every name.
type matchAll struct{}

func (matchAll) Match(string) bool { return true }

func TestAdminRetentionRuns(t *testing.T) {
	ctx := context.Background()
	s := adminStore(t)
	opts := s.options(nil)
	opts.Retain = func(ctx context.Context, dryRun bool) (retention.Report, error) {
		return retention.Apply(ctx, s.Service, []retention.Policy{{Repositories: matchAll{}, KeepLast: 1}}, retention.Options{DryRun: dryRun})
	}
	h := Handler(opts)
	// b, then a: a is the newest (and would win a tie by name).
	b := pushImage(t, s, "app", "b")
	pushImage(t, s, "app", "a")
	for _, dry := range []bool{true, false} {
		rec := adminDo(t, h, http.MethodPost, "/_berth/admin/retention?dryRun="+strconv.FormatBool(dry), "")
		var rep retention.Report
		if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &rep) != nil {
			t.Fatalf("dryRun=%v: status %d, body %s", dry, rec.Code, rec.Body)
		}
		if rep.DryRun != dry || rep.Repositories != 1 || len(rep.Tags) != 1 || rep.Tags[0].Tag != "b" || rep.Tags[0].Digest != b ||
			rep.Tags[0].Reason != retention.TagReasonKeepLast || len(rep.Manifests) != 0 {
			t.Fatalf("dryRun=%v: report %s", dry, rec.Body)
		}
		_, err := s.StatManifest(ctx, "app", "b")
		if dry && err != nil {
			t.Fatalf("a dry run deleted b: %v", err)
		}
		if !dry && !errors.Is(err, storage.ErrManifestUnknown) {
			t.Fatalf("b after the run: %v", err)
		}
	}
}

// A failing maintenance job answers 500 without its error, which is
// logged.
func TestAdminJobFailures(t *testing.T) {
	opts := adminStore(t).options(nil)
	secret := errors.New("disk on fire at /srv/berth/index.db")
	opts.Retain = func(context.Context, bool) (retention.Report, error) { return retention.Report{}, secret }
	opts.Collect = func(context.Context, time.Duration, bool) (gc.Report, error) { return gc.Report{}, secret }
	var logged strings.Builder
	opts.Logger = slog.New(slog.NewTextHandler(&logged, nil))
	h := Handler(opts)
	for _, p := range []string{"/_berth/admin/retention?dryRun=false", GCPath} {
		rec := adminDo(t, h, http.MethodPost, p, "")
		if code := adminErrorCode(t, rec, http.StatusInternalServerError); code != codeUnknown || strings.Contains(rec.Body.String(), "disk on fire") {
			t.Fatalf("%s: code %s, body %s", p, code, rec.Body)
		}
	}
	if n := strings.Count(logged.String(), "disk on fire"); n != 2 {
		t.Fatalf("failures logged %d times, want 2:\n%s", n, logged.String())
	}
	// Without the jobs, their endpoints do not exist.
	opts.Retain, opts.Collect = nil, nil
	h = Handler(opts)
	for _, p := range []string{"/_berth/admin/retention?dryRun=true", GCPath} {
		if code := adminErrorCode(t, adminDo(t, h, http.MethodPost, p, ""), http.StatusNotFound); code != codeUnsupported {
			t.Fatalf("%s without the job: code %s", p, code)
		}
	}
}
