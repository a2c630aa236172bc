package admin

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-registry/berth/registry/auth"
	"github.com/berth-registry/berth/storage"
	blobfs "github.com/berth-registry/berth/storage/blob/fs"
	"github.com/berth-registry/berth/storage/gc"
	"github.com/berth-registry/berth/storage/meta/bolt"
	"github.com/berth-registry/berth/storage/retention"
)

// testStore is what the admin API serves in these tests: a store over the
// real backends, and the robot credentials kept in its index.
type testStore struct {
	*storage.Service
	robots *auth.Robots
}

func adminStore(t *testing.T) *testStore {
	t.Helper()
	dir := t.TempDir()
	index, err := bolt.Open(filepath.Join(dir, "index.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = index.Close() })
	blobs, err := blobfs.Open(context.Background(), dir, blobfs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return &testStore{Service: storage.New(index, blobs, storage.Options{}), robots: auth.NewRobots(auth.IndexRobots(index), nil)}
}

// options are the Options of the admin API over s, as package registry
// builds them: robots, garbage collection and retention (with no policy).
func (s *testStore) options(now func() time.Time) Options {
	return Options{
		Robots: s.robots,
		Collect: func(ctx context.Context, grace time.Duration, dryRun bool) (gc.Report, error) {
			return gc.Collect(ctx, s.Service, gc.Options{Grace: grace, DryRun: dryRun})
		},
		Retain: func(ctx context.Context, dryRun bool) (retention.Report, error) {
			return retention.Apply(ctx, s.Service, nil, retention.Options{DryRun: dryRun})
		},
		Now: now,
	}
}

// adminHandler is the admin API over s with the real clock.
func adminHandler(s *testStore) http.Handler { return Handler(s.options(nil)) }

func adminDo(t *testing.T, h http.Handler, method, path, body string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// adminErrorCode checks the status and error body of a failed request and
// returns its code.
func adminErrorCode(t *testing.T, rec *httptest.ResponseRecorder, status int) string {
	t.Helper()
	if rec.Code != status {
		t.Fatalf("status %d, want %d; body %s", rec.Code, status, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
	var body struct {
		Errors []struct{ Code, Message string }
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || len(body.Errors) != 1 || body.Errors[0].Message == "" {
		t.Fatalf("error body %s: %v", rec.Body, err)
	}
	return body.Errors[0].Code
}

func decodeSecret(t *testing.T, rec *httptest.ResponseRecorder, status int) RobotSecret {
	t.Helper()
	if rec.Code != status {
		t.Fatalf("status %d, want %d; body %s", rec.Code, status, rec.Body)
	}
	if cc := rec.Header().Get("Cache-Control"); cc != "no-store" {
		t.Fatalf("Cache-Control %q, want no-store", cc)
	}
	var out RobotSecret
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatal(err)
	}
	return out
}

const robotsPath = "/_berth/admin/robots"

func TestAdminCreateRobot(t *testing.T) {
	s := adminStore(t)
	h := adminHandler(s)
	before := time.Now()
	rec := adminDo(t, h, http.MethodPost, robotsPath,
		`{"name":"ci","scopes":["repository:apps/*:pull, push","repository:base:pull"],"expires":"720h"}`)
	got := decodeSecret(t, rec, http.StatusCreated)
	if got.Name != "ci" || !strings.HasPrefix(got.Secret, auth.RobotSecretPrefix) || len(got.Secret) != len(auth.RobotSecretPrefix)+43 {
		t.Fatalf("answer %+v", got)
	}
	if got.Expires.Before(before.Add(720*time.Hour).Truncate(time.Second)) || got.Expires.After(time.Now().Add(720*time.Hour)) {
		t.Fatalf("expires %v, want 720h from now", got.Expires)
	}
	info, err := s.robots.VerifyRobot(context.Background(), got.Secret, time.Now())
	if err != nil || info.Name != "ci" || !info.Expires.Equal(got.Expires) {
		t.Fatalf("verify = %+v %v", info, err)
	}
	// Scopes are stored in canonical form.
	if want := []string{"repository:apps/*:pull,push", "repository:base:pull"}; !slices.Equal(info.Scopes, want) {
		t.Fatalf("scopes %q, want %q", info.Scopes, want)
	}

	// The longest lifetime allowed.
	rec = adminDo(t, h, http.MethodPost, robotsPath, `{"name":"year","scopes":["repository:**:*"],"expires":"8760h"}`)
	decodeSecret(t, rec, http.StatusCreated)

	// A name is never reused.
	rec = adminDo(t, h, http.MethodPost, robotsPath, `{"name":"ci","scopes":["repository:x:pull"],"expires":"1h"}`)
	if code := adminErrorCode(t, rec, http.StatusConflict); code != codeRobotExists {
		t.Fatalf("duplicate: code %s", code)
	}
}

func TestAdminCreateRobotInvalid(t *testing.T) {
	h := adminHandler(adminStore(t))
	cases := []struct {
		name, body string
		status     int
		code       string
	}{
		{"not JSON", `{"name":`, 400, "UNSUPPORTED"},
		{"empty body", ``, 400, "UNSUPPORTED"},
		{"array", `[]`, 400, "UNSUPPORTED"},
		{"unknown field", `{"name":"ci","scopes":["repository:a:pull"],"expires":"1h","admin":true}`, 400, "UNSUPPORTED"},
		{"trailing data", `{"name":"ci","scopes":["repository:a:pull"],"expires":"1h"} {}`, 400, "UNSUPPORTED"},
		{"no name", `{"scopes":["repository:a:pull"],"expires":"1h"}`, 400, codeNameInvalid},
		{"upper-case name", `{"name":"CI","scopes":["repository:a:pull"],"expires":"1h"}`, 400, codeNameInvalid},
		{"name with slash", `{"name":"ci/x","scopes":["repository:a:pull"],"expires":"1h"}`, 400, codeNameInvalid},
		{"long name", `{"name":"` + strings.Repeat("a", 64) + `","scopes":["repository:a:pull"],"expires":"1h"}`, 400, codeNameInvalid},
		{"no scopes", `{"name":"ci","expires":"1h"}`, 400, codeScopeInvalid},
		{"empty scopes", `{"name":"ci","scopes":[],"expires":"1h"}`, 400, codeScopeInvalid},
		{"registry scope", `{"name":"ci","scopes":["registry:catalog:*"],"expires":"1h"}`, 400, codeScopeInvalid},
		{"unknown action", `{"name":"ci","scopes":["repository:a:pull,own"],"expires":"1h"}`, 400, codeScopeInvalid},
		{"no actions", `{"name":"ci","scopes":["repository:a:"],"expires":"1h"}`, 400, codeScopeInvalid},
		{"no repository", `{"name":"ci","scopes":["repository::pull"],"expires":"1h"}`, 400, codeScopeInvalid},
		{"not a scope", `{"name":"ci","scopes":["apps"],"expires":"1h"}`, 400, codeScopeInvalid},
		{"too many scopes", `{"name":"ci","scopes":[` + strings.Repeat(`"repository:a:pull",`, maxRobotScopes) + `"repository:a:pull"],"expires":"1h"}`, 400, codeScopeInvalid},
		{"no expiry", `{"name":"ci","scopes":["repository:a:pull"]}`, 400, codeExpiresInvalid},
		{"bad expiry", `{"name":"ci","scopes":["repository:a:pull"],"expires":"30d"}`, 400, codeExpiresInvalid},
		{"zero expiry", `{"name":"ci","scopes":["repository:a:pull"],"expires":"0s"}`, 400, codeExpiresInvalid},
		{"negative expiry", `{"name":"ci","scopes":["repository:a:pull"],"expires":"-1h"}`, 400, codeExpiresInvalid},
		{"expiry over a year", `{"name":"ci","scopes":["repository:a:pull"],"expires":"8761h"}`, 400, codeExpiresInvalid},
		{"body over 64 KiB", `{"name":"ci","scopes":["repository:a:pull"],"expires":"1h","x":"` + strings.Repeat("x", maxAdminBody) + `"}`, 413, "UNSUPPORTED"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec := adminDo(t, h, http.MethodPost, robotsPath, c.body)
			if code := adminErrorCode(t, rec, c.status); code != c.code {
				t.Fatalf("code %s, want %s; body %s", code, c.code, rec.Body)
			}
		})
	}
	rec := adminDo(t, h, http.MethodGet, robotsPath, "")
	if strings.TrimSpace(rec.Body.String()) != "[]" {
		t.Fatalf("robots after refused creations: %s", rec.Body)
	}
}

func TestAdminListRobots(t *testing.T) {
	s := adminStore(t)
	now := time.Now()
	clock := now
	h := Handler(s.options(func() time.Time { return clock }))

	rec := adminDo(t, h, http.MethodGet, robotsPath, "")
	if rec.Code != http.StatusOK || strings.TrimSpace(rec.Body.String()) != "[]" {
		t.Fatalf("empty list: %d %s", rec.Code, rec.Body)
	}
	var secrets []string
	for _, body := range []string{
		`{"name":"build","scopes":["repository:apps/*:pull,push"],"expires":"720h"}`,
		`{"name":"deploy","scopes":["repository:apps/web:pull"],"expires":"1h"}`,
		`{"name":"old","scopes":["repository:a:pull"],"expires":"720h"}`,
	} {
		secrets = append(secrets, decodeSecret(t, adminDo(t, h, http.MethodPost, robotsPath, body), http.StatusCreated).Secret)
	}
	if rec := adminDo(t, h, http.MethodDelete, robotsPath+"/old", ""); rec.Code != http.StatusNoContent {
		t.Fatalf("revoke: %d %s", rec.Code, rec.Body)
	}
	clock = now.Add(2 * time.Hour) // deploy has expired

	rec = adminDo(t, h, http.MethodGet, robotsPath, "")
	if rec.Code != http.StatusOK {
		t.Fatalf("list: %d %s", rec.Code, rec.Body)
	}
	for _, sec := range secrets {
		if strings.Contains(rec.Body.String(), sec) {
			t.Fatal("the listing shows a secret")
		}
	}
	if strings.Contains(rec.Body.String(), "hash") {
		t.Fatalf("the listing shows a hash: %s", rec.Body)
	}
	var list []RobotListing
	if err := json.Unmarshal(rec.Body.Bytes(), &list); err != nil {
		t.Fatal(err)
	}
	want := []struct{ name, status string }{{"build", "active"}, {"deploy", "expired"}, {"old", "revoked"}}
	if len(list) != len(want) {
		t.Fatalf("list %+v", list)
	}
	for i, w := range want {
		if list[i].Name != w.name || list[i].Status != w.status {
			t.Errorf("robot %d = %s %s, want %s %s", i, list[i].Name, list[i].Status, w.name, w.status)
		}
	}
	if !slices.Equal(list[0].Scopes, []string{"repository:apps/*:pull,push"}) || list[0].Created.IsZero() ||
		!list[0].Expires.Equal(now.Add(720*time.Hour).UTC()) || list[0].Revoked != nil {
		t.Errorf("build = %+v", list[0])
	}
	if list[2].Revoked == nil || !list[2].Revoked.Equal(now) {
		t.Errorf("old = %+v, want revoked at %v", list[2], now)
	}
}

func TestAdminRevokeRobot(t *testing.T) {
	s := adminStore(t)
	h := adminHandler(s)
	got := decodeSecret(t, adminDo(t, h, http.MethodPost, robotsPath, `{"name":"ci","scopes":["repository:a:pull"],"expires":"1h"}`), http.StatusCreated)
	for range 2 { // revoking twice is fine
		rec := adminDo(t, h, http.MethodDelete, robotsPath+"/ci", "")
		if rec.Code != http.StatusNoContent || rec.Body.Len() != 0 {
			t.Fatalf("revoke: %d %s", rec.Code, rec.Body)
		}
	}
	if _, err := s.robots.VerifyRobot(context.Background(), got.Secret, time.Now()); !errors.Is(err, auth.ErrRobotUnknown) {
		t.Fatalf("revoked secret: %v, want ErrRobotUnknown", err)
	}
	rec := adminDo(t, h, http.MethodDelete, robotsPath+"/nobody", "")
	if code := adminErrorCode(t, rec, http.StatusNotFound); code != codeRobotUnknown {
		t.Fatalf("revoke unknown: code %s", code)
	}
}

func TestAdminRotateRobot(t *testing.T) {
	s := adminStore(t)
	h := adminHandler(s)
	ctx := context.Background()
	created := decodeSecret(t, adminDo(t, h, http.MethodPost, robotsPath, `{"name":"ci","scopes":["repository:a:pull"],"expires":"1h"}`), http.StatusCreated)
	rotated := decodeSecret(t, adminDo(t, h, http.MethodPost, robotsPath+"/ci/rotate", ""), http.StatusOK)
	if rotated.Name != "ci" || rotated.Secret == created.Secret || !strings.HasPrefix(rotated.Secret, auth.RobotSecretPrefix) ||
		!rotated.Expires.Equal(created.Expires) {
		t.Fatalf("rotated %+v, created %+v", rotated, created)
	}
	if _, err := s.robots.VerifyRobot(ctx, created.Secret, time.Now()); !errors.Is(err, auth.ErrRobotUnknown) {
		t.Fatalf("old secret: %v, want ErrRobotUnknown", err)
	}
	if info, err := s.robots.VerifyRobot(ctx, rotated.Secret, time.Now()); err != nil || info.Name != "ci" {
		t.Fatalf("new secret: %+v %v", info, err)
	}

	rec := adminDo(t, h, http.MethodPost, robotsPath+"/nobody/rotate", "")
	if code := adminErrorCode(t, rec, http.StatusNotFound); code != codeRobotUnknown {
		t.Fatalf("rotate unknown: code %s", code)
	}
	if rec := adminDo(t, h, http.MethodDelete, robotsPath+"/ci", ""); rec.Code != http.StatusNoContent {
		t.Fatalf("revoke: %d", rec.Code)
	}
	rec = adminDo(t, h, http.MethodPost, robotsPath+"/ci/rotate", "")
	if code := adminErrorCode(t, rec, http.StatusConflict); code != codeRobotInactive {
		t.Fatalf("rotate revoked: code %s", code)
	}
}

func TestAdminRoutes(t *testing.T) {
	h := adminHandler(adminStore(t))
	for _, c := range []struct {
		method, path string
		status       int
	}{
		{http.MethodGet, "/_berth/admin/", http.StatusNotFound},
		{http.MethodGet, "/_berth/admin/users", http.StatusNotFound},
		{http.MethodGet, robotsPath + "/ci/secret", http.StatusNotFound},
		{http.MethodPut, robotsPath, http.StatusMethodNotAllowed},
		{http.MethodGet, robotsPath + "/ci", http.StatusMethodNotAllowed},
		{http.MethodGet, robotsPath + "/ci/rotate", http.StatusMethodNotAllowed},
	} {
		rec := adminDo(t, h, c.method, c.path, "")
		if code := adminErrorCode(t, rec, c.status); code != codeUnsupported {
			t.Errorf("%s %s: code %s", c.method, c.path, code)
		}
	}
}
