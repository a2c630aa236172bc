package conformance_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/berth-registry/berth/conformance/internal/berthtest"
)

// doctorStep is one step of berth doctor --json.
type doctorStep struct {
	Step, Status, Detail, Cause, Fix string
	DurationMs                       float64
}

// berthDoctor runs berth doctor --json with args, stdin and extra
// environment, and returns its steps and exit status.
func berthDoctor(t *testing.T, stdin string, env []string, args ...string) (map[string]doctorStep, int) {
	t.Helper()
	cmd := exec.Command(berthtest.Build(t), append([]string{"doctor", "--json", "--timeout", "10s"}, args...)...)
	cmd.Env = append(cmd.Environ(), append(clientEnv(t), env...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatalf("berth doctor: %v", err)
	}
	var rep struct {
		OK    bool
		Steps []doctorStep
	}
	if err := json.Unmarshal([]byte(stdout.String()), &rep); err != nil {
		t.Fatalf("berth doctor %v printed %q (%v), stderr %q", args, stdout.String(), err, stderr.String())
	}
	if rep.OK != (code == 0) {
		t.Errorf("berth doctor %v: ok %v but exit status %d", args, rep.OK, code)
	}
	steps := map[string]doctorStep{}
	for _, s := range rep.Steps {
		steps[s.Step] = s
	}
	return steps, code
}

// wantDoctor checks the status of each step named.
func wantDoctor(t *testing.T, what string, steps map[string]doctorStep, want map[string]string) {
	t.Helper()
	for name, status := range want {
		if s := steps[name]; s.Status != status {
			t.Errorf("%s: step %s is %s (%s; cause %q), want %s", what, name, s.Status, s.Detail, s.Cause, status)
		}
	}
}

// TestDoctorAgainstBerth runs berth doctor against real servers: over
// plain HTTP with the right, wrong and missing credentials and a robot
// secret; over TLS with a self-signed certificate, untrusted, trusted with
// --ca-file and trusted by the system's store (SSL_CERT_FILE); and against
// a closed port.
func TestDoctorAgainstBerth(t *testing.T) {
	t.Parallel()
	srv := startFilesServer(t)
	work := t.TempDir()
	writeFiles(t, work, map[string][]byte{"app.jar": []byte("the jar of the doctor's test")})
	wantCurl(t, "upload", curl(t, work, "-u", "builder:"+srv.pw["builder"], "-T", "app.jar", srv.URL+"/artifacts/apps/myapp/1.0/app.jar"), http.StatusCreated, "")
	target := srv.URL + "/apps/myapp:1.0"

	steps, code := berthDoctor(t, srv.pw["deployer"]+"\n", nil, "-u", "deployer", "--password-stdin", target)
	if code != 0 {
		t.Fatalf("doctor with the right credentials: exit %d, %+v", code, steps)
	}
	wantDoctor(t, "right credentials", steps, map[string]string{"resolve": "ok", "connect": "ok", "tls": "skip", "api": "ok",
		"credentials": "ok", "reference": "ok", "blob": "ok", "clock": "ok"})
	if !strings.Contains(steps["credentials"].Detail, "granting pull") || !strings.Contains(steps["blob"].Detail, "read 28 bytes") ||
		!strings.Contains(steps["api"].Detail, "asks for a token") {
		t.Errorf("details: %+v", steps)
	}

	steps, code = berthDoctor(t, "wrong-password\n", nil, "-u", "deployer", "--password-stdin", target)
	if code != 1 || steps["credentials"].Status != "fail" || !strings.Contains(steps["credentials"].Cause, "refused") ||
		steps["reference"].Status != "skip" {
		t.Errorf("wrong credentials: exit %d, %+v", code, steps)
	}
	steps, code = berthDoctor(t, "", nil, target)
	if code != 1 || steps["credentials"].Status != "fail" || !strings.Contains(steps["credentials"].Cause, "anonymous may not pull") {
		t.Errorf("no credentials: exit %d, %+v", code, steps)
	}
	// A robot's secret is a password.
	r := curl(t, work, "-u", "admin:"+srv.pw["admin"], "-H", "Content-Type: application/json",
		"-d", `{"name":"prod-deployer","scopes":["repository:apps/**:pull"],"expires":"1h"}`, srv.URL+"/_berth/admin/robots")
	var robot struct{ Secret string }
	if err := json.Unmarshal([]byte(r.body), &robot); err != nil || robot.Secret == "" {
		t.Fatalf("robot: %d %s", r.status, r.body)
	}
	if steps, code := berthDoctor(t, "", []string{"BERTH_USERNAME=prod-deployer", "BERTH_PASSWORD=" + robot.Secret}, target); code != 0 {
		t.Errorf("a robot secret: exit %d, %+v", code, steps)
	}

	// A closed port.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	_ = ln.Close()
	steps, code = berthDoctor(t, "", nil, "--plain-http", closed+"/apps/myapp")
	if code != 1 || steps["connect"].Status != "fail" || !strings.Contains(steps["connect"].Cause, "connection refused") ||
		steps["connect"].Fix == "" || steps["api"].Status != "skip" {
		t.Errorf("a closed port: exit %d, %+v", code, steps)
	}
}

// TestDoctorTLS runs berth doctor against a berth serving TLS with a
// self-signed certificate.
func TestDoctorTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	certPath, keyPath, _ := selfSigned(t, dir)
	h, err := bcrypt.GenerateFromPassword([]byte("ci-pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	writeTestFile(t, filepath.Join(dir, "htpasswd"), "ci:"+string(h)+"\n")
	writeTestFile(t, filepath.Join(dir, "berth.yaml"), fmt.Sprintf("tls:\n  certificate: %s\n  key: %s\nauth:\n  htpasswd: %s\n  rules:\n    - repositories: [\"**\"]\n      grants:\n        user:ci: [pull, push]\n",
		certPath, keyPath, filepath.Join(dir, "htpasswd")))
	srv := berthtest.Start(t, berthtest.WithArgs("--config", filepath.Join(dir, "berth.yaml")))
	work := t.TempDir()
	writeFiles(t, work, map[string][]byte{"tool": []byte("a binary")})
	wantCurl(t, "upload over TLS", curl(t, work, "--cacert", certPath, "-u", "ci:ci-pw", "-T", "tool", "https://"+srv.Addr+"/artifacts/tools/cli/2.0/tool"),
		http.StatusCreated, "")
	target := srv.Addr + "/tools/cli:2.0"

	steps, code := berthDoctor(t, "ci-pw\n", nil, "-u", "ci", "--password-stdin", target)
	if code != 1 || steps["tls"].Status != "fail" || !strings.Contains(steps["tls"].Cause, "does not trust") ||
		!strings.Contains(steps["tls"].Fix, "--ca-file") || steps["api"].Status != "skip" {
		t.Errorf("an untrusted certificate: exit %d, %+v", code, steps)
	}
	for _, c := range []struct {
		name string
		env  []string
		args []string
	}{
		{"--ca-file", nil, []string{"--ca-file", certPath}},
		{"the system's store", []string{"SSL_CERT_FILE=" + certPath}, nil},
	} {
		steps, code := berthDoctor(t, "ci-pw\n", c.env, append(c.args, "-u", "ci", "--password-stdin", target)...)
		if code != 0 {
			t.Errorf("trusted by %s: exit %d, %+v", c.name, code, steps)
			continue
		}
		wantDoctor(t, c.name, steps, map[string]string{"tls": "warn", "api": "ok", "credentials": "ok", "reference": "ok", "blob": "ok"})
		// The test certificate lives an hour: doctor warns of it.
		if !strings.Contains(steps["tls"].Cause, "expires") || !strings.Contains(steps["tls"].Detail, "127.0.0.1") {
			t.Errorf("trusted by %s: tls %+v", c.name, steps["tls"])
		}
	}
	// Plain HTTP to the TLS port: the server says so (400); doctor's API
	// step fails with its status.
	steps, code = berthDoctor(t, "", nil, "--plain-http", srv.Addr)
	if code != 1 || steps["api"].Status != "fail" {
		t.Errorf("plain HTTP to a TLS port: exit %d, %+v", code, steps)
	}
}
