package distribution_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/distribution"
	"github.com/berth-registry/berth/storage"
)

// accessFunc adapts a function to distribution.Access.
type accessFunc func(repo, action string) bool

func (f accessFunc) Allowed(_ context.Context, repo, action string) bool { return f(repo, action) }

func (f accessFunc) Granted(_ context.Context, repo, action string) bool { return f(repo, action) }

// tagRulesFunc adapts a function to storage.TagRules.
type tagRulesFunc func(repo, tag string) bool

func (f tagRulesFunc) Immutable(repo, tag string) bool { return f(repo, tag) }

type historyBody struct {
	Name    string            `json:"name"`
	Tag     string            `json:"tag"`
	History []storage.TagMove `json:"history"`
}

// history GETs a page of a tag's history and checks its shape.
func (e *env) history(path string) (historyBody, *response) {
	e.t.Helper()
	r := e.do(http.MethodGet, path, nil)
	wantStatus(e.t, r, http.StatusOK)
	wantHeader(e.t, r, "Content-Type", "application/json")
	var h historyBody
	if err := json.Unmarshal(r.Body, &h); err != nil {
		e.t.Fatalf("history body: %v: %s", err, r.Body)
	}
	return h, r
}

// tagTarget returns the digest a tag names, via the manifest API.
func (e *env) tagTarget(repo, tag string) digest.Digest {
	e.t.Helper()
	r := e.do(http.MethodHead, "/v2/"+repo+"/manifests/"+tag, nil)
	wantStatus(e.t, r, http.StatusOK)
	return digest.Digest(r.Header.Get("Docker-Content-Digest"))
}

// pushThree pushes three images to repo under tag, one after the other.
func (e *env) pushThree(repo, tag string) [3]digest.Digest {
	var v [3]digest.Digest
	for i, seed := range []string{"v1", "v2", "v3"} {
		v[i] = e.pushImage(repo, tag, seed).Digest
	}
	return v
}

func TestLifecycleHistoryPages(t *testing.T) {
	e := newEnv(t, distribution.Options{})
	v := e.pushThree("apps/web", "production")
	const base = "/v2/apps/web/_berth/tags/production/history"

	h, r := e.history(base + "?n=2")
	if h.Name != "apps/web" || h.Tag != "production" || len(h.History) != 2 {
		t.Fatalf("first page = %+v", h)
	}
	if h.History[0].Seq != 3 || h.History[0].Digest != v[2] || h.History[0].Previous != v[1] ||
		h.History[1].Seq != 2 || h.History[1].Digest != v[1] || h.History[0].Action != storage.MovePush {
		t.Errorf("first page moves = %+v", h.History)
	}
	wantHeader(t, r, "Link", `<`+base+`?last=2&n=2>; rel="next"`)
	h, r = e.history(base + "?last=2&n=2")
	if len(h.History) != 1 || h.History[0].Seq != 1 || h.History[0].Previous != "" || h.History[0].Digest != v[0] {
		t.Errorf("second page = %+v", h.History)
	}
	wantHeader(t, r, "Link", "")
	if h, _ := e.history(base); len(h.History) != 3 {
		t.Errorf("whole history has %d moves, want 3", len(h.History))
	}

	wantError(t, e.do(http.MethodGet, base+"?last=abc", nil), http.StatusBadRequest, "UNSUPPORTED")
	wantError(t, e.do(http.MethodGet, base+"?last=0", nil), http.StatusBadRequest, "UNSUPPORTED")
	wantError(t, e.do(http.MethodGet, base+"?n=-1", nil), http.StatusBadRequest, "UNSUPPORTED")
	wantError(t, e.do(http.MethodGet, "/v2/apps/web/_berth/tags/staging/history", nil), http.StatusNotFound, "MANIFEST_UNKNOWN")
	wantError(t, e.do(http.MethodGet, "/v2/apps/nope/_berth/tags/production/history", nil), http.StatusNotFound, "NAME_UNKNOWN")
	wantError(t, e.do(http.MethodGet, "/v2/Apps/_berth/tags/production/history", nil), http.StatusBadRequest, "NAME_INVALID")
	wantError(t, e.do(http.MethodGet, "/v2/apps/web/_berth/tags/.bad/history", nil), http.StatusNotFound, "MANIFEST_UNKNOWN")
	wantError(t, e.do(http.MethodPost, base, nil), http.StatusMethodNotAllowed, "UNSUPPORTED")
}

func TestLifecycleRollback(t *testing.T) {
	e := newEnv(t, distribution.Options{})
	v := e.pushThree("apps/web", "production")
	const path = "/v2/apps/web/_berth/tags/production/rollback"

	rollback := func(body string) storage.TagMove {
		t.Helper()
		var b []byte
		if body != "" {
			b = []byte(body)
		}
		r := e.do(http.MethodPost, path, b, "Content-Type", "application/json")
		wantStatus(t, r, http.StatusOK)
		var m storage.TagMove
		if err := json.Unmarshal(r.Body, &m); err != nil {
			t.Fatalf("rollback body: %v: %s", err, r.Body)
		}
		return m
	}
	m := rollback("")
	if m.Seq != 4 || m.Previous != v[2] || m.Digest != v[1] || m.Action != storage.MoveRollback || m.Actor.Kind != storage.ActorAnonymous {
		t.Errorf("rollback = %+v, want seq 4 %s -> %s", m, v[2], v[1])
	}
	if got := e.tagTarget("apps/web", "production"); got != v[1] {
		t.Errorf("production = %s after rollback, want %s", got, v[1])
	}
	m = rollback(`{"to":"` + string(v[0]) + `"}`)
	if m.Seq != 5 || m.Digest != v[0] {
		t.Errorf("rollback to v1 = %+v", m)
	}
	// To where it is: nothing moves, the answer is the newest move.
	m = rollback(`{"to":"` + string(v[0]) + `"}`)
	if m.Seq != 5 || m.Digest != v[0] {
		t.Errorf("rollback to the current digest = %+v, want move 5 again", m)
	}

	for _, c := range []struct {
		body   string
		status int
		code   string
	}{
		{`{"to":`, http.StatusBadRequest, "UNSUPPORTED"},
		{`{"digest":"sha256:00"}`, http.StatusBadRequest, "UNSUPPORTED"},
		{`{} {}`, http.StatusBadRequest, "UNSUPPORTED"},
		{`{}}`, http.StatusBadRequest, "UNSUPPORTED"},
		{`{}]`, http.StatusBadRequest, "UNSUPPORTED"},
		{`{"to":"sha256:zz"}`, http.StatusBadRequest, "DIGEST_INVALID"},
		{`{"to":"` + string(digest.FromString("absent")) + `"}`, http.StatusNotFound, "MANIFEST_UNKNOWN"},
		{strings.Repeat(" ", 65<<10), http.StatusRequestEntityTooLarge, "UNSUPPORTED"},
	} {
		wantError(t, e.do(http.MethodPost, path, []byte(c.body)), c.status, c.code)
	}
	wantError(t, e.do(http.MethodPost, "/v2/apps/web/_berth/tags/staging/rollback", nil), http.StatusNotFound, "MANIFEST_UNKNOWN")
	wantError(t, e.do(http.MethodPost, "/v2/apps/nope/_berth/tags/production/rollback", nil), http.StatusNotFound, "NAME_UNKNOWN")
	if got := e.tagTarget("apps/web", "production"); got != v[0] {
		t.Errorf("production = %s after refused rollbacks, want %s", got, v[0])
	}
	if h, _ := e.history("/v2/apps/web/_berth/tags/production/history"); len(h.History) != 5 {
		t.Errorf("history has %d moves after refused rollbacks, want 5", len(h.History))
	}
}

type promoteBody struct {
	Digest digest.Digest    `json:"digest"`
	Move   *storage.TagMove `json:"move"`
}

// promote POSTs a promotion and returns the response.
func (e *env) promote(dst, tag, body string) *response {
	e.t.Helper()
	return e.do(http.MethodPost, "/v2/"+dst+"/_berth/tags/"+tag+"/promote", []byte(body), "Content-Type", "application/json")
}

func TestLifecyclePromote(t *testing.T) {
	e := newEnv(t, distribution.Options{})
	img := e.pushImage("apps/web", "staging-validated", "one")
	body := `{"repository":"apps/web","reference":"staging-validated"}`

	r := e.promote("apps/web-prod", "production", body)
	wantStatus(t, r, http.StatusCreated)
	wantHeader(t, r, "Docker-Content-Digest", string(img.Digest))
	wantHeader(t, r, "Location", "/v2/apps/web-prod/manifests/"+string(img.Digest))
	var pb promoteBody
	if err := json.Unmarshal(r.Body, &pb); err != nil {
		t.Fatalf("promote body: %v: %s", err, r.Body)
	}
	if pb.Digest != img.Digest || pb.Move == nil || pb.Move.Action != storage.MovePromote || pb.Move.Digest != img.Digest || pb.Move.Seq != 1 {
		t.Errorf("promote = %s", r.Body)
	}
	if got := e.tagTarget("apps/web-prod", "production"); got != img.Digest {
		t.Errorf("apps/web-prod:production = %s, want %s", got, img.Digest)
	}
	e.blobContent("apps/web-prod", img.Config.Digest)
	e.blobContent("apps/web-prod", img.Layer.Digest)
	e.wantEmptyDir("uploads")

	// Again, by digest: nothing moves, 200 without a move.
	r = e.promote("apps/web-prod", "production", `{"repository":"apps/web","reference":"`+string(img.Digest)+`"}`)
	wantStatus(t, r, http.StatusOK)
	pb = promoteBody{}
	if err := json.Unmarshal(r.Body, &pb); err != nil || pb.Digest != img.Digest || pb.Move != nil {
		t.Errorf("promote again = %s (%v)", r.Body, err)
	}

	for _, c := range []struct {
		dst, tag, body string
		status         int
		code           string
	}{
		{"other", "t", ``, http.StatusBadRequest, "UNSUPPORTED"},
		{"other", "t", `{"repository":`, http.StatusBadRequest, "UNSUPPORTED"},
		{"other", "t", `{"repository":"apps/web","reference":"staging-validated","x":1}`, http.StatusBadRequest, "UNSUPPORTED"},
		{"other", "t", `{"repository":"Apps","reference":"staging-validated"}`, http.StatusBadRequest, "NAME_INVALID"},
		{"other", "t", `{"repository":"apps/web"}`, http.StatusBadRequest, "MANIFEST_INVALID"},
		{"other", "t", `{"repository":"apps/web","reference":"sha256:zz"}`, http.StatusBadRequest, "DIGEST_INVALID"},
		{"other", "t", `{"repository":"apps/web","reference":"-bad"}`, http.StatusNotFound, "MANIFEST_UNKNOWN"},
		{"other", "t", `{"repository":"apps/nope","reference":"staging-validated"}`, http.StatusNotFound, "NAME_UNKNOWN"},
		{"other", "t", `{"repository":"apps/web","reference":"missing"}`, http.StatusNotFound, "MANIFEST_UNKNOWN"},
		{"other", ".bad", body, http.StatusBadRequest, "MANIFEST_INVALID"},
		{"Other", "t", body, http.StatusBadRequest, "NAME_INVALID"},
	} {
		wantError(t, e.promote(c.dst, c.tag, c.body), c.status, c.code)
	}
	// None of the refused promotions created the destination.
	wantError(t, e.do(http.MethodGet, "/v2/other/tags/list", nil), http.StatusNotFound, "NAME_UNKNOWN")
}

func TestLifecyclePromoteImmutable(t *testing.T) {
	e := newEnvWithStore(t, distribution.Options{}, storage.Options{Tags: tagRulesFunc(func(repo, tag string) bool {
		return strings.HasPrefix(tag, "v")
	})}, nil)
	a := e.pushImage("src", "a", "a")
	b := e.pushImage("src", "b", "b")
	wantStatus(t, e.promote("dst", "v1.0.0", `{"repository":"src","reference":"a"}`), http.StatusCreated)
	entry := wantError(t, e.promote("dst", "v1.0.0", `{"repository":"src","reference":"b"}`), http.StatusConflict, "TAG_IMMUTABLE")
	if entry.Detail["digest"] != string(a.Digest) {
		t.Errorf("detail = %v, want the digest the tag keeps", entry.Detail)
	}
	if got := e.tagTarget("dst", "v1.0.0"); got != a.Digest {
		t.Errorf("dst:v1.0.0 = %s, want %s", got, a.Digest)
	}
	if r := e.do(http.MethodHead, "/v2/dst/manifests/"+string(b.Digest), nil); r.Status != http.StatusNotFound {
		t.Errorf("refused manifest in dst: HEAD status %d", r.Status)
	}
	wantError(t, e.do(http.MethodGet, "/v2/dst/blobs/"+string(b.Layer.Digest), nil), http.StatusNotFound, "BLOB_UNKNOWN")
	// The same digest again is accepted.
	wantStatus(t, e.promote("dst", "v1.0.0", `{"repository":"src","reference":"a"}`), http.StatusOK)
	if h, _ := e.history("/v2/dst/_berth/tags/v1.0.0/history"); len(h.History) != 1 {
		t.Errorf("history has %d moves, want 1", len(h.History))
	}
}

func TestLifecyclePromoteNeedsPullOnSource(t *testing.T) {
	e := newEnv(t, distribution.Options{Access: accessFunc(func(repo, action string) bool {
		return action != "pull" || !strings.HasPrefix(repo, "secret")
	})})
	e.pushImage("secret/one", "v1", "s")
	// Denied whether or not the source exists: the answer tells nothing.
	for _, src := range []string{"secret/one", "secret/absent"} {
		wantError(t, e.promote("public", "t", `{"repository":"`+src+`","reference":"v1"}`), http.StatusForbidden, "DENIED")
	}
	wantError(t, e.promote("public", "t", `{"repository":"absent","reference":"v1"}`), http.StatusNotFound, "NAME_UNKNOWN")
	wantError(t, e.do(http.MethodGet, "/v2/public/tags/list", nil), http.StatusNotFound, "NAME_UNKNOWN")
}
