package conformance_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// TestCraneCLI drives the crane binary against Berth: it pushes an OCI
// image index and a Docker manifest list from OCI layouts, pulls them back
// and compares every blob, copies them to a second registry, and lists,
// tags and deletes.
//
// In authenticated mode crane logs in to both registries with crane auth
// login, and a crane that has not logged in must fail to push.
func TestCraneCLI(t *testing.T) {
	t.Parallel()
	forEachMode(t, testCraneCLI)
}

func testCraneCLI(t *testing.T, srv *registryUnderTest) {
	env := clientEnv(t)
	crane := func(args ...string) string {
		t.Helper()
		return runClientIn(t, "", env, "crane", append(args, "--insecure")...)
	}
	craneLogin(t, srv, env)

	platforms := []v1.Platform{
		{OS: "linux", Architecture: "amd64"},
		{OS: "linux", Architecture: "arm64", Variant: "v8"},
	}
	variants := []struct {
		tag       string
		indexType types.MediaType
		imageType types.MediaType
		cfgType   types.MediaType
		layerType types.MediaType
		// asIndex pushes the layout's index.json itself with --index;
		// otherwise the layout holds the index as its one entry.
		asIndex bool
	}{
		{"oci", types.OCIImageIndex, types.OCIManifestSchema1, types.OCIConfigJSON, types.OCILayer, true},
		{"docker", types.DockerManifestList, types.DockerManifestSchema2, types.DockerConfigJSON, types.DockerLayer, false},
	}
	repo := srv.Addr + "/crane/multi"
	digests := map[string]v1.Hash{}
	for _, v := range variants {
		ok := t.Run("push-pull-"+v.tag, func(t *testing.T) {
			idx, images := randomIndex(t, platforms, v.indexType, v.imageType, v.cfgType, v.layerType)
			want := mustDigest(t, idx)
			digests[v.tag] = want
			ref := repo + ":" + v.tag

			src := t.TempDir()
			args := []string{"push", src, ref}
			if v.asIndex {
				if _, err := layout.Write(src, idx); err != nil {
					t.Fatalf("write layout: %v", err)
				}
				args = []string{"push", "--index", src, ref}
			} else if _, err := layout.Write(src, mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: idx})); err != nil {
				t.Fatalf("write layout: %v", err)
			}
			if out := strings.TrimSpace(crane(args...)); out != repo+"@"+want.String() {
				t.Errorf("crane push printed %q, want %q", out, repo+"@"+want.String())
			}

			pulled := filepath.Join(t.TempDir(), "pulled")
			crane("pull", "--format", "oci", ref, pulled)
			p, err := layout.FromPath(pulled)
			if err != nil {
				t.Fatalf("read pulled layout: %v", err)
			}
			root, err := p.ImageIndex()
			if err != nil {
				t.Fatalf("pulled layout index: %v", err)
			}
			rm, err := root.IndexManifest()
			if err != nil {
				t.Fatalf("parse pulled index.json: %v", err)
			}
			if len(rm.Manifests) != 1 || rm.Manifests[0].Digest != want || rm.Manifests[0].MediaType != v.indexType {
				t.Fatalf("pulled layout lists %+v, want one %s %s", rm.Manifests, v.indexType, want)
			}
			got, err := root.ImageIndex(want)
			if err != nil {
				t.Fatalf("pulled index: %v", err)
			}
			wantRaw, err := idx.RawManifest()
			if err != nil {
				t.Fatalf("raw index: %v", err)
			}
			if gotRaw, err := got.RawManifest(); err != nil || !bytes.Equal(gotRaw, wantRaw) {
				t.Errorf("pulled index differs from the pushed one (err %v)", err)
			}
			for i, pi := range images {
				img, err := got.Image(mustDigest(t, pi.img))
				if err != nil {
					t.Fatalf("pulled child %d: %v", i, err)
				}
				compareImage(t, "pulled "+pi.platform.String(), img, pi.img)
			}
			compareLayoutBlobs(t, src, pulled)
		})
		if !ok {
			return
		}
	}
	for tag, want := range digests {
		if got := strings.TrimSpace(crane("digest", repo+":"+tag)); got != want.String() {
			t.Errorf("crane digest %s:%s = %s, want %s", repo, tag, got, want)
		}
	}
	if got := craneLines(crane("ls", repo)); !slices.Equal(got, []string{"docker", "oci"}) {
		t.Errorf("crane ls = %q, want [docker oci]", got)
	}

	// A copy inside the registry (a cross-repository mount) adds a second
	// repository to the catalog.
	crane("copy", repo+":oci", srv.Addr+"/crane/copied:v1")
	if got := strings.TrimSpace(crane("digest", srv.Addr+"/crane/copied:v1")); got != digests["oci"].String() {
		t.Errorf("digest of the copy inside the registry = %s, want %s", got, digests["oci"])
	}
	if got := craneLines(crane("catalog", srv.Addr)); !slices.Equal(got, []string{"crane/copied", "crane/multi"}) {
		t.Errorf("crane catalog = %q, want [crane/copied crane/multi]", got)
	}

	// Copy every tag to a second registry.
	other := srv.another(t)
	craneLogin(t, other, env)
	otherRepo := other.Addr + "/crane/multi"
	crane("copy", "--all-tags", repo, otherRepo)
	if got := craneLines(crane("ls", otherRepo)); !slices.Equal(got, []string{"docker", "oci"}) {
		t.Errorf("crane ls on the second registry = %q, want [docker oci]", got)
	}
	for tag := range digests {
		src := strings.TrimSpace(crane("digest", repo+":"+tag))
		dst := strings.TrimSpace(crane("digest", otherRepo+":"+tag))
		if src != dst {
			t.Errorf("crane digest %s: %s on the first registry, %s on the second", tag, src, dst)
		}
		// Every manifest and blob arrived: validate reads them all.
		crane("validate", "--remote", otherRepo+":"+tag)
	}

	// Tag, then delete by digest.
	crane("tag", repo+":oci", "stable")
	if got := craneLines(crane("ls", repo)); !slices.Equal(got, []string{"docker", "oci", "stable"}) {
		t.Errorf("crane ls after crane tag = %q, want [docker oci stable]", got)
	}
	if got := strings.TrimSpace(crane("digest", repo+":stable")); got != digests["oci"].String() {
		t.Errorf("crane digest :stable = %s, want %s", got, digests["oci"])
	}

	gone := repo + "@" + digests["docker"].String()
	crane("delete", gone)
	if r := execClient(t, "", env, "crane", "manifest", gone, "--insecure"); r.err == nil {
		t.Errorf("crane manifest %s succeeded after crane delete:\n%s", gone, r.stdout)
	}
	ctx, cancel := context.WithTimeout(t.Context(), interopTimeout)
	defer cancel()
	if code := manifestStatus(ctx, t, srv.httpClient(t), srv.URL, "crane/multi", digests["docker"].String()); code != http.StatusNotFound {
		t.Errorf("HEAD deleted manifest: status %d, want 404", code)
	}
	if got := craneLines(crane("ls", repo)); !slices.Equal(got, []string{"oci", "stable"}) {
		t.Errorf("crane ls after crane delete = %q, want [oci stable]", got)
	}

	// Deleting a tag leaves the manifest it named.
	crane("delete", repo+":stable")
	if got := craneLines(crane("ls", repo)); !slices.Equal(got, []string{"oci"}) {
		t.Errorf("crane ls after deleting tag stable = %q, want [oci]", got)
	}
	if got := strings.TrimSpace(crane("digest", repo+":oci")); got != digests["oci"].String() {
		t.Errorf("crane digest :oci after deleting tag stable = %s, want %s", got, digests["oci"])
	}

	// A crane that has not logged in cannot push.
	if srv.auth() {
		idx, _ := randomIndex(t, platforms[:1], types.OCIImageIndex, types.OCIManifestSchema1, types.OCIConfigJSON, types.OCILayer)
		src := t.TempDir()
		if _, err := layout.Write(src, idx); err != nil {
			t.Fatalf("write layout: %v", err)
		}
		srv.expectRefused(t, "crane push", execClient(t, "", clientEnv(t), "crane", "push", "--index", src, srv.Addr+"/crane/refused:v1", "--insecure"))
	}
}

// craneLogin logs crane in to srv the way users do, with crane auth login,
// which stores the credentials in $DOCKER_CONFIG/config.json.
func craneLogin(t *testing.T, srv *registryUnderTest, env []string) {
	t.Helper()
	srv.login(t, "", env, "crane", "auth", "login", srv.Addr, "-u", srv.user, "--password-stdin")
}

// craneLines splits a client's line-per-entry output.
func craneLines(out string) []string {
	return strings.Fields(out)
}

// manifestStatus answers the status of HEAD /v2/<repo>/manifests/<ref>.
func manifestStatus(ctx context.Context, t *testing.T, client *http.Client, base, repo, ref string) int {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, base+"/v2/"+repo+"/manifests/"+ref, nil)
	if err != nil {
		t.Fatalf("HEAD request: %v", err)
	}
	req.Header.Set("Accept", strings.Join([]string{
		string(types.OCIImageIndex), string(types.OCIManifestSchema1),
		string(types.DockerManifestList), string(types.DockerManifestSchema2),
	}, ", "))
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("HEAD %s: %v", req.URL, err)
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

// compareLayoutBlobs checks that every blob of the OCI layout want is in
// the layout got with the same bytes, and that those bytes hash to the
// blob's name.
func compareLayoutBlobs(t *testing.T, want, got string) {
	t.Helper()
	dir := filepath.Join(want, "blobs", "sha256")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("read source layout: %v", err)
	}
	if len(entries) == 0 {
		t.Fatalf("source layout %s has no blobs", want)
	}
	for _, e := range entries {
		wantSum := hashFile(t, filepath.Join(dir, e.Name()))
		gotPath := filepath.Join(got, "blobs", "sha256", e.Name())
		if _, err := os.Stat(gotPath); err != nil {
			t.Errorf("blob sha256:%s is missing from the pulled layout: %v", e.Name(), err)
			continue
		}
		if gotSum := hashFile(t, gotPath); gotSum != wantSum || gotSum != e.Name() {
			t.Errorf("blob sha256:%s: pulled bytes hash to %s, pushed bytes to %s", e.Name(), gotSum, wantSum)
		}
	}
}

// hashFile returns the hex sha256 of a file, read as a stream.
func hashFile(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer func() { _ = f.Close() }()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatalf("hash %s: %v", path, err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// writeFiles writes files (name to content) under dir.
func writeFiles(t *testing.T, dir string, files map[string][]byte) {
	t.Helper()
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatalf("create directory: %v", err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatalf("write %s: %v", name, err)
		}
	}
}

// compareFiles checks that dir holds exactly the files in want (relative
// name to content), byte for byte.
func compareFiles(t *testing.T, dir string, want map[string][]byte) {
	t.Helper()
	seen := map[string]bool{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		seen[rel] = true
		w, ok := want[rel]
		if !ok {
			t.Errorf("unexpected file %s", rel)
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if !bytes.Equal(data, w) {
			t.Errorf("%s: content differs (%d bytes, want %d)", rel, len(data), len(w))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", dir, err)
	}
	for name := range want {
		if !seen[name] {
			t.Errorf("file %s is missing from %s", name, dir)
		}
	}
}
