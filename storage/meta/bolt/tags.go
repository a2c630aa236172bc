package bolt

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"

	"github.com/berth-registry/berth/storage/meta"
)

// errNoRepository is the error of SetTag in a repository that does not
// exist.
var errNoRepository = errors.New("repository does not exist")

// Tag returns the digest tag names in repo.
func (t *tx) Tag(repo, tag string) (digest.Digest, bool, error) {
	if err := t.read(); err != nil {
		return "", false, err
	}
	tags, err := t.repoSub(repo, bucketTags)
	if tags == nil || err != nil {
		return "", false, err
	}
	v := tags.Get([]byte(tag))
	if v == nil {
		if tags.Bucket([]byte(tag)) != nil {
			return "", false, corrupt(path(repo, bucketTags), []byte(tag), errBucket)
		}
		return "", false, nil
	}
	return digest.Digest(v), true, nil
}

// SetTag points tag at d and keeps tagged/ in step.
func (t *tx) SetTag(repo, tag string, d digest.Digest) error {
	if err := t.write(); err != nil {
		return err
	}
	if err := validName("tag", tag); err != nil {
		return err
	}
	if err := validDigest(d); err != nil {
		return err
	}
	tags, err := t.repoSub(repo, bucketTags)
	if err != nil {
		return err
	}
	if tags == nil {
		return fmt.Errorf("tag %s in %s: %w", tag, repo, errNoRepository)
	}
	if old := tags.Get([]byte(tag)); old != nil && string(old) != string(d) && keyable(string(old)) {
		if err := t.deleteEntry(bucketTagged, taggedKey(repo, digest.Digest(old), tag)); err != nil {
			return err
		}
	}
	if err := tags.Put([]byte(tag), []byte(d)); err != nil {
		return fmt.Errorf("tag %s in %s: %w", tag, repo, err)
	}
	return t.putEntry(bucketTagged, taggedKey(repo, d, tag))
}

// DeleteTag removes tag and its tagged/ entry.
func (t *tx) DeleteTag(repo, tag string) error {
	if err := t.write(); err != nil {
		return err
	}
	tags, err := t.repoSub(repo, bucketTags)
	if tags == nil || err != nil {
		return err
	}
	old := tags.Get([]byte(tag))
	if old == nil {
		return nil
	}
	if keyable(string(old)) {
		if err := t.deleteEntry(bucketTagged, taggedKey(repo, digest.Digest(old), tag)); err != nil {
			return err
		}
	}
	if err := tags.Delete([]byte(tag)); err != nil {
		return fmt.Errorf("delete tag %s in %s: %w", tag, repo, err)
	}
	return nil
}

// Tags walks the tags of repo after after.
func (t *tx) Tags(repo, after string, fn func(tag string, d digest.Digest) error) error {
	if err := t.read(); err != nil {
		return err
	}
	tags, err := t.repoSub(repo, bucketTags)
	if err != nil {
		return err
	}
	var seek []byte
	if after != "" {
		seek = []byte(after)
	}
	return t.walk(tags, seek, true, nil, func(k, v []byte) error {
		if v == nil {
			return corrupt(path(repo, bucketTags), k, errBucket)
		}
		return fn(string(k), digest.Digest(v))
	})
}

// TagsOf reads the tagged/ entries of d in repo.
func (t *tx) TagsOf(repo string, d digest.Digest) ([]string, error) {
	if err := t.read(); err != nil {
		return nil, err
	}
	if !keyable(repo) || !keyable(string(d)) {
		return nil, nil
	}
	var out []string
	prefix := taggedPrefix(repo, d)
	err := t.walk(t.btx.Bucket(bucketTagged), prefix, false, prefix, func(k, _ []byte) error {
		if len(k) == len(prefix) {
			return corrupt("tagged", k, errors.New("no tag"))
		}
		out = append(out, string(k[len(prefix):]))
		return nil
	})
	return out, err
}

// history returns the bucket of the history of tag in repo, or nil.
func (t *tx) history(repo, tag string) *bolt.Bucket {
	rh := t.btx.Bucket(bucketHistory).Bucket([]byte(repo))
	if rh == nil {
		return nil
	}
	return rh.Bucket([]byte(tag))
}

// AppendMove appends m to the history of tag, numbered by the bucket's
// sequence.
func (t *tx) AppendMove(repo, tag string, m meta.Move) (meta.Move, error) {
	if err := t.write(); err != nil {
		return m, err
	}
	if err := validName("repository name", repo); err != nil {
		return m, err
	}
	if err := validName("tag", tag); err != nil {
		return m, err
	}
	rh, err := t.btx.Bucket(bucketHistory).CreateBucketIfNotExists([]byte(repo))
	if err != nil {
		return m, fmt.Errorf("history of %s: %w", repo, err)
	}
	th, err := rh.CreateBucketIfNotExists([]byte(tag))
	if err != nil {
		return m, fmt.Errorf("history of %s:%s: %w", repo, tag, err)
	}
	seq, err := th.NextSequence()
	if err != nil {
		return m, fmt.Errorf("history of %s:%s: %w", repo, tag, err)
	}
	m.Seq = seq
	return m, putJSON(th, seqKey(seq), m)
}

// Moves walks the history of tag backwards from just before before.
func (t *tx) Moves(repo, tag string, before uint64, fn func(m meta.Move) error) error {
	if err := t.read(); err != nil {
		return err
	}
	th := t.history(repo, tag)
	if th == nil {
		return nil
	}
	where := "history/" + repo + "/" + tag
	c := th.Cursor()
	var k, v []byte
	if before == 0 {
		k, v = c.Last()
	} else {
		bound := seqKey(before)
		k, v = c.Seek(bound)
		if k == nil {
			k, v = c.Last()
		}
		for k != nil && bytes.Compare(k, bound) >= 0 {
			k, v = c.Prev()
		}
	}
	for k != nil {
		var m meta.Move
		if err := decode(v, &m); err != nil {
			return corrupt(where, k, err)
		}
		cur := bytes.Clone(k)
		if err := fn(m); err != nil {
			return stop(err)
		}
		if t.done {
			return errFinished
		}
		if t.writable {
			// fn may have changed the history: find the place again.
			if k, _ = c.Seek(cur); k == nil {
				k, v = c.Last()
			} else {
				k, v = c.Prev()
			}
		} else {
			k, v = c.Prev()
		}
	}
	return nil
}
