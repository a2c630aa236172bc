package conformance_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	ggcrremote "github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/memory"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
)

// interopTimeout bounds each interop test's registry traffic.
const interopTimeout = 2 * time.Minute

// TestGGCRMultiPlatform pushes multi-platform images with go-containerregistry
// (an OCI image index and a Docker manifest list) and checks that pulling them
// back yields identical manifests and byte-identical layers.
//
// In authenticated mode go-containerregistry is given the credentials with
// remote.WithAuth, and a push without them must fail.
func TestGGCRMultiPlatform(t *testing.T) { forEachMode(t, testGGCRMultiPlatform) }

func testGGCRMultiPlatform(t *testing.T, srv *registryUnderTest) {
	ctx, cancel := context.WithTimeout(t.Context(), interopTimeout)
	defer cancel()
	opts := srv.remoteOptions(t)

	platforms := []v1.Platform{
		{OS: "linux", Architecture: "amd64"},
		{OS: "linux", Architecture: "arm64", Variant: "v8"},
		{OS: "linux", Architecture: "s390x"},
	}
	variants := []struct {
		name      string
		repo      string
		indexType types.MediaType
		imageType types.MediaType
		cfgType   types.MediaType
		layerType types.MediaType
	}{
		{"oci-index", "interop/multi", types.OCIImageIndex, types.OCIManifestSchema1, types.OCIConfigJSON, types.OCILayer},
		{"docker-manifest-list", "interop/docker", types.DockerManifestList, types.DockerManifestSchema2, types.DockerConfigJSON, types.DockerLayer},
	}

	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			idx, images := randomIndex(t, platforms, v.indexType, v.imageType, v.cfgType, v.layerType)
			ref, err := name.ParseReference(srv.Addr+"/"+v.repo+":v1", name.Insecure)
			if err != nil {
				t.Fatalf("parse reference: %v", err)
			}
			if err := ggcrremote.WriteIndex(ref, idx, opts...); err != nil {
				t.Fatalf("push index %s: %v", ref, err)
			}
			latest := ref.Context().Tag("latest")
			if err := ggcrremote.Tag(latest, idx, opts...); err != nil {
				t.Fatalf("tag %s: %v", latest, err)
			}

			// Pull the index back and compare it with what was pushed.
			got, err := ggcrremote.Index(ref, opts...)
			if err != nil {
				t.Fatalf("pull index %s: %v", ref, err)
			}
			wantDigest := mustDigest(t, idx)
			if gotDigest := mustDigest(t, got); gotDigest != wantDigest {
				t.Errorf("index digest = %s, want %s", gotDigest, wantDigest)
			}
			if mt, err := got.MediaType(); err != nil || mt != v.indexType {
				t.Errorf("index media type = %q (err %v), want %q", mt, err, v.indexType)
			}
			wantRaw, err := idx.RawManifest()
			if err != nil {
				t.Fatalf("raw index: %v", err)
			}
			if gotRaw, err := got.RawManifest(); err != nil || !bytes.Equal(gotRaw, wantRaw) {
				t.Errorf("pulled index manifest differs from pushed one (err %v)", err)
			}
			im, err := got.IndexManifest()
			if err != nil {
				t.Fatalf("parse pulled index: %v", err)
			}
			if len(im.Manifests) != len(images) {
				t.Fatalf("pulled index has %d manifests, want %d", len(im.Manifests), len(images))
			}

			for i, desc := range im.Manifests {
				want := images[i]
				wantImgDigest := mustDigest(t, want.img)
				if desc.Digest != wantImgDigest {
					t.Errorf("child %d digest = %s, want %s", i, desc.Digest, wantImgDigest)
				}
				if desc.Platform == nil || !desc.Platform.Equals(want.platform) {
					t.Errorf("child %d platform = %v, want %v", i, desc.Platform, want.platform)
				}
				// By digest through the index, by digest reference, and by
				// tag with platform resolution.
				fromIndex, err := got.Image(desc.Digest)
				if err != nil {
					t.Fatalf("child %d from index: %v", i, err)
				}
				compareImage(t, fmt.Sprintf("child %d (via index)", i), fromIndex, want.img)

				byDigest, err := ggcrremote.Image(ref.Context().Digest(desc.Digest.String()), opts...)
				if err != nil {
					t.Fatalf("pull child %d by digest: %v", i, err)
				}
				compareImage(t, fmt.Sprintf("child %d (by digest)", i), byDigest, want.img)

				byPlatform, err := ggcrremote.Image(ref, append(opts, ggcrremote.WithPlatform(want.platform))...)
				if err != nil {
					t.Fatalf("pull %s for %s: %v", ref, want.platform, err)
				}
				if d := mustDigest(t, byPlatform); d != wantImgDigest {
					t.Errorf("platform %s resolved to %s, want %s", want.platform, d, wantImgDigest)
				}
			}

			tags, err := ggcrremote.List(ref.Context(), opts...)
			if err != nil {
				t.Fatalf("list tags: %v", err)
			}
			if want := []string{"latest", "v1"}; !slices.Equal(tags, want) {
				t.Errorf("tags = %q, want %q", tags, want)
			}
		})
	}

	reg, err := name.NewRegistry(srv.Addr, name.Insecure)
	if err != nil {
		t.Fatalf("parse registry: %v", err)
	}
	repos, err := ggcrremote.Catalog(ctx, reg, opts...)
	if err != nil {
		t.Fatalf("catalog: %v", err)
	}
	for _, v := range variants {
		if !slices.Contains(repos, v.repo) {
			t.Errorf("catalog %q does not include %q", repos, v.repo)
		}
	}
	// A one-entry page must still list a known repository.
	page, err := ggcrremote.CatalogPage(reg, "", 1, opts...)
	if err != nil {
		t.Fatalf("catalog page: %v", err)
	}
	if len(page) != 1 || !slices.Contains(repos, page[0]) {
		t.Errorf("catalog page with n=1 = %q, want one of %q", page, repos)
	}

	if srv.auth() {
		idx, _ := randomIndex(t, platforms[:1], types.OCIImageIndex, types.OCIManifestSchema1, types.OCIConfigJSON, types.OCILayer)
		ref, err := name.ParseReference(srv.Addr+"/interop/refused:v1", name.Insecure)
		if err != nil {
			t.Fatalf("parse reference: %v", err)
		}
		srv.expectRefusedErr(t, "go-containerregistry push",
			ggcrremote.WriteIndex(ref, idx, ggcrremote.WithContext(ctx), ggcrremote.WithTransport(newTransport(t))))
	}
}

type platformImage struct {
	platform v1.Platform
	img      v1.Image
}

// randomIndex builds an index of one random image per platform, each with a
// few random layers and a config naming its platform.
func randomIndex(t *testing.T, platforms []v1.Platform, indexType, imageType, cfgType, layerType types.MediaType) (v1.ImageIndex, []platformImage) {
	t.Helper()
	idx := mutate.IndexMediaType(empty.Index, indexType)
	var images []platformImage
	for i, p := range platforms {
		base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, imageType), cfgType)
		var layers []v1.Layer
		for j := range 2 + i {
			l, err := random.Layer(int64(1024*(j+1)+i*333), layerType)
			if err != nil {
				t.Fatalf("random layer: %v", err)
			}
			layers = append(layers, l)
		}
		img, err := mutate.AppendLayers(base, layers...)
		if err != nil {
			t.Fatalf("append layers: %v", err)
		}
		cfg, err := img.ConfigFile()
		if err != nil {
			t.Fatalf("config file: %v", err)
		}
		cfg = cfg.DeepCopy()
		cfg.OS, cfg.Architecture, cfg.Variant = p.OS, p.Architecture, p.Variant
		if img, err = mutate.ConfigFile(img, cfg); err != nil {
			t.Fatalf("set config: %v", err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &p},
		})
		images = append(images, platformImage{platform: p, img: img})
	}
	return idx, images
}

type digester interface{ Digest() (v1.Hash, error) }

func mustDigest(t *testing.T, d digester) v1.Hash {
	t.Helper()
	h, err := d.Digest()
	if err != nil {
		t.Fatalf("digest: %v", err)
	}
	return h
}

// compareImage checks that got has the same manifest, config and
// byte-identical compressed layers as want.
func compareImage(t *testing.T, what string, got, want v1.Image) {
	t.Helper()
	if g, w := mustDigest(t, got), mustDigest(t, want); g != w {
		t.Errorf("%s: manifest digest = %s, want %s", what, g, w)
	}
	wantMT, err := want.MediaType()
	if err != nil {
		t.Fatalf("%s: media type: %v", what, err)
	}
	if mt, err := got.MediaType(); err != nil || mt != wantMT {
		t.Errorf("%s: media type = %q (err %v), want %q", what, mt, err, wantMT)
	}
	gotCfg, err := got.RawConfigFile()
	if err != nil {
		t.Fatalf("%s: pull config: %v", what, err)
	}
	wantCfg, err := want.RawConfigFile()
	if err != nil {
		t.Fatalf("%s: config: %v", what, err)
	}
	if !bytes.Equal(gotCfg, wantCfg) {
		t.Errorf("%s: config blob differs", what)
	}

	gotLayers, err := got.Layers()
	if err != nil {
		t.Fatalf("%s: pulled layers: %v", what, err)
	}
	wantLayers, err := want.Layers()
	if err != nil {
		t.Fatalf("%s: layers: %v", what, err)
	}
	if len(gotLayers) != len(wantLayers) {
		t.Fatalf("%s: %d layers, want %d", what, len(gotLayers), len(wantLayers))
	}
	for i := range wantLayers {
		wantDigest := mustDigest(t, wantLayers[i])
		if d := mustDigest(t, gotLayers[i]); d != wantDigest {
			t.Errorf("%s: layer %d digest = %s, want %s", what, i, d, wantDigest)
		}
		wantBytes := readLayer(t, wantLayers[i])
		gotBytes := readLayer(t, gotLayers[i])
		if sum := sha256.Sum256(gotBytes); "sha256:"+hex.EncodeToString(sum[:]) != wantDigest.String() {
			t.Errorf("%s: layer %d content hashes to sha256:%x, want %s", what, i, sum, wantDigest)
		}
		if !bytes.Equal(gotBytes, wantBytes) {
			t.Errorf("%s: layer %d content differs (%d bytes, want %d)", what, i, len(gotBytes), len(wantBytes))
		}
		if size, err := gotLayers[i].Size(); err != nil || size != int64(len(wantBytes)) {
			t.Errorf("%s: layer %d size = %d (err %v), want %d", what, i, size, err, len(wantBytes))
		}
	}
}

func readLayer(t *testing.T, l v1.Layer) []byte {
	t.Helper()
	rc, err := l.Compressed()
	if err != nil {
		t.Fatalf("open layer: %v", err)
	}
	defer func() { _ = rc.Close() }()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read layer: %v", err)
	}
	return data
}

// TestORASArtifact pushes an OCI 1.1 artifact with oras-go, copies it back,
// and checks contents, artifactType, annotations and the referrers API.
//
// In authenticated mode oras-go's auth.Client is given the credentials with
// auth.StaticCredential, and a push without them must fail.
func TestORASArtifact(t *testing.T) { forEachMode(t, testORASArtifact) }

func testORASArtifact(t *testing.T, srv *registryUnderTest) {
	client := &http.Client{Transport: newTransport(t)}
	ctx, cancel := context.WithTimeout(t.Context(), interopTimeout)
	defer cancel()

	const (
		artifactType = "application/vnd.berth.test.bundle"
		fileType     = "application/vnd.berth.test.file"
		sbomType     = "application/vnd.berth.test.sbom+json"
		sigType      = "application/vnd.berth.test.signature"
		repoName     = "interop/artifact"
		tag          = "v1"
	)

	// Pack the artifact in memory.
	src := memory.New()
	files := map[string][]byte{}
	var layers []ocispec.Descriptor
	for i, size := range []int{1, 4096, 300_000} {
		data := make([]byte, size)
		if _, err := rand.Read(data); err != nil {
			t.Fatalf("random data: %v", err)
		}
		title := fmt.Sprintf("file-%d.bin", i)
		desc := content.NewDescriptorFromBytes(fileType, data)
		desc.Annotations = map[string]string{ocispec.AnnotationTitle: title}
		if err := src.Push(ctx, desc, bytes.NewReader(data)); err != nil {
			t.Fatalf("stage %s: %v", title, err)
		}
		files[title] = data
		layers = append(layers, desc)
	}
	annotations := map[string]string{
		ocispec.AnnotationRevision:    "0123456789abcdef0123456789abcdef01234567",
		ocispec.AnnotationSource:      "https://example.com/berth/interop",
		ocispec.AnnotationDescription: "berth interop test bundle",
		ocispec.AnnotationCreated:     "2026-01-02T03:04:05Z",
	}
	manifestDesc, err := oras.PackManifest(ctx, src, oras.PackManifestVersion1_1, artifactType, oras.PackManifestOptions{
		Layers:              layers,
		ManifestAnnotations: annotations,
	})
	if err != nil {
		t.Fatalf("pack manifest: %v", err)
	}
	if err := src.Tag(ctx, manifestDesc, tag); err != nil {
		t.Fatalf("tag in memory: %v", err)
	}

	newRepoAs := func(cred auth.CredentialFunc) *remote.Repository {
		repo, err := remote.NewRepository(srv.Addr + "/" + repoName)
		if err != nil {
			t.Fatalf("new repository: %v", err)
		}
		repo.PlainHTTP = true
		repo.Client = &auth.Client{Client: client, Cache: auth.NewCache(), Credential: cred}
		return repo
	}
	var cred auth.CredentialFunc
	if srv.auth() {
		cred = auth.StaticCredential(srv.Addr, auth.Credential{Username: srv.user, Password: srv.pass})
	}
	newRepo := func() *remote.Repository { return newRepoAs(cred) }

	// Without credentials the push is refused.
	if srv.auth() {
		_, err := oras.Copy(ctx, src, tag, newRepoAs(nil), tag, oras.DefaultCopyOptions)
		srv.expectRefusedErr(t, "oras-go push", err)
	}

	// Push with a repository of unknown referrers capability, as a real
	// client would.
	repo := newRepo()
	pushed, err := oras.Copy(ctx, src, tag, repo, tag, oras.DefaultCopyOptions)
	if err != nil {
		t.Fatalf("push artifact: %v", err)
	}
	if pushed.Digest != manifestDesc.Digest {
		t.Errorf("pushed digest = %s, want %s", pushed.Digest, manifestDesc.Digest)
	}

	// Copy back into a fresh store.
	dst := memory.New()
	pulled, err := oras.Copy(ctx, newRepo(), tag, dst, tag, oras.DefaultCopyOptions)
	if err != nil {
		t.Fatalf("pull artifact: %v", err)
	}
	if pulled.Digest != manifestDesc.Digest || pulled.MediaType != ocispec.MediaTypeImageManifest {
		t.Errorf("pulled descriptor = %s %s, want %s %s", pulled.MediaType, pulled.Digest, ocispec.MediaTypeImageManifest, manifestDesc.Digest)
	}
	manifestBytes, err := content.FetchAll(ctx, dst, pulled)
	if err != nil {
		t.Fatalf("fetch pulled manifest: %v", err)
	}
	var manifest ocispec.Manifest
	if err := json.Unmarshal(manifestBytes, &manifest); err != nil {
		t.Fatalf("decode pulled manifest: %v", err)
	}
	if manifest.ArtifactType != artifactType {
		t.Errorf("artifactType = %q, want %q", manifest.ArtifactType, artifactType)
	}
	if !maps.Equal(manifest.Annotations, annotations) {
		t.Errorf("manifest annotations = %v, want %v", manifest.Annotations, annotations)
	}
	if manifest.Config.MediaType != ocispec.MediaTypeEmptyJSON {
		t.Errorf("config media type = %q, want %q", manifest.Config.MediaType, ocispec.MediaTypeEmptyJSON)
	}
	if len(manifest.Layers) != len(files) {
		t.Fatalf("pulled manifest has %d layers, want %d", len(manifest.Layers), len(files))
	}
	for i, l := range manifest.Layers {
		if l.Digest != layers[i].Digest || l.MediaType != fileType {
			t.Errorf("layer %d = %s %s, want %s %s", i, l.MediaType, l.Digest, fileType, layers[i].Digest)
		}
		title := l.Annotations[ocispec.AnnotationTitle]
		want, ok := files[title]
		if !ok {
			t.Errorf("layer %d has unexpected title %q", i, title)
			continue
		}
		got, err := content.FetchAll(ctx, dst, l)
		if err != nil {
			t.Fatalf("fetch %s from pulled store: %v", title, err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: pulled content differs (%d bytes, want %d)", title, len(got), len(want))
		}
		if digest.FromBytes(got) != layers[i].Digest {
			t.Errorf("%s: pulled content hashes to %s, want %s", title, digest.FromBytes(got), layers[i].Digest)
		}
	}

	// Attach referrers: an SBOM and, to exercise filtering, a signature.
	referrers := map[string]ocispec.Descriptor{}
	for _, r := range []struct{ artifactType, blobType, body string }{
		{sbomType, "application/spdx+json", `{"spdxVersion":"SPDX-2.3","name":"berth-interop"}`},
		{sigType, "application/vnd.berth.test.sig", "not really a signature"},
	} {
		blob := content.NewDescriptorFromBytes(r.blobType, []byte(r.body))
		if err := repo.Push(ctx, blob, bytes.NewReader([]byte(r.body))); err != nil {
			t.Fatalf("push %s blob: %v", r.artifactType, err)
		}
		desc, err := oras.PackManifest(ctx, repo, oras.PackManifestVersion1_1, r.artifactType, oras.PackManifestOptions{
			Subject:             &manifestDesc,
			Layers:              []ocispec.Descriptor{blob},
			ManifestAnnotations: map[string]string{"org.example.kind": r.artifactType, ocispec.AnnotationCreated: "2026-01-02T03:04:05Z"},
		})
		if err != nil {
			t.Fatalf("push %s referrer: %v", r.artifactType, err)
		}
		referrers[r.artifactType] = desc
	}

	// Use the referrers API only: no fallback to the tag schema.
	listRepo := newRepo()
	if err := listRepo.SetReferrersCapability(true); err != nil {
		t.Fatalf("set referrers capability: %v", err)
	}
	list := func(filter string) []ocispec.Descriptor {
		t.Helper()
		var all []ocispec.Descriptor
		err := listRepo.Referrers(ctx, manifestDesc, filter, func(page []ocispec.Descriptor) error {
			all = append(all, page...)
			return nil
		})
		if err != nil {
			t.Fatalf("referrers (artifactType %q): %v", filter, err)
		}
		return all
	}
	all := list("")
	if len(all) != 2 {
		t.Errorf("got %d referrers, want 2: %v", len(all), all)
	}
	for _, d := range all {
		want, ok := referrers[d.ArtifactType]
		if !ok || d.Digest != want.Digest || d.MediaType != ocispec.MediaTypeImageManifest || d.Size != want.Size {
			t.Errorf("unexpected referrer %+v", d)
			continue
		}
		if d.Annotations["org.example.kind"] != d.ArtifactType {
			t.Errorf("referrer %s annotations = %v, want the manifest's annotations", d.Digest, d.Annotations)
		}
	}
	sboms := list(sbomType)
	if len(sboms) != 1 || sboms[0].Digest != referrers[sbomType].Digest || sboms[0].ArtifactType != sbomType {
		t.Errorf("referrers filtered by %s = %v, want only %s", sbomType, sboms, referrers[sbomType].Digest)
	}
	checkReferrersFilter(ctx, t, srv.httpClient(t), srv.URL+"/v2/"+repoName+"/referrers/"+manifestDesc.Digest.String(), sbomType, referrers[sbomType].Digest)

	// The registry handles subjects itself (OCI-Subject), so oras must not
	// have created a fallback referrers tag.
	var tags []string
	if err := newRepo().Tags(ctx, "", func(page []string) error {
		tags = append(tags, page...)
		return nil
	}); err != nil {
		t.Fatalf("list tags: %v", err)
	}
	if !slices.Equal(tags, []string{tag}) {
		t.Errorf("tags = %q, want [%q] (a sha256-... tag means the registry did not return OCI-Subject)", tags, tag)
	}
}

// checkReferrersFilter queries the referrers API directly with an
// artifactType filter. Filtering is optional in the spec; Berth applies it,
// says so in OCI-Filters-Applied, and returns only matching entries.
func checkReferrersFilter(ctx context.Context, t *testing.T, client *http.Client, endpoint, artifactType string, want digest.Digest) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint+"?artifactType="+url.QueryEscape(artifactType), nil)
	if err != nil {
		t.Fatalf("referrers request: %v", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", req.URL, err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		t.Fatalf("read referrers response: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: status %s: %s", req.URL, resp.Status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != ocispec.MediaTypeImageIndex {
		t.Errorf("referrers Content-Type = %q, want %q", ct, ocispec.MediaTypeImageIndex)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(body, &idx); err != nil {
		t.Fatalf("decode referrers index: %v", err)
	}
	if idx.MediaType != ocispec.MediaTypeImageIndex || idx.SchemaVersion != 2 {
		t.Errorf("referrers index mediaType/schemaVersion = %q/%d", idx.MediaType, idx.SchemaVersion)
	}
	// Berth filters server-side and says so; a registry that did not could
	// pass the spec, but Berth doing so silently would be a regression.
	if got := resp.Header.Get("OCI-Filters-Applied"); got != "artifactType" {
		t.Errorf("OCI-Filters-Applied = %q, want artifactType: Berth applies the filter server-side", got)
	}
	if len(idx.Manifests) != 1 || idx.Manifests[0].Digest != want {
		t.Errorf("server-side filtered referrers = %v, want only %s", idx.Manifests, want)
	}
}

// newTransport returns a private HTTP transport for one test. Its idle
// connections are closed by a cleanup that, registered after
// berthtest.Start, runs before the server is stopped, so the graceful
// shutdown does not wait on connections the client keeps open.
func newTransport(t *testing.T) *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}
