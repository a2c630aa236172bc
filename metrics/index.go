package metrics

import (
	"context"
	"fmt"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/meta"
)

// Index returns s, decorated: its transactions are timed, and the changes
// of blob, manifest and upload session records an Update commits move the
// store gauges. Call Count once, before the store is used, to start the
// gauges from what the index holds. Only the changes made through the
// returned store are seen: the storage core must be given it, and nothing
// else may change those records while the server runs (the index of one
// server is its own; a shared index would need each replica to recount).
func (m *Metrics) Index(s meta.Store) meta.Store { return &index{Store: s, m: m} }

// Unwrap returns the index the metrics wrap, whose optional methods its
// users may look for (see storage).
func (s *index) Unwrap() meta.Store { return s.Store }

// Count sets the store gauges from one walk of the index in one snapshot:
// every blob record, every repository's manifests, every upload session.
// It costs one read of those records; the server does it once, at start,
// before it serves.
func (m *Metrics) Count(ctx context.Context, s meta.Store) error {
	var c counts
	err := s.View(ctx, func(tx meta.Tx) error {
		c = counts{}
		if err := tx.Blobs(func(_ digest.Digest, b meta.Blob) error {
			c.blobs++
			c.blobBytes += b.Size
			return nil
		}); err != nil {
			return err
		}
		var repos []string
		if err := tx.Repositories("", func(repo string) error {
			repos = append(repos, repo)
			return nil
		}); err != nil {
			return err
		}
		for _, repo := range repos {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := tx.Manifests(repo, "", func(_ digest.Digest, mf meta.Manifest) error {
				c.manifests++
				c.manifestBytes += mf.Size
				return nil
			}); err != nil {
				return err
			}
		}
		return tx.Uploads(func(string, meta.Upload) error {
			c.uploads++
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("count the store for its metrics: %w", err)
	}
	m.blobs.Set(float64(c.blobs))
	m.blobBytes.Set(float64(c.blobBytes))
	m.manifests.Set(float64(c.manifests))
	m.manifestBytes.Set(float64(c.manifestBytes))
	m.uploads.Set(float64(c.uploads))
	return nil
}

// counts are record counts, or changes of them.
type counts struct {
	blobs, blobBytes, manifests, manifestBytes, uploads int64
}

// apply moves the gauges by c.
func (m *Metrics) apply(c counts) {
	if c == (counts{}) {
		return
	}
	m.blobs.Add(float64(c.blobs))
	m.blobBytes.Add(float64(c.blobBytes))
	m.manifests.Add(float64(c.manifests))
	m.manifestBytes.Add(float64(c.manifestBytes))
	m.uploads.Add(float64(c.uploads))
}

// index is the decorated meta.Store.
type index struct {
	meta.Store
	m *Metrics
}

func (s *index) View(ctx context.Context, fn func(meta.Tx) error) error {
	start := time.Now()
	defer func() { s.m.txDuration.WithLabelValues("view").Observe(time.Since(start).Seconds()) }()
	return s.Store.View(ctx, fn)
}

// Update counts the changes of the run of fn that committed: each run
// starts from zero, and the gauges move only once Update has returned nil.
func (s *index) Update(ctx context.Context, fn func(meta.Tx) error) error {
	start := time.Now()
	var delta counts
	err := s.Store.Update(ctx, func(tx meta.Tx) error {
		delta = counts{}
		return fn(&countingTx{Tx: tx, c: &delta})
	})
	s.m.txDuration.WithLabelValues("update").Observe(time.Since(start).Seconds())
	if err == nil {
		s.m.apply(delta)
	}
	return err
}

// countingTx counts the records its changes add and remove, reading each
// record before changing it.
type countingTx struct {
	meta.Tx
	c *counts
}

// prefetcher is implemented by index transactions that read ahead (see
// meta.Prefetch).
type prefetcher interface {
	Prefetch(p meta.Prefetch) error
}

// Prefetch passes p on to the wrapped transaction if it reads ahead; the
// counting reads then cost nothing more.
func (tx *countingTx) Prefetch(p meta.Prefetch) error {
	if pf, ok := tx.Tx.(prefetcher); ok {
		return pf.Prefetch(p)
	}
	return nil
}

func (tx *countingTx) PutBlob(d digest.Digest, b meta.Blob) error {
	old, had, err := tx.Blob(d)
	if err != nil {
		return err
	}
	if err := tx.Tx.PutBlob(d, b); err != nil {
		return err
	}
	if had {
		tx.c.blobBytes += b.Size - old.Size
	} else {
		tx.c.blobs++
		tx.c.blobBytes += b.Size
	}
	return nil
}

func (tx *countingTx) DeleteBlob(d digest.Digest) error {
	old, had, err := tx.Blob(d)
	if err != nil {
		return err
	}
	if err := tx.Tx.DeleteBlob(d); err != nil {
		return err
	}
	if had {
		tx.c.blobs--
		tx.c.blobBytes -= old.Size
	}
	return nil
}

func (tx *countingTx) PutManifest(repo string, d digest.Digest, mf meta.Manifest) error {
	old, had, err := tx.Manifest(repo, d)
	if err != nil {
		return err
	}
	if err := tx.Tx.PutManifest(repo, d, mf); err != nil {
		return err
	}
	if had {
		tx.c.manifestBytes += mf.Size - old.Size
	} else {
		tx.c.manifests++
		tx.c.manifestBytes += mf.Size
	}
	return nil
}

func (tx *countingTx) DeleteManifest(repo string, d digest.Digest) error {
	old, had, err := tx.Manifest(repo, d)
	if err != nil {
		return err
	}
	if err := tx.Tx.DeleteManifest(repo, d); err != nil {
		return err
	}
	if had {
		tx.c.manifests--
		tx.c.manifestBytes -= old.Size
	}
	return nil
}

func (tx *countingTx) PutUpload(id string, u meta.Upload) error {
	_, had, err := tx.Upload(id)
	if err != nil {
		return err
	}
	if err := tx.Tx.PutUpload(id, u); err != nil {
		return err
	}
	if !had {
		tx.c.uploads++
	}
	return nil
}

func (tx *countingTx) DeleteUpload(id string) error {
	_, had, err := tx.Upload(id)
	if err != nil {
		return err
	}
	if err := tx.Tx.DeleteUpload(id); err != nil {
		return err
	}
	if had {
		tx.c.uploads--
	}
	return nil
}
