package bolt

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/berth-registry/berth/storage/meta"
	"github.com/berth-registry/berth/storage/meta/internal/record"
)

// Replication's records (meta.SyncIndex), in sync/; see schema.go.

// The kinds of sync/ keys.
const (
	syncRun = 'r'
	syncTag = 't'
)

// validRule checks a rule name.
func validRule(rule string) error {
	if rule == "" || strings.IndexByte(rule, 0) >= 0 {
		return fmt.Errorf("%w: rule name %q", ErrInvalidKey, rule)
	}
	return nil
}

// syncPrefix is the prefix of the sync/ keys of kind for rule.
func syncPrefix(kind byte, rule string) []byte {
	b := make([]byte, 0, len(rule)+2)
	b = append(b, kind)
	b = append(b, rule...)
	return append(b, 0)
}

// syncTagKey is the sync/ key of tag in repo for rule.
func syncTagKey(rule, repo, tag string) []byte {
	k := append(syncPrefix(syncTag, rule), repo...)
	k = append(k, 0)
	return append(k, tag...)
}

// SyncedTag returns what rule last delivered of tag in repo.
func (t *tx) SyncedTag(rule, repo, tag string) (meta.SyncedTag, bool, error) {
	if err := t.read(); err != nil {
		return meta.SyncedTag{}, false, err
	}
	var rec record.SyncedTag
	ok, err := getJSON(t.btx.Bucket(bucketSync), "sync", syncTagKey(rule, repo, tag), &rec)
	return meta.SyncedTag(rec), ok, err
}

// PutSyncedTag records what rule delivered of tag in repo.
func (t *tx) PutSyncedTag(rule, repo, tag string, s meta.SyncedTag) error {
	if err := t.write(); err != nil {
		return err
	}
	if err := validRule(rule); err != nil {
		return err
	}
	if err := validRepo(repo); err != nil {
		return err
	}
	if err := validName("tag", tag); err != nil {
		return err
	}
	if err := validDigest(s.Digest); err != nil {
		return err
	}
	return putJSON(t.btx.Bucket(bucketSync), syncTagKey(rule, repo, tag), record.SyncedTag(s))
}

// SyncedTags walks the tag records of rule by repository and tag.
func (t *tx) SyncedTags(rule string, fn func(repo, tag string, s meta.SyncedTag) error) error {
	if err := t.read(); err != nil {
		return err
	}
	prefix := syncPrefix(syncTag, rule)
	return t.walk(t.btx.Bucket(bucketSync), prefix, false, prefix, func(k, v []byte) error {
		repo, tag, ok := bytes.Cut(k[len(prefix):], []byte{0})
		if !ok || len(repo) == 0 || len(tag) == 0 || bytes.IndexByte(tag, 0) >= 0 {
			return corrupt("sync", k, fmt.Errorf("a key no record can have"))
		}
		var rec record.SyncedTag
		if err := decode(v, &rec); err != nil {
			return corrupt("sync", k, err)
		}
		return fn(string(repo), string(tag), meta.SyncedTag(rec))
	})
}

// SyncRun returns the record of rule's last run.
func (t *tx) SyncRun(rule string) (meta.SyncRun, bool, error) {
	if err := t.read(); err != nil {
		return meta.SyncRun{}, false, err
	}
	var rec record.SyncRun
	ok, err := getJSON(t.btx.Bucket(bucketSync), "sync", syncPrefix(syncRun, rule), &rec)
	return meta.SyncRun(rec), ok, err
}

// PutSyncRun records rule's last run.
func (t *tx) PutSyncRun(rule string, r meta.SyncRun) error {
	if err := t.write(); err != nil {
		return err
	}
	if err := validRule(rule); err != nil {
		return err
	}
	return putJSON(t.btx.Bucket(bucketSync), syncPrefix(syncRun, rule), record.SyncRun(r))
}
