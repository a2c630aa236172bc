// Package storage is the core of Berth's store: the rules of the registry,
// written once, over two seams that backends implement.
//
// The seams are package meta, the index (which content exists, which
// repository holds it, tags and their history, upload sessions), and
// package blob, the bytes under their digests. Service, the core, imports
// those interfaces and never a backend; package registry picks the
// backends (storage/meta/bolt and storage/blob/fs on one machine).
//
// The rules the core keeps, each where it is written:
//
//   - Content before records (blobs.go, manifests.go): content is verified
//     and made durable in the blob store before the transaction that
//     records it; a crash in between leaves content without a record,
//     which is invisible and harmless.
//   - References (manifests.go): a manifest is recorded only if the
//     repository holds every blob and child manifest it references, with
//     the sizes its descriptors give, checked inside the transaction that
//     records it. The one exception is explicit: the pull-through cache's
//     copy of an upstream's manifest (PutOptions.Upstream) may reference
//     content not fetched yet, pending from that upstream; a cache record
//     says so, and what it does hold is checked as for a push.
//   - Fills (fill.go): content arriving from elsewhere is staged, hashed as
//     it arrives, readable while it is written, and visible only once its
//     digest is verified, through the same commit as an upload's.
//   - Tags (tags.go): every tag change goes through Tx.MoveTag, which
//     refuses to move an immutable tag and appends the move to the tag's
//     history in the same transaction.
//   - Promotion (promote.go), the upload protocol (uploads.go) and search
//     semantics (search.go).
//   - Events (events.go): one Event per change, published to the sinks
//     after the transaction that made it commits, never for a refused or
//     rolled-back write; with an Outbox, the deliveries of those events to
//     webhook endpoints are written into the index in that transaction.
//
// Locking is narrow. A digest's lock (meta.Store.LockDigests, which locks
// across every replica sharing the index) is held from placing its content
// to recording it, and by garbage collection from re-checking a candidate
// to removing its content, so that collection never removes content a
// concurrent commit has just placed; the order is always digest locks,
// then a transaction. Reads take no lock: a blob lookup records in the
// index, at most once per refresh period, that it found the link (seen.go),
// and garbage collection re-checks that record in the transaction that
// would remove the link.
//
// Several replicas (processes, each with its own Service) may share one
// index and one blob store. Nothing a replica must share lives in its
// memory: seen records, upload sessions (uploads.go: the staged content
// and its size are the truth, the cache of a session's running hash is
// checked against them) and digest locks are all in the backends. What a
// Service keeps in memory (that cache, the options) only saves work.
//
// Maintenance jobs are clients of the core, in packages of their own:
// storage/gc, storage/retention and storage/fsck. They change the index
// through Service.Update, whose Tx carries the same rules.
package storage
