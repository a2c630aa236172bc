package conformance_test

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-registry/berth/conformance/internal/berthtest"
)

// berthCLI runs the berth binary with stdin and returns stdout, failing the
// test if it exits non-zero.
func berthCLI(t *testing.T, stdin string, env []string, args ...string) string {
	t.Helper()
	cmd := exec.Command(berthtest.Build(t), args...)
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Env = append(cmd.Environ(), env...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("berth %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// eventually polls check every 50 ms for up to 15 s.
func eventually(t *testing.T, what string, check func() bool) {
	t.Helper()
	for i := 0; i < 300; i++ {
		if check() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: not within 15s", what)
}

// Robot tokens through the CLI and the admin API of a running server: the
// secret works once created, is refused (with the JWT already obtained)
// the moment it is revoked, and rotation replaces it.
func TestRobotTokenCLI(t *testing.T) {
	srv := startAuthServer(t)
	seed(t, srv.client("admin", true), "team/app", "v1")
	env := []string{"BERTH_REGISTRY=" + srv.URL, "BERTH_USERNAME=admin"}
	secret := strings.TrimSpace(berthCLI(t, "admin-pw\n", env,
		"token", "create", "--password-stdin", "--name", "deploy", "--scope", "repository:team/*:pull,push", "--expires", "1h"))
	if !strings.HasPrefix(secret, "berth_") || strings.Contains(secret, "\n") {
		t.Fatalf("token create printed %q, want only the secret", secret)
	}
	if list := berthCLI(t, "admin-pw\n", env, "token", "list", "--password-stdin"); !strings.Contains(list, "deploy") || !strings.Contains(list, "repository:team/*:pull,push") {
		t.Fatalf("token list:\n%s", list)
	}
	// A non-admin may not use the admin API.
	cmd := exec.Command(berthtest.Build(t), "token", "list", "--password-stdin")
	cmd.Stdin = strings.NewReader("writer-pw\n")
	cmd.Env = append(cmd.Environ(), "BERTH_REGISTRY="+srv.URL, "BERTH_USERNAME=writer")
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Fatalf("a non-admin listed robot tokens:\n%s", out)
	}

	robot := srv.client("deploy", false)
	srv.users["deploy"] = secret
	robot.pass = secret
	r, b := robot.do(t, http.MethodPost, "/v2/team/app/blobs/uploads/", nil)
	mustStatus(t, "robot push", r, b, http.StatusAccepted)
	// Keep the JWT the robot obtained, to replay after revocation.
	tok := tokenFor(t, srv.URL, "deploy", secret, "repository:team/app:pull")

	berthCLI(t, "admin-pw\n", env, "token", "revoke", "--password-stdin", "deploy")
	r, b = robot.do(t, http.MethodGet, "/v2/team/app/tags/list", nil)
	mustStatus(t, "revoked robot via token flow", r, b, http.StatusUnauthorized)
	if st := bearerStatus(t, srv.URL+"/v2/team/app/tags/list", tok); st != http.StatusUnauthorized {
		t.Fatalf("JWT of a revoked robot: status %d, want 401", st)
	}

	// A second robot, rotated: the old secret stops, the new one works.
	old := strings.TrimSpace(berthCLI(t, "admin-pw\n", env,
		"token", "create", "--password-stdin", "--name", "builder", "--scope", "repository:team/*:pull", "--expires", "1h"))
	fresh := strings.TrimSpace(berthCLI(t, "admin-pw\n", env, "token", "rotate", "--password-stdin", "builder"))
	if fresh == old || !strings.HasPrefix(fresh, "berth_") {
		t.Fatalf("rotate printed %q", fresh)
	}
	if st := basicStatus(t, srv.URL+"/v2/team/app/tags/list", "builder", old); st != http.StatusUnauthorized {
		t.Fatalf("rotated-out secret: status %d, want 401", st)
	}
	if st := basicStatus(t, srv.URL+"/v2/team/app/tags/list", "builder", fresh); st != http.StatusOK {
		t.Fatalf("new secret: status %d, want 200", st)
	}
	for _, s := range []string{secret, old, fresh, tok, "admin-pw"} {
		if strings.Contains(srv.Logs(), s) {
			t.Errorf("the server log contains a secret (%.12s...)", s)
		}
	}
}

// berth keys rotate on a running server's data: new tokens carry the new
// key, and a token signed before the rotation still works.
func TestKeyRotationCLI(t *testing.T) {
	srv := startAuthServer(t)
	seed(t, srv.client("admin", true), "team/app", "v1")
	before := tokenFor(t, srv.URL, "reader", "reader-pw", "repository:team/app:pull")
	out := berthCLI(t, "", nil, "keys", "rotate", "--data", srv.DataDir)
	kid := strings.TrimSpace(out[strings.LastIndex(strings.TrimSpace(out), " ")+1:])
	if kid == "" {
		t.Fatalf("keys rotate printed %q", out)
	}
	eventually(t, "the server signs with the new key", func() bool {
		return strings.Contains(jwtHeader(t, tokenFor(t, srv.URL, "reader", "reader-pw", "repository:team/app:pull")), kid)
	})
	if st := bearerStatus(t, srv.URL+"/v2/team/app/tags/list", before); st != http.StatusOK {
		t.Fatalf("token signed before the rotation: status %d, want 200", st)
	}
}

// Users added with the CLI are picked up by a running server: by watching
// the file, and at once on SIGHUP.
func TestUserReload(t *testing.T) {
	srv := startAuthServer(t)
	// Wait for the server to say it reloaded, then try once: polling with
	// credentials that are not valid yet would trip the login rate limit.
	berthCLI(t, "carol-pw\n", nil, "user", "add", "carol", "--htpasswd", srv.htpasswd, "--password-stdin")
	eventually(t, "the server reloads the changed users file", func() bool {
		return strings.Contains(srv.Logs(), "users file reloaded")
	})
	if st := basicStatus(t, srv.URL+"/v2/", "carol", "carol-pw"); st != http.StatusOK {
		t.Fatalf("a user added to the file: status %d, want 200", st)
	}
	berthCLI(t, "", nil, "user", "remove", "carol", "--htpasswd", srv.htpasswd)
	if err := syscall.Kill(srv.Pid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the server reloads on SIGHUP", func() bool {
		return strings.Contains(srv.Logs(), "users reloaded on SIGHUP")
	})
	if st := basicStatus(t, srv.URL+"/v2/", "carol", "carol-pw"); st != http.StatusUnauthorized {
		t.Fatalf("a removed user after SIGHUP: status %d, want 401", st)
	}
	if st := basicStatus(t, srv.URL+"/v2/", "reader", "reader-pw"); st != http.StatusOK {
		t.Fatalf("the server stopped serving after SIGHUP: %d", st)
	}
}

func basicStatus(t *testing.T, url, user, pass string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.SetBasicAuth(user, pass)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func bearerStatus(t *testing.T, url, tok string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// tokenFor asks the token service for a scope with Basic credentials.
func tokenFor(t *testing.T, base, user, pass, scope string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/auth/token?service=berth&scope="+scope, nil)
	req.SetBasicAuth(user, pass)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tr struct {
		Token string `json:"token"`
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("token for %s: status %d", user, resp.StatusCode)
	}
	if err := jsonDecode(resp, &tr); err != nil || tr.Token == "" {
		t.Fatalf("token response: %v", err)
	}
	return tr.Token
}

// jwtHeader returns the decoded header of a JWT.
func jwtHeader(t *testing.T, tok string) string {
	t.Helper()
	h, _, _ := strings.Cut(tok, ".")
	b, err := base64URL(h)
	if err != nil {
		t.Fatalf("JWT header: %v", err)
	}
	return string(b)
}

func jsonDecode(resp *http.Response, v any) error { return json.NewDecoder(resp.Body).Decode(v) }

func base64URL(s string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(s) }
