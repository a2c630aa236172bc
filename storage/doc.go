// Package storage owns Berth's content: a content-addressed blob store on
// disk, indexed by a bbolt database.
//
// Every blob and manifest is kept exactly once, under its digest, in a file
// below <data>/blobs; what a repository can see (its blob links, manifests,
// tags and referrers) and the state of upload sessions live in the bbolt
// index at <data>/index.db. The layout of that index is documented in
// schema.go.
//
// Writes follow one discipline so that a crash at any moment leaves the store
// consistent: content is streamed to a temporary file while it is hashed, the
// digest is verified, the file is fsynced and renamed into place, and only
// then is the index updated in a single bbolt transaction. A blob file whose
// index entry was never committed is invisible to readers and harmless.
//
// Locking is narrow: an upload session is serialised by its own lock, and the
// index transactions of bbolt order concurrent commits. A digest's stripe
// lock is held from placing its file to recording it, so that online garbage
// collection (gc.go) cannot remove the file in between; the order is always
// stripe, then bbolt transaction. There is no lock over the whole store.
package storage
