package storage

// The bbolt index schema.
//
// All keys and values are byte strings; digests are stored in their canonical
// string form ("sha256:<hex>"), and records are JSON so that they can grow new
// fields without a migration.
//
//	meta/                           bucket
//	  "schema"                      -> schema version, decimal ("1")
//
//	blobs/                          bucket: content present on disk
//	  <digest>                      -> blobRecord {size, created}
//
//	uploads/                        bucket: open upload sessions
//	  <session id>                  -> uploadRecord {repo, algorithm, started, owner}
//
//	repos/                          bucket: one nested bucket per repository
//	  <repository name>/            bucket
//	    blobs/                      bucket: blobs linked into the repository
//	      <digest>                  -> linkRecord {size, linked}
//	    manifests/                  bucket
//	      <digest>                  -> manifestRecord {mediaType, size,
//	                                   artifactType, subject, annotations,
//	                                   references, created, labels,
//	                                   configCreated}
//	    tags/                       bucket
//	      <tag>                     -> <digest>
//	    referrers/                  bucket: one nested bucket per subject
//	      <subject digest>/         bucket
//	        <referrer digest>       -> OCI descriptor of the referrer (JSON)
//
// A repository bucket exists from the first blob linked or manifest pushed to
// it. Because bbolt keeps keys sorted bytewise, listing repositories and tags
// in lexical order is a cursor walk from the "last" key: the cost of a page is
// proportional to the page, not to the size of the store.
//
// Invariants that every transaction preserves:
//   - a key in blobs/ means the file blobs/<algorithm>/<hex[0:2]>/<hex> exists,
//     is fsynced and has that digest and size;
//   - a link in repos/<name>/blobs/ and a record in repos/<name>/manifests/
//     always have a matching key in blobs/;
//   - a tag always names a digest present in the same repository's manifests/;
//   - a referrers entry always names a manifest present in manifests/.
//
// Garbage collection (gc.go) removes links, blob records and their files,
// and orphan referrers, under one more invariant: it never deletes a link
// or a blob that a committed manifest references (References of any record
// in manifests/), nor one younger than its grace period or seen (HEAD, GET)
// within it, nor one whose digest a concurrent commit is placing. A link's
// time is refreshed whenever the blob is uploaded or mounted into the
// repository again, so "linked" is the last time it was linked.
//
// Tag history lives outside the repository buckets, so that it outlives
// the tags, manifests and even the repository it describes:
//
//	history/                        bucket: one nested bucket per repository
//	  <repository name>/            bucket: one nested bucket per tag
//	    <tag>/                      bucket; its sequence numbers the moves
//	      <seq, 8 bytes big-endian> -> TagMove {seq, time, previous, digest,
//	                                   action, actor {kind, name, address}}
//
// Invariant: every change of a key in repos/<name>/tags/ appends, in the
// same transaction, one entry to history/<name>/<tag>/ whose previous and
// digest are the tag's values before and after (empty when absent).
//
// The search index answers equality queries on annotations and config
// labels without reading every manifest record:
//
//	search/                         bucket
//	  "a" <key> 0x00 <value> 0x00 <repository> 0x00 <digest>
//	                                -> empty: manifest <digest> of
//	                                   <repository> has annotation key=value
//	  "l" <key> 0x00 <value> 0x00 <repository> 0x00 <digest>
//	                                -> empty: its image config has label
//	                                   key=value
//
// Keys sort by pair, then repository, then digest, so the manifests with
// one pair are a cursor walk in the order of search results. A pair whose
// key or value contains a NUL byte, or whose key and value together exceed
// 1024 bytes, is not indexed; a query on such a pair scans instead.
//
// Invariant: the search/ entries of repos/<name>/manifests/<digest> are
// exactly those made from its current record (its indexable annotations
// and labels). putManifestRecord and removeManifest, the only writer and
// remover of manifest records (with fsck's repair, which drops entries
// with the records it drops), maintain it in the transaction that changes
// the record. A store opened without search/ has it built from every
// record when it is created.
//
// Robot tokens, machine credentials with fixed scopes and an expiry, live
// in two buckets of their own:
//
//	robots/                         bucket: one record per robot, revoked
//	                                ones included (names are never reused)
//	  <robot name>                  -> robotRecord {scopes, created,
//	                                   expires, revoked, rotated, hash}
//	robotSecrets/                   bucket: lookup of a secret
//	  <hex SHA-256 of the secret>   -> <robot name>
//
// The secret itself is never stored, only its SHA-256: it holds 256 random
// bits, so a fast hash is as safe as a slow one.
//
// Invariants:
//   - every robot's hash is a key in robotSecrets/ naming that robot, and
//     every key in robotSecrets/ is the hash of the robot it names (a
//     rotation replaces the key in the same transaction);
//   - a revoked robot keeps its record and its key, so that using its
//     secret is reported as revoked rather than unknown.

const schemaVersion = "1"

var (
	bucketMeta      = []byte("meta")
	bucketBlobs     = []byte("blobs")
	bucketUploads   = []byte("uploads")
	bucketRepos     = []byte("repos")
	bucketLinks     = []byte("blobs")
	bucketManifests = []byte("manifests")
	bucketTags      = []byte("tags")
	bucketReferrers = []byte("referrers")

	bucketHistory = []byte("history")
	bucketSearch  = []byte("search")

	bucketRobots       = []byte("robots")
	bucketRobotSecrets = []byte("robotSecrets")

	keySchema = []byte("schema")
)
