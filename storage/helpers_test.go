package storage

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/storage/manifest"
)

// putTestBlob stores b in repo and returns its descriptor.
func putTestBlob(t *testing.T, s *Store, repo, mediaType string, b []byte) ocispec.Descriptor {
	t.Helper()
	d := digest.FromBytes(b)
	if _, err := s.PutBlob(context.Background(), repo, d, bytes.NewReader(b), int64(len(b))); err != nil {
		t.Fatalf("put blob in %s: %v", repo, err)
	}
	return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(b))}
}

// putTestManifest stores m (schemaVersion and media type filled in) in
// repo under tags, and returns its digest and descriptor.
func putTestManifest(t *testing.T, s *Store, repo string, m ocispec.Manifest, tags ...string) (digest.Digest, ocispec.Descriptor) {
	t.Helper()
	m.Versioned = specs.Versioned{SchemaVersion: 2}
	m.MediaType = ocispec.MediaTypeImageManifest
	return putTestBody(t, s, repo, m, tags...)
}

// putTestIndex stores an image index over children in repo under tags.
func putTestIndex(t *testing.T, s *Store, repo string, children []ocispec.Descriptor, tags ...string) (digest.Digest, ocispec.Descriptor) {
	t.Helper()
	return putTestBody(t, s, repo, ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: children,
	}, tags...)
}

func putTestBody(t *testing.T, s *Store, repo string, v any, tags ...string) (digest.Digest, ocispec.Descriptor) {
	t.Helper()
	body, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := manifest.Parse("", body)
	if err != nil {
		t.Fatal(err)
	}
	d := digest.FromBytes(body)
	if err := s.PutManifest(context.Background(), repo, d, body, parsed, tags); err != nil {
		t.Fatalf("put manifest in %s: %v", repo, err)
	}
	return d, ocispec.Descriptor{MediaType: parsed.MediaType, Digest: d, Size: int64(len(body))}
}

// putTestImage stores a small image in repo, made distinct by seed: a
// config, one layer of its own, and the manifest, tagged with tags.
func putTestImage(t *testing.T, s *Store, repo, seed string, tags ...string) digest.Digest {
	t.Helper()
	cfg := putTestBlob(t, s, repo, ocispec.MediaTypeImageConfig, []byte(`{"architecture":"amd64","os":"linux","config":{"Labels":{"seed":"`+seed+`"}}}`))
	layer := putTestBlob(t, s, repo, ocispec.MediaTypeImageLayer, []byte("layer of "+seed))
	d, _ := putTestManifest(t, s, repo, ocispec.Manifest{Config: cfg, Layers: []ocispec.Descriptor{layer}}, tags...)
	return d
}

// mustParse parses a manifest body already known to be valid.
func mustParse(t *testing.T, body []byte) *manifest.Manifest {
	t.Helper()
	m, err := manifest.Parse("", body)
	if err != nil {
		t.Fatal(err)
	}
	return m
}
