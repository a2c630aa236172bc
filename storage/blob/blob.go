// Package blob declares Berth's blob store: content kept under its digest,
// knowing nothing of repositories, and content in flight (staged) until its
// writer, having verified its digest, commits it under that digest.
//
// It is one of the two seams of the storage layer; the other, package meta,
// is the index that says which content exists and who uses it. Backends
// implement Store (storage/blob/fs keeps files). Content under a digest
// never changes, so a commit of content that is already present only drops
// the staged copy.
//
// The write discipline the storage core relies on: Commit makes the
// content durable and visible before it returns, and the core records it
// in the index only afterwards; content without a record is invisible and
// harmless (fsck reports and removes it).
package blob

import (
	"context"
	"errors"
	"hash"
	"io"
	"time"

	"github.com/opencontainers/go-digest"
)

// ErrNotFound means the store has no such content or staged session.
var ErrNotFound = errors.New("blob not found")

// ErrUnavailable means the store cannot serve the request now but may
// later: it is throttled, failing or out of reach. Callers answer with a
// retry later (the API with 503 and Retry-After), never as if content were
// missing.
var ErrUnavailable = errors.New("blob store unavailable")

// ErrSizeMismatch means an append did not carry the number of bytes its
// caller said it would.
var ErrSizeMismatch = errors.New("content length differs from the length declared")

// Store is a blob store backend. It is safe for concurrent use; callers
// serialise the operations on one staged session, and a Delete (or
// Quarantine) with the other operations on its digest. Commits of one
// digest from several staged contents may run at once: each succeeds, and
// one copy remains.
type Store interface {
	// Stat returns the size of the content of d, or ErrNotFound.
	Stat(ctx context.Context, d digest.Digest) (int64, error)
	// Open opens the content of d for reading, or fails with ErrNotFound.
	// A file backend returns an *os.File, which net/http serves with
	// sendfile.
	Open(ctx context.Context, d digest.Digest) (io.ReadSeekCloser, error)
	// Delete removes the content of d; content already gone is fine.
	Delete(ctx context.Context, d digest.Digest) error
	// Walk calls fn for every object of the committed area, including
	// objects whose names are not a blob's.
	Walk(ctx context.Context, fn func(Entry) error) error

	// Put makes content whose digest the caller knows and has verified
	// durable and visible under d in one step, as Stage, Append and
	// Commit would: for small content known before it is written, such as
	// a manifest. r must carry exactly want bytes, or Put fails with
	// ErrSizeMismatch and leaves nothing. Content already present is not
	// written again.
	Put(ctx context.Context, d digest.Digest, r io.Reader, want int64) error

	// Stage begins content in flight: an upload session named id, which
	// Resume can reopen until it is committed or cancelled, or with id
	// empty, anonymous content that only the returned Staged reaches.
	// Stage of an id whose session exists fails and leaves it as it is.
	Stage(ctx context.Context, id string) (Staged, error)
	// Resume reopens upload session id, or fails with ErrNotFound.
	Resume(ctx context.Context, id string) (Staged, error)
	// WalkStaged calls fn for every upload session's content in flight,
	// with Entry.Name the session id.
	WalkStaged(ctx context.Context, fn func(Entry) error) error
}

// Staged is content in flight. It holds no resources between calls. Once
// its content is committed or cancelled, Size, LastWrite, Reader and
// Append report ErrNotFound.
type Staged interface {
	// Size is the number of bytes staged so far.
	Size(ctx context.Context) (int64, error)
	// LastWrite is when bytes were last appended (or the session began),
	// counting the bytes of an append still in progress, in this process
	// or another, at least each time it has written a part of a backend's
	// choosing (fs: every write; s3: every piece), so that expiry of idle
	// sessions never ends one that is receiving bytes.
	LastWrite(ctx context.Context) (time.Time, error)
	// Append copies r to the end of the content, writing every byte to h
	// as well when h is not nil. With want >= 0, r must carry exactly want
	// bytes, or the append fails with ErrSizeMismatch. A failed append
	// changes nothing: neither the content nor the state of h (which must
	// then implement encoding.BinaryMarshaler and BinaryUnmarshaler, as
	// the standard library's hashes do), and the count it returns is 0.
	Append(ctx context.Context, r io.Reader, want int64, h hash.Hash) (int64, error)
	// Reader reads back the content staged so far.
	Reader(ctx context.Context) (io.ReadCloser, error)
	// Commit makes the content durable and visible under d, which the
	// caller has verified, and ends the session. If the store holds d
	// already, the staged copy is dropped.
	Commit(ctx context.Context, d digest.Digest) error
	// Cancel ends the session and removes what it staged. Cancelling
	// what was committed or cancelled already does nothing.
	Cancel(ctx context.Context) error
}

// Entry is one object of a store, as Walk and WalkStaged see it.
type Entry struct {
	// Name is the backend's name for the object (a path relative to the
	// store's root, an object key), for reports; for staged content, the
	// session id.
	Name string
	// Digest is the blob the object holds, or empty when its name is not
	// a blob's.
	Digest digest.Digest
	// Size is the object's length in bytes.
	Size int64
	// Irregular, when set, says why the object is not a regular file.
	// Such objects are never opened or removed.
	Irregular string
}

// Redirector is implemented by stores whose content clients may fetch
// directly, such as object stores with pre-signed URLs.
type Redirector interface {
	// RedirectURL returns a URL from which d can be read for a while.
	RedirectURL(ctx context.Context, d digest.Digest) (string, error)
}

// HashStater is implemented by staged content that keeps, with the
// content, the state of the hash its appends were given, so that a process
// that has not seen an upload session goes on hashing it without reading
// its content back.
type HashStater interface {
	// HashState returns the size of the content staged and the state
	// (encoding.BinaryMarshaler) of the hash the last append was given,
	// after it; the state is empty when that append was given none.
	HashState(ctx context.Context) (int64, []byte, error)
}

// Quarantiner is implemented by stores that can set corrupt content aside
// instead of deleting it.
type Quarantiner interface {
	// Quarantine moves the content of d out of the committed area and
	// returns where it went; "" if there was nothing to move.
	Quarantine(ctx context.Context, d digest.Digest) (string, error)
}

// Sweeper is implemented by stores that can remove objects Walk reports
// without a digest (stray files).
type Sweeper interface {
	// Sweep removes the object named name, as Walk named it.
	Sweep(ctx context.Context, name string) error
}
