package storagetest

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/storage"
)

// wantManifestIn checks that d is a manifest of repo whose blobs, read
// through repo, are all there.
func wantManifestIn(t *testing.T, s *store, repo string, d digest.Digest) {
	t.Helper()
	ctx := context.Background()
	_, body, err := s.GetManifest(ctx, repo, string(d))
	if err != nil {
		t.Fatalf("manifest %s in %s: %v", d, repo, err)
	}
	m := mustParse(t, body)
	for _, b := range m.Blobs {
		f, _, err := s.OpenBlob(ctx, repo, b.Digest)
		if err != nil {
			t.Fatalf("blob %s of %s in %s: %v", b.Digest, d, repo, err)
		}
		got, err := digest.FromReader(f)
		f.Close()
		if err != nil || got != b.Digest {
			t.Fatalf("blob %s in %s reads as %s (%v)", b.Digest, repo, got, err)
		}
	}
	for _, c := range m.Manifests {
		wantManifestIn(t, s, repo, c.Digest)
	}
}

// Promotion links a manifest and what it needs into another repository
// and tags it there, moving no content; promoting again moves nothing.
func testPromoteAcrossRepositories(t *testing.T, b Backends) {
	s := open(t, b)
	ctx := context.Background()
	d := putImage(t, s, "apps/web", "one", "staging-validated")
	blobsBefore, stagedBefore := stored(t, s)

	bob := storage.WithActor(ctx, storage.Actor{Kind: storage.ActorUser, Name: "bob", Address: "192.0.2.7"})
	move, got, err := s.Promote(bob, "apps/web", "staging-validated", "apps/web-prod", "production")
	if err != nil {
		t.Fatal(err)
	}
	if got != d || move.Digest != d || move.Previous != "" || move.Action != storage.MovePromote || move.Actor.Name != "bob" || move.Seq != 1 {
		t.Fatalf("promote = %+v, %s; want a first promote move to %s by bob", move, got, d)
	}
	wantManifestIn(t, s, "apps/web-prod", d)
	info, err := s.StatManifest(ctx, "apps/web-prod", "production")
	if err != nil || info.Digest != d {
		t.Fatalf("apps/web-prod:production = %s, %v; want %s", info.Digest, err, d)
	}
	// Only index entries were added: no content was written.
	if blobsAfter, stagedAfter := stored(t, s); !slices.Equal(blobsAfter, blobsBefore) || len(stagedAfter) != len(stagedBefore) {
		t.Errorf("blob store holds %v (staged %v) after the promotion, %v (staged %v) before", blobsAfter, stagedAfter, blobsBefore, stagedBefore)
	}

	// By digest, to a second tag; again is no move at all.
	if _, _, err := s.Promote(ctx, "apps/web", string(d), "apps/web-prod", "stable"); err != nil {
		t.Fatal(err)
	}
	move, _, err = s.Promote(ctx, "apps/web", string(d), "apps/web-prod", "stable")
	if err != nil || move != (storage.TagMove{}) {
		t.Fatalf("promoting again = %+v, %v; want no move", move, err)
	}
	moves, _, err := s.TagHistory(ctx, "apps/web-prod", "stable", 0, 10)
	if err != nil || len(moves) != 1 {
		t.Fatalf("history of stable: %+v, %v; want one move", moves, err)
	}
}

// Promoting an index promotes its children, recursively, untagged.
func testPromoteIndexWithChildren(t *testing.T, b Backends) {
	s := open(t, b)
	ctx := context.Background()
	amd := putImage(t, s, "src", "amd64")
	arm := putImage(t, s, "src", "arm64")
	amdInfo, _ := s.StatManifest(ctx, "src", string(amd))
	armInfo, _ := s.StatManifest(ctx, "src", string(arm))
	idx, idxDesc := putIndex(t, s, "src", []ocispec.Descriptor{
		{MediaType: amdInfo.MediaType, Digest: amd, Size: amdInfo.Size},
		{MediaType: armInfo.MediaType, Digest: arm, Size: armInfo.Size},
	}, "v1")
	outer, _ := putIndex(t, s, "src", []ocispec.Descriptor{idxDesc})

	if _, got, err := s.Promote(ctx, "src", string(outer), "dst", "release"); err != nil || got != outer {
		t.Fatalf("promote = %s, %v", got, err)
	}
	wantManifestIn(t, s, "dst", outer)
	for _, d := range []digest.Digest{idx, amd, arm} {
		if _, err := s.StatManifest(ctx, "dst", string(d)); err != nil {
			t.Errorf("child %s not in dst: %v", d, err)
		}
	}
	// Only the promoted tag exists in dst: children come untagged.
	tags, _, err := s.ListTags(ctx, "dst", "", 10)
	if err != nil || len(tags) != 1 || tags[0] != "release" {
		t.Errorf("dst tags = %v, %v; want [release]", tags, err)
	}
}

// Promotion carries the referrers of what it promotes (signatures and
// their signatures, cosign's signature tags), and nothing unrelated.
func testPromoteFollowsReferrers(t *testing.T, b Backends) {
	s := open(t, b)
	ctx := context.Background()
	d := putImage(t, s, "src", "signed", "rc")
	info, _ := s.StatManifest(ctx, "src", "rc")
	subject := ocispec.Descriptor{MediaType: info.MediaType, Digest: d, Size: info.Size}

	empty := putBlob(t, s, "src", ocispec.MediaTypeEmptyJSON, []byte("{}"))
	sigLayer := putBlob(t, s, "src", "application/vnd.dev.sigstore.bundle.v0.3+json", []byte(`{"sig":"one"}`))
	sig, sigDesc := putManifest(t, s, "src", ocispec.Manifest{ArtifactType: "application/vnd.dev.sigstore.bundle.v0.3+json",
		Config: empty, Layers: []ocispec.Descriptor{sigLayer}, Subject: &subject})
	// A signature of the SBOM-like referrer: a referrer of a referrer.
	sigOfSig, _ := putManifest(t, s, "src", ocispec.Manifest{ArtifactType: "application/example.sig",
		Config: empty, Layers: []ocispec.Descriptor{sigLayer}, Subject: &sigDesc})
	// A cosign-style signature tag, without subject.
	cosignLayer := putBlob(t, s, "src", "application/vnd.dev.cosign.simplesigning.v1+json", []byte(`{"critical":{}}`))
	tag := "sha256-" + d.Encoded() + ".sig"
	cosignSig, _ := putManifest(t, s, "src", ocispec.Manifest{Config: empty, Layers: []ocispec.Descriptor{cosignLayer}}, tag)
	// A referrer of some other manifest stays behind.
	other := putImage(t, s, "src", "other")
	oinfo, _ := s.StatManifest(ctx, "src", string(other))
	unrelated, _ := putManifest(t, s, "src", ocispec.Manifest{ArtifactType: "application/example.sig",
		Config: empty, Layers: []ocispec.Descriptor{sigLayer},
		Subject: &ocispec.Descriptor{MediaType: oinfo.MediaType, Digest: other, Size: oinfo.Size}})

	if _, _, err := s.Promote(ctx, "src", "rc", "dst", "prod"); err != nil {
		t.Fatal(err)
	}
	refs, err := s.Referrers(ctx, "dst", d, "")
	if err != nil || len(refs) != 1 || refs[0].Digest != sig {
		t.Fatalf("referrers of %s in dst = %+v, %v; want [%s]", d, refs, err, sig)
	}
	refs, err = s.Referrers(ctx, "dst", sig, "")
	if err != nil || len(refs) != 1 || refs[0].Digest != sigOfSig {
		t.Fatalf("referrers of %s in dst = %+v, %v; want [%s]", sig, refs, err, sigOfSig)
	}
	for _, m := range []digest.Digest{sig, sigOfSig, cosignSig} {
		wantManifestIn(t, s, "dst", m)
	}
	if got, err := s.StatManifest(ctx, "dst", tag); err != nil || got.Digest != cosignSig {
		t.Errorf("dst %s = %s, %v; want %s", tag, got.Digest, err, cosignSig)
	}
	for _, m := range []digest.Digest{other, unrelated} {
		if _, err := s.StatManifest(ctx, "dst", string(m)); !errors.Is(err, storage.ErrManifestUnknown) {
			t.Errorf("unrelated manifest %s in dst: %v, want storage.ErrManifestUnknown", m, err)
		}
	}
}

// A promotion over an immutable tag is refused and links nothing.
func testPromoteImmutableTagChangesNothing(t *testing.T, be Backends) {
	s := open(t, be, withOptions(storage.Options{Tags: tagRulesFunc(func(repo, tag string) bool {
		return repo == "dst" && tag == "v1.0.0"
	})}))
	ctx := context.Background()
	a := putImage(t, s, "src", "a", "a")
	b := putImage(t, s, "src", "b", "b")
	if _, _, err := s.Promote(ctx, "src", "a", "dst", "v1.0.0"); err != nil {
		t.Fatal(err)
	}
	_, _, err := s.Promote(ctx, "src", "b", "dst", "v1.0.0")
	if !errors.Is(err, storage.ErrTagImmutable) {
		t.Fatalf("promoting over an immutable tag: %v, want storage.ErrTagImmutable", err)
	}
	if info, err := s.StatManifest(ctx, "dst", "v1.0.0"); err != nil || info.Digest != a {
		t.Errorf("dst:v1.0.0 = %s, %v; want %s still", info.Digest, err, a)
	}
	if _, err := s.StatManifest(ctx, "dst", string(b)); !errors.Is(err, storage.ErrManifestUnknown) {
		t.Errorf("refused manifest %s left in dst: %v", b, err)
	}
	_, bbody, _ := s.GetManifest(ctx, "src", "b")
	for _, blob := range mustParse(t, bbody).Blobs {
		if _, err := s.StatBlob(ctx, "dst", blob.Digest); !errors.Is(err, storage.ErrBlobUnknown) {
			t.Errorf("blob %s of the refused manifest linked into dst: %v", blob.Digest, err)
		}
	}
	if moves, _, err := s.TagHistory(ctx, "dst", "v1.0.0", 0, 10); err != nil || len(moves) != 1 {
		t.Errorf("history of v1.0.0: %+v, %v; want the first promotion only", moves, err)
	}
	// The same digest again is fine.
	if _, _, err := s.Promote(ctx, "src", "a", "dst", "v1.0.0"); err != nil {
		t.Errorf("promoting the digest the immutable tag names: %v", err)
	}
}

// An unknown source repository or reference is refused and creates
// nothing.
func testPromoteUnknownSource(t *testing.T, b Backends) {
	s := open(t, b)
	ctx := context.Background()
	putImage(t, s, "src", "a", "a")
	for _, c := range []struct {
		repo, ref string
		want      error
	}{
		{"nope", "a", storage.ErrNameUnknown},
		{"src", "missing", storage.ErrManifestUnknown},
		{"src", string(digest.FromString("absent")), storage.ErrManifestUnknown},
	} {
		if _, _, err := s.Promote(ctx, c.repo, c.ref, "dst", "t"); !errors.Is(err, c.want) {
			t.Errorf("promote %s:%s: %v, want %v", c.repo, c.ref, err, c.want)
		}
	}
	if repos, _, err := s.ListRepositories(ctx, "", 10); err != nil || len(repos) != 1 {
		t.Errorf("repositories = %v, %v; want only src", repos, err)
	}
}

// Foreign layers, which the repository never holds, are not promoted.
func testPromoteSkipsForeignLayers(t *testing.T, b Backends) {
	s := open(t, b)
	ctx := context.Background()
	cfg := putBlob(t, s, "src", ocispec.MediaTypeImageConfig, []byte(`{"architecture":"amd64","os":"windows"}`))
	layer := putBlob(t, s, "src", ocispec.MediaTypeImageLayer, []byte("local layer"))
	foreign := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: digest.FromString("base layer elsewhere"),
		Size: 20, URLs: []string{"https://example.com/base.tar"}}
	d, _ := putManifest(t, s, "src", ocispec.Manifest{Config: cfg, Layers: []ocispec.Descriptor{foreign, layer}}, "win")
	if _, _, err := s.Promote(ctx, "src", "win", "dst", "win"); err != nil {
		t.Fatal(err)
	}
	wantManifestIn(t, s, "dst", d)
	if _, err := s.StatBlob(ctx, "dst", foreign.Digest); !errors.Is(err, storage.ErrBlobUnknown) {
		t.Errorf("foreign layer in dst: %v, want storage.ErrBlobUnknown", err)
	}
}
