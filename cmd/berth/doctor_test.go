package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/distribution"
	"github.com/berth-registry/berth/registry"
	"github.com/berth-registry/berth/storage/manifest"
)

// doctorJSON runs berth doctor --json with args and decodes its report.
func doctorJSON(t *testing.T, stdin string, args ...string) (doctorReport, error) {
	t.Helper()
	out, stderr, err := runBerth(t, stdin, append([]string{"doctor", "--json", "--timeout", "5s"}, args...)...)
	var rep doctorReport
	if jerr := json.Unmarshal([]byte(out), &rep); jerr != nil {
		t.Fatalf("doctor %v: %v\nstdout: %s\nstderr: %s", args, jerr, out, stderr)
	}
	return rep, err
}

// stepOf returns the step of the report named name.
func stepOf(t *testing.T, rep doctorReport, name string) step {
	t.Helper()
	for _, s := range rep.Steps {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no step %s in %+v", name, rep)
	return step{}
}

// wantSteps checks the status of each named step.
func wantSteps(t *testing.T, rep doctorReport, want map[string]string) {
	t.Helper()
	for name, status := range want {
		if s := stepOf(t, rep, name); s.Status != status {
			t.Errorf("step %s: %s (%s; cause %q), want %s", name, s.Status, s.Detail, s.Cause, status)
		}
	}
}

// openRegistry serves the distribution API over a real store holding
// apps/web:1.0, an image of one layer.
func openRegistry(t *testing.T, tlsServer bool) *httptest.Server {
	t.Helper()
	ctx := context.Background()
	store, err := registry.OpenStore(ctx, t.TempDir(), registry.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	put := func(b []byte, mt string) ocispec.Descriptor {
		d := digest.FromBytes(b)
		if _, err := store.PutBlob(ctx, "apps/web", d, bytes.NewReader(b), int64(len(b))); err != nil {
			t.Fatal(err)
		}
		return ocispec.Descriptor{MediaType: mt, Digest: d, Size: int64(len(b))}
	}
	m := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		Config: put([]byte(`{"architecture":"amd64","os":"linux"}`), ocispec.MediaTypeImageConfig),
		Layers: []ocispec.Descriptor{put(bytes.Repeat([]byte("layer "), 1000), ocispec.MediaTypeImageLayer)}}
	body, _ := json.Marshal(m)
	parsed, err := manifest.Parse("", body)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.PutManifest(ctx, "apps/web", "", body, parsed, []string{"1.0"}); err != nil {
		t.Fatal(err)
	}
	h := distribution.New(store.Service, distribution.Options{}).Handler()
	srv := httptest.NewUnstartedServer(h)
	// The handshakes doctor fails on purpose are no news.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	if tlsServer {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	return srv
}

// A registry over plain HTTP that asks for nothing: every step passes,
// the reference resolves and its first layer reads by range.
func TestDoctorPlainHTTP(t *testing.T) {
	srv := openRegistry(t, false)
	rep, err := doctorJSON(t, "", srv.URL+"/apps/web:1.0")
	if err != nil || !rep.OK {
		t.Fatalf("doctor: %v, %+v", err, rep)
	}
	wantSteps(t, rep, map[string]string{"proxy": stepOK, "resolve": stepOK, "connect": stepOK, "tls": stepSkip,
		"api": stepOK, "credentials": stepSkip, "reference": stepOK, "blob": stepOK, "clock": stepOK})
	if s := stepOf(t, rep, "blob"); !strings.Contains(s.Detail, "read 1024 bytes") {
		t.Errorf("blob step: %+v", s)
	}
	if s := stepOf(t, rep, "connect"); s.DurationMS <= 0 {
		t.Errorf("the connect step has no duration: %+v", s)
	}
	// A tag that does not exist fails at the reference, with its cause.
	rep, err = doctorJSON(t, "", srv.URL+"/apps/web:9.9")
	if err == nil || rep.OK {
		t.Fatalf("doctor of a missing tag passed: %+v", rep)
	}
	if s := stepOf(t, rep, "reference"); s.Status != stepFail || !strings.Contains(s.Cause, "does not exist") || s.Fix == "" {
		t.Errorf("reference step: %+v", s)
	}
	wantSteps(t, rep, map[string]string{"blob": stepSkip})
	// The table: one line per step.
	out, _, err := runBerth(t, "", "doctor", srv.URL+"/apps/web:1.0")
	if err != nil || !strings.Contains(out, "OK    blob") && !strings.Contains(out, "OK") || !strings.Contains(out, "all checks passed") {
		t.Errorf("doctor table: %v\n%s", err, out)
	}
}

// TLS: a certificate this machine does not trust fails with the cause and
// the fix; trusted with --ca-file it passes; reached by a name it does not
// list, or spoken to in TLS on a plain-HTTP port, it fails with those
// causes.
func TestDoctorTLS(t *testing.T) {
	srv := openRegistry(t, true)
	host := strings.TrimPrefix(srv.URL, "https://")
	rep, err := doctorJSON(t, "", host+"/apps/web:1.0")
	if err == nil || rep.OK {
		t.Fatalf("an untrusted certificate passed: %+v", rep)
	}
	s := stepOf(t, rep, "tls")
	if s.Status != stepFail || !strings.Contains(s.Cause, "does not trust") || !strings.Contains(s.Fix, "update-ca-certificates") {
		t.Errorf("untrusted tls step: %+v", s)
	}
	wantSteps(t, rep, map[string]string{"connect": stepOK, "api": stepSkip, "reference": stepSkip})

	ca := filepath.Join(t.TempDir(), "ca.pem")
	pemCert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(ca, pemCert, 0o600); err != nil {
		t.Fatal(err)
	}
	rep, err = doctorJSON(t, "", "--ca-file", ca, host+"/apps/web:1.0")
	if err != nil || !rep.OK {
		t.Fatalf("a trusted certificate: %v, %+v", err, rep)
	}
	wantSteps(t, rep, map[string]string{"tls": stepOK, "reference": stepOK, "blob": stepOK})

	_, port, _ := net.SplitHostPort(host)
	rep, _ = doctorJSON(t, "", "--ca-file", ca, "localhost:"+port)
	if s := stepOf(t, rep, "tls"); s.Status != stepFail || !strings.Contains(s.Cause, "not localhost") {
		t.Errorf("a name the certificate does not list: %+v", s)
	}

	plain := openRegistry(t, false)
	rep, _ = doctorJSON(t, "", strings.TrimPrefix(plain.URL, "http://"))
	if s := stepOf(t, rep, "tls"); s.Status != stepFail || !strings.Contains(s.Cause, "plain HTTP") {
		t.Errorf("TLS to a plain-HTTP port: %+v", s)
	}
}

// A closed port fails at the connection, with its cause and fix, and the
// steps after it are skipped.
func TestDoctorClosedPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	rep, err := doctorJSON(t, "", "--plain-http", addr+"/apps/web")
	if err == nil || rep.OK {
		t.Fatalf("a closed port passed: %+v", rep)
	}
	s := stepOf(t, rep, "connect")
	if s.Status != stepFail || !strings.Contains(s.Cause, "connection refused") || s.Fix == "" {
		t.Errorf("connect step: %+v", s)
	}
	wantSteps(t, rep, map[string]string{"resolve": stepOK, "tls": stepSkip, "api": stepSkip, "credentials": stepSkip,
		"reference": stepSkip, "blob": stepSkip, "clock": stepSkip})
}

// Credentials a token service refuses fail the credentials step; the
// password comes from standard input.
func TestDoctorRefusedCredentials(t *testing.T) {
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v2/":
			w.Header().Set("WWW-Authenticate", `Bearer realm="`+srv.URL+`/token",service="berth"`)
			w.WriteHeader(http.StatusUnauthorized)
		case "/token":
			if u, p, ok := r.BasicAuth(); ok && u == "deployer" && p == "right" {
				_, _ = w.Write([]byte(`{"token":"a.eyJhY2Nlc3MiOltdfQ.c"}`))
				return
			}
			w.WriteHeader(http.StatusUnauthorized)
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	t.Cleanup(srv.Close)
	rep, err := doctorJSON(t, "wrong\n", "-u", "deployer", "--password-stdin", srv.URL+"/apps/web")
	if err == nil || rep.OK {
		t.Fatalf("refused credentials passed: %+v", rep)
	}
	if s := stepOf(t, rep, "credentials"); s.Status != stepFail || !strings.Contains(s.Cause, "refused") || !strings.Contains(s.Fix, "robot") {
		t.Errorf("credentials step: %+v", s)
	}
	// Right ones get a token, which grants nothing on the repository.
	rep, _ = doctorJSON(t, "right\n", "-u", "deployer", "--password-stdin", srv.URL+"/apps/web")
	if s := stepOf(t, rep, "credentials"); s.Status != stepFail || !strings.Contains(s.Cause, "may not pull") {
		t.Errorf("a token granting nothing: %+v", s)
	}
	// Without a repository, a token is all there is to get.
	rep, err = doctorJSON(t, "right\n", "-u", "deployer", "--password-stdin", srv.URL)
	if err != nil || !rep.OK {
		t.Errorf("credentials without a repository: %v %+v", err, rep)
	}
}

func TestDoctorArguments(t *testing.T) {
	for _, args := range [][]string{
		{"ftp://registry"},
		{"registry:99999"},
		{"registry/Apps"},
		{"registry/apps:bad tag"},
		{"registry/apps@sha256:short"},
		{"registry", "--password-stdin"},
		{"registry", "--timeout", "0s"},
	} {
		if _, _, err := runBerth(t, "", append([]string{"doctor"}, args...)...); err == nil || err == errDoctorFailed {
			t.Errorf("doctor %v: %v, want an argument error", args, err)
		}
	}
}
