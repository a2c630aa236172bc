package bolt

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	bolt "go.etcd.io/bbolt"

	"github.com/berth-registry/berth/storage/meta"
	"github.com/berth-registry/berth/storage/meta/internal/record"
)

// ErrReadOnly is wrapped by the error of a change attempted in a View.
var ErrReadOnly = errors.New("read-only transaction")

// ErrInvalidKey is wrapped by the error of a change whose repository
// name, digest or other key the index cannot hold (empty, a NUL byte, or
// not a digest).
var ErrInvalidKey = errors.New("invalid index key")

// errFinished is returned by a Tx used after its function returned.
var errFinished = errors.New("index transaction used after its function returned")

// errBucket describes a nested bucket found where a record belongs.
var errBucket = errors.New("a bucket where a record belongs")

// tx is a meta.Tx over one bbolt transaction. Several may share one bbolt
// transaction, one per function of a group commit.
type tx struct {
	btx      *bolt.Tx
	writable bool
	done     bool
}

var _ meta.Tx = (*tx)(nil)

// finish ends the Tx's validity, when its function returns.
func (t *tx) finish() { t.done = true }

func (t *tx) read() error {
	if t.done {
		return errFinished
	}
	return nil
}

func (t *tx) write() error {
	if t.done {
		return errFinished
	}
	if !t.writable {
		return fmt.Errorf("change the index: %w", ErrReadOnly)
	}
	return nil
}

// corrupt is the error of a record or key of bucket that cannot be
// decoded.
func corrupt(bucket string, key []byte, err error) error {
	return fmt.Errorf("%w: %s key %q: %w", meta.ErrCorrupt, bucket, key, err)
}

// decode decodes a record's JSON; a nil value is a nested bucket, as a
// cursor yields it.
func decode(v []byte, out any) error {
	if v == nil {
		return errBucket
	}
	return json.Unmarshal(v, out)
}

// getJSON decodes the record under key in b, named path in errors,
// reporting whether there is one. A nil b has none.
func getJSON(b *bolt.Bucket, path string, key []byte, out any) (bool, error) {
	if b == nil {
		return false, nil
	}
	v := b.Get(key)
	if v == nil {
		if b.Bucket(key) != nil {
			return false, corrupt(path, key, errBucket)
		}
		return false, nil
	}
	if err := json.Unmarshal(v, out); err != nil {
		return false, corrupt(path, key, err)
	}
	return true, nil
}

func putJSON(b *bolt.Bucket, key []byte, v any) error {
	buf, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode record: %w", err)
	}
	if err := b.Put(key, buf); err != nil {
		return fmt.Errorf("write record %q: %w", key, err)
	}
	return nil
}

// has reports whether b holds key, with a value or as a bucket. (Get
// cannot tell: within a write transaction, an empty value reads as nil.)
func has(b *bolt.Bucket, key []byte) bool {
	if b == nil {
		return false
	}
	k, _ := b.Cursor().Seek(key)
	return k != nil && bytes.Equal(k, key)
}

// walk calls fn for the keys of b from seek (the first key when seek is
// nil), skipping seek itself when exclusive, while they start with prefix.
// fn returning meta.ErrStop ends the walk with nil. In a write transaction
// fn may change b: the walk finds its place again after each call.
func (t *tx) walk(b *bolt.Bucket, seek []byte, exclusive bool, prefix []byte, fn func(k, v []byte) error) error {
	if b == nil {
		return nil
	}
	c := b.Cursor()
	var k, v []byte
	if seek == nil {
		k, v = c.First()
	} else {
		k, v = c.Seek(seek)
		if exclusive && bytes.Equal(k, seek) {
			k, v = c.Next()
		}
	}
	for k != nil && bytes.HasPrefix(k, prefix) {
		cur := k
		if t.writable {
			cur = bytes.Clone(k)
		}
		if err := fn(k, v); err != nil {
			if errors.Is(err, meta.ErrStop) {
				return nil
			}
			return err
		}
		if t.done {
			return errFinished
		}
		if t.writable {
			k, v = c.Seek(cur)
			if bytes.Equal(k, cur) {
				k, v = c.Next()
			}
		} else {
			k, v = c.Next()
		}
	}
	return nil
}

// stop turns meta.ErrStop into the end of a walk.
func stop(err error) error {
	if errors.Is(err, meta.ErrStop) {
		return nil
	}
	return err
}

func validRepo(repo string) error {
	if !keyable(repo) {
		return fmt.Errorf("%w: repository name %q", ErrInvalidKey, repo)
	}
	return nil
}

func validDigest(d digest.Digest) error {
	if err := d.Validate(); err != nil {
		return fmt.Errorf("%w: digest %q: %w", ErrInvalidKey, d, err)
	}
	return nil
}

func validName(what, s string) error {
	if s == "" {
		return fmt.Errorf("%w: empty %s", ErrInvalidKey, what)
	}
	return nil
}

// repo returns the bucket of repo, or nil if it does not exist. A record
// where its bucket belongs is corrupt.
func (t *tx) repo(repo string) (*bolt.Bucket, error) {
	repos := t.btx.Bucket(bucketRepos)
	if rb := repos.Bucket([]byte(repo)); rb != nil {
		return rb, nil
	}
	if repos.Get([]byte(repo)) != nil {
		return nil, corrupt("repos", []byte(repo), errors.New("a record where a repository bucket belongs"))
	}
	return nil, nil
}

// repoSub returns the nested bucket name of repo, or nil.
func (t *tx) repoSub(repo string, name []byte) (*bolt.Bucket, error) {
	rb, err := t.repo(repo)
	if rb == nil || err != nil {
		return nil, err
	}
	return rb.Bucket(name), nil
}

// ensureRepo returns the bucket of repo, creating it and its nested
// buckets on first use.
func (t *tx) ensureRepo(repo string) (*bolt.Bucket, error) {
	if err := validRepo(repo); err != nil {
		return nil, err
	}
	rb, err := t.btx.Bucket(bucketRepos).CreateBucketIfNotExists([]byte(repo))
	if err != nil {
		return nil, fmt.Errorf("create repository %s: %w", repo, err)
	}
	for _, name := range repoBuckets {
		if _, err := rb.CreateBucketIfNotExists(name); err != nil {
			return nil, fmt.Errorf("create repository %s bucket %s: %w", repo, name, err)
		}
	}
	return rb, nil
}

func path(repo string, bucket []byte) string { return "repos/" + repo + "/" + string(bucket) }

// Blob returns the record of d.
func (t *tx) Blob(d digest.Digest) (meta.Blob, bool, error) {
	if err := t.read(); err != nil {
		return meta.Blob{}, false, err
	}
	var rec record.Blob
	ok, err := getJSON(t.btx.Bucket(bucketBlobs), "blobs", []byte(d), &rec)
	return meta.Blob{Size: rec.Size, Created: rec.Created}, ok, err
}

// PutBlob records d.
func (t *tx) PutBlob(d digest.Digest, b meta.Blob) error {
	if err := t.write(); err != nil {
		return err
	}
	if err := validDigest(d); err != nil {
		return err
	}
	return putJSON(t.btx.Bucket(bucketBlobs), []byte(d), record.Blob{Size: b.Size, Created: b.Created})
}

// DeleteBlob removes the record of d.
func (t *tx) DeleteBlob(d digest.Digest) error {
	if err := t.write(); err != nil {
		return err
	}
	if err := t.btx.Bucket(bucketBlobs).Delete([]byte(d)); err != nil {
		return fmt.Errorf("delete blob record %s: %w", d, err)
	}
	return nil
}

// Blobs walks blobs/ in digest order.
func (t *tx) Blobs(fn func(d digest.Digest, b meta.Blob) error) error {
	if err := t.read(); err != nil {
		return err
	}
	return t.walk(t.btx.Bucket(bucketBlobs), nil, false, nil, func(k, v []byte) error {
		var rec record.Blob
		if err := decode(v, &rec); err != nil {
			return corrupt("blobs", k, err)
		}
		return fn(digest.Digest(k), meta.Blob{Size: rec.Size, Created: rec.Created})
	})
}

// Uses walks the uses/ entries of d (in repo, if set), in the order of
// repository, kind ('l', 'm', 'r') and referencing manifest.
func (t *tx) Uses(d digest.Digest, repo string, fn func(u meta.Use) error) error {
	if err := t.read(); err != nil {
		return err
	}
	if !keyable(string(d)) || (repo != "" && !keyable(repo)) {
		return nil // no key can hold them
	}
	prefix := usePrefix(d, repo)
	return t.walk(t.btx.Bucket(bucketUses), prefix, false, prefix, func(k, _ []byte) error {
		got, u, ok := parseUseKey(k)
		if !ok || got != d {
			return corrupt("uses", k, errors.New("not a use key"))
		}
		return fn(u)
	})
}

// Repository reports whether repo's bucket exists.
func (t *tx) Repository(repo string) (bool, error) {
	if err := t.read(); err != nil {
		return false, err
	}
	rb, err := t.repo(repo)
	return rb != nil, err
}

// Repositories walks repos/ after after.
func (t *tx) Repositories(after string, fn func(repo string) error) error {
	if err := t.read(); err != nil {
		return err
	}
	var seek []byte
	if after != "" {
		seek = []byte(after)
	}
	return t.walk(t.btx.Bucket(bucketRepos), seek, true, nil, func(k, v []byte) error {
		if v != nil {
			return corrupt("repos", k, errors.New("a record where a repository bucket belongs"))
		}
		return fn(string(k))
	})
}

// DeleteRepository deletes repo's bucket if every bucket in it is empty.
func (t *tx) DeleteRepository(repo string) (bool, error) {
	if err := t.write(); err != nil {
		return false, err
	}
	rb, err := t.repo(repo)
	if rb == nil || err != nil {
		return false, err
	}
	c := rb.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if v != nil {
			return false, nil
		}
		if sk, _ := rb.Bucket(k).Cursor().First(); sk != nil {
			return false, nil
		}
	}
	if err := t.btx.Bucket(bucketRepos).DeleteBucket([]byte(repo)); err != nil {
		return false, fmt.Errorf("delete repository %s: %w", repo, err)
	}
	return true, nil
}

// Link returns the link of d in repo.
func (t *tx) Link(repo string, d digest.Digest) (meta.Link, bool, error) {
	if err := t.read(); err != nil {
		return meta.Link{}, false, err
	}
	links, err := t.repoSub(repo, bucketLinks)
	if err != nil {
		return meta.Link{}, false, err
	}
	var rec record.Link
	ok, err := getJSON(links, path(repo, bucketLinks), []byte(d), &rec)
	return meta.Link{Linked: rec.Linked, Seen: rec.Seen}, ok, err
}

// PutLink links d into repo and records the use.
func (t *tx) PutLink(repo string, d digest.Digest, l meta.Link) error {
	if err := t.write(); err != nil {
		return err
	}
	if err := validDigest(d); err != nil {
		return err
	}
	rb, err := t.ensureRepo(repo)
	if err != nil {
		return err
	}
	if err := putJSON(rb.Bucket(bucketLinks), []byte(d), record.Link{Linked: l.Linked, Seen: l.Seen}); err != nil {
		return err
	}
	return t.putEntry(bucketUses, useKey(d, repo, meta.UseLink, ""))
}

// DeleteLink unlinks d from repo, with its use.
func (t *tx) DeleteLink(repo string, d digest.Digest) error {
	if err := t.write(); err != nil {
		return err
	}
	links, err := t.repoSub(repo, bucketLinks)
	if links == nil || err != nil {
		return err
	}
	if err := links.Delete([]byte(d)); err != nil {
		return fmt.Errorf("delete link %s in %s: %w", d, repo, err)
	}
	if !keyable(string(d)) {
		return nil
	}
	return t.deleteEntry(bucketUses, useKey(d, repo, meta.UseLink, ""))
}

// Links walks the links of repo.
func (t *tx) Links(repo string, fn func(d digest.Digest, l meta.Link) error) error {
	if err := t.read(); err != nil {
		return err
	}
	links, err := t.repoSub(repo, bucketLinks)
	if err != nil {
		return err
	}
	return t.walk(links, nil, false, nil, func(k, v []byte) error {
		var rec record.Link
		if err := decode(v, &rec); err != nil {
			return corrupt(path(repo, bucketLinks), k, err)
		}
		return fn(digest.Digest(k), meta.Link{Linked: rec.Linked, Seen: rec.Seen})
	})
}

// putEntry and deleteEntry write the derived entry key of bucket.
func (t *tx) putEntry(bucket, key []byte) error {
	if err := t.btx.Bucket(bucket).Put(key, nil); err != nil {
		return fmt.Errorf("write %s entry %q: %w", bucket, key, err)
	}
	return nil
}

func (t *tx) deleteEntry(bucket, key []byte) error {
	if err := t.btx.Bucket(bucket).Delete(key); err != nil {
		return fmt.Errorf("delete %s entry %q: %w", bucket, key, err)
	}
	return nil
}

// Manifest returns the record of manifest d in repo.
func (t *tx) Manifest(repo string, d digest.Digest) (meta.Manifest, bool, error) {
	if err := t.read(); err != nil {
		return meta.Manifest{}, false, err
	}
	manifests, err := t.repoSub(repo, bucketManifests)
	if err != nil {
		return meta.Manifest{}, false, err
	}
	var rec record.Manifest
	ok, err := getJSON(manifests, path(repo, bucketManifests), []byte(d), &rec)
	if !ok || err != nil {
		return meta.Manifest{}, false, err
	}
	return rec.Meta(), true, nil
}

// PutManifest records manifest d in repo with its derived entries,
// replacing a record there may be and its entries.
func (t *tx) PutManifest(repo string, d digest.Digest, m meta.Manifest) error {
	if err := t.write(); err != nil {
		return err
	}
	if err := validDigest(d); err != nil {
		return err
	}
	for _, ref := range m.References {
		if err := validDigest(ref); err != nil {
			return fmt.Errorf("reference of %s: %w", d, err)
		}
	}
	if m.Subject != nil {
		if err := validDigest(m.Subject.Digest); err != nil {
			return fmt.Errorf("subject of %s: %w", d, err)
		}
	}
	rb, err := t.ensureRepo(repo)
	if err != nil {
		return err
	}
	if err := t.dropManifestEntries(rb, repo, d); err != nil {
		return err
	}
	rec := record.FromManifest(m)
	if err := putJSON(rb.Bucket(bucketManifests), []byte(d), rec); err != nil {
		return err
	}
	return t.addManifestEntries(rb, repo, d, &rec)
}

// addManifestEntries adds the derived entries of manifest d of repo,
// whose record is rec: search, uses and referrers.
func (t *tx) addManifestEntries(rb *bolt.Bucket, repo string, d digest.Digest, rec *record.Manifest) error {
	put := func(bucket []byte) func([]byte) error {
		return func(k []byte) error { return t.putEntry(bucket, k) }
	}
	if err := searchKeys(repo, d, rec, put(bucketSearch)); err != nil {
		return err
	}
	if err := manifestUseKeys(repo, d, rec, put(bucketUses)); err != nil {
		return err
	}
	if rec.Subject == nil {
		return nil
	}
	sb, err := rb.Bucket(bucketReferrers).CreateBucketIfNotExists([]byte(rec.Subject.Digest))
	if err != nil {
		return fmt.Errorf("record referrer %s of %s: %w", d, rec.Subject.Digest, err)
	}
	return putJSON(sb, []byte(d), rec.Meta().Descriptor(d))
}

// dropManifestEntries removes the derived entries of the manifest record
// d of repo, if there is one. The record is the guide when it decodes; the
// entries of one that does not are found by walking the indexes.
func (t *tx) dropManifestEntries(rb *bolt.Bucket, repo string, d digest.Digest) error {
	v := rb.Bucket(bucketManifests).Get([]byte(d))
	if v == nil && !has(rb.Bucket(bucketManifests), []byte(d)) {
		return nil
	}
	del := func(bucket []byte) func([]byte) error {
		return func(k []byte) error { return t.deleteEntry(bucket, k) }
	}
	var rec record.Manifest
	if decode(v, &rec) == nil {
		if err := searchKeys(repo, d, &rec, del(bucketSearch)); err != nil {
			return err
		}
		if err := manifestUseKeys(repo, d, &rec, del(bucketUses)); err != nil {
			return err
		}
		if rec.Subject != nil {
			return dropReferrer(rb.Bucket(bucketReferrers), []byte(rec.Subject.Digest), []byte(d))
		}
		return nil
	}
	// An undecodable record: walk.
	var stale [][]byte
	_ = t.btx.Bucket(bucketSearch).ForEach(func(k, _ []byte) error {
		if e, ok := parseSearchKey(k); ok && e.repo == repo && e.digest == d {
			stale = append(stale, bytes.Clone(k))
		}
		return nil
	})
	for _, k := range stale {
		if err := t.deleteEntry(bucketSearch, k); err != nil {
			return err
		}
	}
	stale = stale[:0]
	_ = t.btx.Bucket(bucketUses).ForEach(func(k, _ []byte) error {
		if _, u, ok := parseUseKey(k); ok && u.Repo == repo && u.Kind == meta.UseReference && u.Manifest == d {
			stale = append(stale, bytes.Clone(k))
		}
		return nil
	})
	stale = append(stale, useKey(d, repo, meta.UseManifest, ""))
	for _, k := range stale {
		if err := t.deleteEntry(bucketUses, k); err != nil {
			return err
		}
	}
	refs := rb.Bucket(bucketReferrers)
	var subjects [][]byte
	_ = refs.ForEach(func(k, v []byte) error {
		if v == nil && has(refs.Bucket(k), []byte(d)) {
			subjects = append(subjects, bytes.Clone(k))
		}
		return nil
	})
	for _, subj := range subjects {
		if err := dropReferrer(refs, subj, []byte(d)); err != nil {
			return err
		}
	}
	return nil
}

// dropReferrer deletes the referrers entry key of subject, and the
// subject's bucket once it is empty.
func dropReferrer(refs *bolt.Bucket, subject, key []byte) error {
	sb := refs.Bucket(subject)
	if sb == nil {
		return nil
	}
	if err := sb.Delete(key); err != nil {
		return fmt.Errorf("delete referrer %s of %s: %w", key, subject, err)
	}
	if k, _ := sb.Cursor().First(); k == nil {
		if err := refs.DeleteBucket(subject); err != nil {
			return fmt.Errorf("delete referrers of %s: %w", subject, err)
		}
	}
	return nil
}

// DeleteManifest removes manifest d of repo with its derived entries.
func (t *tx) DeleteManifest(repo string, d digest.Digest) error {
	if err := t.write(); err != nil {
		return err
	}
	rb, err := t.repo(repo)
	if rb == nil || err != nil {
		return err
	}
	manifests := rb.Bucket(bucketManifests)
	if !has(manifests, []byte(d)) {
		return nil
	}
	if err := t.dropManifestEntries(rb, repo, d); err != nil {
		return err
	}
	if err := manifests.Delete([]byte(d)); err != nil {
		return fmt.Errorf("delete manifest %s in %s: %w", d, repo, err)
	}
	return nil
}

// Manifests walks the manifests of repo after after.
func (t *tx) Manifests(repo string, after digest.Digest, fn func(d digest.Digest, m meta.Manifest) error) error {
	if err := t.read(); err != nil {
		return err
	}
	manifests, err := t.repoSub(repo, bucketManifests)
	if err != nil {
		return err
	}
	var seek []byte
	if after != "" {
		seek = []byte(after)
	}
	return t.walk(manifests, seek, true, nil, func(k, v []byte) error {
		var rec record.Manifest
		if err := decode(v, &rec); err != nil {
			return corrupt(path(repo, bucketManifests), k, err)
		}
		return fn(digest.Digest(k), rec.Meta())
	})
}

// Referrers walks the referrers entries of subject in repo.
func (t *tx) Referrers(repo string, subject digest.Digest, fn func(desc ocispec.Descriptor) error) error {
	if err := t.read(); err != nil {
		return err
	}
	refs, err := t.repoSub(repo, bucketReferrers)
	if refs == nil || err != nil {
		return err
	}
	sb := refs.Bucket([]byte(subject))
	if sb == nil {
		if refs.Get([]byte(subject)) != nil {
			return corrupt(path(repo, bucketReferrers), []byte(subject), errors.New("a record where a subject bucket belongs"))
		}
		return nil
	}
	where := path(repo, bucketReferrers) + "/" + string(subject)
	return t.walk(sb, nil, false, nil, func(k, v []byte) error {
		var desc ocispec.Descriptor
		if err := decode(v, &desc); err != nil {
			return corrupt(where, k, err)
		}
		return fn(desc)
	})
}
