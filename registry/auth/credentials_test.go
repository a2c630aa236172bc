package auth

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// doFrom serves one request from client address addr (host:port) straight
// through the middleware, and returns the recorded answer.
func (f *fixture) doFrom(addr, method, path string, set func(*http.Request)) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, nil)
	req.RemoteAddr = addr
	if set != nil {
		set(req)
	}
	rec := httptest.NewRecorder()
	f.handler.ServeHTTP(rec, req)
	return rec
}

// tokens asks the token service, with a password grant, for an access
// token and a refresh token.
func (f *fixture) tokens(t *testing.T, user, pass, scope string) (access, refresh string) {
	t.Helper()
	form := url.Values{"grant_type": {"password"}, "username": {user}, "password": {pass},
		"service": {"berth"}, "scope": {scope}, "access_type": {"offline"}}
	resp, err := http.PostForm(f.srv.URL+TokenPath, form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tr tokenResponse
	if err := json.NewDecoder(resp.Body).Decode(&tr); err != nil || tr.AccessToken == "" || tr.RefreshToken == "" {
		t.Fatalf("password grant for %s: status %d, %+v %v", user, resp.StatusCode, tr, err)
	}
	return tr.AccessToken, tr.RefreshToken
}

// refresh exchanges a refresh token and returns the status of the answer.
func (f *fixture) refresh(t *testing.T, refresh, scope string) int {
	t.Helper()
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refresh}, "service": {"berth"}, "scope": {scope}}
	resp, err := http.PostForm(f.srv.URL+TokenPath, form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// notBareCode fails if an error body's first error has its code's own
// message and no detail: Docker's registry client reads such an error as
// a bare code, which it keeps retrying on and words as just "denied" or
// "unauthorized".
func notBareCode(t *testing.T, what string, body []byte) {
	t.Helper()
	var eb struct {
		Errors []struct {
			Code    string
			Message string
			Detail  any
		}
	}
	if err := json.Unmarshal(body, &eb); err != nil || len(eb.Errors) == 0 {
		t.Errorf("%s: not an error body: %s", what, body)
		return
	}
	e := eb.Errors[0]
	defaults := map[string]string{"DENIED": "requested access to the resource is denied", "UNAUTHORIZED": "authentication required"}
	if e.Detail == nil && e.Message == defaults[e.Code] {
		t.Errorf("%s: %s, a bare code with neither detail nor message of its own", what, body)
	}
}

// TestCredentialChangeEndsTokens checks that a changed password, a
// removed user, a rotated robot secret and a revoked robot end every
// access and refresh token issued before, from the next request on, and
// that tokens issued after the change work.
func TestCredentialChangeEndsTokens(t *testing.T) {
	const path = "/v2/team-a/app/manifests/v1"
	const scope = "repository:team-a/app:pull"
	htpasswd := func(f *fixture) string { return filepath.Join(f.dir, "htpasswd") }

	t.Run("password changed", func(t *testing.T) {
		f := newFixture(t)
		access, refresh := f.tokens(t, "alice", "alice-secret", scope)
		wantStatus(t, f.do(t, http.MethodGet, path, bearer(access)), http.StatusOK)
		// The same password again: a new hash all the same, and a new
		// credential.
		if err := setPassword(htpasswd(f), "alice", "alice-secret", bcrypt.MinCost); err != nil {
			t.Fatal(err)
		}
		resp := f.do(t, http.MethodGet, path, bearer(access))
		wantStatus(t, resp, http.StatusUnauthorized)
		body, _ := io.ReadAll(resp.Body)
		if strings.Contains(string(body), "alice") || strings.Contains(string(body), "password") {
			t.Errorf("the refusal tells why: %s", body)
		}
		if got := f.refresh(t, refresh, scope); got != http.StatusUnauthorized {
			t.Errorf("refresh token issued before the password change: status %d, want 401", got)
		}
		access, refresh = f.tokens(t, "alice", "alice-secret", scope)
		wantStatus(t, f.do(t, http.MethodGet, path, bearer(access)), http.StatusOK)
		if got := f.refresh(t, refresh, scope); got != http.StatusOK {
			t.Errorf("refresh token issued after the password change: status %d, want 200", got)
		}
	})

	t.Run("user removed", func(t *testing.T) {
		f := newFixture(t)
		access, refresh := f.tokens(t, "alice", "alice-secret", scope)
		if err := RemoveUser(htpasswd(f), "alice"); err != nil {
			t.Fatal(err)
		}
		resp := f.do(t, http.MethodGet, path, bearer(access))
		wantStatus(t, resp, http.StatusUnauthorized)
		body, _ := io.ReadAll(resp.Body)
		if strings.Contains(string(body), "alice") || strings.Contains(string(body), "exist") {
			t.Errorf("the refusal says the user is gone: %s", body)
		}
		if got := f.refresh(t, refresh, scope); got != http.StatusUnauthorized {
			t.Errorf("refresh token of a removed user: status %d, want 401", got)
		}
		// Added back under the same name, the user has a new credential:
		// the old tokens stay dead.
		if err := addUser(htpasswd(f), "alice", "alice-secret", bcrypt.MinCost); err != nil {
			t.Fatal(err)
		}
		wantStatus(t, f.do(t, http.MethodGet, path, bearer(access)), http.StatusUnauthorized)
	})

	robotScope := "repository:apps/web:pull"
	robotPath := "/v2/apps/web/manifests/v1"
	t.Run("robot rotated", func(t *testing.T) {
		f := newFixture(t)
		access, refresh := f.tokens(t, "ci", "berth_ci-secret", robotScope)
		wantStatus(t, f.do(t, http.MethodGet, robotPath, bearer(access)), http.StatusOK)
		rotated := f.now
		f.robots["ci"].rotated = &rotated
		f.robots["ci"].secret = "berth_ci-new-secret"
		wantStatus(t, f.do(t, http.MethodGet, robotPath, bearer(access)), http.StatusUnauthorized)
		if got := f.refresh(t, refresh, robotScope); got != http.StatusUnauthorized {
			t.Errorf("robot refresh token issued before the rotation: status %d, want 401", got)
		}
		access, refresh = f.tokens(t, "ci", "berth_ci-new-secret", robotScope)
		wantStatus(t, f.do(t, http.MethodGet, robotPath, bearer(access)), http.StatusOK)
		if got := f.refresh(t, refresh, robotScope); got != http.StatusOK {
			t.Errorf("robot refresh token issued after the rotation: status %d, want 200", got)
		}
	})

	t.Run("robot revoked", func(t *testing.T) {
		f := newFixture(t)
		access, refresh := f.tokens(t, "ci", "berth_ci-secret", robotScope)
		f.robots["ci"].revoked = true
		wantStatus(t, f.do(t, http.MethodGet, robotPath, bearer(access)), http.StatusUnauthorized)
		if got := f.refresh(t, refresh, robotScope); got != http.StatusUnauthorized {
			t.Errorf("refresh token of a revoked robot: status %d, want 401", got)
		}
	})
}

// TestAnonymousRefusal checks the two ways an anonymous caller is
// refused: without credentials, a challenge with no error code (the client
// is to log in or fetch a token); with an anonymous token, which is all the
// token service will give it, insufficient_scope, so that clients give up
// at once instead of retrying.
func TestAnonymousRefusal(t *testing.T) {
	f := newFixture(t)
	const path = "/v2/team-a/app/blobs/uploads/"
	resp := f.do(t, http.MethodPost, path, nil)
	wantStatus(t, resp, http.StatusUnauthorized)
	if ch := resp.Header.Get("WWW-Authenticate"); strings.Contains(ch, "error=") || !strings.Contains(ch, `scope="repository:team-a/app:push"`) {
		t.Errorf("challenge without credentials: %q, want a scope and no error", ch)
	}
	tok := f.token(t, "", "", "repository:team-a/app:push,pull")
	for _, method := range []string{http.MethodPost, http.MethodHead} {
		p := path
		if method == http.MethodHead {
			p = "/v2/team-a/app/manifests/v1"
		}
		resp = f.do(t, method, p, bearer(tok))
		wantStatus(t, resp, http.StatusUnauthorized)
		if method != http.MethodHead {
			body, _ := io.ReadAll(resp.Body)
			notBareCode(t, method+" with an anonymous token", body)
		}
		ch := resp.Header.Get("WWW-Authenticate")
		if !strings.Contains(ch, `error="insufficient_scope"`) || !strings.HasPrefix(ch, "Bearer realm=") {
			t.Errorf("%s with an anonymous token: challenge %q, want error=\"insufficient_scope\"", method, ch)
		}
	}
}

// TestDenialSaysLittle checks that a 403 does not name the caller, yet is
// more than a bare code: the access it needed is its detail.
func TestDenialSaysLittle(t *testing.T) {
	f := newFixture(t)
	for _, c := range []struct{ method, path string }{
		{http.MethodGet, "/v2/team-a/app/manifests/v1"},
		{http.MethodGet, AdminPrefix + "robots"},
	} {
		resp := f.do(t, c.method, c.path, basic("bob", "bob-secret"))
		wantStatus(t, resp, http.StatusForbidden)
		body, _ := io.ReadAll(resp.Body)
		if !strings.Contains(string(body), `"DENIED"`) || strings.Contains(string(body), "bob") {
			t.Errorf("%s %s as bob: %s, want DENIED without naming the caller", c.method, c.path, body)
		}
		notBareCode(t, c.method+" "+c.path+" as bob", body)
	}
}

// TestGrantedFollowsTokenScopes checks that Granted, which decides for a
// mount's or a promotion's source, holds a Bearer token to its scopes,
// while Allowed (the catalog's filter) goes by the caller's rights.
func TestGrantedFollowsTokenScopes(t *testing.T) {
	f := newFixture(t)
	var allowed, granted, grantedOwn bool
	h := f.authn.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		allowed = f.authn.Allowed(r.Context(), "team-a/src", ActionPull)
		granted = f.authn.Granted(r.Context(), "team-a/src", ActionPull)
		grantedOwn = f.authn.Granted(r.Context(), "team-a/dst", ActionPush)
	}))
	call := func(set func(*http.Request)) {
		req := httptest.NewRequest(http.MethodPost, "/v2/team-a/dst/blobs/uploads/", nil)
		set(req)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			t.Fatalf("POST upload: status %d: %s", rec.Code, rec.Body)
		}
	}
	tok := f.token(t, "alice", "alice-secret", "repository:team-a/dst:push,pull")
	call(bearer(tok))
	if !allowed || granted || !grantedOwn {
		t.Errorf("token for team-a/dst only: Allowed(src)=%v Granted(src)=%v Granted(dst)=%v, want true false true", allowed, granted, grantedOwn)
	}
	tok = f.token(t, "alice", "alice-secret", "repository:team-a/dst:push,pull", "repository:team-a/src:pull")
	call(bearer(tok))
	if !granted {
		t.Error("token with team-a/src:pull: Granted(src) = false")
	}
	call(basic("alice", "alice-secret"))
	if !granted {
		t.Error("Basic credentials: Granted(src) = false, want the rules' answer")
	}
}

// TestLoginLimitIsNoLockout checks that failed logins slow a guesser
// without locking anyone else out: not the same user from another
// address (an administrator included), nor other users behind the
// guesser's address.
func TestLoginLimitIsNoLockout(t *testing.T) {
	f := newFixture(t) // 3 failures a minute
	const guesser, victim = "192.0.2.66:4000", "198.51.100.7:5000"
	for _, user := range []string{"alice", "root"} {
		for range 3 {
			if rec := f.doFrom(guesser, http.MethodGet, "/v2/", basic(user, "guess")); rec.Code != http.StatusUnauthorized {
				t.Fatalf("wrong password for %s: status %d", user, rec.Code)
			}
		}
		// The guesser is slowed, even with the right password...
		rec := f.doFrom(guesser, http.MethodGet, "/v2/", basic(user, user+"-secret"))
		if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") == "" {
			t.Errorf("%s from the guessing address after 3 failures: status %d, want 429 with Retry-After", user, rec.Code)
		}
		// ...the user elsewhere is not.
		if rec := f.doFrom(victim, http.MethodGet, "/v2/", basic(user, user+"-secret")); rec.Code != http.StatusOK {
			t.Errorf("%s from another address while being guessed: status %d, want 200", user, rec.Code)
		}
	}
	// Another user behind the guesser's address (a shared NAT) logs in.
	if rec := f.doFrom("192.0.2.66:4001", http.MethodGet, "/v2/", basic("bob", "bob-secret")); rec.Code != http.StatusOK {
		t.Errorf("bob behind the guesser's address: status %d, want 200", rec.Code)
	}
	// The window ends.
	f.now = f.now.Add(time.Minute + time.Second)
	if rec := f.doFrom(guesser, http.MethodGet, "/v2/", basic("alice", "alice-secret")); rec.Code != http.StatusOK {
		t.Errorf("after the window: status %d, want 200", rec.Code)
	}
}

// TestLoginLimitCountsParallelAttempts sends many wrong passwords at once
// for one user from one address: no more than the limit may reach the
// password check, however the requests interleave.
func TestLoginLimitCountsParallelAttempts(t *testing.T) {
	f := newFixture(t) // 3 failures a minute
	// A real-cost hash, so that the checks overlap in time.
	if err := setPassword(filepath.Join(f.dir, "htpasswd"), "alice", "alice-secret", HashCost); err != nil {
		t.Fatal(err)
	}
	const attempts = 24
	var wg sync.WaitGroup
	codes := make(chan int, attempts)
	start := make(chan struct{})
	for range attempts {
		wg.Go(func() {
			<-start
			codes <- f.doFrom("192.0.2.9:1234", http.MethodGet, "/v2/", basic("alice", "guess")).Code
		})
	}
	close(start)
	wg.Wait()
	close(codes)
	checked := 0
	for c := range codes {
		switch c {
		case http.StatusUnauthorized:
			checked++
		case http.StatusTooManyRequests:
		default:
			t.Errorf("parallel wrong password: status %d", c)
		}
	}
	if checked != 3 {
		t.Errorf("%d of %d parallel wrong passwords were checked, want exactly the limit, 3", checked, attempts)
	}
}
