package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/berth-registry/berth/registry/auth"
)

// runBerth runs the berth command line with args and stdin, in an
// environment without BERTH_* settings.
func runBerth(t *testing.T, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	for _, k := range []string{"BERTH_REGISTRY", "BERTH_USERNAME", "BERTH_PASSWORD", "BERTH_CONFIG", "BERTH_DATA"} {
		t.Setenv(k, "")
	}
	var out, errOut bytes.Buffer
	root := newRootCommand()
	root.SetArgs(args)
	root.SetIn(strings.NewReader(stdin))
	root.SetOut(&out)
	root.SetErr(&errOut)
	err = root.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

// guardServer counts the requests that reach it: a command refused for
// its flags must send none.
func guardServer(t *testing.T) (url string, hits *atomic.Int32) {
	t.Helper()
	hits = new(atomic.Int32)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.Error(w, "unexpected request", http.StatusTeapot)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, hits
}

func TestTokenCreateFlags(t *testing.T) {
	url, hits := guardServer(t)
	base := []string{"token", "create", "--registry", url, "--username", "admin"}
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"no name", []string{"--scope", "repository:a:pull"}, "--name is required"},
		{"bad name", []string{"--name", "CI", "--scope", "repository:a:pull"}, "--name"},
		{"name with slash", []string{"--name", "ci/x", "--scope", "repository:a:pull"}, "--name"},
		{"no scope", []string{"--name", "ci"}, "at least one --scope"},
		{"not a scope", []string{"--name", "ci", "--scope", "apps/web"}, "--scope"},
		{"registry scope", []string{"--name", "ci", "--scope", "registry:catalog:*"}, "repository scopes only"},
		{"unknown action", []string{"--name", "ci", "--scope", "repository:a:pull,own"}, "unknown action"},
		{"no actions", []string{"--name", "ci", "--scope", "repository:a:"}, "--scope"},
		{"no repository", []string{"--name", "ci", "--scope", "repository::pull"}, "--scope"},
		{"one bad scope of two", []string{"--name", "ci", "--scope", "repository:a:pull", "--scope", "repo:b:pull"}, "unknown type"},
		{"days", []string{"--name", "ci", "--scope", "repository:a:pull", "--expires", "30d"}, "--expires"},
		{"zero lifetime", []string{"--name", "ci", "--scope", "repository:a:pull", "--expires", "0s"}, "positive duration"},
		{"negative lifetime", []string{"--name", "ci", "--scope", "repository:a:pull", "--expires", "-1h"}, "positive duration"},
		{"over a year", []string{"--name", "ci", "--scope", "repository:a:pull", "--expires", "8761h"}, "up to 8760h"},
		{"unknown flag", []string{"--name", "ci", "--scope", "repository:a:pull", "--ttl", "1h"}, "unknown flag"},
		{"positional argument", []string{"ci", "--scope", "repository:a:pull"}, "unknown command"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			stdout, _, err := runBerth(t, "", append(slicesClone(base), c.args...)...)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
			if stdout != "" {
				t.Fatalf("stdout %q, want nothing", stdout)
			}
		})
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("%d requests reached the server", n)
	}
}

func TestTokenArgs(t *testing.T) {
	url, hits := guardServer(t)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"token", "revoke"}, "accepts 1 arg(s)"},
		{[]string{"token", "revoke", "a", "b"}, "accepts 1 arg(s)"},
		{[]string{"token", "rotate"}, "accepts 1 arg(s)"},
		{[]string{"token", "rotate", "a", "b"}, "accepts 1 arg(s)"},
		{[]string{"token", "revoke", "Bad/Name"}, "invalid robot name"},
		{[]string{"token", "rotate", "-x"}, "unknown shorthand flag"},
		{[]string{"token", "rotate", "--", "-x"}, "invalid robot name"},
		{[]string{"token", "list", "extra"}, "unknown command"},
		{[]string{"token", "frobnicate"}, "unknown command"},
		{[]string{"keys", "rotate", "extra"}, "unknown command"},
		{[]string{"keys", "frobnicate"}, "unknown command"},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			args := c.args
			if args[0] == "token" { // any request would reach the guard
				args = append([]string{"token", "--registry", url, "--username", "admin"}, args[1:]...)
			}
			_, _, err := runBerth(t, "", args...)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
		})
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("%d requests reached the server", n)
	}
}

func TestTokenConnectionFlags(t *testing.T) {
	url, hits := guardServer(t)
	create := []string{"token", "create", "--name", "ci", "--scope", "repository:a:pull"}
	cases := []struct {
		name  string
		stdin string
		args  []string
		want  string
	}{
		{"no user", "", []string{"--registry", url}, "no user name"},
		{"no password", "", []string{"--registry", url, "--username", "admin"}, "no password"},
		{"empty password on stdin", "\n", []string{"--registry", url, "--username", "admin", "--password-stdin"}, "empty password"},
		{"registry without scheme", "", []string{"--registry", "registry.example.com", "--username", "admin"}, "--registry"},
		{"registry of another scheme", "", []string{"--registry", "ftp://registry.example.com", "--username", "admin"}, "--registry"},
		{"registry without host", "", []string{"--registry", "http://", "--username", "admin"}, "--registry"},
		{"registry with credentials", "", []string{"--registry", "http://u:p@127.0.0.1:1", "--username", "admin"}, "--registry"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := runBerth(t, c.stdin, append(slicesClone(create), c.args...)...)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
		})
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("%d requests reached the server", n)
	}
}

// TestTokenCreateSends is the control for the tests above: valid flags do
// reach the server, and only the secret goes to standard output.
func TestTokenCreateSends(t *testing.T) {
	var got struct {
		path, user, pass string
		body             map[string]any
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.path = r.Method + " " + r.URL.Path
		got.user, got.pass, _ = r.BasicAuth()
		raw, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(raw, &got.body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, `{"name":"ci","secret":"berth_SECRET","expires":"2030-01-02T03:04:05Z"}`)
	}))
	defer srv.Close()
	stdout, stderr, err := runBerth(t, "s3cret\n", "token", "create", "--registry", srv.URL+"/", "--username", "admin",
		"--password-stdin", "--name", "ci", "--scope", "repository:apps/*:pull,push", "--scope", "repository:base:pull", "--expires", "48h")
	if err != nil {
		t.Fatal(err)
	}
	if stdout != "berth_SECRET\n" {
		t.Fatalf("stdout %q, want the secret alone", stdout)
	}
	if !strings.Contains(stderr, "2030-01-02T03:04:05Z") {
		t.Fatalf("stderr %q lacks the expiry", stderr)
	}
	if got.path != "POST "+auth.AdminPrefix+"robots" || got.user != "admin" || got.pass != "s3cret" {
		t.Fatalf("request %s as %s:%s", got.path, got.user, got.pass)
	}
	scopes, _ := got.body["scopes"].([]any)
	if got.body["name"] != "ci" || len(scopes) != 2 || scopes[0] != "repository:apps/*:pull,push" || got.body["expires"] != "48h0m0s" {
		t.Fatalf("body %v", got.body)
	}
}

func TestKeysRotate(t *testing.T) {
	data := t.TempDir()
	keysDir := filepath.Join(data, "keys")
	first, err := auth.LoadKeys(keysDir) // the server's first start
	if err != nil {
		t.Fatal(err)
	}
	_, firstKID := first.KIDs()

	stdout, _, err := runBerth(t, "", "keys", "rotate", "--data", data)
	if err != nil {
		t.Fatal(err)
	}
	kid := strings.TrimSpace(stdout)
	if kid == "" || kid == firstKID || strings.Contains(kid, "\n") {
		t.Fatalf("stdout %q, want the new key id alone", stdout)
	}
	ks, err := auth.LoadKeys(keysDir)
	if err != nil {
		t.Fatal(err)
	}
	all, active := ks.KIDs()
	if len(all) != 2 || all[0] != firstKID || all[1] != kid || active != kid {
		t.Fatalf("keys %v active %s; want [%s %s] with %s active", all, active, firstKID, kid, kid)
	}

	// The data directory may come from the configuration file.
	cfg := filepath.Join(t.TempDir(), "berth.yaml")
	if err := os.WriteFile(cfg, []byte("data: "+data+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	stdout, _, err = runBerth(t, "", "keys", "rotate", "--config", cfg)
	if err != nil {
		t.Fatal(err)
	}
	if ks, err = auth.LoadKeys(keysDir); err != nil {
		t.Fatal(err)
	}
	if all, active = ks.KIDs(); len(all) != 3 || active != strings.TrimSpace(stdout) {
		t.Fatalf("after a second rotation: keys %v active %s, printed %q", all, active, stdout)
	}

	// A mistyped directory is refused rather than given keys.
	missing := filepath.Join(data, "nope")
	if _, _, err := runBerth(t, "", "keys", "rotate", "--data", missing); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("missing data directory: %v", err)
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Fatalf("rotate created %s", missing)
	}
}

func slicesClone(s []string) []string { return append([]string(nil), s...) }
