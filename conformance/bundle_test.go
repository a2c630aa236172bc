package conformance_test

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	ggcrremote "github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-registry/berth/conformance/internal/berthtest"
)

// TestBundleExportImport: berth export writes an index with every
// platform, an OCI referrer of it and a cosign signature tag to a bundle
// that skopeo and oras read; berth import into an empty berth (twice, and
// under a prefix) preserves every digest and referrer, and records the
// tags as import moves, once.
func TestBundleExportImport(t *testing.T) {
	src := berthtest.Start(t)
	platforms := []v1.Platform{{OS: "linux", Architecture: runtime.GOARCH}, {OS: "linux", Architecture: "s390x"}}
	idx, images := randomIndex(t, platforms, types.OCIImageIndex, types.OCIManifestSchema1, types.OCIConfigJSON, types.OCILayer)
	ref := func(host, r string) name.Reference {
		t.Helper()
		n, err := name.ParseReference(host+"/"+r, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if err := ggcrremote.WriteIndex(ref(src.Addr, "team/app:v1"), idx, anonymous(t)...); err != nil {
		t.Fatal(err)
	}
	d := mustDigest(t, idx)
	// An SBOM as an OCI referrer, and a signature under cosign's tag.
	desc, err := ggcrremote.Head(ref(src.Addr, "team/app:v1"), anonymous(t)...)
	if err != nil {
		t.Fatal(err)
	}
	sbom := mutate.Subject(mutate.ConfigMediaType(mutate.MediaType(randomImage(t, 300), types.OCIManifestSchema1), types.OCIConfigJSON), *desc).(v1.Image)
	sbomDigest := mustDigest(t, sbom)
	if err := ggcrremote.Write(ref(src.Addr, "team/app@"+sbomDigest.String()), sbom, anonymous(t)...); err != nil {
		t.Fatal(err)
	}
	sig := randomImage(t, 200)
	sigTag := "sha256-" + d.Hex + ".sig"
	if err := ggcrremote.Write(ref(src.Addr, "team/app:"+sigTag), sig, anonymous(t)...); err != nil {
		t.Fatal(err)
	}

	bundle := filepath.Join(t.TempDir(), "bundle.tar")
	out := berthCLI(t, "", []string{"BERTH_REGISTRY=" + src.URL}, "export", "team/app:v1", "-o", bundle)
	if !strings.Contains(out, "team/app:v1") || !strings.Contains(out, "team/app:"+sigTag) {
		t.Errorf("berth export lists:\n%s", out)
	}

	// skopeo and oras read the bundle.
	env := clientEnv(t)
	raw := runClientIn(t, "", env, "skopeo", "inspect", "--raw", "oci-archive:"+bundle+":team/app:v1")
	if got, _, err := v1.SHA256(strings.NewReader(raw)); err != nil || got != d {
		t.Errorf("skopeo reads index %s from the bundle; want %s", got, d)
	}
	runClientIn(t, "", env, "skopeo", "copy", "--all", "oci-archive:"+bundle+":team/app:v1", "oci:"+filepath.Join(t.TempDir(), "copy")+":v1")
	refs := runClientIn(t, "", env, "oras", "discover", "--format", "json", "--oci-layout", bundle+"@"+d.String())
	if !strings.Contains(refs, sbomDigest.String()) {
		t.Errorf("oras discover in the bundle does not find the SBOM %s:\n%s", sbomDigest, refs)
	}

	dst := berthtest.Start(t)
	env = []string{"BERTH_REGISTRY=" + dst.URL}
	berthCLI(t, "", env, "import", bundle)
	berthCLI(t, "", env, "import", bundle) // again: nothing moves
	berthCLI(t, "", env, "import", "--prefix", "offline", bundle)
	for _, repo := range []string{"team/app", "offline/team/app"} {
		got, err := ggcrremote.Index(ref(dst.Addr, repo+":v1"), anonymous(t)...)
		if err != nil {
			t.Fatalf("pull %s:v1 from the importing berth: %v", repo, err)
		}
		if gd := mustDigest(t, got); gd != d {
			t.Errorf("%s:v1 imported as %s; want %s", repo, gd, d)
		}
		for _, pi := range images {
			img, err := ggcrremote.Image(ref(dst.Addr, repo+"@"+mustDigest(t, pi.img).String()), anonymous(t)...)
			if err != nil {
				t.Fatalf("platform %s of %s: %v", pi.platform, repo, err)
			}
			compareImage(t, repo+" "+pi.platform.String(), img, pi.img)
		}
		if s, err := ggcrremote.Head(ref(dst.Addr, repo+":"+sigTag), anonymous(t)...); err != nil || s.Digest != mustDigest(t, sig) {
			t.Errorf("%s: signature tag: %v, %v", repo, s, err)
		}
		status, _, body := get(t, http.MethodGet, dst.URL+"/v2/"+repo+"/referrers/"+d.String(), nil)
		if status != http.StatusOK || !strings.Contains(string(body), sbomDigest.String()) {
			t.Errorf("%s: referrers of the index: %d %s", repo, status, body)
		}
	}
	_, _, body := get(t, http.MethodGet, dst.URL+"/v2/team/app/_berth/tags/v1/history", nil)
	var hist struct {
		History []struct {
			Action string `json:"action"`
		} `json:"history"`
	}
	if err := json.Unmarshal(body, &hist); err != nil {
		t.Fatalf("history: %v: %s", err, body)
	}
	if actions := func() (a []string) {
		for _, m := range hist.History {
			a = append(a, m.Action)
		}
		return a
	}(); !slices.Equal(actions, []string{"import"}) {
		t.Errorf("history of team/app:v1 after two imports: %q; want one import move", actions)
	}
}
