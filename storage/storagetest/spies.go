package storagetest

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/blob"
	"github.com/berth-registry/berth/storage/meta"
)

// spyIndex is a meta.Store that passes everything to the backend's and
// watches the core use it: it counts the walks of every tag of a
// repository (Tx.Tags) and calls hooks at the start of every run of an
// Update's function and at every Tx.PutManifest.
type spyIndex struct {
	meta.Store
	tagWalks atomic.Int64

	mu sync.Mutex
	// updateStarts, if set, is called before each run of an Update's
	// function, outside the caller's function but inside the transaction.
	updateStarts func()
	// putManifest, if set, is called at each Tx.PutManifest, before it.
	putManifest func(repo string, d digest.Digest)
}

func (s *spyIndex) hooks() (func(), func(string, digest.Digest)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.updateStarts, s.putManifest
}

// setHooks sets both hooks.
func (s *spyIndex) setHooks(updateStarts func(), putManifest func(repo string, d digest.Digest)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.updateStarts, s.putManifest = updateStarts, putManifest
}

func (s *spyIndex) View(ctx context.Context, fn func(meta.Tx) error) error {
	return s.Store.View(ctx, func(tx meta.Tx) error { return fn(&spyTx{Tx: tx, spy: s}) })
}

func (s *spyIndex) Update(ctx context.Context, fn func(meta.Tx) error) error {
	return s.Store.Update(ctx, func(tx meta.Tx) error {
		if starts, _ := s.hooks(); starts != nil {
			starts()
		}
		return fn(&spyTx{Tx: tx, spy: s})
	})
}

// spyTx is a transaction of a spyIndex.
type spyTx struct {
	meta.Tx
	spy *spyIndex
}

func (tx *spyTx) Tags(repo, after string, fn func(tag string, d digest.Digest) error) error {
	tx.spy.tagWalks.Add(1)
	return tx.Tx.Tags(repo, after, fn)
}

func (tx *spyTx) PutManifest(repo string, d digest.Digest, m meta.Manifest) error {
	if _, put := tx.spy.hooks(); put != nil {
		put(repo, d)
	}
	return tx.Tx.PutManifest(repo, d, m)
}

// errRetry rolls back the first run of a retryingIndex's transactions.
var errRetry = errors.New("storagetest: roll back, to run the function again")

// retryingIndex is a meta.Store whose Update runs every function twice,
// as a backend may (a serialisation conflict, a group commit that
// failed): first in a transaction it rolls back, then in one it commits.
type retryingIndex struct{ meta.Store }

func (s retryingIndex) Update(ctx context.Context, fn func(meta.Tx) error) error {
	err := s.Store.Update(ctx, func(tx meta.Tx) error {
		if err := fn(tx); err != nil {
			return err
		}
		return errRetry
	})
	if !errors.Is(err, errRetry) {
		return err
	}
	return s.Store.Update(ctx, fn)
}

// spyBlobs is a blob.Store that passes everything to the backend's and
// counts the content the core writes (Stage or Put).
type spyBlobs struct {
	blob.Store
	stages atomic.Int64
}

func (s *spyBlobs) Stage(ctx context.Context, id string) (blob.Staged, error) {
	s.stages.Add(1)
	return s.Store.Stage(ctx, id)
}

// Put counts as staging: it writes content as Stage, Append and Commit do.
func (s *spyBlobs) Put(ctx context.Context, d digest.Digest, r io.Reader, want int64) error {
	s.stages.Add(1)
	return s.Store.Put(ctx, d, r, want)
}
