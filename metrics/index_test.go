package metrics_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/metrics"
	"github.com/berth-registry/berth/storage"
	blobfs "github.com/berth-registry/berth/storage/blob/fs"
	"github.com/berth-registry/berth/storage/gc"
	"github.com/berth-registry/berth/storage/manifest"
	"github.com/berth-registry/berth/storage/meta"
	"github.com/berth-registry/berth/storage/meta/bolt"
)

// gauges reads the store gauges of m.
func gauges(t *testing.T, m *metrics.Metrics) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, name := range []string{"berth_store_blobs", "berth_store_blob_bytes", "berth_store_manifests",
		"berth_store_manifest_bytes", "berth_upload_sessions"} {
		mfs, err := m.Gatherer().Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == name {
				out[name] = mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
	}
	return out
}

// TestIndexGaugesMatchAWalk: through a random workload of pushes, re-pushes,
// deletes, uploads opened and cancelled and garbage collections, with
// transactions the index runs twice, the gauges the decorator moves always
// equal what a fresh walk of the index counts.
func TestIndexGaugesMatchAWalk(t *testing.T) {
	dir := t.TempDir()
	index, err := bolt.Open(filepath.Join(dir, "index.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = index.Close() })
	blobs, err := blobfs.Open(context.Background(), dir, blobfs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New(metrics.Options{})
	ctx := context.Background()
	if err := m.Count(ctx, index); err != nil {
		t.Fatal(err)
	}
	svc := storage.New(m.Index(twice{index}), blobs, storage.Options{})
	r := rand.New(rand.NewPCG(1, 2))
	var pushed []struct {
		repo string
		d    digest.Digest
	}
	var uploads []struct{ repo, id string }
	for step := range 150 {
		repo := fmt.Sprintf("r%d", r.IntN(3))
		switch op := r.IntN(10); {
		case op < 5:
			seed := r.IntN(20) // some images pushed again, to other repositories too
			d := pushImage(t, svc, repo, seed, fmt.Sprint("t", r.IntN(4)))
			pushed = append(pushed, struct {
				repo string
				d    digest.Digest
			}{repo, d})
		case op < 7 && len(pushed) > 0:
			p := pushed[r.IntN(len(pushed))]
			_ = svc.DeleteManifest(ctx, p.repo, p.d) // perhaps deleted already
		case op < 8:
			up, err := svc.StartUpload(ctx, repo, "")
			if err != nil {
				t.Fatal(err)
			}
			uploads = append(uploads, struct{ repo, id string }{repo, up.ID})
		case op < 9 && len(uploads) > 0:
			u := uploads[0]
			uploads = uploads[1:]
			if err := svc.CancelUpload(ctx, u.repo, u.id); err != nil {
				t.Fatal(err)
			}
		default:
			if _, err := gc.Collect(ctx, svc, gc.Options{Grace: 0, Now: time.Now().Add(time.Minute)}); err != nil {
				t.Fatal(err)
			}
		}
		fresh := metrics.New(metrics.Options{})
		if err := fresh.Count(ctx, index); err != nil {
			t.Fatal(err)
		}
		got, want := gauges(t, m), gauges(t, fresh)
		for k, v := range want {
			if got[k] != v {
				t.Fatalf("step %d: %s = %v as kept, %v as counted", step, k, got[k], v)
			}
		}
	}
	if g := gauges(t, m); g["berth_store_blobs"] == 0 || g["berth_store_manifests"] == 0 {
		t.Errorf("the workload left nothing to count: %v", g)
	}
	// Transactions are timed, by kind.
	mfs, err := m.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	timed := map[string]uint64{}
	for _, mf := range mfs {
		if mf.GetName() == "berth_index_transaction_duration_seconds" {
			for _, s := range mf.GetMetric() {
				timed[s.GetLabel()[0].GetValue()] = s.GetHistogram().GetSampleCount()
			}
		}
	}
	if timed["update"] == 0 || timed["view"] == 0 {
		t.Errorf("transactions timed: %v", timed)
	}
}

// twice is an index whose Update runs each function twice, first in a
// transaction it rolls back, as a backend may.
type twice struct{ meta.Store }

var errAgain = fmt.Errorf("run it again")

func (s twice) Update(ctx context.Context, fn func(meta.Tx) error) error {
	err := s.Store.Update(ctx, func(tx meta.Tx) error {
		if err := fn(tx); err != nil {
			return err
		}
		return errAgain
	})
	if err != errAgain {
		return err
	}
	return s.Store.Update(ctx, fn)
}

// pushImage pushes an image made from seed into repo under tag.
func pushImage(t *testing.T, svc *storage.Service, repo string, seed int, tag string) digest.Digest {
	t.Helper()
	ctx := context.Background()
	put := func(b []byte, mt string) ocispec.Descriptor {
		d := digest.FromBytes(b)
		if _, err := svc.PutBlob(ctx, repo, d, bytes.NewReader(b), int64(len(b))); err != nil {
			t.Fatal(err)
		}
		return ocispec.Descriptor{MediaType: mt, Digest: d, Size: int64(len(b))}
	}
	cfg := put([]byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","seed":%d}`, seed)), ocispec.MediaTypeImageConfig)
	layer := put(bytes.Repeat([]byte{byte(seed)}, 100+seed), ocispec.MediaTypeImageLayer)
	mf := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: cfg, Layers: []ocispec.Descriptor{layer}}
	mf.SchemaVersion = 2
	body, err := json.Marshal(mf)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := manifest.Parse(ocispec.MediaTypeImageManifest, body)
	if err != nil {
		t.Fatal(err)
	}
	d, err := svc.PutManifest(ctx, repo, "", body, parsed, []string{tag})
	if err != nil {
		t.Fatal(err)
	}
	return d
}
