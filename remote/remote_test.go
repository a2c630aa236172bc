package remote

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
)

// TestValidate: every setting that cannot work is refused, naming the
// entry.
func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{URL: "https://registry.example.com"}, ""},
		{Config{URL: "http://127.0.0.1:5000/"}, ""},
		{Config{URL: "https://h", Username: "u", PasswordEnv: "P"}, ""},
		{Config{URL: ""}, "url"},
		{Config{URL: "ftp://h"}, "url"},
		{Config{URL: "https://h/v2/"}, "url"},
		{Config{URL: "https://h?x=1"}, "url"},
		{Config{URL: "https://user:pw@h"}, "url"},
		{Config{URL: "https://h", Username: "u", UsernameEnv: "U"}, "exclusive"},
		{Config{URL: "https://h", Password: "p", PasswordEnv: "P"}, "exclusive"},
		{Config{URL: "https://h", TLS: TLSConfig{Certificate: "c.pem"}}, "go together"},
	} {
		err := tc.cfg.Validate("entry")
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%+v: %v", tc.cfg, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "entry")):
			t.Errorf("%+v: %v; want an error about %s naming the entry", tc.cfg, err, tc.want)
		}
	}
}

// fakeRegistry is a registry that asks for a Bearer token from its token
// service, which takes Basic credentials, as Docker Hub does.
type fakeRegistry struct {
	srv  *httptest.Server
	user string
	pass string
	// basic makes the registry ask for Basic credentials itself instead.
	basic bool

	mu        sync.Mutex
	tokens    int      // tokens issued
	scopes    []string // scopes asked for
	agents    []string // User-Agent of every request
	anonymous int      // token requests without credentials
}

func startFake(t *testing.T, basic bool) *fakeRegistry {
	t.Helper()
	f := &fakeRegistry{user: "mirror", pass: "s3cret", basic: basic}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeRegistry) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.agents = append(f.agents, r.Header.Get("User-Agent"))
	f.mu.Unlock()
	if r.URL.Path == "/token" {
		user, pass, ok := r.BasicAuth()
		f.mu.Lock()
		defer f.mu.Unlock()
		if !ok {
			f.anonymous++
		}
		if !ok || user != f.user || pass != f.pass {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if r.URL.Query().Get("service") != "fake" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		f.tokens++
		scope := r.URL.Query().Get("scope")
		f.scopes = append(f.scopes, scope)
		_ = json.NewEncoder(w).Encode(map[string]any{"token": fmt.Sprintf("tok-%d|%s", f.tokens, scope), "expires_in": 300})
		return
	}
	repo, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/v2/"), "/manifests/")
	scope := "repository:" + repo + ":pull"
	if f.basic {
		if user, pass, ok := r.BasicAuth(); ok && user == f.user && pass == f.pass {
			w.WriteHeader(http.StatusOK)
			return
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="fake"`)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	// A token is good for the scope it was issued for.
	if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		if _, s, _ := strings.Cut(tok, "|"); s == scope {
			w.WriteHeader(http.StatusOK)
			return
		}
	}
	w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="%s/token",service="fake",scope="%s"`, f.srv.URL, scope))
	w.WriteHeader(http.StatusUnauthorized)
}

// get sends a GET of a manifest of repo through reg.
func get(t *testing.T, reg *Registry, repo string) (int, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, reg.URL("/v2/"+repo+"/manifests/v1"), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := reg.Do(req, repo)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// TestTokenFlow: the client answers a Bearer challenge by asking the token
// service with its credentials (read from the environment) for the
// repository's pull scope, and keeps the token for later requests of the
// same scope; another repository gets a token of its own.
func TestTokenFlow(t *testing.T) {
	f := startFake(t, false)
	env := map[string]string{"HUB_TOKEN": f.pass}
	reg, err := New(Config{URL: f.srv.URL, Username: f.user, PasswordEnv: "HUB_TOKEN"},
		Options{Getenv: func(k string) string { return env[k] }, UserAgent: "berth/test"})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if status, err := get(t, reg, "library/alpine"); err != nil || status != 200 {
			t.Fatalf("GET through the token flow: %d, %v", status, err)
		}
	}
	if status, err := get(t, reg, "library/debian"); err != nil || status != 200 {
		t.Fatalf("GET of another repository: %d, %v", status, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.tokens != 2 || f.scopes[0] != "repository:library/alpine:pull" || f.scopes[1] != "repository:library/debian:pull" {
		t.Errorf("tokens issued %d for %q; want one per repository, for pull", f.tokens, f.scopes)
	}
	for _, ua := range f.agents {
		if ua != "berth/test" {
			t.Errorf("a request had User-Agent %q", ua)
			break
		}
	}
}

// TestTokenFlowWrongCredentials: credentials the token service refuses
// end in an error or the registry's 401, never in a success.
func TestTokenFlowWrongCredentials(t *testing.T) {
	f := startFake(t, false)
	reg, err := New(Config{URL: f.srv.URL, Username: f.user, Password: "wrong"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if status, err := get(t, reg, "library/alpine"); err == nil && status == 200 {
		t.Error("a GET with refused credentials succeeded")
	}
	// Without credentials the token service is asked anonymously.
	anon, err := New(Config{URL: f.srv.URL}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if status, err := get(t, anon, "library/alpine"); err == nil && status == 200 {
		t.Error("an anonymous GET succeeded")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.anonymous == 0 {
		t.Error("the client without credentials did not ask for an anonymous token")
	}
	if f.tokens != 0 {
		t.Errorf("%d tokens issued to wrong credentials", f.tokens)
	}
}

// TestBasic: a registry that asks for Basic credentials gets them.
func TestBasic(t *testing.T) {
	f := startFake(t, true)
	reg, err := New(Config{URL: f.srv.URL, Username: f.user, Password: f.pass}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if status, err := get(t, reg, "team/app"); err != nil || status != 200 {
		t.Errorf("GET with Basic: %d, %v", status, err)
	}
	wrong, err := New(Config{URL: f.srv.URL, Username: f.user, Password: "nope"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if status, _ := get(t, wrong, "team/app"); status == 200 {
		t.Error("wrong Basic credentials succeeded")
	}
}

// TestNewRefusesAnEmptyPasswordVariable: a password variable that is not
// set stops the start instead of sending no password.
func TestNewRefusesAnEmptyPasswordVariable(t *testing.T) {
	_, err := New(Config{URL: "https://h", Username: "u", PasswordEnv: "UNSET"}, Options{Getenv: func(string) string { return "" }})
	if err == nil || !strings.Contains(err.Error(), "UNSET") {
		t.Errorf("New = %v; want an error naming the variable", err)
	}
}

// TestUnreachable: a registry that does not answer is an UnreachableError,
// unless the caller gave up first.
func TestUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	reg, err := New(Config{URL: "http://" + addr}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = get(t, reg, "team/app")
	var ue *UnreachableError
	if !errors.As(err, &ue) || !Unreachable(t.Context(), err) || ue.Host != addr {
		t.Errorf("GET of a closed port: %v; want an UnreachableError naming %s", err, addr)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if Unreachable(ctx, err) {
		t.Error("a caller's own cancellation counts as the registry unreachable")
	}
}

// TestRealmDenylist: a token realm on loopback is allowed for a registry
// on loopback (its token service is there too) and refused for any other.
func TestRealmDenylist(t *testing.T) {
	loop := netip.MustParseAddr("127.0.0.1")
	blocked := func(host string) bool {
		for _, p := range realmDenylist(host) {
			if p.Contains(loop) {
				return true
			}
		}
		return false
	}
	for host, want := range map[string]bool{
		"registry.example.com": true,
		"203.0.113.7":          true,
		"127.0.0.1":            false,
		"localhost":            false,
		"127.0.0.2":            false,
	} {
		if got := blocked(host); got != want {
			t.Errorf("a loopback realm for a registry at %s: blocked %v; want %v", host, got, want)
		}
	}
}
