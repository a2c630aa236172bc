package replication_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/distribution"
	"github.com/berth-registry/berth/remote"
	"github.com/berth-registry/berth/replication"
	"github.com/berth-registry/berth/storage"
	blobfs "github.com/berth-registry/berth/storage/blob/fs"
	"github.com/berth-registry/berth/storage/manifest"
	"github.com/berth-registry/berth/storage/meta/bolt"
)

// openCore opens a store over bolt and fs in dir, closed when the test
// ends.
func openCore(t *testing.T, dir string) (*bolt.Store, *blobfs.Store) {
	t.Helper()
	index, err := bolt.Open(filepath.Join(dir, "index.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = index.Close() })
	blobs, err := blobfs.Open(context.Background(), dir, blobfs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return index, blobs
}

// TestPushRuleDeliversChangesOfOtherReplicas: a push rule hears the
// events of its own process only; what is pushed through another replica
// sharing the index reaches the remote by the rule's periodic rescan.
func TestPushRuleDeliversChangesOfOtherReplicas(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	remoteIndex, remoteBlobs := openCore(t, t.TempDir())
	remoteSvc := storage.New(remoteIndex, remoteBlobs, storage.Options{})
	srv := httptest.NewServer(distribution.New(remoteSvc, distribution.Options{}).Handler())
	defer srv.Close()

	rep, err := replication.New(replication.Config{Rules: []replication.RuleConfig{{
		Name: "out", Direction: replication.Push, Remote: remote.Config{URL: srv.URL}, Repositories: []string{"apps/**"},
	}}}, replication.Options{Rescan: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	index, blobs := openCore(t, t.TempDir())
	withRule := storage.New(index, blobs, storage.Options{Sinks: []storage.Sink{rep}})
	rep.Bind(withRule)
	other := storage.New(index, blobs, storage.Options{}) // another replica's core
	served := make(chan struct{})
	go func() {
		defer close(served)
		rep.Serve(ctx)
	}()
	defer func() { cancel(); <-served }()

	put := func(mediaType string, b []byte) ocispec.Descriptor {
		d := digest.FromBytes(b)
		if _, err := other.PutBlob(ctx, "apps/web", d, bytes.NewReader(b), int64(len(b))); err != nil {
			t.Fatal(err)
		}
		return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(b))}
	}
	body, err := json.Marshal(ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		Config: put(ocispec.MediaTypeImageConfig, []byte(`{"architecture":"amd64","os":"linux"}`)),
		Layers: []ocispec.Descriptor{put(ocispec.MediaTypeImageLayer, []byte("a layer pushed through another replica"))},
	})
	if err != nil {
		t.Fatal(err)
	}
	m, err := manifest.Parse("", body)
	if err != nil {
		t.Fatal(err)
	}
	d, err := other.PutManifest(ctx, "apps/web", "", body, m, []string{"v1"})
	if err != nil {
		t.Fatal(err)
	}
	// Bounded wait for the rescan's delivery, not a measure of its speed.
	deadline := time.Now().Add(30 * time.Second)
	for {
		info, err := remoteSvc.StatManifest(ctx, "apps/web", "v1")
		if err == nil {
			if info.Digest != d {
				t.Fatalf("the remote's v1 is %s, want %s", info.Digest, d)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("v1, pushed through another replica, not delivered within 30s: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
