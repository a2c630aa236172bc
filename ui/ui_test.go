package ui

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/crypto/bcrypt"

	"github.com/berth-registry/berth/distribution"
	"github.com/berth-registry/berth/registry/auth"
	"github.com/berth-registry/berth/storage"
	blobfs "github.com/berth-registry/berth/storage/blob/fs"
	"github.com/berth-registry/berth/storage/meta/bolt"
)

// site is the web interface in front of the real API, authentication and
// store, served over real HTTP: alice may pull and push apps/**, bob may
// pull it, secret/** is for nobody, public/** anonymous may pull.
type site struct {
	t   *testing.T
	srv *httptest.Server
}

var testUsers = map[string]string{"alice": "alice-pw", "bob": "bob-pw"}

func newSite(t *testing.T, tls bool) *site {
	t.Helper()
	return newSiteWith(t, tls, nil)
}

// immutableTags makes some tags immutable, named repo:tag.
type immutableTags map[string]bool

func (m immutableTags) Immutable(repo, tag string) bool { return m[repo+":"+tag] }

// newSiteWith is newSite with the store's tag rules.
func newSiteWith(t *testing.T, tls bool, rules storage.TagRules) *site {
	t.Helper()
	dir := t.TempDir()
	var lines []string
	for name, pass := range testUsers {
		h, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, name+":"+string(h))
	}
	htpasswd := filepath.Join(dir, "htpasswd")
	if err := os.WriteFile(htpasswd, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o750); err != nil {
		t.Fatal(err)
	}
	index, err := bolt.Open(filepath.Join(data, "index.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	blobs, err := blobfs.Open(context.Background(), data, blobfs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	store := storage.New(index, blobs, storage.Options{Tags: rules})
	users, err := auth.OpenUserFile(htpasswd)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := auth.OpenKeyRing(filepath.Join(dir, "keys"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := auth.Config{Htpasswd: htpasswd, Rules: []auth.Rule{
		{Repositories: []string{"public/**"}, Grants: map[string][]string{"anonymous": {"pull"}, "user:alice": {"push"}}},
		{Repositories: []string{"apps/**"}, Grants: map[string][]string{"user:alice": {"pull", "push"}, "user:bob": {"pull"}}},
		{Repositories: []string{"secret/**"}, Grants: map[string][]string{}},
	}}
	log := slog.New(slog.DiscardHandler)
	authn, err := auth.New(cfg, users, keys, auth.NewRobots(auth.IndexRobots(index), log), log)
	if err != nil {
		t.Fatal(err)
	}
	api := authn.Wrap(distribution.New(store, distribution.Options{Access: authn, Logger: log}).Handler())
	u, err := New(api, Options{Config: DefaultConfig(), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	s := &site{t: t}
	if tls {
		s.srv = httptest.NewTLSServer(u)
	} else {
		s.srv = httptest.NewServer(u)
	}
	t.Cleanup(func() {
		s.srv.Close()
		if err := index.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

// browser is a cookie-keeping client that does not follow redirects.
type browser struct {
	s  *site
	hc *http.Client
}

func (s *site) browser() *browser {
	jar, err := cookiejar.New(nil)
	if err != nil {
		s.t.Fatal(err)
	}
	// A client of its own, sharing the server's transport.
	hc := &http.Client{Transport: s.srv.Client().Transport, Jar: jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return &browser{s: s, hc: hc}
}

type page struct {
	status int
	header http.Header
	body   string
}

func (b *browser) do(method, path string, form url.Values, header ...string) page {
	b.s.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, b.s.srv.URL+path, body)
	if err != nil {
		b.s.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := b.hc.Do(req)
	if err != nil {
		b.s.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return page{status: resp.StatusCode, header: resp.Header, body: string(raw)}
}

func (b *browser) get(path string) page { b.s.t.Helper(); return b.do(http.MethodGet, path, nil) }

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf is the form token of the page at path.
func (b *browser) csrf(path string) string {
	b.s.t.Helper()
	m := csrfRE.FindStringSubmatch(b.get(path).body)
	if m == nil {
		b.s.t.Fatalf("%s has no form token", path)
	}
	return m[1]
}

// post sends a form from the site's own pages, with its token.
func (b *browser) post(path string, form url.Values) page {
	b.s.t.Helper()
	return b.do(http.MethodPost, path, form, "Origin", b.s.srv.URL)
}

func (b *browser) login(user string) {
	b.s.t.Helper()
	tok := b.csrf("/ui/login")
	p := b.post("/ui/login", url.Values{"csrf": {tok}, "username": {user}, "password": {testUsers[user]}, "next": {"/ui/board"}})
	if p.status != http.StatusSeeOther || p.header.Get("Location") != "/ui/board" {
		b.s.t.Fatalf("login as %s: %d %v %s", user, p.status, p.header, p.body)
	}
}

// push stores an image in repo under tag through the API, as a user with
// Basic credentials, and returns its digest.
func (s *site) push(user, repo, tag, seed string) digest.Digest {
	s.t.Helper()
	put := func(method, path, ct string, body []byte) {
		req, _ := http.NewRequest(method, s.srv.URL+path, bytes.NewReader(body))
		req.SetBasicAuth(user, testUsers[user])
		req.Header.Set("Content-Type", ct)
		resp, err := s.srv.Client().Do(req)
		if err != nil {
			s.t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			s.t.Fatalf("%s %s: %d", method, path, resp.StatusCode)
		}
	}
	cfg := []byte(`{"architecture":"amd64","os":"linux","seed":"` + seed + `"}`)
	put(http.MethodPost, "/v2/"+repo+"/blobs/uploads/?digest="+digest.FromBytes(cfg).String(), "application/octet-stream", cfg)
	m := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",`+
		`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":%d},"layers":[]}`, digest.FromBytes(cfg), len(cfg)))
	put(http.MethodPut, "/v2/"+repo+"/manifests/"+tag, "application/vnd.oci.image.manifest.v1+json", m)
	return digest.FromBytes(m)
}

// tagDigest reads what a tag names, as alice.
func (s *site) tagDigest(repo, tag string) digest.Digest {
	s.t.Helper()
	req, _ := http.NewRequest(http.MethodHead, s.srv.URL+"/v2/"+repo+"/manifests/"+tag, nil)
	req.SetBasicAuth("alice", testUsers["alice"])
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
	resp, err := s.srv.Client().Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	resp.Body.Close()
	return digest.Digest(resp.Header.Get("Docker-Content-Digest"))
}

func TestRoutesAndHeaders(t *testing.T) {
	s := newSite(t, false)
	b := s.browser()
	if p := b.do(http.MethodGet, "/", nil, "Accept", "text/html,application/xhtml+xml"); p.status != http.StatusSeeOther || p.header.Get("Location") != "/ui/" {
		t.Errorf("a browser asking for /: %d Location %q, want 303 to /ui/", p.status, p.header.Get("Location"))
	}
	// A client asking for / is answered by the API, as before.
	if p := b.get("/"); p.status != http.StatusNotFound || !strings.Contains(p.body, `"errors"`) {
		t.Errorf("a client asking for /: %d %s, want the API's 404", p.status, p.body)
	}
	if p := b.get("/ui"); p.status != http.StatusMovedPermanently || p.header.Get("Location") != "/ui/" {
		t.Errorf("/ui: %d %q", p.status, p.header.Get("Location"))
	}
	if p := b.get("/v2/"); p.status != http.StatusUnauthorized {
		t.Errorf("/v2/ through the interface: %d, want the API's 401", p.status)
	}
	p := b.get("/ui/")
	if p.status != http.StatusOK || !strings.Contains(p.body, "<h1>Repositories</h1>") {
		t.Fatalf("/ui/: %d %s", p.status, p.body)
	}
	for k, want := range map[string]string{
		"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store", "X-Frame-Options": "DENY",
		"X-Content-Type-Options": "nosniff",
	} {
		if got := p.header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if csp := p.header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "script-src 'self'") ||
		!strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("Content-Security-Policy = %q", csp)
	}
	for path, ct := range map[string]string{"/ui/static/berth.css": "text/css", "/ui/static/berth.js": "text/javascript", "/ui/static/berth.svg": "image/svg+xml"} {
		if p := b.get(path); p.status != http.StatusOK || !strings.HasPrefix(p.header.Get("Content-Type"), ct) {
			t.Errorf("%s: %d %q", path, p.status, p.header.Get("Content-Type"))
		}
	}
	if p := b.get("/ui/no/such/page"); p.status != http.StatusNotFound || !strings.Contains(p.body, "Not found") {
		t.Errorf("unknown page: %d", p.status)
	}
	if p := b.do(http.MethodDelete, "/ui/board", nil); p.status != http.StatusMethodNotAllowed && p.status != http.StatusNotFound {
		t.Errorf("DELETE /ui/board: %d", p.status)
	}
}

func TestLoginSession(t *testing.T) {
	for _, tls := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", tls), func(t *testing.T) {
			s := newSite(t, tls)
			b := s.browser()
			tok := b.csrf("/ui/login")
			// A wrong password: the form again, and no session.
			p := b.post("/ui/login", url.Values{"csrf": {tok}, "username": {"alice"}, "password": {"wrong"}})
			if p.status != http.StatusUnauthorized || !strings.Contains(p.body, "Wrong user name or password") {
				t.Errorf("wrong password: %d", p.status)
			}
			p = b.post("/ui/login", url.Values{"csrf": {tok}, "username": {"alice"}, "password": {"alice-pw"}, "next": {"//evil.example/"}})
			if p.status != http.StatusSeeOther || p.header.Get("Location") != "/ui/" {
				t.Fatalf("login: %d Location %q, want 303 to /ui/ (never off the site)", p.status, p.header.Get("Location"))
			}
			var session *http.Cookie
			for _, c := range (&http.Response{Header: p.header}).Cookies() {
				if c.Name == sessionCookie {
					session = c
				}
			}
			if session == nil || !session.HttpOnly || session.SameSite != http.SameSiteStrictMode || session.Path != "/ui/" ||
				session.Secure != tls || session.MaxAge <= 0 || session.MaxAge > int((24*time.Hour).Seconds()) {
				t.Errorf("session cookie = %+v; want HttpOnly, SameSite=Strict, Path=/ui/, Secure=%v, a day at most", session, tls)
			}
			p = b.get("/ui/")
			if !strings.Contains(p.body, "Logged in as alice") || !strings.Contains(p.body, `<span class="sr-only">Logged in as </span>alice`) {
				t.Errorf("after login the page does not name alice: %s", p.body)
			}
			// Logging out ends the session.
			p = b.post("/ui/logout", url.Values{"csrf": {b.csrf("/ui/")}})
			if p.status != http.StatusSeeOther {
				t.Fatalf("logout: %d", p.status)
			}
			if p = b.get("/ui/"); strings.Contains(p.body, "Log out") || !strings.Contains(p.body, "Log in") {
				t.Error("still logged in after logout")
			}
		})
	}
}

func TestEndedSession(t *testing.T) {
	s := newSite(t, false)
	b := s.browser()
	u, _ := url.Parse(s.srv.URL + "/ui/")
	// A token the token service never signed.
	b.hc.Jar.SetCookies(u, []*http.Cookie{{Name: sessionCookie, Value: "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhbGljZSIsImtpbmQiOiJ1c2VyIn0.c2ln", Path: "/ui/"}})
	p := b.get("/ui/")
	if p.status != http.StatusOK || !strings.Contains(p.body, "Your session has ended") || strings.Contains(p.body, "Log out") {
		t.Errorf("a forged session: %d, want the anonymous page saying the session ended: %s", p.status, p.body)
	}
	if !strings.Contains(strings.Join(p.header.Values("Set-Cookie"), "\n"), sessionCookie+"=;") {
		t.Errorf("the forged session cookie is not removed: %v", p.header.Values("Set-Cookie"))
	}
}

// TestFormsRefuseForgery sends the promotion form in every way another
// site could, and checks that none moves the tag, while the real one does.
func TestFormsRefuseForgery(t *testing.T) {
	s := newSite(t, false)
	old := s.push("alice", "apps/web", "production", "old")
	next := s.push("alice", "apps/web", "staging-validated", "new")
	alice := s.browser()
	alice.login("alice")
	tok := alice.csrf("/ui/board")
	form := func(csrf string) url.Values {
		return url.Values{"csrf": {csrf}, "repository": {"apps/web"}, "from": {"staging-validated"}, "to": {"production"},
			"digest": {next.String()}, "back": {"/ui/board"}}
	}
	other := s.browser()
	other.login("bob")
	for _, c := range []struct {
		name   string
		form   url.Values
		header []string
	}{
		{"no token", form(""), []string{"Origin", s.srv.URL}},
		{"a made-up token", form("AAAA"), []string{"Origin", s.srv.URL}},
		{"another session's token", form(other.csrf("/ui/board")), []string{"Origin", s.srv.URL}},
		{"another origin", form(tok), []string{"Origin", "http://evil.example"}},
		{"another origin by Referer", form(tok), []string{"Referer", "http://evil.example/page"}},
		{"a cross-site request", form(tok), []string{"Sec-Fetch-Site", "cross-site"}},
		{"a null origin", form(tok), []string{"Origin", "null"}},
	} {
		p := alice.do(http.MethodPost, "/ui/board/promote", c.form, c.header...)
		if p.status != http.StatusForbidden || !strings.Contains(p.body, "Refused") {
			t.Errorf("%s: %d, want 403 Refused", c.name, p.status)
		}
		if d := s.tagDigest("apps/web", "production"); d != old {
			t.Fatalf("%s moved the tag to %s", c.name, d)
		}
	}
	// bob may not push: his own valid form is refused by the API.
	p := other.post("/ui/board/promote", form(other.csrf("/ui/board")))
	if p.status != http.StatusSeeOther {
		t.Fatalf("bob's promotion: %d", p.status)
	}
	if p = other.get("/ui/board"); !strings.Contains(p.body, "Promotion refused: you may not change tags in this repository.") {
		t.Errorf("bob's refused promotion is not said: %s", p.body)
	}
	if d := s.tagDigest("apps/web", "production"); d != old {
		t.Fatalf("bob moved the tag to %s", d)
	}
	// The real form moves it.
	p = alice.post("/ui/board/promote", form(tok))
	if p.status != http.StatusSeeOther || p.header.Get("Location") != "/ui/board" {
		t.Fatalf("alice's promotion: %d %v", p.status, p.header)
	}
	if d := s.tagDigest("apps/web", "production"); d != next {
		t.Errorf("production = %s after the promotion, want %s", d, next)
	}
	if p = alice.get("/ui/board"); !strings.Contains(p.body, "Promoted apps/web@"+shortDigest(next.String())) {
		t.Errorf("the promotion is not said on the board")
	}
	// And the rollback form moves it back.
	p = alice.post("/ui/board/rollback", url.Values{"csrf": {tok}, "repository": {"apps/web"}, "to": {"production"}, "digest": {old.String()}})
	if p.status != http.StatusSeeOther {
		t.Fatalf("rollback: %d", p.status)
	}
	if d := s.tagDigest("apps/web", "production"); d != old {
		t.Errorf("production = %s after the rollback, want %s", d, old)
	}
}

// TestImmutableTagStaysPut promotes onto an immutable tag from the board:
// the API refuses, the board says why, and nothing moves.
func TestImmutableTagStaysPut(t *testing.T) {
	s := newSiteWith(t, false, immutableTags{"apps/web:production": true})
	old := s.push("alice", "apps/web", "production", "old")
	next := s.push("alice", "apps/web", "staging-validated", "new")
	alice := s.browser()
	alice.login("alice")
	p := alice.post("/ui/board/promote", url.Values{"csrf": {alice.csrf("/ui/board")}, "repository": {"apps/web"},
		"from": {"staging-validated"}, "to": {"production"}, "digest": {next.String()}})
	if p.status != http.StatusSeeOther {
		t.Fatalf("promotion: %d", p.status)
	}
	if p = alice.get("/ui/board"); !strings.Contains(p.body, "Promotion refused: tag is immutable") {
		t.Errorf("the board does not say the tag is immutable")
	}
	if d := s.tagDigest("apps/web", "production"); d != old {
		t.Errorf("the immutable tag moved to %s", d)
	}
}

// mainOf is the <main> element of a page, with name replaced by NAME.
func mainOf(body, name string) string {
	start, end := strings.Index(body, "<main"), strings.Index(body, "</main>")
	if start < 0 || end < start {
		return body
	}
	m := strings.ReplaceAll(body[start:end], name, "NAME")
	// The login link carries the page's path, escaped.
	escaped := regexp.MustCompile("(?i)" + regexp.QuoteMeta(strings.ReplaceAll(name, "/", "%2f")))
	return escaped.ReplaceAllString(m, "NAME")
}

// TestHiddenLooksMissing asks for every page of a repository the visitor
// may not see and of one that does not exist: the answers are the same.
func TestHiddenLooksMissing(t *testing.T) {
	s := newSite(t, false)
	s.push("alice", "apps/web", "v1", "web")
	s.push("alice", "public/hello", "v1", "hello")
	anon := s.browser()
	bob := s.browser()
	bob.login("bob")
	bob.get("/ui/") // shows, and so ends, the message of the login
	for _, c := range []struct {
		who             *browser
		name            string
		hidden, missing string
	}{
		{anon, "anonymous", "apps/web", "apps/none"},
		{bob, "bob", "secret/x", "apps/none"},
	} {
		for _, suffix := range []string{"", "/-/artifact/v1", "/-/history/v1"} {
			h := c.who.get("/ui/r/" + c.hidden + suffix)
			m := c.who.get("/ui/r/" + c.missing + suffix)
			if h.status != http.StatusNotFound || m.status != http.StatusNotFound ||
				mainOf(h.body, c.hidden) != mainOf(m.body, c.missing) {
				t.Errorf("%s: %s%s answers %d, %s%s %d; want the same 404:\n%s\n---\n%s", c.name, c.hidden, suffix, h.status,
					c.missing, suffix, m.status, mainOf(h.body, c.hidden), mainOf(m.body, c.missing))
			}
		}
	}
	// What anonymous may pull is there.
	if p := anon.get("/ui/r/public/hello"); p.status != http.StatusOK || !strings.Contains(p.body, ">v1</a>") {
		t.Errorf("public/hello for anonymous: %d", p.status)
	}
	if p := anon.get("/ui/"); strings.Contains(p.body, "apps/web") {
		t.Error("the repository list shows apps/web to anonymous")
	}
}

func TestLocalPath(t *testing.T) {
	for in, want := range map[string]string{
		"/ui/board?repository=apps%2Fweb": "/ui/board?repository=apps%2Fweb",
		"/ui/":                            "/ui/",
		"":                                "/ui/",
		"//evil.example/ui/":              "/ui/",
		"/\\evil.example":                 "/ui/",
		"https://evil.example/ui/":        "/ui/",
		"javascript:alert(1)":             "/ui/",
		"/v2/_catalog":                    "/ui/",
		"/ui/../v2/":                      "/ui/",
		"/ui/r/apps/web/-/history/v1":     "/ui/r/apps/web/-/history/v1",
	} {
		if got := localPath(in); got != want {
			t.Errorf("localPath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("default: %v", err)
	}
	for _, envs := range [][]string{{"prod", "prod"}, {"not a tag"}, {""}, {"-x"}} {
		if err := (Config{Enabled: true, Environments: envs}).Validate(); err == nil {
			t.Errorf("environments %q: no error", envs)
		}
	}
}

func TestFormats(t *testing.T) {
	for d, want := range map[time.Duration]string{
		10 * time.Second: "just now", 90 * time.Second: "1 minute ago", 3 * time.Hour: "3 hours ago",
		49 * time.Hour: "2 days ago", 65 * 24 * time.Hour: "2 months ago", 800 * 24 * time.Hour: "2 years ago",
		-2 * time.Hour: "in 2 hours",
	} {
		if got := relative(d); got != want {
			t.Errorf("relative(%s) = %q, want %q", d, got, want)
		}
	}
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536 << 10: "1.5 MiB", 3 << 30: "3.0 GiB"} {
		if got := humanSize(n); got != want {
			t.Errorf("humanSize(%d) = %q, want %q", n, got, want)
		}
	}
	if got := shortDigest("sha256:0123456789abcdef0123"); got != "sha256:0123456789ab" {
		t.Errorf("shortDigest = %q", got)
	}
	u := &UI{now: func() time.Time { return time.Date(2026, 1, 2, 15, 0, 0, 0, time.UTC) }}
	got := string(u.ago(time.Date(2026, 1, 2, 12, 0, 0, 0, time.UTC)))
	want := `<time datetime="2026-01-02T12:00:00Z" title="2026-01-02 12:00:00 UTC">3 hours ago</time>`
	if got != want {
		t.Errorf("ago = %s, want %s", got, want)
	}
}

func TestSameHost(t *testing.T) {
	for _, c := range []struct {
		from string
		want bool
	}{
		{"http://registry.example:5000", true},
		{"https://registry.example:5000", true}, // behind a proxy that ends TLS
		{"https://REGISTRY.example:5000/ui/board", true},
		{"https://registry.example:5001", false},
		{"https://evil.example", false},
		{"null", false},
		{"javascript:x", false},
		{"//registry.example:5000", false},
	} {
		if got := sameHost(c.from, "registry.example:5000"); got != c.want {
			t.Errorf("sameHost(%q) = %v, want %v", c.from, got, c.want)
		}
	}
}
