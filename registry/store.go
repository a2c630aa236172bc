package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/blob"
	blobfs "github.com/berth-registry/berth/storage/blob/fs"
	blobs3 "github.com/berth-registry/berth/storage/blob/s3"
	"github.com/berth-registry/berth/storage/meta"
	"github.com/berth-registry/berth/storage/meta/bolt"
	"github.com/berth-registry/berth/storage/meta/postgres"
)

// Store is a data directory opened: the index, the blob store and the
// storage core over them. This is the one place that picks the backends.
type Store struct {
	*storage.Service
	// Index and Blobs are the backends, for the clients of the core that
	// need them (fsck, robot credentials).
	Index meta.Store
	Blobs blob.Store
}

// StoreOptions tune OpenStore.
type StoreOptions struct {
	// Logger receives the store's diagnostics; nil discards them.
	Logger *slog.Logger
	// Timeout bounds the wait for the index held by another process;
	// zero means one second.
	Timeout time.Duration
	// Offline opens only an existing store, for a tool such as fsck: it
	// never creates one.
	Offline bool
	// Core tunes the storage core (tag rules, search limit, sinks).
	Core storage.Options
	// Storage picks the backends; its zero value is the files under the
	// data directory.
	Storage StorageConfig
	// Decorate, when set, wraps the index the storage core uses (the
	// metrics count its changes); Store.Index stays the backend itself.
	Decorate func(meta.Store) meta.Store
}

// ErrInUse means another process, normally a running server, holds the
// store's index.
var ErrInUse = bolt.ErrInUse

// OpenStore opens (creating it unless opts.Offline) the store in dir: the
// index, then the blob store. The index is the bbolt file dir/index.db,
// which locks the directory against other processes, or the PostgreSQL
// database of opts.Storage.Index.Postgres, which must be reachable and
// whose schema it migrates (unless opts.Offline: then the schema must be
// current). The blob store is the files under dir, or the bucket of
// opts.Storage.Blobs.S3, which must be reachable.
func OpenStore(ctx context.Context, dir string, opts StoreOptions) (*Store, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.Storage.Index.Postgres != nil {
		return openShared(ctx, dir, opts, log)
	}
	path := filepath.Join(dir, "index.db")
	if opts.Offline {
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("no Berth store in %s: %w", dir, err)
		}
	} else if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	timeout := opts.Timeout
	if timeout == 0 {
		timeout = time.Second
	}
	index, err := bolt.Open(path, bolt.Options{Timeout: timeout, Logger: log})
	if err != nil {
		return nil, err
	}
	// Only now, holding the index's lock, may the blob store clear what
	// requests of a dead process left in flight.
	blobs, err := openBlobs(ctx, dir, opts.Storage.Blobs, log)
	if err != nil {
		return nil, errors.Join(err, index.Close())
	}
	log.DebugContext(ctx, "store opened", "dir", dir)
	return newStore(index, blobs, opts, log), nil
}

// openShared opens the store whose index is in PostgreSQL. Its blobs are
// the files under dir (one machine) or a bucket (several replicas).
func openShared(ctx context.Context, dir string, opts StoreOptions, log *slog.Logger) (*Store, error) {
	if opts.Storage.Blobs.S3 == nil {
		if opts.Offline {
			if _, err := os.Stat(dir); err != nil {
				return nil, fmt.Errorf("no Berth store in %s: %w", dir, err)
			}
		} else if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("create data directory: %w", err)
		}
	}
	index, err := postgres.Open(ctx, opts.Storage.Index.Postgres.DSN, postgres.Options{Logger: log, NoMigrate: opts.Offline})
	if err != nil {
		return nil, fmt.Errorf("open the index in PostgreSQL: %w", err)
	}
	blobs, err := openBlobs(ctx, dir, opts.Storage.Blobs, log)
	if err != nil {
		return nil, errors.Join(err, index.Close())
	}
	log.DebugContext(ctx, "store opened", "dir", dir, "index", "postgres")
	return newStore(index, blobs, opts, log), nil
}

// newStore is the storage core over index and blobs.
func newStore(index meta.Store, blobs blob.Store, opts StoreOptions, log *slog.Logger) *Store {
	core := opts.Core
	if core.Logger == nil {
		core.Logger = log
	}
	var coreIndex meta.Store = index
	if opts.Decorate != nil {
		coreIndex = opts.Decorate(index)
	}
	return &Store{Service: storage.New(coreIndex, blobs, core), Index: index, Blobs: blobs}
}

// openBlobs opens the blob store c names: the files under dir, or a bucket.
func openBlobs(ctx context.Context, dir string, c BlobsConfig, log *slog.Logger) (blob.Store, error) {
	if c.S3 == nil {
		return blobfs.Open(ctx, dir, blobfs.Options{Logger: log})
	}
	s, err := blobs3.Open(ctx, blobs3.Options{Endpoint: c.S3.Endpoint, Region: c.S3.Region, Bucket: c.S3.Bucket,
		Prefix: c.S3.Prefix, AccessKey: c.S3.AccessKey, SecretKey: c.S3.SecretKey, ForcePathStyle: c.S3.ForcePathStyle,
		Logger: log})
	if err != nil {
		return nil, err
	}
	if c.S3.Redirect {
		return blobs3.Redirecting{Store: s}, nil
	}
	return s, nil
}

// Close closes the index. Callers must have stopped using the store.
func (s *Store) Close() error {
	if err := s.Index.Close(); err != nil {
		return fmt.Errorf("close index: %w", err)
	}
	return nil
}
