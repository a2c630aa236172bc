package transfer_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/registry"
	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/transfer"
)

// memSource is a Source in memory, whose content a test can corrupt.
type memSource struct {
	content   map[digest.Digest][]byte
	tags      map[string]ocispec.Descriptor
	referrers map[digest.Digest][]ocispec.Descriptor
	// fetched counts the blob fetches.
	fetched map[digest.Digest]int
	// lie, when set, is served in place of the content of that digest.
	lie map[digest.Digest][]byte
}

func newMem() *memSource {
	return &memSource{content: map[digest.Digest][]byte{}, tags: map[string]ocispec.Descriptor{},
		referrers: map[digest.Digest][]ocispec.Descriptor{}, fetched: map[digest.Digest]int{}, lie: map[digest.Digest][]byte{}}
}

func (m *memSource) bytesOf(d digest.Digest) ([]byte, error) {
	if b, ok := m.lie[d]; ok {
		return b, nil
	}
	b, ok := m.content[d]
	if !ok {
		return nil, fmt.Errorf("%w: %s", transfer.ErrNotFound, d)
	}
	return b, nil
}

func (m *memSource) Resolve(_ context.Context, ref string) (ocispec.Descriptor, error) {
	if d, ok := m.tags[ref]; ok {
		return d, nil
	}
	return ocispec.Descriptor{}, fmt.Errorf("%w: %s", transfer.ErrNotFound, ref)
}

func (m *memSource) FetchManifest(_ context.Context, desc ocispec.Descriptor) ([]byte, error) {
	return m.bytesOf(desc.Digest)
}

func (m *memSource) FetchBlob(_ context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	m.fetched[desc.Digest]++
	b, err := m.bytesOf(desc.Digest)
	return io.NopCloser(bytes.NewReader(b)), err
}

func (m *memSource) Referrers(_ context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
	return m.referrers[desc.Digest], nil
}

// blob adds a blob and returns its descriptor.
func (m *memSource) blob(mediaType, s string) ocispec.Descriptor {
	b := []byte(s)
	d := digest.FromBytes(b)
	m.content[d] = b
	return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(b))}
}

// manifest adds the JSON of v as a manifest of mediaType.
func (m *memSource) manifest(t *testing.T, mediaType string, v any) ocispec.Descriptor {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	d := digest.FromBytes(b)
	m.content[d] = b
	return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(b))}
}

// image adds an image of one layer; subject, when set, makes it a
// referrer (recorded as one).
func (m *memSource) image(t *testing.T, seed string, subject *ocispec.Descriptor) ocispec.Descriptor {
	t.Helper()
	cfg := m.blob(ocispec.MediaTypeImageConfig, `{"architecture":"amd64","os":"linux","seed":"`+seed+`"}`)
	layer := m.blob(ocispec.MediaTypeImageLayer, "layer of "+seed)
	desc := m.manifest(t, ocispec.MediaTypeImageManifest, ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest, Config: cfg, Layers: []ocispec.Descriptor{layer}, Subject: subject})
	if subject != nil {
		ref := desc
		ref.ArtifactType = ocispec.MediaTypeImageConfig
		m.referrers[subject.Digest] = append(m.referrers[subject.Digest], ref)
	}
	return desc
}

// openCore opens a store in a temporary directory.
func openCore(t *testing.T) *storage.Service {
	t.Helper()
	s, err := registry.OpenStore(t.Context(), t.TempDir(), registry.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s.Service
}

// TestCopyIntoCore: an index with two platforms, a referrer and a cosign
// signature tag is copied whole into the core, children before their
// index and everything before the tags, which move with the target's
// action; the copy returns every manifest it covers. A second copy
// transfers nothing and moves no tag.
func TestCopyIntoCore(t *testing.T) {
	src := newMem()
	amd, arm := src.image(t, "amd64", nil), src.image(t, "arm64", nil)
	idx := src.manifest(t, ocispec.MediaTypeImageIndex, ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{amd, arm}})
	src.tags["v1"] = idx
	sbom := src.image(t, "sbom", &idx)
	sig := src.image(t, "signature", nil)
	sigTag := transfer.SignatureTags(idx.Digest)[0]
	src.tags[sigTag] = sig

	svc := openCore(t)
	ctx := storage.WithActor(t.Context(), storage.Actor{Kind: storage.ActorSystem, Name: "test"})
	dst := transfer.Core{Svc: svc, Repo: "copies/app", Action: storage.MoveSync}
	c := transfer.New(src, dst, transfer.Options{})
	graph, err := c.Copy(ctx, idx, "v1")
	if err != nil {
		t.Fatal(err)
	}
	want := []digest.Digest{idx.Digest, amd.Digest, arm.Digest, sbom.Digest, sig.Digest}
	slices.Sort(want)
	if !slices.Equal(graph, want) {
		t.Errorf("the copy covers %v; want %v", graph, want)
	}
	if st := c.Stats(); st.Manifests != 5 || st.Blobs != 8 || st.Tags != 2 {
		t.Errorf("stats %+v; want 5 manifests, 8 blobs, 2 tags", st)
	}
	for tag, d := range map[string]digest.Digest{"v1": idx.Digest, sigTag: sig.Digest} {
		info, err := svc.StatManifest(ctx, "copies/app", tag)
		if err != nil || info.Digest != d {
			t.Errorf("%s in the target: %v, %v; want %s", tag, info.Digest, err, d)
		}
		moves, _, err := svc.TagHistory(ctx, "copies/app", tag, 0, 10)
		if err != nil || len(moves) != 1 || moves[0].Action != storage.MoveSync {
			t.Errorf("history of %s: %+v, %v; want one sync move", tag, moves, err)
		}
	}
	refs, err := svc.Referrers(ctx, "copies/app", idx.Digest, "")
	if err != nil || len(refs) != 1 || refs[0].Digest != sbom.Digest {
		t.Errorf("referrers of the index in the target: %v, %v; want the SBOM", refs, err)
	}
	for _, b := range []ocispec.Descriptor{amd, arm} {
		if _, body, err := svc.GetManifest(ctx, "copies/app", string(b.Digest)); err != nil || !bytes.Equal(body, src.content[b.Digest]) {
			t.Errorf("platform %s in the target: %v", b.Digest, err)
		}
	}

	// Again, with a new copier: nothing is transferred, no tag moves.
	fetched := len(src.fetched)
	c2 := transfer.New(src, dst, transfer.Options{})
	if _, err := c2.Copy(ctx, idx, "v1"); err != nil {
		t.Fatal(err)
	}
	if st := c2.Stats(); st != (transfer.Stats{}) {
		t.Errorf("a second copy transferred %+v; want nothing", st)
	}
	if len(src.fetched) != fetched {
		t.Errorf("a second copy fetched blobs from the source")
	}
	if moves, _, _ := svc.TagHistory(ctx, "copies/app", "v1", 0, 10); len(moves) != 1 {
		t.Errorf("a second copy moved v1: %+v", moves)
	}

	// A blob the store holds for another repository is linked, not
	// fetched again.
	c3 := transfer.New(src, transfer.Core{Svc: svc, Repo: "other/app", Action: storage.MoveSync}, transfer.Options{})
	if _, err := c3.Copy(ctx, amd, "amd"); err != nil {
		t.Fatal(err)
	}
	if st := c3.Stats(); st.Blobs != 0 || st.Manifests != 1 || len(src.fetched) != fetched {
		t.Errorf("copy into another repository: %+v; want the manifest alone, its blobs linked", st)
	}
}

// TestCopyVerifies: content that does not match its descriptor stops the
// copy before anything references it: a blob the source lies about is not
// stored, a manifest it lies about is not recorded, and a tag is not set.
func TestCopyVerifies(t *testing.T) {
	for _, tc := range []struct {
		name string
		lie  func(src *memSource, img ocispec.Descriptor) digest.Digest
	}{{
		name: "a layer that does not hash to its digest",
		lie: func(src *memSource, img ocispec.Descriptor) digest.Digest {
			var m ocispec.Manifest
			_ = json.Unmarshal(src.content[img.Digest], &m)
			l := m.Layers[0]
			src.lie[l.Digest] = []byte("layer of X") // same length, other bytes
			return l.Digest
		},
	}, {
		name: "a layer longer than its descriptor",
		lie: func(src *memSource, img ocispec.Descriptor) digest.Digest {
			var m ocispec.Manifest
			_ = json.Unmarshal(src.content[img.Digest], &m)
			l := m.Layers[0]
			src.lie[l.Digest] = append(slices.Clone(src.content[l.Digest]), '!')
			return l.Digest
		},
	}, {
		name: "a manifest that does not hash to its digest",
		lie: func(src *memSource, img ocispec.Descriptor) digest.Digest {
			b := bytes.Replace(src.content[img.Digest], []byte(`"schemaVersion":2`), []byte(`"schemaVersion":2 `), 1)
			src.lie[img.Digest] = b[:len(b)-1]
			return img.Digest
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			src := newMem()
			img := src.image(t, "app", nil)
			bad := tc.lie(src, img)
			svc := openCore(t)
			c := transfer.New(src, transfer.Core{Svc: svc, Repo: "copies/app", Action: storage.MoveSync}, transfer.Options{})
			_, err := c.Copy(t.Context(), img, "v1")
			if err == nil {
				t.Fatal("the copy of a lying source succeeded")
			}
			// Nothing that does not hash to its digest is stored (a layer
			// with trailing bytes leaves its true content at most).
			if rc, _, err := svc.OpenBlob(t.Context(), "copies/app", bad); err == nil {
				b, _ := io.ReadAll(rc)
				rc.Close()
				if digest.FromBytes(b) != bad {
					t.Errorf("the target holds content under %s that hashes to %s", bad, digest.FromBytes(b))
				}
			} else if !errors.Is(err, storage.ErrBlobUnknown) && !errors.Is(err, storage.ErrNameUnknown) {
				t.Error(err)
			}
			if _, err := svc.StatManifest(t.Context(), "copies/app", "v1"); err == nil {
				t.Error("the tag was set")
			}
		})
	}
}

// TestCopySignatureTagsFromTheList: with the source's tag list given, a
// cosign tag absent from it is not asked for, and one present is copied.
func TestCopySignatureTagsFromTheList(t *testing.T) {
	src := newMem()
	img := src.image(t, "app", nil)
	sig := src.image(t, "sig", nil)
	sigTag := transfer.SignatureTags(img.Digest)[0]
	src.tags[sigTag] = sig
	svc := openCore(t)
	dst := transfer.Core{Svc: svc, Repo: "copies/app"}
	// A list without the signature tag: it is not looked for.
	if _, err := transfer.New(src, dst, transfer.Options{SourceTags: map[string]bool{"v1": true}}).Copy(t.Context(), img, "v1"); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.StatManifest(t.Context(), "copies/app", sigTag); err == nil {
		t.Error("a signature tag missing from the source's list was copied")
	}
	graph, err := transfer.New(src, dst, transfer.Options{SourceTags: map[string]bool{"v1": true, sigTag: true}}).Copy(t.Context(), img, "v1")
	if err != nil {
		t.Fatal(err)
	}
	if info, err := svc.StatManifest(t.Context(), "copies/app", sigTag); err != nil || info.Digest != sig.Digest {
		t.Errorf("the signature tag in the list: %v, %v", info.Digest, err)
	}
	if !slices.Contains(graph, sig.Digest) {
		t.Errorf("the copy's graph %v lacks the signature", graph)
	}
}

// memTarget is a Target in memory that checks nothing, to see what a
// copy hands it.
type memTarget struct {
	manifests map[digest.Digest][]byte
	blobs     map[digest.Digest][]byte
	tags      map[string]ocispec.Descriptor
}

func newMemTarget() *memTarget {
	return &memTarget{manifests: map[digest.Digest][]byte{}, blobs: map[digest.Digest][]byte{}, tags: map[string]ocispec.Descriptor{}}
}

func (m *memTarget) HasManifest(_ context.Context, d ocispec.Descriptor) (bool, error) {
	_, ok := m.manifests[d.Digest]
	return ok, nil
}

func (m *memTarget) HasBlob(_ context.Context, d ocispec.Descriptor) (bool, error) {
	_, ok := m.blobs[d.Digest]
	return ok, nil
}

func (m *memTarget) PushBlob(_ context.Context, d ocispec.Descriptor, r io.Reader) error {
	b, err := io.ReadAll(r)
	if err == nil {
		m.blobs[d.Digest] = b
	}
	return err
}

func (m *memTarget) PushManifest(_ context.Context, d ocispec.Descriptor, body []byte) error {
	m.manifests[d.Digest] = body
	return nil
}

func (m *memTarget) Resolve(_ context.Context, ref string) (ocispec.Descriptor, error) {
	if d, ok := m.tags[ref]; ok {
		return d, nil
	}
	return ocispec.Descriptor{}, transfer.ErrNotFound
}

func (m *memTarget) Tag(_ context.Context, d ocispec.Descriptor, tag string) error {
	m.tags[tag] = d
	return nil
}

// TestCopyChecksWhatItHandsOn: the copy itself checks manifests before a
// target that checks nothing sees them, and fails on a blob that does
// not match (a target such as a bundle's archive is then abandoned).
func TestCopyChecksWhatItHandsOn(t *testing.T) {
	src := newMem()
	img := src.image(t, "app", nil)
	// The source serves another, valid manifest under its digest.
	src.lie[img.Digest] = src.content[src.image(t, "other", nil).Digest]
	dst := newMemTarget()
	if _, err := transfer.New(src, dst, transfer.Options{}).Copy(t.Context(), img, "v1"); err == nil {
		t.Error("a manifest that does not hash to its digest was copied")
	}
	if len(dst.manifests)+len(dst.blobs)+len(dst.tags) != 0 {
		t.Errorf("the target was handed %d manifests, %d blobs, %d tags; want nothing", len(dst.manifests), len(dst.blobs), len(dst.tags))
	}

	src = newMem()
	img = src.image(t, "app", nil)
	var m ocispec.Manifest
	_ = json.Unmarshal(src.content[img.Digest], &m)
	src.lie[m.Config.Digest] = bytes.Replace(src.content[m.Config.Digest], []byte("amd64"), []byte("arm64"), 1)
	dst = newMemTarget()
	if _, err := transfer.New(src, dst, transfer.Options{}).Copy(t.Context(), img, "v1"); err == nil {
		t.Error("a blob that does not hash to its digest was copied")
	}
	if len(dst.manifests)+len(dst.tags) != 0 {
		t.Errorf("after a bad blob the target was handed %d manifests, %d tags; want none", len(dst.manifests), len(dst.tags))
	}
}
