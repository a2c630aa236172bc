// Package meta declares the index of a Berth store: the records that say
// which content exists, which repository holds it, what tags name, how tags
// moved, which uploads are open, which robot credentials exist, who last
// pulled each manifest, which events wait for delivery to webhook
// endpoints (outbox.go), what the pull-through cache and replication
// (sync.go) record of their work, and the transactions that read and
// change them.
//
// It is one of the two seams of the storage layer; the other, package blob,
// holds the bytes. Backends implement Store (storage/meta/bolt is the
// embedded one); the storage core writes the registry's rules once, above
// this interface, and never sees how a backend keeps its records.
//
// A backend keeps its derived indexes in step with the records inside the
// transaction that changes them: the referrers of a subject, the search
// entries of a manifest's annotations and labels, who uses a digest (Uses)
// and which tags name a digest (TagsOf). It enforces no registry rule
// beyond that: immutability, history and references are the core's.
//
// Records are plain data. A Tx and anything it returns are only valid
// inside the function the transaction runs.
package meta

import (
	"context"
	"errors"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// ErrStop, returned by the callback of a walk, ends the walk early; the
// walk then returns nil.
var ErrStop = errors.New("stop the walk")

// ErrCorrupt is wrapped by errors about records a backend cannot decode.
var ErrCorrupt = errors.New("index record corrupt")

// ErrUnavailable is wrapped by errors of a backend that cannot serve the
// request now but may later: its database is down, refusing connections,
// restarting or too slow to answer. Callers answer with a retry later (the
// API with 503 and Retry-After), never as if a record were missing.
var ErrUnavailable = errors.New("index unavailable")

// Store is an index backend.
type Store interface {
	// View runs fn in a read-only transaction over a consistent snapshot.
	// Views run concurrently with each other and with Update.
	View(ctx context.Context, fn func(Tx) error) error
	// Update runs fn in a serialisable read-write transaction and commits
	// it durably if fn returns nil; otherwise nothing fn did is kept and
	// its error is returned. A backend may put off a change whose only
	// possible failure is its own (a database's constraint or connection)
	// and send it with fn's next read or at the end of fn: its failure
	// then comes from that later call, or fails the Update, and either
	// way nothing fn did is kept. fn may run more than once (a backend retries
	// a transaction that conflicted, or that shared a group commit with
	// one that failed), so it must have no effect outside the transaction
	// except on state it resets each time it starts. It may run on another
	// goroutine than the caller's (a group commit runs the functions of
	// several callers on one), so it must not end its goroutine
	// (runtime.Goexit, t.FailNow) nor call Update itself.
	Update(ctx context.Context, fn func(Tx) error) error
	// LockDigests locks the given digests against every other holder of
	// any of them, in an order that cannot deadlock, and returns the
	// unlock. Locks are taken before a transaction, never inside one.
	// Placing content and recording it (and removing both, in garbage
	// collection) happen under the digest's lock.
	LockDigests(ctx context.Context, ds ...digest.Digest) (unlock func(), err error)
	// Close releases the backend. Callers must have stopped using it.
	Close() error
}

// Tx is one transaction of the index. Its methods that change records fail
// in a read-only transaction.
type Tx interface {
	BlobIndex
	RepoIndex
	TagIndex
	SearchIndex
	UploadIndex
	RobotIndex
	HistoryIndex
	PullIndex
	OutboxIndex
	CacheIndex
	SyncIndex
}

// Blob is the record of content present in the blob store.
type Blob struct {
	// Size is the content's length in bytes.
	Size int64
	// Created is when the content was first recorded.
	Created time.Time
}

// Link is the record of a blob linked into a repository.
type Link struct {
	// Linked is the last time the blob was uploaded or mounted into the
	// repository.
	Linked time.Time
	// Seen is the last time a lookup (a HEAD or GET of the blob) told a
	// client the link exists, as far as it was recorded: the core records
	// it at most once per refresh period, so that every replica's garbage
	// collection sees it. Zero if never recorded.
	Seen time.Time
}

// Manifest is the record of a manifest held by a repository.
type Manifest struct {
	MediaType    string
	Size         int64
	ArtifactType string
	// Subject is the manifest this one refers to, if any: it makes the
	// manifest one of the subject's referrers.
	Subject     *ocispec.Descriptor
	Annotations map[string]string
	// References are the digests of the blobs and child manifests the
	// manifest points at.
	References []digest.Digest
	// Created is when the manifest first entered the repository.
	Created time.Time
	// Labels are the image config's labels and ConfigCreated its created
	// time, when the config could be read at push.
	Labels        map[string]string
	ConfigCreated *time.Time
}

// Descriptor is the manifest's descriptor as a referrer of its subject.
func (m Manifest) Descriptor(d digest.Digest) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: m.MediaType, Digest: d, Size: m.Size,
		ArtifactType: m.ArtifactType, Annotations: m.Annotations}
}

// BlobIndex holds the content the blob store has.
type BlobIndex interface {
	// Blob returns the record of d, if there is one.
	Blob(d digest.Digest) (Blob, bool, error)
	// PutBlob records d, replacing its record.
	PutBlob(d digest.Digest, b Blob) error
	// DeleteBlob removes the record of d; an absent one is fine.
	DeleteBlob(d digest.Digest) error
	// Blobs calls fn for every blob record, in digest order.
	Blobs(fn func(d digest.Digest, b Blob) error) error
	// Uses calls fn for every use of d: a link in a repository, a
	// manifest record of that digest, or a reference from a manifest.
	// With repo set, only the uses in that repository.
	Uses(d digest.Digest, repo string, fn func(u Use) error) error
}

// WithPrefetch returns ctx carrying p, what the function of an Update run
// with it will read: a backend that groups Updates (a database) may read
// what every function of a group will read in one round trip before
// running them. A hint only: reads answer the same with it or without.
func WithPrefetch(ctx context.Context, p Prefetch) context.Context {
	return context.WithValue(ctx, prefetchKey{}, p)
}

// PrefetchOf returns the Prefetch ctx carries, if any (see WithPrefetch).
func PrefetchOf(ctx context.Context) (Prefetch, bool) {
	p, ok := ctx.Value(prefetchKey{}).(Prefetch)
	return p, ok
}

// prefetchKey is the context key of WithPrefetch.
type prefetchKey struct{}

// Prefetch names the records of one repository, and the blob records, a
// transaction is about to read. A backend whose reads cost a round trip
// each (a database) offers Prefetch(Prefetch) error on its transactions:
// it reads them all in one round trip, and Blob, Link, Manifest and Tag
// then answer from what it read, as changed by the transaction since.
// Prefetching changes no answer, only its cost.
type Prefetch struct {
	// Repo is the repository of Links, Manifests and Tags.
	Repo string
	// Blobs are the digests of blob records (Blob).
	Blobs []digest.Digest
	// Links are the digests of links into Repo (Link).
	Links []digest.Digest
	// Manifests are the digests of manifest records in Repo (Manifest).
	Manifests []digest.Digest
	// Tags are tags of Repo (Tag).
	Tags []string
}

// Use is one use of a digest, as Uses reports it.
type Use struct {
	Repo string
	Kind UseKind
	// Manifest is the referencing manifest, for UseReference.
	Manifest digest.Digest
}

// UseKind says how a digest is used.
type UseKind byte

// The kinds of use.
const (
	// UseLink: the blob is linked into the repository.
	UseLink UseKind = 'l'
	// UseManifest: the repository holds a manifest of that digest.
	UseManifest UseKind = 'm'
	// UseReference: a manifest of the repository references the digest.
	UseReference UseKind = 'r'
)

// RepoIndex holds repositories, their blob links and their manifests.
// A repository exists from its first link or manifest until it is deleted.
type RepoIndex interface {
	// Repository reports whether repo exists.
	Repository(repo string) (bool, error)
	// Repositories calls fn for every repository name after after, in
	// byte order.
	Repositories(after string, fn func(repo string) error) error
	// DeleteRepository deletes repo if it holds no link, manifest or tag,
	// and reports whether it did.
	DeleteRepository(repo string) (bool, error)

	// Link returns the link of d in repo, if there is one.
	Link(repo string, d digest.Digest) (Link, bool, error)
	// PutLink links d into repo, creating repo if needed.
	PutLink(repo string, d digest.Digest, l Link) error
	// DeleteLink unlinks d from repo; an absent link is fine.
	DeleteLink(repo string, d digest.Digest) error
	// Links calls fn for every link of repo, in digest order.
	Links(repo string, fn func(d digest.Digest, l Link) error) error

	// Manifest returns the record of manifest d in repo, if there is one.
	Manifest(repo string, d digest.Digest) (Manifest, bool, error)
	// PutManifest records manifest d in repo, creating repo if needed and
	// replacing a record there may be, with its referrers, search and use
	// entries.
	PutManifest(repo string, d digest.Digest, m Manifest) error
	// DeleteManifest removes the record of manifest d from repo, with its
	// referrers, search and use entries; an absent record is fine. Tags
	// naming it are the caller's to remove first.
	DeleteManifest(repo string, d digest.Digest) error
	// Manifests calls fn for every manifest of repo after after, in
	// digest order.
	Manifests(repo string, after digest.Digest, fn func(d digest.Digest, m Manifest) error) error
	// Referrers calls fn with the descriptor of every manifest of repo
	// whose subject is subject, in digest order.
	Referrers(repo string, subject digest.Digest, fn func(desc ocispec.Descriptor) error) error
}

// Actor is who made a change.
type Actor struct {
	// Kind is "user", "robot" or "anonymous"; Berth itself is "system".
	Kind string `json:"kind"`
	// Name is the user or robot name; empty for anonymous callers.
	Name string `json:"name,omitempty"`
	// Address is the client's IP address, without port.
	Address string `json:"address,omitempty"`
}

// Move is one entry of a tag's history.
type Move struct {
	// Seq orders the moves of one tag: it grows by one with each move.
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time"`
	// Previous is the digest the tag named before; empty if it was new.
	Previous digest.Digest `json:"previous,omitempty"`
	// Digest is the digest the tag names after; empty if it was deleted.
	Digest digest.Digest `json:"digest,omitempty"`
	// Action is why it moved.
	Action string `json:"action"`
	Actor  Actor  `json:"actor"`
}

// TagIndex holds the tags of repositories and their history. History
// outlives tags, manifests and repositories.
type TagIndex interface {
	// Tag returns the digest tag names in repo, if it exists.
	Tag(repo, tag string) (digest.Digest, bool, error)
	// SetTag points tag in repo at d. The repository must exist.
	SetTag(repo, tag string, d digest.Digest) error
	// DeleteTag removes tag from repo; an absent tag is fine.
	DeleteTag(repo, tag string) error
	// Tags calls fn for every tag of repo after after, in byte order.
	Tags(repo, after string, fn func(tag string, d digest.Digest) error) error
	// TagsOf returns the tags of repo naming d, in byte order.
	TagsOf(repo string, d digest.Digest) ([]string, error)

	// AppendMove appends m to the history of tag in repo, numbering it
	// (m.Seq is ignored), and returns it as recorded.
	AppendMove(repo, tag string, m Move) (Move, error)
	// Moves calls fn for the moves of tag in repo, newest first, starting
	// just before the move numbered before (0: with the newest).
	Moves(repo, tag string, before uint64, fn func(m Move) error) error
}

// HistoryIndex finds the tags that have a history, so that a reader can
// ask which tags ever named a digest without knowing their names.
type HistoryIndex interface {
	// HistoryTags calls fn for every tag of repo with at least one move
	// (AppendMove), deleted tags included, after after, in byte order.
	HistoryTags(repo, after string, fn func(tag string) error) error
}

// Pull is the record of the last pull of a manifest by one identity.
type Pull struct {
	// Repo and Digest name the manifest pulled.
	Repo   string        `json:"repository"`
	Digest digest.Digest `json:"digest"`
	// Actor is who pulled it: its Kind and Name identify the record; its
	// Address is where the last pull came from.
	Actor Actor `json:"actor"`
	// Time is when the last pull happened.
	Time time.Time `json:"time"`
}

// PullIndex remembers, per repository and manifest digest, when each
// identity last pulled it and from which address. Pull records are facts
// about the past, like tag history: they outlive the manifests, tags and
// repositories they name, and a backend keeps no derived index of them.
type PullIndex interface {
	// PutPull records p as the last pull of p.Digest in p.Repo by the
	// identity (p.Actor.Kind, p.Actor.Name), replacing that identity's
	// record of the digest, unless that record's Time is later than
	// p.Time: then the record stays as it is, so that records written out
	// of order keep the latest pull. Repo, Digest and Actor.Kind must be
	// set; the repository and manifest need not exist.
	PutPull(p Pull) error
	// Pulls calls fn for the pull records of repo, in order of digest,
	// then actor kind, then actor name; with d set, only those of d.
	Pulls(repo string, d digest.Digest, fn func(p Pull) error) error
}

// PairKind says where a searchable key=value pair comes from.
type PairKind byte

// The kinds of searchable pairs.
const (
	// Annotation: a manifest's annotation.
	Annotation PairKind = 'a'
	// Label: its image config's label.
	Label PairKind = 'l'
)

// SearchIndex finds manifests by annotation or label without reading
// every record.
type SearchIndex interface {
	// Indexed reports whether the backend's index holds the pair key=value;
	// a pair it does not hold must be searched by scanning manifests.
	Indexed(key, value string) bool
	// FindPair calls fn for every manifest with the pair key=value of kind,
	// ordered by repository then digest, starting with repository from
	// (after the manifest after in it, when after is set).
	FindPair(kind PairKind, key, value, from string, after digest.Digest, fn func(repo string, d digest.Digest) error) error
}

// Upload is the record of an open upload session.
type Upload struct {
	Repo      string
	Algorithm string
	Started   time.Time
	// Owner is the actor that opened the session ("kind:name"); only it
	// may use the session. Empty in sessions of older stores: anyone.
	Owner string
}

// UploadIndex holds the open upload sessions.
type UploadIndex interface {
	// Upload returns the record of session id, if there is one.
	Upload(id string) (Upload, bool, error)
	// PutUpload records session id.
	PutUpload(id string, u Upload) error
	// DeleteUpload removes the record of session id; an absent one is fine.
	DeleteUpload(id string) error
	// Uploads calls fn for every session, in id order.
	Uploads(fn func(id string, u Upload) error) error
}

// Robot is the record of a robot credential. The secret is never stored:
// Hash is the hex SHA-256 of it.
type Robot struct {
	Name    string
	Scopes  []string
	Created time.Time
	Expires time.Time
	Revoked *time.Time
	Rotated *time.Time
	Hash    string
}

// RobotIndex holds robot credentials, revoked ones included.
type RobotIndex interface {
	// Robot returns the robot name, if there is one.
	Robot(name string) (Robot, bool, error)
	// RobotBySecret returns the name of the robot whose secret hashes to
	// hash, if any.
	RobotBySecret(hash string) (string, bool, error)
	// PutRobot records r, replacing the record of that name, and makes
	// r.Hash find it (and its previous hash no longer).
	PutRobot(r Robot) error
	// Robots calls fn for every robot, in name order.
	Robots(fn func(r Robot) error) error
}

// Checker is implemented by backends that keep invariants of their own,
// beyond what Tx shows: record encodings and the derived indexes (search,
// uses, tags by digest, referrers, robot secrets). fsck runs it.
type Checker interface {
	// Check reports each inconsistency of the backend's own invariants
	// to report. With repair it also fixes what it safely can, rebuilding
	// derived entries from the records they derive from, and says so in
	// Finding.Repaired. It only reads records it cannot decode: those are
	// reported, never repaired.
	Check(ctx context.Context, repair bool, report func(Finding)) error
}

// Finding is one inconsistency a Checker found.
type Finding struct {
	// Kind names the invariant broken, such as "bad-record" or
	// "search-index".
	Kind    string
	Repo    string
	Digest  string
	Tag     string
	Subject string
	// Detail says what is wrong, for people.
	Detail string
	// Repaired says what repair did about it; empty if nothing.
	Repaired string
}

// Cached is the record of a manifest that the pull-through cache recorded
// from an upstream registry. Such a manifest may reference blobs and child
// manifests that the repository does not hold yet: they are pending from
// that upstream, fetched when a client first asks for them.
type Cached struct {
	// Upstream names the upstream the manifest came from.
	Upstream string
	// Cached is when the cache first recorded the manifest.
	Cached time.Time
	// Pulled is when a client last pulled it through the cache (updated
	// at most once per period the cache chooses, not on every pull).
	Pulled time.Time
}

// TagCheck is when the pull-through cache last checked a tag against its
// upstream, and what the upstream named then.
type TagCheck struct {
	// Upstream names the upstream asked.
	Upstream string
	// Checked is when it answered.
	Checked time.Time
	// Digest is the manifest the upstream's tag named.
	Digest digest.Digest
}

// CacheIndex holds what the pull-through cache knows of the content it
// keeps for upstream registries. Its records are the cache's own: a cache
// record of a manifest the repository no longer holds means nothing (the
// storage core removes it with the manifest; fsck reports one left over),
// and a tag check outlives the tag it checked.
type CacheIndex interface {
	// Cached returns the cache record of manifest d in repo, if any.
	Cached(repo string, d digest.Digest) (Cached, bool, error)
	// PutCached records c for manifest d in repo, replacing a record there
	// may be.
	PutCached(repo string, d digest.Digest, c Cached) error
	// DeleteCached removes the cache record of manifest d in repo; an
	// absent one is fine.
	DeleteCached(repo string, d digest.Digest) error
	// CachedManifests calls fn for every cache record of repo, in digest
	// order.
	CachedManifests(repo string, fn func(d digest.Digest, c Cached) error) error
	// TagCheck returns the last check of tag in repo against its upstream,
	// if any.
	TagCheck(repo, tag string) (TagCheck, bool, error)
	// PutTagCheck records c as the last check of tag in repo, replacing
	// the one there may be. The tag need not exist.
	PutTagCheck(repo, tag string, c TagCheck) error
	// DeleteTagCheck removes the check of tag in repo; an absent one is
	// fine.
	DeleteTagCheck(repo, tag string) error
}
