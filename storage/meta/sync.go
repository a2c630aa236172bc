package meta

import (
	"time"

	"github.com/opencontainers/go-digest"
)

// SyncedTag is what a replication rule last delivered of a tag: the
// manifest the tag named then and a fingerprint of the manifests delivered
// with it (its children, referrers and signatures), so that the rule can
// tell, without asking the remote, whether anything changed since.
type SyncedTag struct {
	// Digest is the manifest the tag named when it was delivered.
	Digest digest.Digest
	// Fingerprint identifies the set of manifests delivered with it, as
	// the rule computes it; opaque to the index.
	Fingerprint string
	// Synced is when the delivery completed.
	Synced time.Time
}

// SyncRun is the record of a replication rule's last run: a scheduled or
// requested run of a pull rule, a batch of deliveries of a push rule.
type SyncRun struct {
	// Started is when the run started; Finished when it ended, zero while
	// it runs or when the process stopped before its end (the rule then
	// resumes it).
	Started  time.Time
	Finished time.Time
	// Error says why the run failed, or which of its tags failed; empty
	// when all went well.
	Error string
	// Tags counts the tags set (pull) or delivered (push); Manifests,
	// Blobs and Bytes the content copied.
	Tags      int
	Manifests int
	Blobs     int
	Bytes     int64
}

// SyncIndex holds replication's own records: per rule, the tags a push
// rule delivered and the last run of every rule. They are replication's
// alone: nothing else reads them, nothing is derived from them, and a
// record of a tag or repository that no longer exists means nothing (a
// rule that finds a record differing from what it would deliver delivers
// again). Rule names are non-empty and hold no NUL byte.
type SyncIndex interface {
	// SyncedTag returns what rule last delivered of tag in repo, if any.
	SyncedTag(rule, repo, tag string) (SyncedTag, bool, error)
	// PutSyncedTag records s as what rule last delivered of tag in repo,
	// replacing the record there may be.
	PutSyncedTag(rule, repo, tag string, s SyncedTag) error
	// SyncedTags calls fn for every tag record of rule, in order of
	// repository, then tag.
	SyncedTags(rule string, fn func(repo, tag string, s SyncedTag) error) error
	// SyncRun returns the record of rule's last run, if any.
	SyncRun(rule string) (SyncRun, bool, error)
	// PutSyncRun records r as rule's last run, replacing the record.
	PutSyncRun(rule string, r SyncRun) error
}
