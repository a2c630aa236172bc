package auth

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/crypto/bcrypt"

	"github.com/berth-registry/berth/distribution"
)

// fakeRobot is a robot of fakeRobots.
type fakeRobot struct {
	secret  string
	scopes  []string
	created time.Time
	expires time.Time
	revoked bool
	rotated *time.Time
}

// fakeRobots is an in-memory RobotVerifier.
type fakeRobots map[string]*fakeRobot

func (f fakeRobots) VerifyRobot(ctx context.Context, secret string, now time.Time) (RobotInfo, error) {
	for name, r := range f {
		if r.secret == secret {
			return f.ActiveRobot(ctx, name, now)
		}
	}
	return RobotInfo{}, errors.New("unknown robot token")
}

func (f fakeRobots) ActiveRobot(_ context.Context, name string, now time.Time) (RobotInfo, error) {
	r, ok := f[name]
	if !ok || r.revoked || !now.Before(r.expires) {
		return RobotInfo{}, errors.New("robot not active")
	}
	return RobotInfo{Name: name, Scopes: r.scopes, Created: r.created, Expires: r.expires, Rotated: r.rotated}, nil
}

type fixture struct {
	authn   *Authenticator
	handler http.Handler
	srv     *httptest.Server
	robots  fakeRobots
	dir     string
	now     time.Time
}

// newFixture serves an Authenticator in front of a handler that answers
// 200 "ok" with the caller's identity.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	htpasswd := filepath.Join(dir, "htpasswd")
	// Minimum-cost hashes keep the tests fast; the cost is not under test.
	var lines []string
	for _, u := range []string{"alice", "bob", "root"} {
		h, err := bcrypt.GenerateFromPassword([]byte(u+"-secret"), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, u+":"+string(h))
	}
	if err := os.WriteFile(htpasswd, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	users, err := OpenUserFile(htpasswd)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := OpenKeyRing(filepath.Join(dir, "keys"))
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{dir: dir, now: time.Now(), robots: fakeRobots{}}
	f.robots["ci"] = &fakeRobot{secret: "berth_ci-secret", scopes: []string{"repository:apps/*:pull,push"},
		created: f.now.Add(-time.Hour), expires: f.now.Add(time.Hour)}
	cfg := Config{
		Htpasswd: htpasswd,
		Groups:   map[string][]string{"team-a": {"alice"}},
		Admins:   []string{"root"},
		Rules: []Rule{
			{Repositories: []string{"public/**"}, Grants: map[string][]string{"anonymous": {"pull"}, "authenticated": {"pull", "push"}}},
			{Repositories: []string{"team-a/**"}, Grants: map[string][]string{"group:team-a": {"pull", "push", "delete"}}},
		},
		Login: LoginConfig{MaxFailures: 3, Window: time.Minute},
	}
	authn, err := New(cfg, users, keys, f.robots, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	authn.now = func() time.Time { return f.now }
	f.authn = authn
	f.handler = authn.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, IdentityFrom(r.Context()).String())
	}))
	f.srv = httptest.NewServer(f.handler)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fixture) do(t *testing.T, method, path string, set func(*http.Request)) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if set != nil {
		set(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func basic(user, pass string) func(*http.Request) {
	return func(r *http.Request) { r.SetBasicAuth(user, pass) }
}

func bearer(tok string) func(*http.Request) {
	return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }
}

// token asks the token service for scopes with Basic credentials (none if
// user is empty) and returns the access token.
func (f *fixture) token(t *testing.T, user, pass string, scopes ...string) string {
	t.Helper()
	q := url.Values{"service": {"berth"}, "scope": scopes}
	var set func(*http.Request)
	if user != "" {
		set = basic(user, pass)
	}
	resp := f.do(t, http.MethodGet, TokenPath+"?"+q.Encode(), set)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("token for %q: status %d", user, resp.StatusCode)
	}
	var tr tokenResponse
	if err := json.NewDecoder(resp.Body).Decode(&tr); err != nil {
		t.Fatal(err)
	}
	if tr.Token == "" || tr.Token != tr.AccessToken || tr.ExpiresIn <= 0 {
		t.Fatalf("token response: %+v", tr)
	}
	return tr.Token
}

func wantStatus(t *testing.T, resp *http.Response, status int) {
	t.Helper()
	if resp.StatusCode != status {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("%s %s: status %d, want %d (%s)", resp.Request.Method, resp.Request.URL.Path, resp.StatusCode, status, body)
	}
}

func TestPolicyDecisions(t *testing.T) {
	f := newFixture(t)
	p := f.authn.policy
	alice, bob := Identity{Kind: User, Name: "alice"}, Identity{Kind: User, Name: "bob"}
	anon, root := Identity{Kind: Anonymous}, Identity{Kind: User, Name: "root"}
	robot := Identity{Kind: Robot, Name: "ci", Scopes: []Scope{{Type: "repository", Name: "apps/*", Actions: []string{"pull", "push"}}}}
	cases := []struct {
		id     Identity
		repo   string
		action string
		want   bool
	}{
		{anon, "public/x", "pull", true},
		{anon, "public/x/y", "push", false},
		{bob, "public/x", "push", true},
		{alice, "team-a/app", "delete", true},
		{bob, "team-a/app", "pull", false},
		{anon, "private/x", "pull", false},
		{bob, "private/x", "pull", false}, // no default grants
		{root, "private/x", "delete", true},
		{robot, "apps/web", "push", true},
		{robot, "apps/web/deep", "pull", false}, // "*" stays in one segment
		{robot, "apps/web", "delete", false},
		{robot, "team-a/app", "pull", false},
		// Exactly what its scopes say: not what anonymous callers get.
		{robot, "public/x", "pull", false},
		{robot, "public/x", "push", false},
	}
	for _, c := range cases {
		if got := p.Allowed(c.id, c.repo, c.action); got != c.want {
			t.Errorf("%s %s %s: allowed=%v, want %v", c.id, c.action, c.repo, got, c.want)
		}
	}
}

func TestChallengeAndTokenFlow(t *testing.T) {
	f := newFixture(t)
	// No credentials: 401 with a Bearer challenge naming realm, service and scope.
	resp := f.do(t, http.MethodGet, "/v2/team-a/app/manifests/v1", nil)
	wantStatus(t, resp, http.StatusUnauthorized)
	ch := resp.Header.Get("WWW-Authenticate")
	for _, part := range []string{`Bearer realm="` + f.srv.URL + TokenPath + `"`, `service="berth"`, `scope="repository:team-a/app:pull"`} {
		if !strings.Contains(ch, part) {
			t.Fatalf("challenge %q lacks %q", ch, part)
		}
	}
	// alice gets a token for pull,push and uses it.
	tok := f.token(t, "alice", "alice-secret", "repository:team-a/app:pull,push")
	wantStatus(t, f.do(t, http.MethodGet, "/v2/team-a/app/manifests/v1", bearer(tok)), http.StatusOK)
	wantStatus(t, f.do(t, http.MethodPut, "/v2/team-a/app/manifests/v1", bearer(tok)), http.StatusOK)
	// The token does not cover delete, which alice may do: 401 insufficient_scope.
	resp = f.do(t, http.MethodDelete, "/v2/team-a/app/manifests/v1", bearer(tok))
	wantStatus(t, resp, http.StatusUnauthorized)
	if !strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="insufficient_scope"`) {
		t.Fatalf("missing insufficient_scope: %q", resp.Header.Get("WWW-Authenticate"))
	}
	// bob asks for team-a and is granted nothing; with the token he is refused (403).
	tok = f.token(t, "bob", "bob-secret", "repository:team-a/app:pull")
	wantStatus(t, f.do(t, http.MethodGet, "/v2/team-a/app/manifests/v1", bearer(tok)), http.StatusForbidden)
	// Basic directly on the API works too.
	wantStatus(t, f.do(t, http.MethodGet, "/v2/team-a/app/manifests/v1", basic("alice", "alice-secret")), http.StatusOK)
	wantStatus(t, f.do(t, http.MethodGet, "/v2/team-a/app/manifests/v1", basic("bob", "bob-secret")), http.StatusForbidden)
	// Anonymous token for a public repository.
	tok = f.token(t, "", "", "repository:public/x:pull,push")
	wantStatus(t, f.do(t, http.MethodGet, "/v2/public/x/tags/list", bearer(tok)), http.StatusOK)
	wantStatus(t, f.do(t, http.MethodPut, "/v2/public/x/manifests/v1", bearer(tok)), http.StatusUnauthorized)
	// The listings filtered per caller ask who calls, for the catalog scope.
	for _, p := range []string{"/v2/_catalog", distribution.SearchPath, distribution.RepositoriesPath} {
		resp = f.do(t, http.MethodGet, p, nil)
		wantStatus(t, resp, http.StatusUnauthorized)
		if ch := resp.Header.Get("WWW-Authenticate"); !strings.Contains(ch, `scope="registry:catalog:*"`) {
			t.Errorf("%s: challenge %q does not name the catalog scope", p, ch)
		}
	}
	// The version check wants a login; any valid one will do.
	wantStatus(t, f.do(t, http.MethodGet, "/v2/", nil), http.StatusUnauthorized)
	wantStatus(t, f.do(t, http.MethodGet, "/v2/", basic("bob", "bob-secret")), http.StatusOK)
	// Admin API: admins only.
	wantStatus(t, f.do(t, http.MethodGet, AdminPrefix+"robots", basic("alice", "alice-secret")), http.StatusForbidden)
	wantStatus(t, f.do(t, http.MethodGet, AdminPrefix+"robots", basic("root", "root-secret")), http.StatusOK)
}

func TestBadCredentials(t *testing.T) {
	f := newFixture(t)
	path := "/v2/team-a/app/manifests/v1"
	good := f.token(t, "alice", "alice-secret", "repository:team-a/app:pull")

	// Tampered payload: same signature, claims changed.
	parts := strings.Split(good, ".")
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	tampered := strings.Replace(string(payload), `"alice"`, `"root"`, 1)
	forged := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(tampered)) + "." + parts[2]

	// alg none.
	none := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"sub": "root", "kind": "user", "use": "access",
		"iss": "berth", "aud": "berth", "exp": f.now.Add(time.Hour).Unix(), "nbf": f.now.Unix(), "iat": f.now.Unix(),
		"access": []Scope{{Type: "repository", Name: "team-a/app", Actions: []string{"pull"}}}})
	noneTok, _ := none.SignedString(jwt.UnsafeAllowNoneSignatureType)

	// HMAC keyed with the public key (algorithm confusion).
	keys := f.authn.signer.keys.Keys()
	active, _ := keys.active()
	hs := jwt.NewWithClaims(jwt.SigningMethodHS256, none.Claims)
	hs.Header["kid"] = active.KID
	hsTok, _ := hs.SignedString([]byte(active.priv.Public().(ed25519.PublicKey)))

	// Signed by a key Berth never had.
	_, stranger, _ := ed25519.GenerateKey(rand.Reader)
	st := jwt.NewWithClaims(jwt.SigningMethodEdDSA, none.Claims)
	st.Header["kid"] = active.KID
	strangerTok, _ := st.SignedString(stranger)

	// A refresh token used as an access token.
	cred, _ := f.authn.users.Users().Fingerprint("alice")
	refresh, _ := f.authn.signer.sign(Identity{Kind: User, Name: "alice"}, cred, useRefresh, nil, f.now, f.now.Add(time.Hour))

	for name, set := range map[string]func(*http.Request){
		"wrong password":   basic("alice", "nope"),
		"unknown user":     basic("mallory", "alice-secret"),
		"tampered jwt":     bearer(forged),
		"alg none":         bearer(noneTok),
		"hmac confusion":   bearer(hsTok),
		"foreign key":      bearer(strangerTok),
		"refresh as token": bearer(refresh),
		"garbage":          bearer("not.a.jwt"),
	} {
		t.Run(name, func(t *testing.T) {
			resp := f.do(t, http.MethodGet, path, set)
			wantStatus(t, resp, http.StatusUnauthorized)
			if !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer ") {
				t.Fatalf("no challenge: %v", resp.Header)
			}
		})
	}
	// Expired: move the clock past the token's life.
	f.now = f.now.Add(6 * time.Minute)
	wantStatus(t, f.do(t, http.MethodGet, path, bearer(good)), http.StatusUnauthorized)
}

func TestKeyRotation(t *testing.T) {
	f := newFixture(t)
	path := "/v2/team-a/app/manifests/v1"
	old := f.token(t, "alice", "alice-secret", "repository:team-a/app:pull")
	if _, err := RotateKeys(filepath.Join(f.dir, "keys"), f.now); err != nil {
		t.Fatal(err)
	}
	if err := f.authn.signer.keys.Reload(); err != nil {
		t.Fatal(err)
	}
	all, active := f.authn.signer.keys.Keys().KIDs()
	if len(all) != 2 || active != all[1] {
		t.Fatalf("after rotation: keys %v, active %s", all, active)
	}
	// The old key still verifies its tokens until they expire...
	wantStatus(t, f.do(t, http.MethodGet, path, bearer(old)), http.StatusOK)
	fresh := f.token(t, "alice", "alice-secret", "repository:team-a/app:pull")
	wantStatus(t, f.do(t, http.MethodGet, path, bearer(fresh)), http.StatusOK)
	// ...and not after: past expiry, and past the retirement window.
	f.now = f.now.Add(MaxTokenLifetime + time.Minute)
	wantStatus(t, f.do(t, http.MethodGet, path, bearer(old)), http.StatusUnauthorized)
	if _, err := f.authn.signer.verify(old, useAccess, f.now); err == nil || !strings.Contains(err.Error(), "retired") && !strings.Contains(err.Error(), "expired") {
		t.Fatalf("rotated-out key after expiry: %v", err)
	}
}

func TestRobotTokens(t *testing.T) {
	f := newFixture(t)
	tok := f.token(t, "ci", "berth_ci-secret", "repository:apps/web:pull,push", "repository:team-a/app:pull")
	wantStatus(t, f.do(t, http.MethodPut, "/v2/apps/web/manifests/v1", bearer(tok)), http.StatusOK)
	// A robot is scoped to its repositories.
	wantStatus(t, f.do(t, http.MethodGet, "/v2/team-a/app/manifests/v1", bearer(tok)), http.StatusForbidden)
	wantStatus(t, f.do(t, http.MethodGet, "/v2/apps/web/manifests/v1", basic("ci", "berth_ci-secret")), http.StatusOK)
	// Revoked: the token already exchanged stops working at once.
	f.robots["ci"].revoked = true
	wantStatus(t, f.do(t, http.MethodGet, "/v2/apps/web/manifests/v1", bearer(tok)), http.StatusUnauthorized)
	wantStatus(t, f.do(t, http.MethodGet, "/v2/apps/web/manifests/v1", basic("ci", "berth_ci-secret")), http.StatusUnauthorized)
}

func TestLoginRateLimit(t *testing.T) {
	f := newFixture(t)
	for range 3 {
		wantStatus(t, f.do(t, http.MethodGet, "/v2/", basic("alice", "wrong")), http.StatusUnauthorized)
	}
	resp := f.do(t, http.MethodGet, "/v2/", basic("alice", "alice-secret"))
	wantStatus(t, resp, http.StatusTooManyRequests)
	if resp.Header.Get("Retry-After") == "" {
		t.Fatal("429 without Retry-After")
	}
	resp = f.do(t, http.MethodGet, TokenPath+"?service=berth", basic("alice", "alice-secret"))
	wantStatus(t, resp, http.StatusTooManyRequests)
	f.now = f.now.Add(61 * time.Second)
	wantStatus(t, f.do(t, http.MethodGet, "/v2/", basic("alice", "alice-secret")), http.StatusOK)
}

func TestRefreshToken(t *testing.T) {
	f := newFixture(t)
	form := url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"alice-secret"},
		"service": {"berth"}, "scope": {"repository:team-a/app:pull"}, "access_type": {"offline"}}
	resp, err := http.PostForm(f.srv.URL+TokenPath, form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tr tokenResponse
	if err := json.NewDecoder(resp.Body).Decode(&tr); err != nil || tr.RefreshToken == "" || tr.AccessToken == "" {
		t.Fatalf("password grant: %+v %v", tr, err)
	}
	form = url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tr.RefreshToken}, "service": {"berth"},
		"scope": {"repository:team-a/app:pull"}}
	resp2, err := http.PostForm(f.srv.URL+TokenPath, form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp2.Body.Close()
	var tr2 tokenResponse
	if err := json.NewDecoder(resp2.Body).Decode(&tr2); err != nil || tr2.AccessToken == "" {
		t.Fatalf("refresh grant: %+v %v", tr2, err)
	}
	wantStatus(t, f.do(t, http.MethodGet, "/v2/team-a/app/manifests/v1", bearer(tr2.AccessToken)), http.StatusOK)
	// A refresh token is no access token.
	wantStatus(t, f.do(t, http.MethodGet, "/v2/team-a/app/manifests/v1", bearer(tr.RefreshToken)), http.StatusUnauthorized)
	// An access token is no refresh token.
	form.Set("refresh_token", tr.AccessToken)
	resp3, err := http.PostForm(f.srv.URL+TokenPath, form)
	if err != nil {
		t.Fatal(err)
	}
	resp3.Body.Close()
	if resp3.StatusCode != http.StatusUnauthorized {
		t.Fatalf("access token as refresh token: status %d", resp3.StatusCode)
	}
	// A key rotation does not cut off a refresh token signed before it,
	// however long after the rotation it is used within its lifetime.
	if _, err := RotateKeys(filepath.Join(f.dir, "keys"), f.now); err != nil {
		t.Fatal(err)
	}
	if err := f.authn.signer.keys.Reload(); err != nil {
		t.Fatal(err)
	}
	f.now = f.now.Add(refreshLifetime - time.Hour)
	form.Set("refresh_token", tr.RefreshToken)
	resp4, err := http.PostForm(f.srv.URL+TokenPath, form)
	if err != nil {
		t.Fatal(err)
	}
	resp4.Body.Close()
	if resp4.StatusCode != http.StatusOK {
		t.Fatalf("refresh token %s after a key rotation: status %d", refreshLifetime-time.Hour, resp4.StatusCode)
	}
}

func TestTokenRequestBodyLimit(t *testing.T) {
	f := newFixture(t)
	form := url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"alice-secret"},
		"scope": {strings.Repeat("repository:team-a/app:pull ", 4000)}}
	resp, err := http.PostForm(f.srv.URL+TokenPath, form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("a 100 KiB token request: status %d, want 400", resp.StatusCode)
	}
}

// panicStore is a distribution.Store whose every method panics: a request
// that reaches it was let through.
type panicStore struct{ distribution.Store }

// TestEveryRouteIsClassified puts the real distribution router behind the
// middleware and checks that an anonymous caller reaches none of its
// routes on a repository it may not read, however the path is escaped.
func TestEveryRouteIsClassified(t *testing.T) {
	f := newFixture(t)
	h := f.authn.Wrap(distribution.New(panicStore{}, distribution.Options{}).Handler())
	const id = "0123456789abcdef0123456789abcdef"
	const dg = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	for _, c := range []struct{ method, path string }{
		{http.MethodGet, "/v2/team-a/app/manifests/v1"},
		{http.MethodPut, "/v2/team-a/app/manifests/v1"},
		{http.MethodDelete, "/v2/team-a/app/manifests/" + dg},
		{http.MethodGet, "/v2/team-a/app/blobs/" + dg},
		{http.MethodDelete, "/v2/team-a/app/blobs/" + dg},
		{http.MethodPost, "/v2/team-a/app/blobs/uploads/"},
		{http.MethodGet, "/v2/team-a/app/blobs/uploads/" + id},
		{http.MethodPatch, "/v2/team-a/app/blobs/uploads/" + id},
		{http.MethodPut, "/v2/team-a/app/blobs/uploads/" + id},
		{http.MethodDelete, "/v2/team-a/app/blobs/uploads/" + id},
		{http.MethodGet, "/v2/team-a/app/tags/list"},
		{http.MethodGet, "/v2/team-a/app/referrers/" + dg},
		{http.MethodGet, "/v2/team-a/app/_berth/tags/v1/history"},
		{http.MethodPost, "/v2/team-a/app/_berth/tags/v1/rollback"},
		{http.MethodPost, "/v2/team-a/app/_berth/tags/v1/promote"},
		{http.MethodGet, "/v2/team-a/app/_berth/pulls"},
		// An escaped slash stays in its segment for the router: the
		// middleware must not read it as a path separator and let the
		// request through unclassified.
		{http.MethodGet, "/v2/team-a/app/blobs/uploads/" + id + "%2Fx"},
		{http.MethodPatch, "/v2/team-a/app/blobs/uploads/" + id + "%2Fx"},
		{http.MethodGet, "/v2/team-a/app/manifests/v1%2Fx"},
		{http.MethodPost, "/v2/team-a/app/_berth/tags/v1%2Fx/rollback"},
		{http.MethodPost, "/v2/team-a/app/_berth/tags/v1%2Fx/promote"},
		// Escaped letters name the same repository.
		{http.MethodGet, "/v2/te%61m-a/app/manifests/v1"},
		// Unknown resources under /v2/ are not open either.
		{http.MethodGet, "/v2/team-a/app/_berth/unknown"},
	} {
		req := httptest.NewRequest(c.method, c.path, nil)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusUnauthorized {
			t.Errorf("anonymous %s %s: status %d, want 401 (%s)", c.method, c.path, rec.Code, rec.Body)
		}
	}
	// A caller who may push elsewhere cannot reach team-a by escaping its
	// name: the rules see the name the router serves.
	tok := f.token(t, "bob", "bob-secret", "repository:team-a/app:pull")
	req := httptest.NewRequest(http.MethodGet, "/v2/te%61m-a/app/manifests/v1", nil)
	bearer(tok)(req)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusForbidden {
		t.Errorf("bob on an escaped team-a name: status %d, want 403 (%s)", rec.Code, rec.Body)
	}
}

// TestFilePathsAndPullsAreClassified checks the access the file paths and
// the pull record need, through the middleware's decisions as seen by
// the handler behind it (the fixture's, which names the caller): a file
// download needs pull on the repository the path names, an upload push,
// the pull record push, and an anonymous caller is asked for credentials
// in Basic (for curl, wget and browsers) as well as Bearer.
func TestFilePathsAndPullsAreClassified(t *testing.T) {
	f := newFixture(t)
	for _, c := range []struct {
		who, method, path string
		want              int
	}{
		// public/**: anonymous pull, authenticated pull and push.
		{"", http.MethodGet, "/artifacts/public/app/1.0/app.jar", http.StatusOK},
		{"", http.MethodHead, "/artifacts/public/app/1.0/app.jar", http.StatusOK},
		{"", http.MethodGet, "/artifacts/public/app/1.0/", http.StatusOK},
		{"", http.MethodPut, "/artifacts/public/app/1.0/app.jar", http.StatusUnauthorized},
		{"", http.MethodPost, "/artifacts/public/app/1.0", http.StatusUnauthorized},
		{"bob", http.MethodPut, "/artifacts/public/app/1.0/app.jar", http.StatusOK},
		{"bob", http.MethodPost, "/artifacts/public/app/1.0", http.StatusOK},
		// team-a/**: only alice's group.
		{"", http.MethodGet, "/artifacts/team-a/app/1.0/app.jar", http.StatusUnauthorized},
		{"bob", http.MethodGet, "/artifacts/team-a/app/1.0/app.jar", http.StatusForbidden},
		{"bob", http.MethodPut, "/artifacts/team-a/app/1.0/app.jar", http.StatusForbidden},
		{"alice", http.MethodPut, "/artifacts/team-a/app/1.0/app.jar", http.StatusOK},
		{"alice", http.MethodGet, "/artifacts/team-a/app/1.0/app.jar", http.StatusOK},
		// The repository is what the path names, escapes and all: the
		// version and file are the last segments.
		{"bob", http.MethodGet, "/artifacts/te%61m-a/app/1.0/app.jar", http.StatusForbidden},
		{"bob", http.MethodGet, "/artifacts/public/app/1.0/team-a%2Fx", http.StatusOK},
		{"", http.MethodGet, "/artifacts/team-a%2Fapp/1.0/x", http.StatusUnauthorized},
		// Other methods need push; a path that names nothing needs a login.
		{"", http.MethodDelete, "/artifacts/public/app/1.0/app.jar", http.StatusUnauthorized},
		{"", http.MethodGet, "/artifacts/public", http.StatusUnauthorized},
		{"bob", http.MethodGet, "/artifacts/public", http.StatusOK},
		// A robot: its scopes, apps/*.
		{"ci", http.MethodPut, "/artifacts/apps/web/1.0/app.jar", http.StatusOK},
		{"ci", http.MethodGet, "/artifacts/public/app/1.0/app.jar", http.StatusForbidden},
		// The pull record needs push.
		{"", http.MethodGet, "/v2/public/app/_berth/pulls", http.StatusUnauthorized},
		{"bob", http.MethodGet, "/v2/public/app/_berth/pulls", http.StatusOK},
		{"alice", http.MethodGet, "/v2/public/app/_berth/pulls", http.StatusOK},
		{"bob", http.MethodGet, "/v2/team-a/app/_berth/pulls", http.StatusForbidden},
		{"ci", http.MethodGet, "/v2/apps/web/_berth/pulls", http.StatusOK},
	} {
		var set func(*http.Request)
		switch c.who {
		case "ci":
			set = basic("ci", "berth_ci-secret")
		case "":
		default:
			set = basic(c.who, c.who+"-secret")
		}
		resp := f.do(t, c.method, c.path, set)
		if resp.StatusCode != c.want {
			body, _ := io.ReadAll(resp.Body)
			t.Errorf("%q %s %s: status %d, want %d (%s)", c.who, c.method, c.path, resp.StatusCode, c.want, body)
			continue
		}
		if c.want != http.StatusUnauthorized {
			continue
		}
		challenges := resp.Header.Values("WWW-Authenticate")
		hasBasic := len(challenges) > 0 && strings.HasPrefix(challenges[0], "Basic ")
		hasBearer := len(challenges) > 0 && strings.HasPrefix(challenges[len(challenges)-1], "Bearer ")
		if strings.HasPrefix(c.path, "/artifacts/") != hasBasic || !hasBearer {
			t.Errorf("%q %s %s: challenges %q", c.who, c.method, c.path, challenges)
		}
	}
}
