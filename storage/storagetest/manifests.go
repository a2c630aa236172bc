package storagetest

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/blob"
	"github.com/berth-registry/berth/storage/manifest"
	"github.com/berth-registry/berth/storage/meta"
)

// wantNothingStored checks that a refused push of manifest d under tag
// left nothing: no manifest record, no tag, no history, no content.
func wantNothingStored(t *testing.T, s *store, repo string, d digest.Digest, tag string) {
	t.Helper()
	if _, err := s.StatManifest(ctx(), repo, string(d)); !errors.Is(err, storage.ErrManifestUnknown) && !errors.Is(err, storage.ErrNameUnknown) {
		t.Errorf("refused manifest %s answers: %v", d, err)
	}
	if hasManifestRecord(t, s, repo, d) {
		t.Errorf("refused manifest %s recorded", d)
	}
	if tag != "" {
		if _, err := s.StatManifest(ctx(), repo, tag); !errors.Is(err, storage.ErrManifestUnknown) && !errors.Is(err, storage.ErrNameUnknown) {
			t.Errorf("tag %s of a refused manifest: %v", tag, err)
		}
		if moves, _, err := s.TagHistory(ctx(), repo, tag, 0, 10); !errors.Is(err, storage.ErrManifestUnknown) && !errors.Is(err, storage.ErrNameUnknown) {
			t.Errorf("history of %s after a refused push: %+v, %v", tag, moves, err)
		}
	}
	view(t, s, func(tx meta.Tx) error {
		if _, ok, err := tx.Blob(d); err != nil || ok {
			t.Errorf("refused manifest %s recorded as a blob: %v, %v", d, ok, err)
		}
		return nil
	})
	if _, err := s.blobs.Stat(ctx(), d); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("refused manifest %s left its content in the blob store: %v", d, err)
	}
}

// A manifest that references what the repository lacks is refused,
// naming what is missing, and leaves nothing, not even its content.
func testManifestReferencesCheckedAtomically(t *testing.T, b Backends) {
	s := open(t, b)
	config := []byte(`{}`)
	if _, err := s.PutBlob(ctx(), "a", digest.FromBytes(config), bytes.NewReader(config), 2); err != nil {
		t.Fatal(err)
	}
	missing := digest.FromString("never pushed")
	body := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",`+
		`"config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"%s","size":2},`+
		`"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":5}]}`,
		digest.FromBytes(config), missing))
	m, err := manifest.Parse("", body)
	if err != nil {
		t.Fatal(err)
	}
	md := digest.FromBytes(body)
	_, err = s.PutManifest(ctx(), "a", md, body, m, []string{"latest"})
	var de *storage.DetailError
	if !errors.Is(err, storage.ErrManifestBlobUnknown) || !errors.As(err, &de) || de.Detail["digest"] != string(missing) {
		t.Fatalf("want ErrManifestBlobUnknown naming %s, got %v", missing, err)
	}
	wantNothingStored(t, s, "a", md, "latest")
	// The config is linked in "a" only: "b" cannot reference it, nor an
	// index reference a manifest "b" lacks.
	if _, err := s.PutManifest(ctx(), "b", "", body, m, nil); !errors.Is(err, storage.ErrManifestBlobUnknown) {
		t.Fatalf("manifest referencing a blob of another repository: %v", err)
	}
	cfg := ocispec.Descriptor{MediaType: ocispec.MediaTypeEmptyJSON, Digest: digest.FromBytes(config), Size: 2}
	child, childDesc := putManifest(t, s, "a", ocispec.Manifest{Config: cfg, Layers: []ocispec.Descriptor{}})
	idx := indexBody(t, []ocispec.Descriptor{childDesc})
	if _, err := s.PutManifest(ctx(), "b", "", idx, mustParse(t, idx), []string{"multi"}); !errors.Is(err, storage.ErrManifestBlobUnknown) {
		t.Fatalf("index over a manifest of another repository: %v", err)
	}
	wantNothingStored(t, s, "b", digest.FromBytes(idx), "multi")
	if _, err := s.MountBlob(ctx(), "b", "c", digest.FromBytes(config)); !errors.Is(err, storage.ErrBlobUnknown) {
		t.Fatalf("mount from a repository without the blob: %v", err)
	}
	// Once the repository holds them, the same pushes succeed.
	if _, err := s.MountBlob(ctx(), "b", "a", cfg.Digest); err != nil {
		t.Fatal(err)
	}
	putManifest(t, s, "b", ocispec.Manifest{Config: cfg, Layers: []ocispec.Descriptor{}})
	if d, _ := putBody(t, s, "b", idx, "multi"); d != digest.FromBytes(idx) || !hasManifestRecord(t, s, "b", child) {
		t.Fatalf("index pushed as %s", d)
	}
}

// A descriptor that names a blob or child manifest the repository holds,
// but with another size, makes the manifest invalid: refused, and
// nothing stored.
func testManifestDescriptorSizeMustMatch(t *testing.T, b Backends) {
	s := open(t, b)
	const repo = "apps/web"
	cfg := putBlob(t, s, repo, ocispec.MediaTypeImageConfig, []byte(`{"architecture":"amd64","os":"linux"}`))
	layer := putBlob(t, s, repo, ocispec.MediaTypeImageLayer, []byte("a layer of some length"))
	child, childDesc := putManifest(t, s, repo, ocispec.Manifest{Config: cfg, Layers: []ocispec.Descriptor{layer}})
	resize := func(d ocispec.Descriptor, by int64) ocispec.Descriptor {
		d.Size += by
		return d
	}
	cases := []struct {
		name  string
		body  []byte
		wrong digest.Digest
	}{
		{"config smaller", imageBody(t, ocispec.Manifest{Config: resize(cfg, -1), Layers: []ocispec.Descriptor{layer}}), cfg.Digest},
		{"config larger", imageBody(t, ocispec.Manifest{Config: resize(cfg, 1000), Layers: []ocispec.Descriptor{layer}}), cfg.Digest},
		{"layer larger", imageBody(t, ocispec.Manifest{Config: cfg, Layers: []ocispec.Descriptor{resize(layer, 1)}}), layer.Digest},
		{"layer empty", imageBody(t, ocispec.Manifest{Config: cfg, Layers: []ocispec.Descriptor{resize(layer, -layer.Size)}}), layer.Digest},
		{"index child", indexBody(t, []ocispec.Descriptor{resize(childDesc, 1)}), child},
		{"index child smaller", indexBody(t, []ocispec.Descriptor{resize(childDesc, -1)}), child},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tag := fmt.Sprintf("t%d", i)
			d := digest.FromBytes(c.body)
			_, err := s.PutManifest(ctx(), repo, d, c.body, mustParse(t, c.body), []string{tag})
			var de *storage.DetailError
			if !errors.Is(err, storage.ErrManifestInvalid) || !errors.As(err, &de) || de.Detail["digest"] != string(c.wrong) {
				t.Fatalf("want ErrManifestInvalid naming %s, got %v", c.wrong, err)
			}
			wantNothingStored(t, s, repo, d, tag)
		})
	}
	// What was there is untouched, and the right sizes are accepted.
	if tags, _, err := s.ListTags(ctx(), repo, "", 10); err != nil || len(tags) != 0 {
		t.Fatalf("tags after refused pushes: %v, %v", tags, err)
	}
	putIndex(t, s, repo, []ocispec.Descriptor{childDesc}, "ok")
}

// A manifest is stored under the digest of its body, with the algorithm
// of the digest it is pushed by; a digest it does not hash to is refused.
func testManifestDigestMismatch(t *testing.T, b Backends) {
	s := open(t, b)
	cfg := putBlob(t, s, "r", ocispec.MediaTypeImageConfig, []byte(`{}`))
	body := imageBody(t, ocispec.Manifest{Config: cfg, Layers: []ocispec.Descriptor{}})
	m := mustParse(t, body)
	wrong := digest.FromString("another body")
	if _, err := s.PutManifest(ctx(), "r", wrong, body, m, []string{"v1"}); !errors.Is(err, storage.ErrDigestMismatch) {
		t.Fatalf("wrong digest: %v, want ErrDigestMismatch", err)
	}
	wantNothingStored(t, s, "r", wrong, "v1")
	wantNothingStored(t, s, "r", digest.FromBytes(body), "")
	if _, err := s.PutManifest(ctx(), "r", "sha256:short", body, m, nil); !errors.Is(err, storage.ErrDigestMismatch) {
		t.Fatalf("malformed digest: %v, want ErrDigestMismatch", err)
	}
	// Without a digest, sha256; with a sha512 one, sha512.
	if d, err := s.PutManifest(ctx(), "r", "", body, m, []string{"v1"}); err != nil || d != digest.FromBytes(body) {
		t.Fatalf("push by tag: %s, %v", d, err)
	}
	d512 := digest.SHA512.FromBytes(body)
	if d, err := s.PutManifest(ctx(), "r", d512, body, m, nil); err != nil || d != d512 {
		t.Fatalf("push by sha512 digest: %s, %v", d, err)
	}
	if info, got, err := s.GetManifest(ctx(), "r", string(d512)); err != nil || !bytes.Equal(got, body) || info.Digest != d512 {
		t.Fatalf("get by sha512 digest: %+v, %v", info, err)
	}
}

// A manifest the store holds already is not written again: pushed again,
// by tag, or into another repository, it stages nothing.
func testManifestPushedAgainIsNotWrittenAgain(t *testing.T, b Backends) {
	spy := new(spyBlobs)
	s := open(t, b, withBlobs(func(bs blob.Store) blob.Store { spy.Store = bs; return spy }))
	cfg := putBlob(t, s, "a", ocispec.MediaTypeImageConfig, []byte(`{"architecture":"arm64","os":"linux"}`))
	if _, err := s.MountBlob(ctx(), "b", "a", cfg.Digest); err != nil {
		t.Fatal(err)
	}
	body := imageBody(t, ocispec.Manifest{Config: cfg, Layers: []ocispec.Descriptor{}})
	spy.stages.Store(0)
	d, _ := putBody(t, s, "a", body)
	if n := spy.stages.Load(); n != 1 {
		t.Fatalf("first push staged %d times, want once", n)
	}
	spy.stages.Store(0)
	putBody(t, s, "a", body)
	putBody(t, s, "a", body, "v1", "latest")
	putBody(t, s, "b", body, "v1")
	if n := spy.stages.Load(); n != 0 {
		t.Fatalf("pushes of a manifest the store holds staged %d times, want none", n)
	}
	for _, ref := range []string{string(d), "v1"} {
		if _, got, err := s.GetManifest(ctx(), "b", ref); err != nil || !bytes.Equal(got, body) {
			t.Fatalf("b %s: %v", ref, err)
		}
	}
	wantOnlyBlobs(t, s, cfg.Digest, d)
}

// A manifest's content is in the blob store, durable, before the index
// transaction that records it begins: the transaction never waits for
// content, and a crash between them leaves content without a record.
func testManifestContentPlacedBeforeItsTransaction(t *testing.T, b Backends) {
	spy := new(spyIndex)
	s := open(t, b, withIndex(func(ix meta.Store) meta.Store { spy.Store = ix; return spy }))
	cfg := putBlob(t, s, "a", ocispec.MediaTypeImageConfig, []byte(`{"architecture":"s390x","os":"linux"}`))
	body := imageBody(t, ocispec.Manifest{Config: cfg, Layers: []ocispec.Descriptor{}})
	d := digest.FromBytes(body)
	var present bool
	var recorded []string
	spy.setHooks(func() {
		_, err := s.blobs.Stat(ctx(), d)
		present = err == nil
	}, func(repo string, md digest.Digest) {
		if md != d {
			return
		}
		recorded = append(recorded, repo)
		if !present {
			t.Errorf("the transaction recording %s in %s began before its content was in the blob store", d, repo)
		}
	})
	putBody(t, s, "a", body, "v1")
	// Pushed again, and into another repository: the content is there
	// from the first push.
	putBody(t, s, "a", body, "v2")
	if _, err := s.MountBlob(ctx(), "b", "a", cfg.Digest); err != nil {
		t.Fatal(err)
	}
	putBody(t, s, "b", body)
	spy.setHooks(nil, nil)
	if !slices.Equal(recorded, []string{"a", "a", "b"}) {
		t.Fatalf("manifest recorded in %v, want a, a, b", recorded)
	}
}

// A manifest pushed again, tagged or not, keeps its first push time, which
// retention ages untagged manifests by and search reports as Pushed.
func testPushAgainKeepsPushTime(t *testing.T, b Backends) {
	s := open(t, b)
	cfg := putBlob(t, s, "app", ocispec.MediaTypeImageConfig, []byte(`{}`))
	m := ocispec.Manifest{Config: cfg}
	d, _ := putManifest(t, s, "app", m)
	first, err := s.StatManifest(ctx(), "app", string(d))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; !time.Now().UTC().After(first.Created); i++ {
		if i > 1000 {
			t.Fatal("the clock does not move")
		}
		time.Sleep(time.Millisecond)
	}
	putManifest(t, s, "app", m, "v1")
	again, err := s.StatManifest(ctx(), "app", "v1")
	if err != nil {
		t.Fatal(err)
	}
	if !again.Created.Equal(first.Created) {
		t.Fatalf("push time moved from %s to %s", first.Created, again.Created)
	}
}

// Deleting a manifest removes it with every tag naming it (each move
// recorded) and its place among its subject's referrers; its content
// stays for garbage collection.
func testDeleteManifest(t *testing.T, b Backends) {
	s := open(t, b)
	const repo = "apps/web"
	d := putImage(t, s, repo, "doomed", "v1", "latest")
	keep := putImage(t, s, repo, "kept", "stable")
	empty := putBlob(t, s, repo, ocispec.MediaTypeEmptyJSON, []byte("{}"))
	subject := describe(t, s, repo, keep)
	sig, _ := putManifest(t, s, repo, ocispec.Manifest{ArtifactType: "application/example.sig", Config: empty,
		Layers: []ocispec.Descriptor{}, Subject: &subject})

	if err := s.DeleteManifest(ctx(), repo, d); err != nil {
		t.Fatal(err)
	}
	if _, err := s.StatManifest(ctx(), repo, string(d)); !errors.Is(err, storage.ErrManifestUnknown) {
		t.Fatalf("deleted manifest: %v", err)
	}
	for _, tag := range []string{"v1", "latest"} {
		if _, err := s.StatManifest(ctx(), repo, tag); !errors.Is(err, storage.ErrManifestUnknown) {
			t.Fatalf("tag %s of the deleted manifest: %v", tag, err)
		}
		moves, _, err := s.TagHistory(ctx(), repo, tag, 0, 10)
		if err != nil || len(moves) != 2 || moves[0].Action != storage.MoveDeleteManifest || moves[0].Previous != d || moves[0].Digest != "" {
			t.Fatalf("history of %s: %+v, %v", tag, moves, err)
		}
	}
	if tags, _, err := s.ListTags(ctx(), repo, "", 10); err != nil || !slices.Equal(tags, []string{"stable"}) {
		t.Fatalf("tags: %v, %v", tags, err)
	}
	if _, err := s.blobs.Stat(ctx(), d); err != nil {
		t.Fatalf("content of the deleted manifest: %v, want it kept for garbage collection", err)
	}
	// A referrer deleted leaves its subject's referrers.
	if refs, err := s.Referrers(ctx(), repo, keep, ""); err != nil || len(refs) != 1 || refs[0].Digest != sig {
		t.Fatalf("referrers: %+v, %v", refs, err)
	}
	if err := s.DeleteManifest(ctx(), repo, sig); err != nil {
		t.Fatal(err)
	}
	if refs, err := s.Referrers(ctx(), repo, keep, ""); err != nil || len(refs) != 0 {
		t.Fatalf("referrers after the referrer's deletion: %+v, %v", refs, err)
	}
	if err := s.DeleteManifest(ctx(), repo, d); !errors.Is(err, storage.ErrManifestUnknown) {
		t.Fatalf("second delete: %v", err)
	}
	if err := s.DeleteManifest(ctx(), "no/such", d); !errors.Is(err, storage.ErrNameUnknown) {
		t.Fatalf("delete in an unknown repository: %v", err)
	}
	if err := s.DeleteTag(ctx(), repo, "never"); !errors.Is(err, storage.ErrManifestUnknown) {
		t.Fatalf("delete of an unknown tag: %v", err)
	}
	if err := s.DeleteTag(ctx(), "no/such", "v1"); !errors.Is(err, storage.ErrNameUnknown) {
		t.Fatalf("delete of a tag in an unknown repository: %v", err)
	}
	checkIndex(t, s)
}

// Deleting a manifest finds the tags naming it through the index's tags
// by digest, never by walking every tag of the repository; a push and a
// tag deletion do not walk them either.
func testDeleteAndPushFindTagsWithoutWalkingThem(t *testing.T, b Backends) {
	spy := new(spyIndex)
	s := open(t, b, withIndex(func(ix meta.Store) meta.Store { spy.Store = ix; return spy }))
	const repo = "apps/web"
	var ds []digest.Digest
	for i := range 5 {
		var tags []string
		for j := range 10 {
			tags = append(tags, fmt.Sprintf("m%d-t%02d", i, j))
		}
		ds = append(ds, putImage(t, s, repo, fmt.Sprint("walk", i), tags...))
	}
	spy.tagWalks.Store(0)
	if err := s.DeleteManifest(ctx(), repo, ds[2]); err != nil {
		t.Fatal(err)
	}
	if n := spy.tagWalks.Load(); n != 0 {
		t.Errorf("DeleteManifest walked the tags of the repository %d times", n)
	}
	info, body, err := s.GetManifest(ctx(), repo, string(ds[3]))
	if err != nil {
		t.Fatal(err)
	}
	spy.tagWalks.Store(0)
	if _, err := s.PutManifest(ctx(), repo, info.Digest, body, mustParse(t, body), []string{"m0-t00", "new"}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteTag(ctx(), repo, "m1-t05"); err != nil {
		t.Fatal(err)
	}
	if n := spy.tagWalks.Load(); n != 0 {
		t.Errorf("PutManifest or DeleteTag walked the tags of the repository %d times", n)
	}
	// And the right tags went, or moved.
	tags, _, err := s.ListTags(ctx(), repo, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(tags) != 40 || slices.Contains(tags, "m2-t00") || slices.Contains(tags, "m1-t05") || !slices.Contains(tags, "new") {
		t.Fatalf("%d tags left: %v", len(tags), tags)
	}
	if got, err := s.StatManifest(ctx(), repo, "m0-t00"); err != nil || got.Digest != ds[3] {
		t.Fatalf("m0-t00 names %s, %v; want %s", got.Digest, err, ds[3])
	}
	view(t, s, func(tx meta.Tx) error {
		for i, d := range ds {
			tags, err := tx.TagsOf(repo, d)
			if err != nil {
				return err
			}
			want := map[int]int{0: 9, 1: 9, 2: 0, 3: 12, 4: 10}[i]
			if len(tags) != want {
				t.Errorf("TagsOf %s: %v, want %d tags", d, tags, want)
			}
		}
		return nil
	})
	checkIndex(t, s)
}

// Referrers lists the manifests whose subject is a digest, optionally of
// one artifact type; the subject need not exist.
func testReferrers(t *testing.T, b Backends) {
	s := open(t, b)
	const repo = "apps/web"
	d := putImage(t, s, repo, "subject")
	subject := describe(t, s, repo, d)
	empty := putBlob(t, s, repo, ocispec.MediaTypeEmptyJSON, []byte("{}"))
	ref := func(artifactType string, subject ocispec.Descriptor, ann map[string]string) digest.Digest {
		d, _ := putManifest(t, s, repo, ocispec.Manifest{ArtifactType: artifactType, Config: empty,
			Layers: []ocispec.Descriptor{}, Subject: &subject, Annotations: ann})
		return d
	}
	sig := ref("application/example.sig", subject, map[string]string{"k": "v"})
	sbom := ref("application/spdx+json", subject, nil)
	absent := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("not pushed yet"), Size: 10}
	early := ref("application/example.sig", absent, nil)

	all, err := s.Referrers(ctx(), repo, d, "")
	if err != nil {
		t.Fatal(err)
	}
	want := []digest.Digest{sig, sbom}
	slices.Sort(want)
	if len(all) != 2 || all[0].Digest != want[0] || all[1].Digest != want[1] {
		t.Fatalf("referrers of %s: %+v, want %v", d, all, want)
	}
	for _, r := range all {
		if r.MediaType != ocispec.MediaTypeImageManifest || r.Size == 0 || r.ArtifactType == "" {
			t.Errorf("referrer descriptor %+v", r)
		}
		if r.Digest == sig && r.Annotations["k"] != "v" {
			t.Errorf("referrer %s lost its annotations: %+v", sig, r)
		}
	}
	if sigs, err := s.Referrers(ctx(), repo, d, "application/example.sig"); err != nil || len(sigs) != 1 || sigs[0].Digest != sig {
		t.Fatalf("signatures of %s: %+v, %v", d, sigs, err)
	}
	if got, err := s.Referrers(ctx(), repo, absent.Digest, ""); err != nil || len(got) != 1 || got[0].Digest != early {
		t.Fatalf("referrers of an absent subject: %+v, %v", got, err)
	}
	for _, c := range []struct{ repo, subject string }{{"no/such", string(d)}, {repo, string(digest.FromString("nothing"))}} {
		if got, err := s.Referrers(ctx(), c.repo, digest.Digest(c.subject), ""); err != nil || got == nil || len(got) != 0 {
			t.Fatalf("referrers of %s in %s: %+v, %v; want an empty list", c.subject, c.repo, got, err)
		}
	}
}
