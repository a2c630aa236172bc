package postgres

// The PostgreSQL index schema: migrations/*.sql create it, Migrate applies
// them in order (each in its own transaction, recorded in
// schema_migrations) under a session advisory lock.
//
// Every key is text in the "C" collation, so that it sorts by its bytes:
// repositories, tags, digests and the search results page in the same
// order as the embedded index's, and a page is an index range scan from
// its cursor ("n rows after last"), whose cost is proportional to the page.
// Records are json (not jsonb, which refuses a \u0000 that an annotation
// may hold) in the encodings of the embedded index, so that times keep
// their nanoseconds and a record can grow a field without a migration.
// Keys hold no NUL byte and are UTF-8 (PostgreSQL's text cannot hold
// anything else): writes refuse such keys with ErrInvalidKey, and lookups
// of them find nothing.
//
//	blobs (digest) rec                  content present in the blob store
//	repositories (name)                 from the first link or manifest
//	links (repo → repositories, digest) rec {linked, seen}
//	manifests (repo → repositories, digest) rec, subject
//	manifest_refs (repo, manifest → manifests ON DELETE CASCADE, ref)
//	search_pairs (kind, key, value, repo, digest → manifests ON DELETE CASCADE)
//	tags (repo → repositories, tag) digest
//	tag_histories (repo, tag) last_seq;  tag_moves (repo, tag → tag_histories, seq) rec
//	uploads (id) rec
//	robots (name) rec, hash (UNIQUE)
//	pulls (repo, digest, actor_kind, actor_name) rec
//	cached_manifests (repo, digest) rec;  tag_checks (repo, tag) rec
//	synced_tags (rule, repo, tag) rec;  sync_runs (rule) rec
//	outbox_keys (endpoint, key);  deliveries (endpoint, key → outbox_keys, seq) rec
//	dead_letters (seq) rec;  delivery_seq (sequence)
//
// # What the database enforces
//
//   - A repository cannot be deleted while it holds a link, a manifest or
//     a tag (foreign keys, ON DELETE RESTRICT); DeleteRepository deletes
//     only an empty one.
//   - A link, a manifest and a tag belong to an existing repository
//     (foreign keys); PutLink and PutManifest create it, SetTag refuses a
//     repository that does not exist.
//   - A tag may name a digest the repository does not hold: the meta
//     contract lets the core order its writes, and fsck reports a dangling
//     tag. No foreign key from tags to manifests, therefore.
//   - The referrers of a subject are the manifests whose subject column
//     names it, an index range. PutManifest writes the column with the
//     record; Check reports and repairs one that differs from the record's
//     subject. (A generated column would be the database's to keep, but
//     json operators refuse a record whose annotations hold a \u0000.)
//     Which tags name a digest is an index on tags: it cannot fall out of
//     step.
//   - One secret hash names one robot: the hash is a column of the robot's
//     row, not of its record, and unique. RobotBySecret is an index
//     lookup.
//   - Derived rows (manifest_refs, search_pairs) die with their manifest
//     (ON DELETE CASCADE), and cannot name a manifest that does not exist.
//     PutManifest writes them from the record in its statement batch;
//     Check reports and repairs rows missing or stale against the record.
//   - History, pulls, cache and replication records refer to nothing and
//     outlive what they name, as the meta contract says.
//   - Moves of one tag are numbered by the tag_histories row, which each
//     append updates: concurrent appends serialise on it. Deliveries are
//     numbered by delivery_seq after the append has locked its endpoint
//     and key's outbox_keys row, which it holds until it commits: the
//     deliveries of one endpoint and key are numbered in commit order.
//
// # Invariants the storage core keeps
//
// As with every backend (see storage/meta/bolt/schema.go): a link or
// manifest has a blob record, a tag names a manifest of its repository,
// every change of a tag appends one move, and garbage collection never
// deletes what a committed manifest references. Update's SERIALIZABLE
// isolation is what keeps the last one true with several replicas: a
// manifest push that reads the links it references and a collection that
// reads that nothing uses a blob before deleting it cannot both commit.

import (
	"time"
)

// The records are in the JSON of the embedded index (package record), but
// for robots, whose secret's hash is a column of their own.

// robotRecord is a robot's record; its secret's hash is a column of its
// own, which the database keeps unique.
type robotRecord struct {
	Scopes  []string   `json:"scopes"`
	Created time.Time  `json:"created"`
	Expires time.Time  `json:"expires"`
	Revoked *time.Time `json:"revoked,omitempty"`
	Rotated *time.Time `json:"rotated,omitempty"`
}

// maxIndexedPair bounds the length of an annotation or label (key and
// value together) that search_pairs holds, as in the embedded index: it
// keeps a row of the primary key's btree far below its page limit.
const maxIndexedPair = 1024

// indexed reports whether search_pairs holds the pair k=v.
func indexed(k, v string) bool {
	return len(k)+len(v) <= maxIndexedPair && storable(k, v)
}
