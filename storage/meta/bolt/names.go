package bolt

import (
	"bytes"

	bolt "go.etcd.io/bbolt"
)

// RecordedRepositories calls fn for every repository name that a record of
// the index mentions, after after, in byte order: the repositories
// (meta.RepoIndex.Repositories), and the repositories deleted since that
// still have a tag history or pull records, which outlive them. It is not
// part of meta.Tx: a copy of a whole store (storage/storecopy) asks for it,
// to reach the history of deleted repositories. Each name costs a seek in
// three buckets, whatever their size.
func (t *tx) RecordedRepositories(after string, fn func(repo string) error) error {
	if err := t.read(); err != nil {
		return err
	}
	repos := t.btx.Bucket(bucketRepos)
	history := t.btx.Bucket(bucketHistory)
	pulls := t.btx.Bucket(bucketPulls)
	for {
		next, ok := "", false
		take := func(name []byte) {
			if name != nil && (!ok || string(name) < next) {
				next, ok = string(name), true
			}
		}
		take(firstKeyAfter(repos, after))
		take(firstKeyAfter(history, after))
		take(firstPullRepoAfter(pulls, after))
		if !ok {
			return nil
		}
		if err := fn(next); err != nil {
			return stop(err)
		}
		if t.done {
			return errFinished
		}
		after = next
	}
}

// firstKeyAfter returns the first key of b after after ("" : the first),
// or nil.
func firstKeyAfter(b *bolt.Bucket, after string) []byte {
	if b == nil {
		return nil
	}
	c := b.Cursor()
	var k []byte
	if after == "" {
		k, _ = c.First()
	} else {
		k, _ = c.Seek([]byte(after))
		if k != nil && string(k) == after {
			k, _ = c.Next()
		}
	}
	return bytes.Clone(k)
}

// firstPullRepoAfter returns the first repository after after that has a
// pull record, or nil. Pull keys begin with the repository and a NUL, and
// no repository name holds a byte below 0x01, so that every key of a
// repository after after sorts at or after after+"\x01".
func firstPullRepoAfter(b *bolt.Bucket, after string) []byte {
	if b == nil {
		return nil
	}
	c := b.Cursor()
	var k []byte
	if after == "" {
		k, _ = c.First()
	} else {
		k, _ = c.Seek([]byte(after + "\x01"))
	}
	if k == nil {
		return nil
	}
	if i := bytes.IndexByte(k, 0); i > 0 {
		return bytes.Clone(k[:i])
	}
	return bytes.Clone(k)
}
