package storage

import (
	"context"
	"crypto/rand"
	_ "crypto/sha256" // digest algorithms must be linked in
	_ "crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// Options tune a Store.
type Options struct {
	// Logger receives the store's diagnostics; nil discards them.
	Logger *slog.Logger
	// OpenTimeout bounds the wait for the index file lock held by another
	// process. Zero means one second.
	OpenTimeout time.Duration
	// FS is the file system content is written through; nil means the
	// operating system's.
	FS FS
	// Tags decides which tags are immutable; nil means none.
	Tags TagRules
	// SearchScanLimit bounds how many manifests one Search examines; zero
	// means DefaultSearchScanLimit.
	SearchScanLimit int
}

// Store is the blob store and its index. It is safe for concurrent use.
type Store struct {
	root     string
	fs       FS
	db       *bolt.DB
	log      *slog.Logger
	sessions *sessionTable
	tags     TagRules
	// searchScan bounds the manifests one Search examines.
	searchScan int
	// locks and seen are shared with garbage collection; see gc.go.
	locks *digestLocks
	seen  *seenTable
}

// Open opens (creating if needed) the store rooted at dir. It reads the index
// only; the blob tree is never scanned, so opening costs the same whatever the
// size of the store.
func Open(ctx context.Context, dir string, opts Options) (*Store, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	timeout := opts.OpenTimeout
	if timeout == 0 {
		timeout = time.Second
	}
	for _, sub := range []string{"blobs", "uploads", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o750); err != nil {
			return nil, fmt.Errorf("create store directory: %w", err)
		}
	}
	// The index's file lock makes this process the store's only user.
	db, err := bolt.Open(filepath.Join(dir, "index.db"), 0o600, &bolt.Options{Timeout: timeout})
	if err != nil {
		return nil, fmt.Errorf("open index %s: %w", filepath.Join(dir, "index.db"), err)
	}
	// Only now is it safe to clear temporary files: they belong to requests
	// that died with the last process.
	if err := clearDir(filepath.Join(dir, "tmp")); err != nil {
		_ = db.Close()
		return nil, err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		// A store from before the search index gets one built once.
		newSearch := tx.Bucket(bucketSearch) == nil
		for _, b := range [][]byte{bucketSearch, bucketMeta, bucketBlobs, bucketUploads, bucketRepos, bucketRobots, bucketRobotSecrets, bucketHistory} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return fmt.Errorf("create bucket %s: %w", b, err)
			}
		}
		if newSearch {
			if err := buildSearchIndex(tx); err != nil {
				return fmt.Errorf("build search index: %w", err)
			}
		}
		meta := tx.Bucket(bucketMeta)
		switch v := meta.Get(keySchema); {
		case v == nil:
			return meta.Put(keySchema, []byte(schemaVersion))
		case string(v) != schemaVersion:
			return fmt.Errorf("index schema version %q, this Berth reads %q", v, schemaVersion)
		}
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("initialise index: %w", err)
	}
	fsys := opts.FS
	if fsys == nil {
		fsys = osFS{}
	}
	s := &Store{root: dir, fs: fsys, db: db, log: log, sessions: newSessionTable(), tags: opts.Tags,
		searchScan: opts.SearchScanLimit, locks: &digestLocks{}, seen: newSeenTable()}
	if s.searchScan <= 0 {
		s.searchScan = DefaultSearchScanLimit
	}
	log.DebugContext(ctx, "store opened", "dir", dir)
	return s, nil
}

// Close closes the index. Callers must have stopped using the store.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close index: %w", err)
	}
	return nil
}

func clearDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("read %s: %w", dir, err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("remove stale temporary file: %w", err)
		}
	}
	return nil
}

// blobPath is where the content of d lives. d must have been validated, so
// that its encoded part is plain hex and cannot name another directory.
func (s *Store) blobPath(d digest.Digest) string {
	enc := d.Encoded()
	return filepath.Join(s.root, "blobs", string(d.Algorithm()), enc[:2], enc)
}

// newID returns a random 128-bit identifier in hex.
func newID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate identifier: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// validDigest checks that d is well formed and uses an algorithm Berth hashes.
func validDigest(d digest.Digest) error {
	if err := d.Validate(); err != nil {
		return detailf(ErrDigestMismatch, map[string]any{"digest": string(d)}, "invalid digest %q: %v", d, err)
	}
	return nil
}

// tempFile creates a file for content in flight under the store's tmp
// directory, on the same filesystem as the blobs so it can be renamed.
func (s *Store) tempFile() (File, error) {
	f, err := s.fs.CreateTemp(filepath.Join(s.root, "tmp"), "content-*")
	if err != nil {
		return nil, fmt.Errorf("create temporary file: %w", err)
	}
	return f, nil
}

// place moves a fully written, fsynced file to the path of d. If the content
// is already present it removes the file instead: content under a digest
// never changes, so the existing copy is as good.
func (s *Store) place(tmpPath string, d digest.Digest) error {
	dst := s.blobPath(d)
	dir := filepath.Dir(dst)
	if _, err := os.Stat(dst); err == nil {
		if err := s.removeFile(tmpPath); err != nil {
			return err
		}
	} else {
		if err := s.fs.MkdirAll(dir, 0o750); err != nil {
			return fmt.Errorf("create blob directory: %w", err)
		}
		if err := s.fs.Rename(tmpPath, dst); err != nil {
			return fmt.Errorf("move blob into place: %w", err)
		}
	}
	// Sync the directory even when the file was already there: an earlier
	// attempt may have renamed it and then failed to sync.
	if err := s.fs.SyncDir(dir); err != nil {
		return fmt.Errorf("sync blob directory: %w", err)
	}
	return nil
}

// removeFile removes a file; one already gone is fine.
func (s *Store) removeFile(path string) error {
	if err := s.fs.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", filepath.Base(path), err)
	}
	return nil
}

// writeContent streams r into a new temporary file, hashing it with alg.
// limit < 0 means no limit on the length; otherwise exactly limit bytes
// must be read. The file is fsynced and closed; the caller owns its path.
func (s *Store) writeContent(ctx context.Context, r io.Reader, alg digest.Algorithm, length int64) (path string, d digest.Digest, n int64, err error) {
	f, err := s.tempFile()
	if err != nil {
		return "", "", 0, err
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = s.fs.Remove(f.Name())
		}
	}()
	h := alg.Hash()
	src := r
	if length >= 0 {
		src = io.LimitReader(r, length+1)
	}
	n, err = io.Copy(io.MultiWriter(f, h), contextReader{ctx, src})
	if err != nil {
		return "", "", n, copyError("write content", n, err)
	}
	if length >= 0 && n != length {
		return "", "", n, detailf(ErrSizeInvalid, nil, "received %d bytes, expected %d", n, length)
	}
	if err = f.Sync(); err != nil {
		return "", "", n, fmt.Errorf("sync content: %w", err)
	}
	if err = f.Close(); err != nil {
		return "", "", n, fmt.Errorf("close content: %w", err)
	}
	return f.Name(), digest.NewDigest(alg, h), n, nil
}

// copyError describes a failed copy of content from a client. A body that
// ends before the length it declared is the client's error, ErrSizeInvalid,
// not a failure of the store.
func copyError(what string, n int64, err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return detailf(ErrSizeInvalid, nil, "%s: body ended after %d bytes: %v", what, n, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// contextReader stops a copy once its context is done.
type contextReader struct {
	ctx context.Context
	r   io.Reader
}

func (c contextReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

func putJSON(b *bolt.Bucket, key []byte, v any) error {
	buf, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode record: %w", err)
	}
	if err := b.Put(key, buf); err != nil {
		return fmt.Errorf("write record: %w", err)
	}
	return nil
}

// getJSON decodes the record under key in b into v, reporting whether
// there is one.
func getJSON(b *bolt.Bucket, key []byte, v any) (bool, error) {
	buf := b.Get(key)
	if buf == nil {
		return false, nil
	}
	return true, decodeJSON(key, buf, v)
}

// decodeJSON decodes the record v stored under key k, as a cursor or
// ForEach yields it.
func decodeJSON(k, v []byte, out any) error {
	if err := json.Unmarshal(v, out); err != nil {
		return fmt.Errorf("decode record %q: %w", k, err)
	}
	return nil
}

// forEachJSON calls fn with the key and decoded record of every entry of
// b, in key order. b must hold records only, no nested buckets.
func forEachJSON[T any](b *bolt.Bucket, fn func(k []byte, rec T) error) error {
	return b.ForEach(func(k, v []byte) error {
		var rec T
		if err := decodeJSON(k, v, &rec); err != nil {
			return err
		}
		return fn(k, rec)
	})
}

// repoBucket returns the repository's bucket, or nil if it does not exist.
func repoBucket(tx *bolt.Tx, repo string) *bolt.Bucket {
	return tx.Bucket(bucketRepos).Bucket([]byte(repo))
}

// ensureRepo returns the repository's bucket, creating it and its
// sub-buckets on first use.
func ensureRepo(tx *bolt.Tx, repo string) (*bolt.Bucket, error) {
	rb, err := tx.Bucket(bucketRepos).CreateBucketIfNotExists([]byte(repo))
	if err != nil {
		return nil, fmt.Errorf("create repository %s: %w", repo, err)
	}
	for _, name := range [][]byte{bucketLinks, bucketManifests, bucketTags, bucketReferrers} {
		if _, err := rb.CreateBucketIfNotExists(name); err != nil {
			return nil, fmt.Errorf("create repository %s bucket %s: %w", repo, name, err)
		}
	}
	return rb, nil
}
