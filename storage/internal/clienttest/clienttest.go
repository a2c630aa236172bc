// Package clienttest owns the test fixtures of the storage core's clients
// (storage/gc, storage/retention, storage/fsck, storage/pulls): a store
// over the real backends (the bolt index and the file blob store) in a
// temporary directory, filled through the core's API, and aged through the
// index's own transactions, never through a backend's files.
//
// It is imported by tests only.
package clienttest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/storage"
	blobfs "github.com/berth-registry/berth/storage/blob/fs"
	"github.com/berth-registry/berth/storage/internal/ageing"
	"github.com/berth-registry/berth/storage/manifest"
	"github.com/berth-registry/berth/storage/meta"
	"github.com/berth-registry/berth/storage/meta/bolt"
)

// Options tune Open.
type Options struct {
	// Core tunes the storage core (tag rules, sinks).
	Core storage.Options
	// FS is the file system of the blob store; nil means the operating
	// system's.
	FS blobfs.FS
	// Wrap, when set, wraps the index the core sees, for tests that watch
	// or pause its transactions.
	Wrap func(meta.Store) meta.Store
}

// Store is a store open in a test's temporary directory.
type Store struct {
	T   *testing.T
	Dir string
	// Svc is the core over Index and Blobs.
	Svc *storage.Service
	// Index is the index as the core sees it (wrapped by Options.Wrap);
	// Bolt is the backend itself.
	Index meta.Store
	Bolt  *bolt.Store
	Blobs *blobfs.Store

	opts   Options
	closed bool
}

// Open opens a store in dir (a new temporary directory if dir is empty),
// closed when the test ends.
func Open(t *testing.T, dir string, opts Options) *Store {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	s := &Store{T: t, Dir: dir, opts: opts}
	s.open()
	t.Cleanup(func() { s.Close() })
	return s
}

func (s *Store) open() {
	s.T.Helper()
	idx, err := bolt.Open(filepath.Join(s.Dir, "index.db"), bolt.Options{})
	if err != nil {
		s.T.Fatalf("open index: %v", err)
	}
	blobs, err := blobfs.Open(context.Background(), s.Dir, blobfs.Options{FS: s.opts.FS})
	if err != nil {
		_ = idx.Close()
		s.T.Fatalf("open blob store: %v", err)
	}
	s.Bolt, s.Blobs, s.Index = idx, blobs, meta.Store(idx)
	if s.opts.Wrap != nil {
		s.Index = s.opts.Wrap(idx)
	}
	s.Svc = storage.New(s.Index, blobs, s.opts.Core)
	s.closed = false
}

// Close closes the index; closing twice is fine.
func (s *Store) Close() {
	if s.closed {
		return
	}
	s.closed = true
	if err := s.Bolt.Close(); err != nil {
		s.T.Errorf("close index: %v", err)
	}
}

// Reopen closes the store and opens it again with the same options, as a
// restart would.
func (s *Store) Reopen() {
	s.T.Helper()
	s.Close()
	s.open()
}

// IndexPath is the path of the bolt index file.
func (s *Store) IndexPath() string { return filepath.Join(s.Dir, "index.db") }

// PutBlob stores b in repo and returns its descriptor.
func (s *Store) PutBlob(repo, mediaType string, b []byte) ocispec.Descriptor {
	s.T.Helper()
	d := digest.FromBytes(b)
	if _, err := s.Svc.PutBlob(context.Background(), repo, d, bytes.NewReader(b), int64(len(b))); err != nil {
		s.T.Fatalf("put blob in %s: %v", repo, err)
	}
	return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(b))}
}

// PutManifest stores m (schemaVersion and media type filled in) in repo
// under tags, and returns its digest and descriptor.
func (s *Store) PutManifest(repo string, m ocispec.Manifest, tags ...string) (digest.Digest, ocispec.Descriptor) {
	s.T.Helper()
	m.Versioned = specs.Versioned{SchemaVersion: 2}
	m.MediaType = ocispec.MediaTypeImageManifest
	return s.PutBody(repo, m, tags...)
}

// PutIndex stores an image index over children in repo under tags.
func (s *Store) PutIndex(repo string, children []ocispec.Descriptor, tags ...string) (digest.Digest, ocispec.Descriptor) {
	s.T.Helper()
	return s.PutBody(repo, ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: children,
	}, tags...)
}

// PutBody stores the JSON of v as a manifest in repo under tags.
func (s *Store) PutBody(repo string, v any, tags ...string) (digest.Digest, ocispec.Descriptor) {
	s.T.Helper()
	body, err := json.Marshal(v)
	if err != nil {
		s.T.Fatal(err)
	}
	parsed := Parse(s.T, body)
	d, err := s.Svc.PutManifest(context.Background(), repo, "", body, parsed, tags)
	if err != nil {
		s.T.Fatalf("put manifest in %s: %v", repo, err)
	}
	return d, ocispec.Descriptor{MediaType: parsed.MediaType, Digest: d, Size: int64(len(body))}
}

// PutImage stores a small image in repo, made distinct by seed: a config
// with a label, one layer of its own, and the manifest, tagged with tags.
func (s *Store) PutImage(repo, seed string, tags ...string) digest.Digest {
	s.T.Helper()
	cfg := s.PutBlob(repo, ocispec.MediaTypeImageConfig, []byte(`{"architecture":"amd64","os":"linux","config":{"Labels":{"seed":"`+seed+`"}}}`))
	layer := s.PutBlob(repo, ocispec.MediaTypeImageLayer, []byte("layer of "+seed))
	d, _ := s.PutManifest(repo, ocispec.Manifest{Config: cfg, Layers: []ocispec.Descriptor{layer}}, tags...)
	return d
}

// Descriptor describes manifest d of repo.
func (s *Store) Descriptor(repo string, d digest.Digest) ocispec.Descriptor {
	s.T.Helper()
	info, err := s.Svc.StatManifest(context.Background(), repo, string(d))
	if err != nil {
		s.T.Fatal(err)
	}
	return ocispec.Descriptor{MediaType: info.MediaType, Digest: d, Size: info.Size}
}

// ReadBlob reads the content of blob d of repo.
func (s *Store) ReadBlob(repo string, d digest.Digest) []byte {
	s.T.Helper()
	f, _, err := s.Svc.OpenBlob(context.Background(), repo, d)
	if err != nil {
		s.T.Fatalf("open blob %s in %s: %v", d, repo, err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		s.T.Fatal(err)
	}
	return b
}

// PullAll reads a manifest and everything it references, recursively,
// checking every digest.
func (s *Store) PullAll(repo, ref string) {
	s.T.Helper()
	info, body, err := s.Svc.GetManifest(context.Background(), repo, ref)
	if err != nil {
		s.T.Fatalf("pull %s:%s: %v", repo, ref, err)
	}
	if got := digest.FromBytes(body); got != info.Digest {
		s.T.Fatalf("manifest %s reads as %s", info.Digest, got)
	}
	m := Parse(s.T, body)
	for _, b := range m.Blobs {
		if got := digest.FromBytes(s.ReadBlob(repo, b.Digest)); got != b.Digest {
			s.T.Fatalf("blob %s of %s reads as %s", b.Digest, info.Digest, got)
		}
	}
	for _, c := range m.Manifests {
		s.PullAll(repo, string(c.Digest))
	}
}

// Update runs fn in a transaction of the index, failing the test on error.
func (s *Store) Update(fn func(tx meta.Tx) error) {
	s.T.Helper()
	if err := s.Bolt.Update(context.Background(), fn); err != nil {
		s.T.Fatalf("update index: %v", err)
	}
}

// Age moves every time the index records (blob creation, link and
// manifest times) back by d, as if it had all happened that long ago. It
// goes through the index's transactions, as any backend would take it.
func (s *Store) Age(d time.Duration) {
	s.T.Helper()
	s.Update(func(tx meta.Tx) error {
		blobs := map[digest.Digest]meta.Blob{}
		if err := tx.Blobs(func(dg digest.Digest, b meta.Blob) error { blobs[dg] = b; return nil }); err != nil {
			return err
		}
		for dg, b := range blobs {
			b.Created = b.Created.Add(-d)
			if err := tx.PutBlob(dg, b); err != nil {
				return err
			}
		}
		var repos []string
		if err := tx.Repositories("", func(r string) error { repos = append(repos, r); return nil }); err != nil {
			return err
		}
		for _, repo := range repos {
			if err := ageing.Links(tx, repo, d); err != nil {
				return err
			}
			manifests := map[digest.Digest]meta.Manifest{}
			err := tx.Manifests(repo, "", func(dg digest.Digest, m meta.Manifest) error { manifests[dg] = m; return nil })
			if err != nil {
				return err
			}
			for dg, m := range manifests {
				m.Created = m.Created.Add(-d)
				if err := tx.PutManifest(repo, dg, m); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// SetPushTime sets the push time of manifest d of repo.
func (s *Store) SetPushTime(repo string, d digest.Digest, when time.Time) {
	s.T.Helper()
	s.Update(func(tx meta.Tx) error {
		m, ok, err := tx.Manifest(repo, d)
		if err != nil || !ok {
			s.T.Errorf("manifest %s of %s: %v (found %v)", d, repo, err, ok)
			return err
		}
		m.Created = when
		return tx.PutManifest(repo, d, m)
	})
}

// Parse parses a manifest body known to be valid.
func Parse(t *testing.T, body []byte) *manifest.Manifest {
	t.Helper()
	m, err := manifest.Parse("", body)
	if err != nil {
		t.Fatal(err)
	}
	return m
}
