package conformance_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// The access matrix's checks of the holes issue 12 found, against a real
// berth: what a refusal says, cursors that must not name what the caller
// cannot pull, tokens outliving the credential they came from, login
// limiting as a lockout weapon, upload sessions taken over by another
// caller, and mount and promotion sources beyond a token's scopes.

// offlineTokens asks the token service, with a password grant, for an
// access token of scope and a refresh token.
func offlineTokens(t *testing.T, base, user, pass, scope string) (access, refresh string) {
	t.Helper()
	resp, err := http.PostForm(base+"/auth/token", url.Values{"grant_type": {"password"}, "username": {user},
		"password": {pass}, "service": {"berth"}, "scope": {scope}, "access_type": {"offline"}})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tr struct {
		AccessToken  string `json:"access_token"`
		RefreshToken string `json:"refresh_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tr); err != nil || tr.AccessToken == "" || tr.RefreshToken == "" {
		t.Fatalf("password grant for %s: status %d, %v", user, resp.StatusCode, err)
	}
	return tr.AccessToken, tr.RefreshToken
}

// refreshStatus exchanges a refresh token and returns the answer's status.
func refreshStatus(t *testing.T, base, refresh, scope string) int {
	t.Helper()
	resp, err := http.PostForm(base+"/auth/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refresh},
		"service": {"berth"}, "scope": {scope}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// bearerGet is a GET with a Bearer token; it returns the status and body.
func bearerGet(t *testing.T, url, tok string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	_, _ = fmt.Fprint(&b, jsonBody(resp))
	return resp.StatusCode, b.String()
}

func jsonBody(resp *http.Response) string {
	var v any
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return ""
	}
	buf, _ := json.Marshal(v)
	return string(buf)
}

// TestCredentialChangeEndsTokens changes each kind of credential with
// Berth's own commands while the server runs, and checks that the access
// and refresh tokens issued before stop working from the next request on,
// and that the refusal does not say why.
func TestCredentialChangeEndsTokens(t *testing.T) {
	srv := startAuthServer(t)
	seed(t, srv.client("admin", true), "team/app", "v1")
	const scope = "repository:team/app:pull"
	tags := srv.URL + "/v2/team/app/tags/list"

	// A new password, even the same one again.
	access, refresh := offlineTokens(t, srv.URL, "writer", "writer-pw", scope)
	if st, _ := bearerGet(t, tags, access); st != http.StatusOK {
		t.Fatalf("writer's token before the change: %d", st)
	}
	berthCLI(t, "writer-pw\n", nil, "user", "passwd", "writer", "--htpasswd", srv.htpasswd, "--password-stdin")
	if st, body := bearerGet(t, tags, access); st != http.StatusUnauthorized || strings.Contains(body, "writer") || strings.Contains(body, "password") {
		t.Errorf("writer's access token after berth user passwd: %d %s, want a bare 401", st, body)
	}
	if st := refreshStatus(t, srv.URL, refresh, scope); st != http.StatusUnauthorized {
		t.Errorf("writer's refresh token after berth user passwd: %d, want 401", st)
	}
	access, _ = offlineTokens(t, srv.URL, "writer", "writer-pw", scope)
	if st, _ := bearerGet(t, tags, access); st != http.StatusOK {
		t.Errorf("a token issued after the change: %d, want 200", st)
	}

	// A removed user.
	access, refresh = offlineTokens(t, srv.URL, "reader", "reader-pw", scope)
	berthCLI(t, "", nil, "user", "remove", "reader", "--htpasswd", srv.htpasswd)
	if st, body := bearerGet(t, tags, access); st != http.StatusUnauthorized || strings.Contains(body, "reader") || strings.Contains(body, "exist") {
		t.Errorf("a removed user's access token: %d %s, want a bare 401", st, body)
	}
	if st := refreshStatus(t, srv.URL, refresh, scope); st != http.StatusUnauthorized {
		t.Errorf("a removed user's refresh token: %d, want 401", st)
	}

	// A robot's secret rotated, then the robot revoked.
	env := []string{"BERTH_REGISTRY=" + srv.URL, "BERTH_USERNAME=admin"}
	secret := strings.TrimSpace(berthCLI(t, "admin-pw\n", env,
		"token", "create", "--password-stdin", "--name", "deploy", "--scope", "repository:team/*:pull", "--expires", "1h"))
	access, refresh = offlineTokens(t, srv.URL, "deploy", secret, scope)
	fresh := strings.TrimSpace(berthCLI(t, "admin-pw\n", env, "token", "rotate", "--password-stdin", "deploy"))
	if st, _ := bearerGet(t, tags, access); st != http.StatusUnauthorized {
		t.Errorf("a robot's access token after berth token rotate: %d, want 401", st)
	}
	if st := refreshStatus(t, srv.URL, refresh, scope); st != http.StatusUnauthorized {
		t.Errorf("a robot's refresh token after berth token rotate: %d, want 401", st)
	}
	access, refresh = offlineTokens(t, srv.URL, "deploy", fresh, scope)
	if st, _ := bearerGet(t, tags, access); st != http.StatusOK {
		t.Errorf("a token from the new secret: %d, want 200", st)
	}
	berthCLI(t, "admin-pw\n", env, "token", "revoke", "--password-stdin", "deploy")
	if st, _ := bearerGet(t, tags, access); st != http.StatusUnauthorized {
		t.Errorf("a revoked robot's access token: %d, want 401", st)
	}
	if st := refreshStatus(t, srv.URL, refresh, scope); st != http.StatusUnauthorized {
		t.Errorf("a revoked robot's refresh token: %d, want 401", st)
	}
}

// fromAddress is an HTTP client whose connections come from the loopback
// address ip (127.0.0.0/8 is all loopback), as a caller on another
// machine would.
func fromAddress(t *testing.T, ip string) *http.Client {
	t.Helper()
	tr := &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 10 * time.Second}).DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func basicFrom(t *testing.T, hc *http.Client, url, user, pass string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.SetBasicAuth(user, pass)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestLoginLimitIsNoLockout guesses passwords from one address and checks
// that the guesser is slowed while nobody else is locked out: not the
// guessed user (an administrator) from elsewhere, nor other users behind
// the guesser's address; and that parallel guesses get no more tries than
// the limit.
func TestLoginLimitIsNoLockout(t *testing.T) {
	srv := startAuthServerWith(t, "  login:\n    maxFailures: 5\n    window: 1m\n")
	v2 := srv.URL + "/v2/"
	guesser, elsewhere := fromAddress(t, "127.0.0.2"), fromAddress(t, "127.0.0.1")
	for range 5 {
		if st := basicFrom(t, guesser, v2, "admin", "guess"); st != http.StatusUnauthorized {
			t.Fatalf("a wrong password: %d", st)
		}
	}
	if st := basicFrom(t, guesser, v2, "admin", "admin-pw"); st != http.StatusTooManyRequests {
		t.Errorf("the guesser after 5 failures, with the right password: %d, want 429", st)
	}
	if st := basicFrom(t, elsewhere, v2, "admin", "admin-pw"); st != http.StatusOK {
		t.Errorf("the administrator from another address while being guessed: %d, want 200", st)
	}
	if st := basicFrom(t, guesser, v2, "reader", "reader-pw"); st != http.StatusOK {
		t.Errorf("another user behind the guesser's address: %d, want 200", st)
	}

	parallel := fromAddress(t, "127.0.0.3")
	var wg sync.WaitGroup
	var mu sync.Mutex
	checked := 0
	for range 20 {
		wg.Go(func() {
			req, _ := http.NewRequest(http.MethodGet, v2, nil)
			req.SetBasicAuth("writer", "guess")
			resp, err := parallel.Do(req)
			if err != nil {
				return
			}
			resp.Body.Close()
			if resp.StatusCode == http.StatusUnauthorized {
				mu.Lock()
				checked++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if checked > 5 {
		t.Errorf("%d of 20 parallel wrong passwords were checked, want at most the limit, 5", checked)
	}
}

// TestUploadSessionBelongsToItsOpener has writer open an upload session
// and the administrator, who may push anywhere, try to use its id: every
// operation answers as for a session that does not exist, and writer
// finishes the upload.
func TestUploadSessionBelongsToItsOpener(t *testing.T) {
	srv := startAuthServer(t)
	for _, mode := range []string{"basic", "token"} {
		writer, admin := srv.client("writer", mode == "basic"), srv.client("admin", mode == "basic")
		r, b := writer.do(t, http.MethodPost, "/v2/team/app/blobs/uploads/", nil)
		mustStatus(t, "writer opens a session", r, b, http.StatusAccepted)
		loc := r.Header.Get("Location")
		data := []byte("writer's blob, " + mode)
		for _, op := range []struct {
			method string
			query  string
			body   []byte
		}{
			{http.MethodGet, "", nil},
			{http.MethodPatch, "", []byte("intruder")},
			{http.MethodPut, "digest=" + digest.FromBytes([]byte("intruder")).String(), []byte("intruder")},
			{http.MethodDelete, "", nil},
		} {
			u := loc
			if op.query != "" {
				u += map[bool]string{true: "&", false: "?"}[strings.Contains(u, "?")] + op.query
			}
			r, b := admin.do(t, op.method, u, op.body, "Content-Type", "application/octet-stream")
			if r.StatusCode != http.StatusNotFound || !strings.Contains(string(b), "BLOB_UPLOAD_UNKNOWN") {
				t.Errorf("%s: admin %s on writer's session: %d %s, want 404 BLOB_UPLOAD_UNKNOWN", mode, op.method, r.StatusCode, b)
			}
		}
		u := loc + map[bool]string{true: "&", false: "?"}[strings.Contains(loc, "?")] + "digest=" + digest.FromBytes(data).String()
		r, b = writer.do(t, http.MethodPut, u, data, "Content-Type", "application/octet-stream")
		mustStatus(t, mode+": writer completes the session", r, b, http.StatusCreated)
	}
}

// TestSourcesFollowTokenScopes checks that a mount's and a promotion's
// source is held to the Bearer token's scopes, not only to the rules:
// writer may pull public/app, but a token for team/app alone neither
// mounts from it nor promotes from it.
func TestSourcesFollowTokenScopes(t *testing.T) {
	srv := startAuthServer(t)
	pub := seed(t, srv.client("admin", true), "public/app", "v1")
	layer := digest.FromBytes(pub.blob).String()
	tok := tokenFor(t, srv.URL, "writer", "writer-pw", "repository:team/app:push,pull")
	both := tokenFor(t, srv.URL, "writer", "writer-pw", "repository:team/app:push,pull&scope=repository:public/app:pull")
	post := func(tok, path, body string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		return resp.StatusCode, jsonBody(resp)
	}
	mount := "/v2/team/app/blobs/uploads/?mount=" + layer + "&from=public/app"
	if st, _ := post(tok, mount, ""); st != http.StatusAccepted {
		t.Errorf("mount from public/app with a token for team/app only: %d, want 202 (a new session, no mount)", st)
	}
	if st, _ := post(both, mount, ""); st != http.StatusCreated {
		t.Errorf("mount from public/app with a token covering it: %d, want 201", st)
	}
	promote := "/v2/team/app/_berth/tags/promoted/promote"
	body := `{"repository":"public/app","reference":"v1"}`
	if st, b := post(tok, promote, body); st != http.StatusForbidden || !strings.Contains(b, "DENIED") {
		t.Errorf("promotion from public/app with a token for team/app only: %d %s, want 403 DENIED", st, b)
	}
	if st, b := post(both, promote, body); st != http.StatusCreated {
		t.Errorf("promotion from public/app with a token covering it: %d %s, want 201", st, b)
	}
}

// TestCursorsNameOnlyWhatTheCallerMayPull pages through every paginated
// listing one entry at a time as reader, with more repositories and
// manifests hidden from reader than a page looks through, and checks that
// no Link names a hidden repository or digest, while every visible entry
// still comes.
func TestCursorsNameOnlyWhatTheCallerMayPull(t *testing.T) {
	srv := startAuthServer(t)
	admin := srv.client("admin", true)
	var hidden []string
	for i := range 12 {
		repo := fmt.Sprintf("private/p%02d", i)
		c := seed(t, admin, repo, "v1")
		hidden = append(hidden, repo, c.mdigest.Encoded(), c.referrerDigest.Encoded(), c.disposableDigst.Encoded())
	}
	visible := map[string]repoContent{}
	for _, repo := range []string{"public/a", "team/z"} {
		visible[repo] = seed(t, admin, repo, "v1")
		seed(t, admin, repo, "v2")
	}
	reader := srv.client("reader", false)
	linkRE := regexp.MustCompile(`^<([^>]+)>; rel="next"$`)
	walk := func(what, path string) []string {
		t.Helper()
		var bodies []string
		for pages := 0; path != ""; pages++ {
			if pages > 50 {
				t.Fatalf("%s: pagination does not end", what)
			}
			r, b := reader.do(t, http.MethodGet, path, nil)
			mustStatus(t, what, r, b, http.StatusOK)
			bodies = append(bodies, string(b))
			link := r.Header.Get("Link")
			for _, h := range hidden {
				if strings.Contains(link, h) || strings.Contains(link, url.QueryEscape(h)) || strings.Contains(string(b), h) {
					t.Errorf("%s: page %d reveals %s: Link %q", what, pages, h, link)
				}
			}
			path = ""
			if link != "" {
				m := linkRE.FindStringSubmatch(link)
				if m == nil {
					t.Fatalf("%s: Link %q", what, link)
				}
				path = m[1]
			}
		}
		return bodies
	}
	// Search: every seeded manifest is annotated n=<repository>, and the
	// disposable ones n=disposable: those match everywhere.
	pages := walk("search", "/v2/_berth/search?annotation=n=disposable&n=1")
	for repo, c := range visible {
		if !strings.Contains(strings.Join(pages, ""), c.disposableDigst.String()) {
			t.Errorf("search pages lack %s's manifest %s", repo, c.disposableDigst)
		}
	}
	pages = walk("catalog", "/v2/_catalog?n=1")
	for repo := range visible {
		if !strings.Contains(strings.Join(pages, ""), repo) {
			t.Errorf("catalog pages lack %s", repo)
		}
	}
	walk("tags", "/v2/team/z/tags/list?n=1")
	walk("history", "/v2/team/z/_berth/tags/v1/history?n=1")
	walk("referrers", "/v2/team/z/referrers/"+visible["team/z"].mdigest.String())
}

// TestRefusalsGiveUpAtOnce checks, over HTTP, what makes clients stop at
// once on a refusal: an anonymous token refused gets a challenge with
// error="insufficient_scope", and every refusal's body has the access it
// needed as detail, so that no client reads it as a bare code.
func TestRefusalsGiveUpAtOnce(t *testing.T) {
	srv := startAuthServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	anon := tokenForAnonymous(ctx, t, srv.URL, "repository:team/app:pull,push")
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/v2/team/app/blobs/uploads/", nil)
	req.Header.Set("Authorization", "Bearer "+anon)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body := jsonBody(resp)
	resp.Body.Close()
	if ch := resp.Header.Get("WWW-Authenticate"); resp.StatusCode != http.StatusUnauthorized || !strings.Contains(ch, `error="insufficient_scope"`) {
		t.Errorf("push with an anonymous token: %d, challenge %q; want 401 with error=\"insufficient_scope\"", resp.StatusCode, ch)
	}
	if !strings.Contains(body, `"detail":[{"Action":"push","Name":"team/app","Type":"repository"}]`) {
		t.Errorf("push with an anonymous token: body %s, want the access needed as detail", body)
	}
	r, b := srv.client("reader", true).do(t, http.MethodPut, "/v2/team/app/manifests/x", []byte("{}"))
	if r.StatusCode != http.StatusForbidden || strings.Contains(string(b), "reader") || !strings.Contains(string(b), `"detail"`) {
		t.Errorf("reader pushing: %d %s, want 403 with detail and without the caller's name", r.StatusCode, b)
	}
}

// tokenForAnonymous asks the token service for scope without credentials.
func tokenForAnonymous(ctx context.Context, t *testing.T, base, scope string) string {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/auth/token?service=berth&scope="+url.QueryEscape(scope), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tr struct{ Token string }
	if err := json.NewDecoder(resp.Body).Decode(&tr); err != nil || tr.Token == "" {
		t.Fatalf("anonymous token: %d %v", resp.StatusCode, err)
	}
	return tr.Token
}
