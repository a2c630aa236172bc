package conformance_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestHelmCLI drives the helm binary: it packages a new chart, pushes it to
// Berth as an OCI artifact and pulls it back byte for byte.
//
// In authenticated mode helm logs in with helm registry login, and a helm
// that has not logged in must fail to push.
func TestHelmCLI(t *testing.T) {
	t.Parallel()
	forEachMode(t, testHelmCLI)
}

func testHelmCLI(t *testing.T, srv *registryUnderTest) {
	env := clientEnv(t)
	work := t.TempDir()
	helm := func(args ...string) string {
		t.Helper()
		// helm reports push and pull on stderr; runClientIn keeps only
		// stdout, so ask for both through execClient.
		r := execClient(t, work, env, "helm", args...)
		if r.err != nil {
			t.Fatalf("client helm failed: helm %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.err, r.stdout, r.stderr)
		}
		return r.stdout + r.stderr
	}
	// helm keeps the credentials in $HELM_REGISTRY_CONFIG.
	srv.login(t, work, env, "helm", "registry", "login", srv.Addr, "--username", srv.user, "--password-stdin", "--plain-http")

	const (
		chart   = "berthchart"
		version = "0.1.0"
	)
	helm("create", chart)
	helm("package", chart, "--destination", work)
	pkg := filepath.Join(work, chart+"-"+version+".tgz")
	want, err := os.ReadFile(pkg)
	if err != nil {
		t.Fatalf("read packaged chart: %v", err)
	}

	srv.expectRefused(t, "helm push", execClient(t, work, clientEnv(t), "helm", "push", pkg, "oci://"+srv.Addr+"/refused", "--plain-http"))
	out := helm("push", pkg, "oci://"+srv.Addr+"/charts", "--plain-http")
	m := regexp.MustCompile(`Digest: (sha256:[0-9a-f]{64})`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("helm push did not report a digest:\n%s", out)
	}
	pushed := digest.Digest(m[1])

	dest := t.TempDir()
	pulledOut := helm("pull", "oci://"+srv.Addr+"/charts/"+chart, "--version", version, "--plain-http", "--destination", dest)
	if !strings.Contains(pulledOut, pushed.String()) {
		t.Errorf("helm pull reported a different digest than helm push (%s):\n%s", pushed, pulledOut)
	}
	got, err := os.ReadFile(filepath.Join(dest, chart+"-"+version+".tgz"))
	if err != nil {
		t.Fatalf("read pulled chart: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("pulled chart differs from the pushed one (%d bytes, want %d)", len(got), len(want))
	}

	show := helm("show", "chart", "oci://"+srv.Addr+"/charts/"+chart, "--version", version, "--plain-http")
	if !strings.Contains(show, "name: "+chart) || !strings.Contains(show, "version: "+version) {
		t.Errorf("helm show chart does not name %s %s:\n%s", chart, version, show)
	}

	// Berth stored a Helm OCI manifest whose chart layer is the package.
	ctx, cancel := context.WithTimeout(t.Context(), interopTimeout)
	defer cancel()
	client := srv.httpClient(t)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/v2/charts/"+chart+"/manifests/"+version, nil)
	if err != nil {
		t.Fatalf("manifest request: %v", err)
	}
	req.Header.Set("Accept", ocispec.MediaTypeImageManifest)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", req.URL, err)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	_ = resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: status %s, read: %v", req.URL, resp.Status, err)
	}
	if d := digest.FromBytes(body); d != pushed {
		t.Errorf("manifest %s:%s hashes to %s, helm pushed %s", chart, version, d, pushed)
	}
	var manifest ocispec.Manifest
	if err := json.Unmarshal(body, &manifest); err != nil {
		t.Fatalf("decode chart manifest: %v", err)
	}
	const (
		helmConfig = "application/vnd.cncf.helm.config.v1+json"
		helmChart  = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
	)
	if manifest.Config.MediaType != helmConfig || len(manifest.Layers) != 1 ||
		manifest.Layers[0].MediaType != helmChart || manifest.Layers[0].Digest != digest.FromBytes(want) {
		t.Errorf("chart manifest = %+v, want a %s config and one %s layer of the package", manifest, helmConfig, helmChart)
	}
}
