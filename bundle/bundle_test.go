package bundle_test

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/bundle"
	"github.com/berth-registry/berth/distribution"
	"github.com/berth-registry/berth/registry"
	"github.com/berth-registry/berth/remote"
	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/manifest"
)

// openStore opens a store in a temporary directory.
func openStore(t *testing.T) *storage.Service {
	t.Helper()
	s, err := registry.OpenStore(t.Context(), t.TempDir(), registry.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s.Service
}

// source is a registry in the test process holding an index of two
// platforms tagged v1, an SBOM referring to the index, and a cosign
// signature tag of it.
type source struct {
	svc      *storage.Service
	url      string
	index    ocispec.Descriptor
	children []ocispec.Descriptor
	sbom     ocispec.Descriptor
	sig      ocispec.Descriptor
	sigTag   string
	blobs    []digest.Digest
}

func put(t *testing.T, svc *storage.Service, repo string, mediaType string, v any, tags ...string) ocispec.Descriptor {
	t.Helper()
	body, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	m, err := manifest.Parse(mediaType, body)
	if err != nil {
		t.Fatal(err)
	}
	d, err := svc.PutManifest(context.Background(), repo, "", body, m, tags)
	if err != nil {
		t.Fatal(err)
	}
	return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(body))}
}

func (s *source) image(t *testing.T, repo, seed string, subject *ocispec.Descriptor, tags ...string) ocispec.Descriptor {
	t.Helper()
	var descs []ocispec.Descriptor
	for _, b := range [][]byte{[]byte(`{"architecture":"amd64","os":"linux","seed":"` + seed + `"}`), []byte("layer of " + seed)} {
		d := digest.FromBytes(b)
		if _, err := s.svc.PutBlob(context.Background(), repo, d, bytes.NewReader(b), int64(len(b))); err != nil {
			t.Fatal(err)
		}
		descs = append(descs, ocispec.Descriptor{Digest: d, Size: int64(len(b))})
		s.blobs = append(s.blobs, d)
	}
	descs[0].MediaType, descs[1].MediaType = ocispec.MediaTypeImageConfig, ocispec.MediaTypeImageLayer
	return put(t, s.svc, repo, ocispec.MediaTypeImageManifest, ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest, Config: descs[0], Layers: descs[1:], Subject: subject}, tags...)
}

func startSource(t *testing.T) *source { return startSourceSeeded(t, "") }

// startSourceSeeded is startSource with content made distinct by seed.
func startSourceSeeded(t *testing.T, seed string) *source {
	t.Helper()
	s := &source{svc: openStore(t)}
	s.children = []ocispec.Descriptor{s.image(t, "team/app", seed+"amd64", nil), s.image(t, "team/app", seed+"arm64", nil)}
	s.index = put(t, s.svc, "team/app", ocispec.MediaTypeImageIndex, ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex, Manifests: s.children}, "v1")
	s.sbom = s.image(t, "team/app", "sbom", &s.index)
	s.sigTag = "sha256-" + s.index.Digest.Encoded() + ".sig"
	s.sig = s.image(t, "team/app", "signature", nil, s.sigTag)
	srv := httptest.NewServer(distribution.New(s.svc, distribution.Options{}).Handler())
	t.Cleanup(srv.Close)
	s.url = srv.URL
	return s
}

// export writes a bundle of refs from s.
func (s *source) export(t *testing.T, refs ...string) ([]byte, bundle.ExportReport) {
	t.Helper()
	reg, err := remote.New(remote.Config{URL: s.url}, remote.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	rep, err := bundle.Export(t.Context(), reg, refs, &buf)
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), rep
}

// readTar reads an archive into a map of file names to contents, failing
// on a name seen twice.
func readTar(t *testing.T, b []byte) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, dup := out[h.Name]; dup {
			t.Errorf("%s is twice in the archive", h.Name)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out[h.Name] = data
	}
}

// TestExportLayout: the bundle is an OCI image layout: oci-layout,
// index.json naming each tag (the image, cosign's signature tag) with its
// repository and listing the referrer, and every manifest and blob once
// under blobs/sha256/, each hashing to its name.
func TestExportLayout(t *testing.T) {
	s := startSource(t)
	b, rep := s.export(t, "team/app:v1", "team/app@"+string(s.children[0].Digest))
	files := readTar(t, b)
	var layout ocispec.ImageLayout
	if err := json.Unmarshal(files["oci-layout"], &layout); err != nil || layout.Version != ocispec.ImageLayoutVersion {
		t.Errorf("oci-layout: %s", files["oci-layout"])
	}
	var idx ocispec.Index
	if err := json.Unmarshal(files["index.json"], &idx); err != nil {
		t.Fatalf("index.json: %v", err)
	}
	entries := map[string]digest.Digest{}
	for _, e := range idx.Manifests {
		if e.Annotations[bundle.RepositoryAnnotation] != "team/app" {
			t.Errorf("entry %s names repository %q", e.Digest, e.Annotations[bundle.RepositoryAnnotation])
		}
		key := e.Annotations[ocispec.AnnotationRefName]
		if key == "" {
			key = "@" + string(e.Digest)
		}
		if _, dup := entries[key]; dup {
			t.Errorf("index.json lists %s twice", key)
		}
		entries[key] = e.Digest
	}
	want := map[string]digest.Digest{
		"team/app:v1":                      s.index.Digest,
		"team/app:" + s.sigTag:             s.sig.Digest,
		"@" + string(s.sbom.Digest):        s.sbom.Digest,
		"@" + string(s.children[0].Digest): s.children[0].Digest, // exported by digest
	}
	for k, d := range want {
		if entries[k] != d {
			t.Errorf("index.json: %s -> %s; want %s", k, entries[k], d)
		}
	}
	if len(entries) != len(want) {
		t.Errorf("index.json lists %v; want %v", entries, want)
	}
	all := append([]digest.Digest{s.index.Digest, s.children[0].Digest, s.children[1].Digest, s.sbom.Digest, s.sig.Digest}, s.blobs...)
	for _, d := range all {
		data, ok := files["blobs/sha256/"+d.Encoded()]
		if !ok {
			t.Errorf("%s is not in the bundle", d)
			continue
		}
		if digest.FromBytes(data) != d {
			t.Errorf("blobs/sha256/%s does not hash to its name", d.Encoded())
		}
	}
	if n := len(files) - 2; n != len(all) {
		t.Errorf("the bundle holds %d blobs; want %d", n, len(all))
	}
	if rep.Manifests != 5 || rep.Blobs != len(s.blobs) {
		t.Errorf("report %+v; want 5 manifests and %d blobs", rep, len(s.blobs))
	}
}

// TestImport: a bundle imported into an empty store holds every digest,
// tag and referrer; a second import changes nothing; under a prefix it
// goes elsewhere.
func TestImport(t *testing.T) {
	s := startSource(t)
	b, _ := s.export(t, "team/app:v1")
	dst := openStore(t)
	ctx := storage.WithActor(context.Background(), storage.Actor{Kind: storage.ActorUser, Name: "admin"})
	rep, err := bundle.Import(ctx, dst, bytes.NewReader(b), bundle.ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Tags) != 2 {
		t.Errorf("imported tags %+v; want v1 and the signature tag", rep.Tags)
	}
	for tag, d := range map[string]digest.Digest{"v1": s.index.Digest, s.sigTag: s.sig.Digest} {
		info, err := dst.StatManifest(ctx, "team/app", tag)
		if err != nil || info.Digest != d {
			t.Errorf("%s: %s, %v; want %s", tag, info.Digest, err, d)
		}
	}
	refs, err := dst.Referrers(ctx, "team/app", s.index.Digest, "")
	if err != nil || len(refs) != 1 || refs[0].Digest != s.sbom.Digest {
		t.Errorf("referrers: %+v, %v", refs, err)
	}
	for _, d := range s.blobs {
		if _, err := dst.StatBlob(ctx, "team/app", d); err != nil {
			t.Errorf("blob %s: %v", d, err)
		}
	}
	if _, err := bundle.Import(ctx, dst, bytes.NewReader(b), bundle.ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	moves, _, err := dst.TagHistory(ctx, "team/app", "v1", 0, 10)
	if err != nil || len(moves) != 1 || moves[0].Action != storage.MoveImport || moves[0].Actor.Name != "admin" {
		t.Errorf("history of v1 after two imports: %+v, %v; want one import move by admin", moves, err)
	}
	if _, err := bundle.Import(ctx, dst, bytes.NewReader(b), bundle.ImportOptions{Prefix: "offline"}); err != nil {
		t.Fatal(err)
	}
	if info, err := dst.StatManifest(ctx, "offline/team/app", "v1"); err != nil || info.Digest != s.index.Digest {
		t.Errorf("under the prefix: %s, %v", info.Digest, err)
	}
}

// rewrite returns the archive b with fn applied to every file, fn
// returning the new name and content (an empty name drops the file).
func rewrite(t *testing.T, b []byte, fn func(name string, data []byte) (string, []byte)) []byte {
	t.Helper()
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(tr)
		name, data := fn(h.Name, data)
		if name == "" {
			continue
		}
		if err := tw.WriteHeader(&tar.Header{Name: name, Size: int64(len(data)), Mode: 0o644, Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		_, _ = tw.Write(data)
	}
	_ = tw.Close()
	return out.Bytes()
}

// TestImportRefuses: an archive that is no OCI layout, or whose content
// does not match its names, or that lacks what it lists, is refused as
// invalid and leaves nothing in the store.
func TestImportRefuses(t *testing.T) {
	s := startSource(t)
	b, _ := s.export(t, "team/app:v1")
	layer := s.blobs[1] // the amd64 layer
	for _, tc := range []struct {
		name string
		fn   func(name string, data []byte) (string, []byte)
	}{
		{"a blob that does not hash to its name", func(name string, data []byte) (string, []byte) {
			if strings.HasSuffix(name, layer.Encoded()) {
				data = bytes.ToUpper(data)
			}
			return name, data
		}},
		{"a missing blob", func(name string, data []byte) (string, []byte) {
			if strings.HasSuffix(name, layer.Encoded()) {
				return "", nil
			}
			return name, data
		}},
		{"no oci-layout", func(name string, data []byte) (string, []byte) {
			if name == "oci-layout" {
				return "", nil
			}
			return name, data
		}},
		{"no index.json", func(name string, data []byte) (string, []byte) {
			if name == "index.json" {
				return "", nil
			}
			return name, data
		}},
		{"a blob path that is no digest", func(name string, data []byte) (string, []byte) {
			if strings.HasSuffix(name, layer.Encoded()) {
				return "blobs/sha256/../../etc", data
			}
			return name, data
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := openStore(t)
			_, err := bundle.Import(context.Background(), dst, bytes.NewReader(rewrite(t, b, tc.fn)), bundle.ImportOptions{})
			if !errors.Is(err, bundle.ErrBundleInvalid) {
				t.Errorf("Import = %v; want ErrBundleInvalid", err)
			}
			repos, _, err := dst.ListRepositories(context.Background(), "", 100)
			if err != nil || len(repos) != 0 {
				t.Errorf("the refused import left repositories %q (%v)", repos, err)
			}
		})
	}
}

// immutableV1 makes every tag v1 immutable.
type immutableV1 struct{}

func (immutableV1) Immutable(_, tag string) bool { return tag == "v1" }

// TestImportRefusesToMoveAnImmutableTag: a bundle that would move an
// immutable tag is refused before anything of it is recorded.
func TestImportRefusesToMoveAnImmutableTag(t *testing.T) {
	first, second := startSource(t), startSourceSeeded(t, "second ")
	b1, _ := first.export(t, "team/app:v1")
	b2, _ := second.export(t, "team/app:v1")
	st, err := registry.OpenStore(t.Context(), t.TempDir(), registry.StoreOptions{Core: storage.Options{Tags: immutableV1{}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	ctx := context.Background()
	if _, err := bundle.Import(ctx, st.Service, bytes.NewReader(b1), bundle.ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err = bundle.Import(ctx, st.Service, bytes.NewReader(b2), bundle.ImportOptions{})
	if !errors.Is(err, storage.ErrTagImmutable) {
		t.Fatalf("Import over an immutable tag = %v; want ErrTagImmutable", err)
	}
	if info, err := st.StatManifest(ctx, "team/app", "v1"); err != nil || info.Digest != first.index.Digest {
		t.Errorf("v1 after the refused import: %s, %v; want %s", info.Digest, err, first.index.Digest)
	}
	if _, err := st.StatManifest(ctx, "team/app", second.sigTag); err == nil {
		t.Error("the refused bundle's signature tag was set")
	}
	if _, err := st.StatManifest(ctx, "team/app", string(second.index.Digest)); err == nil {
		t.Error("the refused bundle's index was recorded")
	}
}
