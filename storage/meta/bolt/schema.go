package bolt

// The bbolt index schema.
//
// All keys and values are byte strings; digests are stored in their canonical
// string form ("sha256:<hex>"), and records are JSON so that they can grow new
// fields without a migration.
//
//	meta/                           bucket
//	  "schema"                      -> schema version, decimal ("2")
//
//	blobs/                          bucket: content present in the blob store
//	  <digest>                      -> record.Blob {size, created}
//
//	uploads/                        bucket: open upload sessions
//	  <session id>                  -> record.Upload {repo, algorithm,
//	                                   started, owner}
//
//	repos/                          bucket: one nested bucket per repository
//	  <repository name>/            bucket
//	    blobs/                      bucket: blobs linked into the repository
//	      <digest>                  -> record.Link {linked, seen}
//	    manifests/                  bucket
//	      <digest>                  -> record.Manifest {mediaType, size,
//	                                   artifactType, subject, annotations,
//	                                   references, created, labels,
//	                                   configCreated}
//	    tags/                       bucket
//	      <tag>                     -> <digest>
//	    referrers/                  bucket: one nested bucket per subject
//	      <subject digest>/         bucket
//	        <referrer digest>       -> OCI descriptor of the referrer (JSON),
//	                                   meta.Manifest.Descriptor
//
// A repository bucket exists from the first blob linked or manifest recorded
// in it until DeleteRepository removes it, which it does only when the
// repository holds nothing. Because bbolt keeps keys sorted bytewise, listing
// repositories and tags in lexical order is a cursor walk from the "after"
// key: the cost of a page is proportional to the page, not to the size of the
// store.
//
// Tag history lives outside the repository buckets, so that it outlives
// the tags, manifests and even the repository it describes:
//
//	history/                        bucket: one nested bucket per repository
//	  <repository name>/            bucket: one nested bucket per tag
//	    <tag>/                      bucket; its sequence numbers the moves
//	      <seq, 8 bytes big-endian> -> meta.Move {seq, time, previous, digest,
//	                                   action, actor {kind, name, address}}
//
// Robot credentials:
//
//	robots/                         bucket: one record per robot, revoked
//	                                ones included
//	  <robot name>                  -> robotRecord {scopes, created,
//	                                   expires, revoked, rotated, hash}
//	robotSecrets/                   bucket: lookup of a secret
//	  <hex SHA-256 of the secret>   -> <robot name>
//
// Invariant: every robot's hash is a key in robotSecrets/ naming that robot,
// and every key in robotSecrets/ is the hash of the robot it names; PutRobot
// replaces the key in the transaction that changes the hash.
//
// The pull record, who last pulled each manifest (meta.PullIndex); like
// history it outlives what it names, and nothing derives from it:
//
//	pulls/                          bucket
//	  <repository> 0x00 <digest> 0x00 <actor kind> 0x00 <actor name>
//	                                -> record.Pull {time, address}
//
// The pulls of a repository, and of one digest in it, are each a prefix of
// keys. An anonymous actor has an empty name.
// The pull-through cache's records (meta.CacheIndex), created by Open in a
// store that lacks the bucket, without a change of schema version:
//
//	cache/                          bucket
//	  "m" <repository> 0x00 <digest>
//	                                -> record.Cached {upstream, cached,
//	                                   pulled}: the manifest was recorded
//	                                   from that upstream
//	  "t" <repository> 0x00 <tag>   -> record.TagCheck {upstream, checked,
//	                                   digest}: the tag's last check
//	                                   against its upstream
//
// Nothing is derived from these records, nor are they derived from others.
// A Berth from before the cache ignores the bucket: a manifest it deletes
// leaves a cache record of nothing, which the cache ignores and fsck
// reports (stale-cache) and removes.
//
// Replication's records (meta.SyncIndex), created by Open in a store that
// lacks the bucket, without a change of schema version:
//
//	sync/                           bucket
//	  "r" <rule> 0x00               -> record.SyncRun {started, finished,
//	                                   error, tags, manifests, blobs,
//	                                   bytes}: the rule's last run
//	  "t" <rule> 0x00 <repository> 0x00 <tag>
//	                                -> record.SyncedTag {digest,
//	                                   fingerprint, synced}: what a push
//	                                   rule last delivered of the tag
//
// Nothing is derived from these records, nor are they derived from others.
// A Berth from before replication ignores the bucket; what it changes
// meanwhile differs from the records, so the rules deliver it again.
//
// The outbox of webhook deliveries and the dead letters (outbox.go):
//
//	outbox/                         bucket; its sequence numbers deliveries
//	  <endpoint> 0x00 <key> 0x00 <seq, 8 bytes big-endian>
//	                                -> record.Delivery {eventID, payload (the
//	                                   event's JSON, as the core wrote it),
//	                                   created, attempts, nextAttempt,
//	                                   lastError, holder, leaseUntil}
//	deadLetters/                    bucket
//	  <seq, 8 bytes big-endian>     -> record.Delivery, with its endpoint and
//	                                   key, and died
//
// The deliveries of one endpoint and key (a repository) are a run of keys
// in Seq order, so the head of each, the one delivery of its key that may be
// attempted, is one Seek away from the previous head. Endpoint names hold
// no NUL byte and keys none either, so every key splits unambiguously. The
// sequence is the bucket's, and bbolt commits one transaction at a time, so
// Seq grows in commit order. Both buckets are new since schema "2" was
// introduced and Open creates them when missing, without changing the
// version: an older Berth of schema "2" ignores them (it neither reads nor
// checks them), and the deliveries wait there for a Berth that knows them.
//
// # Invariants the storage core keeps
//
// This package enforces no registry rule; the core, above meta.Tx, keeps
// these in every transaction (and fsck checks them through the same
// interface):
//   - a key in blobs/ means the blob store holds that content, durable and
//     of that digest and size;
//   - a link in repos/<name>/blobs/ and a record in repos/<name>/manifests/
//     always have a matching key in blobs/;
//   - a tag names a digest present in the same repository's manifests/;
//   - every change of a key in repos/<name>/tags/ appends, in the same
//     transaction, one entry to history/<name>/<tag>/ whose previous and
//     digest are the tag's values before and after (empty when absent);
//   - garbage collection never deletes a link or blob that a committed
//     manifest references (uses/ answers who does), nor one younger than its
//     grace period, nor one whose digest a concurrent commit is placing (the
//     digest locks).
//
// # Derived indexes
//
// Four buckets hold nothing of their own: each entry is derived from the
// records above, and every writer of those records keeps them in step in
// its own transaction (PutLink, DeleteLink, PutManifest, DeleteManifest,
// SetTag, DeleteTag). Check reports entries missing or stale and, with
// repair, rebuilds them from the records.
//
// The referrers of a subject, in repos/<name>/referrers/ above: manifest d
// of a repository has an entry under its subject's digest exactly when its
// record has a subject.
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
// 1024 bytes, is not indexed (Indexed reports false); the core scans for it.
//
// Who uses a digest, for garbage collection, which must find whether
// anything still needs a candidate without reading every manifest:
//
//	uses/                           bucket
//	  <digest> 0x00 <repository> 0x00 "l"
//	                                -> empty: the blob is linked into the
//	                                   repository
//	  <digest> 0x00 <repository> 0x00 "m"
//	                                -> empty: the repository holds a
//	                                   manifest of that digest
//	  <digest> 0x00 <repository> 0x00 "r" <manifest digest>
//	                                -> empty: that manifest of the
//	                                   repository references the digest
//
// All uses of a digest, and its uses in one repository, are each a prefix
// of keys.
//
// Which tags name a digest, so that deleting a manifest finds its tags
// without reading every tag of its repository:
//
//	tagged/                         bucket
//	  <repository> 0x00 <digest> 0x00 <tag>
//	                                -> empty: the tag names the digest
//
// Repository names and digests never contain a NUL byte (writes refuse
// them), so every key above splits unambiguously.
//
// # Versions
//
// Schema "1" (Berth before the index seam) had every bucket above but uses/
// and tagged/, and stores from before the search index lack search/ as
// well. Opening such a store builds the missing derived buckets from the
// records, in the transaction that marks it "2"; records are never
// rewritten, so the upgrade changes no byte of them. A store of any other
// version is refused.
//
// pulls/ came later within schema "2": Open creates it when missing, and
// a Berth that predates it ignores it (it never opens buckets it does not
// know, and fsck of that Berth checks only its own), so a store may go
// back and forth between the two.

import (
	"bytes"
	"encoding/binary"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/meta"
	"github.com/berth-registry/berth/storage/meta/internal/record"
)

// SchemaVersion is the version of the index this package reads and writes.
const SchemaVersion = "2"

// schemaV1 is the version of stores from before the derived uses/ and
// tagged/ buckets; Open upgrades them.
const schemaV1 = "1"

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
	bucketUses    = []byte("uses")
	bucketTagged  = []byte("tagged")

	bucketRobots       = []byte("robots")
	bucketRobotSecrets = []byte("robotSecrets")

	bucketPulls = []byte("pulls")
	bucketCache = []byte("cache")
	bucketSync  = []byte("sync")

	bucketOutbox      = []byte("outbox")
	bucketDeadLetters = []byte("deadLetters")

	keySchema = []byte("schema")

	// topBuckets are created by Open in every store.
	topBuckets = [][]byte{bucketMeta, bucketBlobs, bucketUploads, bucketRepos, bucketHistory,
		bucketSearch, bucketUses, bucketTagged, bucketRobots, bucketRobotSecrets, bucketPulls,
		bucketOutbox, bucketDeadLetters, bucketCache, bucketSync}
	// repoBuckets are created in every repository bucket.
	repoBuckets = [][]byte{bucketLinks, bucketManifests, bucketTags, bucketReferrers}
)

// The records are package record's, with the JSON field names of schema
// "1"; the robot's keeps its secret's hash too.

type robotRecord struct {
	Scopes  []string   `json:"scopes"`
	Created time.Time  `json:"created"`
	Expires time.Time  `json:"expires"`
	Revoked *time.Time `json:"revoked,omitempty"`
	Rotated *time.Time `json:"rotated,omitempty"`
	Hash    string     `json:"hash"`
}

// maxIndexedPair bounds the length of an annotation or label (key and
// value together) that the search index holds.
const maxIndexedPair = 1024

// indexed reports whether the search index holds the pair k=v.
func indexed(k, v string) bool {
	return len(k)+len(v) <= maxIndexedPair && strings.IndexByte(k, 0) < 0 && strings.IndexByte(v, 0) < 0
}

// searchPrefix is the part of a search key naming one pair.
func searchPrefix(kind meta.PairKind, k, v string) []byte {
	b := make([]byte, 0, len(k)+len(v)+3)
	b = append(b, byte(kind))
	b = append(b, k...)
	b = append(b, 0)
	b = append(b, v...)
	return append(b, 0)
}

// searchKey is the search key of the pair k=v of manifest d in repo.
func searchKey(kind meta.PairKind, k, v, repo string, d digest.Digest) []byte {
	b := searchPrefix(kind, k, v)
	b = append(b, repo...)
	b = append(b, 0)
	return append(b, d...)
}

// searchEntry is a search key split into its parts.
type searchEntry struct {
	kind       meta.PairKind
	key, value string
	repo       string
	digest     digest.Digest
}

// parseSearchKey splits a search key; ok is false for a key no manifest
// can have made.
func parseSearchKey(k []byte) (e searchEntry, ok bool) {
	if len(k) == 0 || (k[0] != byte(meta.Annotation) && k[0] != byte(meta.Label)) {
		return e, false
	}
	parts := bytes.SplitN(k[1:], []byte{0}, 4)
	if len(parts) != 4 || len(parts[2]) == 0 || len(parts[3]) == 0 || bytes.IndexByte(parts[3], 0) >= 0 {
		return e, false
	}
	return searchEntry{kind: meta.PairKind(k[0]), key: string(parts[0]), value: string(parts[1]),
		repo: string(parts[2]), digest: digest.Digest(parts[3])}, true
}

// searchKeys calls fn with the search key of every indexed annotation and
// label of manifest d of repo, whose record is rec.
func searchKeys(repo string, d digest.Digest, rec *record.Manifest, fn func(key []byte) error) error {
	for _, c := range []struct {
		kind  meta.PairKind
		pairs map[string]string
	}{{meta.Annotation, rec.Annotations}, {meta.Label, rec.Labels}} {
		for k, v := range c.pairs {
			if !indexed(k, v) {
				continue
			}
			if err := fn(searchKey(c.kind, k, v, repo, d)); err != nil {
				return err
			}
		}
	}
	return nil
}

// usePrefix is the prefix of the uses of d, in repo if it is set.
func usePrefix(d digest.Digest, repo string) []byte {
	b := make([]byte, 0, len(d)+len(repo)+2)
	b = append(b, d...)
	b = append(b, 0)
	if repo != "" {
		b = append(b, repo...)
		b = append(b, 0)
	}
	return b
}

// useKey is the key of one use of d in repo; m is the referencing manifest
// of a meta.UseReference.
func useKey(d digest.Digest, repo string, kind meta.UseKind, m digest.Digest) []byte {
	b := usePrefix(d, repo)
	b = append(b, byte(kind))
	if kind == meta.UseReference {
		b = append(b, m...)
	}
	return b
}

// parseUseKey splits a uses key; ok is false for a key no record can have
// made.
func parseUseKey(k []byte) (d digest.Digest, u meta.Use, ok bool) {
	parts := bytes.SplitN(k, []byte{0}, 3)
	if len(parts) != 3 || len(parts[0]) == 0 || len(parts[1]) == 0 || len(parts[2]) == 0 {
		return "", u, false
	}
	u = meta.Use{Repo: string(parts[1]), Kind: meta.UseKind(parts[2][0])}
	rest := parts[2][1:]
	switch u.Kind {
	case meta.UseLink, meta.UseManifest:
		if len(rest) != 0 {
			return "", u, false
		}
	case meta.UseReference:
		if len(rest) == 0 || bytes.IndexByte(rest, 0) >= 0 {
			return "", u, false
		}
		u.Manifest = digest.Digest(rest)
	default:
		return "", u, false
	}
	return digest.Digest(parts[0]), u, true
}

// manifestUseKeys calls fn with the uses keys that manifest d of repo,
// whose record is rec, makes: its own, and one per reference that can be
// a key.
func manifestUseKeys(repo string, d digest.Digest, rec *record.Manifest, fn func(key []byte) error) error {
	if err := fn(useKey(d, repo, meta.UseManifest, "")); err != nil {
		return err
	}
	for _, ref := range rec.References {
		if !keyable(string(ref)) {
			continue
		}
		if err := fn(useKey(ref, repo, meta.UseReference, d)); err != nil {
			return err
		}
	}
	return nil
}

// taggedPrefix is the prefix of the tagged/ entries of d in repo.
func taggedPrefix(repo string, d digest.Digest) []byte {
	b := make([]byte, 0, len(repo)+len(d)+2)
	b = append(b, repo...)
	b = append(b, 0)
	b = append(b, d...)
	return append(b, 0)
}

// taggedKey is the tagged/ key of tag naming d in repo.
func taggedKey(repo string, d digest.Digest, tag string) []byte {
	return append(taggedPrefix(repo, d), tag...)
}

// parseTaggedKey splits a tagged/ key.
func parseTaggedKey(k []byte) (repo string, d digest.Digest, tag string, ok bool) {
	parts := bytes.SplitN(k, []byte{0}, 3)
	if len(parts) != 3 || len(parts[0]) == 0 || len(parts[1]) == 0 || len(parts[2]) == 0 {
		return "", "", "", false
	}
	return string(parts[0]), digest.Digest(parts[1]), string(parts[2]), true
}

// keyable reports whether s can be a repository name or digest in a key:
// not empty and without a NUL byte.
func keyable(s string) bool {
	return s != "" && strings.IndexByte(s, 0) < 0
}

// seqKey is the history key of move seq.
func seqKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(nil, seq)
}
