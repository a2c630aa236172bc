package bolt

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"

	"github.com/berth-registry/berth/storage/meta"
	"github.com/berth-registry/berth/storage/meta/internal/record"
)

// The kinds of meta.Finding that Check reports.
const (
	// FindingBadRecord: a record that does not decode, or a key that
	// cannot be what its bucket holds. Never repaired.
	FindingBadRecord = "bad-record"
	// FindingRobotSecret: a robotSecrets/ entry naming no robot, or one
	// whose hash is not that robot's, or a robot whose hash is not
	// indexed (its secret is refused).
	FindingRobotSecret = "robot-secret"
	// FindingDanglingReferrer: a referrers entry naming no manifest of the
	// repository with that subject, or one missing or stale for a
	// manifest that has a subject.
	FindingDanglingReferrer = "dangling-referrer"
	// FindingSearchIndex: a search/ entry missing for, or not made from,
	// the current manifest records.
	FindingSearchIndex = "search-index"
	// FindingUseIndex: a uses/ entry missing for, or not made from, the
	// current links and manifest records.
	FindingUseIndex = "use-index"
	// FindingTagIndex: a tagged/ entry missing for, or not made from,
	// the current tags.
	FindingTagIndex = "tag-index"
)

// repairBatch bounds the repairs made in one transaction.
const repairBatch = 256

// finding is a meta.Finding with its repair, if it has one. A repair
// checks its premise again in its own transaction, and returns what it did
// or "" if nothing needed doing any more.
type finding struct {
	meta.Finding
	fix func(*bolt.Tx) (string, error)
}

// Check checks the invariants the index keeps beyond what a Tx shows:
// records and keys that decode, robotSecrets/ against robots/ both ways,
// and the derived referrers, search/, uses/ and tagged/ entries against
// the records they derive from. With repair it rebuilds the derived
// entries and the secret index, a batch of repairs per transaction, each
// checking its premise again; records that do not decode are only
// reported. The check reads one snapshot in one read transaction, which
// runs alongside Update. report is called once per finding, after any
// repair, in index order.
func (s *Store) Check(ctx context.Context, repair bool, report func(meta.Finding)) error {
	var found []*finding
	err := s.db.View(func(btx *bolt.Tx) error {
		c := &checker{ctx: ctx, tx: btx, look: newLookup(btx, true)}
		c.add = func(f *finding) { found = append(found, f) }
		return c.run()
	})
	if err != nil {
		err = fmt.Errorf("check index: %w", err)
	}
	if err == nil && repair {
		err = s.repair(ctx, found)
	}
	for _, f := range found {
		report(f.Finding)
	}
	return err
}

// repair applies the fixes of found, setting Repaired.
func (s *Store) repair(ctx context.Context, found []*finding) error {
	var fixable []*finding
	for _, f := range found {
		if f.fix != nil {
			fixable = append(fixable, f)
		}
	}
	for len(fixable) > 0 {
		batch := fixable[:min(repairBatch, len(fixable))]
		fixable = fixable[len(batch):]
		var actions []string
		err := s.update(ctx, func(btx *bolt.Tx) error {
			actions = actions[:0]
			for _, f := range batch {
				a, err := f.fix(btx)
				if err != nil {
					return fmt.Errorf("repair %s %s: %w", f.Kind, f.Detail, err)
				}
				actions = append(actions, a)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for i, f := range batch {
			f.Repaired = actions[i]
			if actions[i] != "" {
				s.log.InfoContext(ctx, "index repaired", "kind", f.Kind, "repo", f.Repo, "digest", f.Digest,
					"tag", f.Tag, "action", actions[i])
			}
		}
	}
	return nil
}

// checker walks one snapshot of the index.
type checker struct {
	ctx  context.Context
	tx   *bolt.Tx
	look *lookup
	add  func(*finding)
}

func (c *checker) run() error {
	for _, step := range []func() error{c.blobs, c.repos, c.uses, c.tagged, c.search, c.robots, c.uploads, c.history, c.pulls, c.outbox} {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}

func (c *checker) bad(f meta.Finding) {
	f.Kind = FindingBadRecord
	c.add(&finding{Finding: f})
}

// each calls fn for every key of b, stopping when the context ends.
func (c *checker) each(b *bolt.Bucket, fn func(k, v []byte)) error {
	if b == nil {
		return nil
	}
	cur := b.Cursor()
	for k, v := cur.First(); k != nil; k, v = cur.Next() {
		if err := c.ctx.Err(); err != nil {
			return err
		}
		fn(k, v)
	}
	return nil
}

func (c *checker) blobs() error {
	return c.each(c.tx.Bucket(bucketBlobs), func(k, v []byte) {
		var rec record.Blob
		if err := checkRecord(k, v, &rec); err != "" {
			c.bad(meta.Finding{Digest: string(k), Detail: "blobs/ " + err})
		}
	})
}

// checkRecord checks a record whose key is a digest; it returns what is
// wrong, or "".
func checkRecord(k, v []byte, out any) string {
	if err := digest.Digest(k).Validate(); err != nil {
		return fmt.Sprintf("key is not a digest Berth reads: %v", err)
	}
	if err := decode(v, out); err != nil {
		return "record: " + err.Error()
	}
	return ""
}

// want reports a derived entry that is missing.
func (c *checker) want(kind string, bucket, key []byte, f meta.Finding, wanted func(*lookup, []byte) bool) {
	if has(c.tx.Bucket(bucket), key) {
		return
	}
	f.Kind = kind
	c.add(&finding{Finding: f, fix: syncEntry(bucket, key, wanted)})
}

func (c *checker) repos() error {
	repos := c.tx.Bucket(bucketRepos)
	return c.each(repos, func(name, v []byte) {
		repo := string(name)
		rb := repos.Bucket(name)
		if v != nil || rb == nil {
			c.bad(meta.Finding{Repo: repo, Detail: "repos/ holds a record where a repository bucket belongs"})
			return
		}
		_ = c.each(rb, func(k, v []byte) {
			if v != nil || !isRepoBucket(k) {
				c.bad(meta.Finding{Repo: repo, Detail: fmt.Sprintf("repos/%s/ holds %q, which is none of its buckets", repo, k)})
			}
		})
		_ = c.each(rb.Bucket(bucketLinks), func(k, v []byte) {
			var rec record.Link
			if err := checkRecord(k, v, &rec); err != "" {
				c.bad(meta.Finding{Repo: repo, Digest: string(k), Detail: path(repo, bucketLinks) + " " + err})
			}
			if keyable(string(k)) {
				c.want(FindingUseIndex, bucketUses, useKey(digest.Digest(k), repo, meta.UseLink, ""),
					meta.Finding{Repo: repo, Digest: string(k), Detail: "uses/ has no entry for the link"}, (*lookup).useWanted)
			}
		})
		_ = c.each(rb.Bucket(bucketManifests), func(k, v []byte) { c.manifest(rb, repo, k, v) })
		_ = c.each(rb.Bucket(bucketTags), func(k, v []byte) {
			if v == nil || digest.Digest(v).Validate() != nil {
				c.bad(meta.Finding{Repo: repo, Tag: string(k), Detail: path(repo, bucketTags) + " value is not a digest"})
			}
			if v != nil && keyable(string(v)) {
				c.want(FindingTagIndex, bucketTagged, taggedKey(repo, digest.Digest(v), string(k)),
					meta.Finding{Repo: repo, Tag: string(k), Digest: string(v), Detail: "tagged/ has no entry for the tag"}, (*lookup).taggedWanted)
			}
		})
		refs := rb.Bucket(bucketReferrers)
		_ = c.each(refs, func(subject, v []byte) {
			sb := refs.Bucket(subject)
			if v != nil || sb == nil {
				c.bad(meta.Finding{Repo: repo, Subject: string(subject), Detail: path(repo, bucketReferrers) + " holds a record where a subject bucket belongs"})
				return
			}
			_ = c.each(sb, func(k, _ []byte) {
				want, _, known := c.look.referrer(repo, digest.Digest(subject), digest.Digest(k))
				if known && !want {
					c.add(&finding{
						Finding: meta.Finding{Kind: FindingDanglingReferrer, Repo: repo, Subject: string(subject), Digest: string(k),
							Detail: "the referrer is not a manifest of the repository with this subject"},
						fix: fixReferrer(repo, digest.Digest(subject), digest.Digest(k)),
					})
				}
			})
		})
	})
}

func isRepoBucket(k []byte) bool {
	for _, b := range repoBuckets {
		if bytes.Equal(k, b) {
			return true
		}
	}
	return false
}

// manifest checks one manifest record and the derived entries it makes.
func (c *checker) manifest(rb *bolt.Bucket, repo string, k, v []byte) {
	d := digest.Digest(k)
	if keyable(string(d)) {
		c.want(FindingUseIndex, bucketUses, useKey(d, repo, meta.UseManifest, ""),
			meta.Finding{Repo: repo, Digest: string(d), Detail: "uses/ has no entry for the manifest"}, (*lookup).useWanted)
	}
	var rec record.Manifest
	if err := checkRecord(k, v, &rec); err != "" {
		c.bad(meta.Finding{Repo: repo, Digest: string(d), Detail: path(repo, bucketManifests) + " " + err})
		return
	}
	for _, ref := range rec.References {
		if keyable(string(ref)) {
			c.want(FindingUseIndex, bucketUses, useKey(ref, repo, meta.UseReference, d),
				meta.Finding{Repo: repo, Digest: string(ref), Detail: "uses/ has no entry for the reference from manifest " + string(d)},
				(*lookup).useWanted)
		}
	}
	_ = searchKeys(repo, d, &rec, func(key []byte) error {
		e, _ := parseSearchKey(key)
		c.want(FindingSearchIndex, bucketSearch, key,
			meta.Finding{Repo: repo, Digest: string(d), Detail: "search/ has no entry for the " + pairName(e)}, (*lookup).searchWanted)
		return nil
	})
	if rec.Subject == nil {
		return
	}
	subject := rec.Subject.Digest
	_, want, _ := c.look.referrer(repo, subject, d)
	var got []byte
	if sb := rb.Bucket(bucketReferrers).Bucket([]byte(subject)); sb != nil {
		got = sb.Get(k)
	}
	if got != nil && sameDescriptor(got, want) {
		return
	}
	detail := "the manifest has a subject but no referrers entry"
	if got != nil {
		detail = "the referrers entry is not the manifest's descriptor"
	}
	c.add(&finding{
		Finding: meta.Finding{Kind: FindingDanglingReferrer, Repo: repo, Subject: string(subject), Digest: string(d), Detail: detail},
		fix:     fixReferrer(repo, subject, d),
	})
}

// pairName describes a search entry for people, shortened.
func pairName(e searchEntry) string {
	what := "annotation"
	if e.kind == meta.Label {
		what = "label"
	}
	pair := e.key + "=" + e.value
	if len(pair) > 80 {
		pair = pair[:80] + "…"
	}
	return fmt.Sprintf("%s %q", what, pair)
}

// stale reports the entries of a derived bucket that the records do not
// make.
func (c *checker) stale(kind string, bucket []byte, wanted func(*lookup, []byte) bool, describe func(k []byte) meta.Finding) error {
	return c.each(c.tx.Bucket(bucket), func(k, _ []byte) {
		if wanted(c.look, k) {
			return
		}
		f := describe(k)
		f.Kind = kind
		c.add(&finding{Finding: f, fix: syncEntry(bucket, bytes.Clone(k), wanted)})
	})
}

func (c *checker) uses() error {
	return c.stale(FindingUseIndex, bucketUses, (*lookup).useWanted, func(k []byte) meta.Finding {
		d, u, ok := parseUseKey(k)
		if !ok {
			return meta.Finding{Detail: fmt.Sprintf("uses/ key %q is not a use", k)}
		}
		what := map[meta.UseKind]string{meta.UseLink: "link", meta.UseManifest: "manifest"}[u.Kind]
		if u.Kind == meta.UseReference {
			what = "reference from manifest " + string(u.Manifest)
		}
		return meta.Finding{Repo: u.Repo, Digest: string(d), Detail: "uses/ names a " + what + " the repository does not hold"}
	})
}

func (c *checker) tagged() error {
	return c.stale(FindingTagIndex, bucketTagged, (*lookup).taggedWanted, func(k []byte) meta.Finding {
		repo, d, tag, ok := parseTaggedKey(k)
		if !ok {
			return meta.Finding{Detail: fmt.Sprintf("tagged/ key %q is not a tag entry", k)}
		}
		return meta.Finding{Repo: repo, Digest: string(d), Tag: tag, Detail: "tagged/ says the tag names the digest, and it does not"}
	})
}

func (c *checker) search() error {
	return c.stale(FindingSearchIndex, bucketSearch, (*lookup).searchWanted, func(k []byte) meta.Finding {
		e, ok := parseSearchKey(k)
		if !ok {
			return meta.Finding{Detail: fmt.Sprintf("search/ key %q is not a search entry", k)}
		}
		return meta.Finding{Repo: e.repo, Digest: string(e.digest), Detail: "search/ has an entry for the " + pairName(e) + ", which the manifest does not have"}
	})
}

func (c *checker) robots() error {
	robots, secrets := c.tx.Bucket(bucketRobots), c.tx.Bucket(bucketRobotSecrets)
	short := func(hash []byte) string {
		if len(hash) > 12 {
			return string(hash[:12]) + "…"
		}
		return string(hash)
	}
	err := c.each(secrets, func(k, v []byte) {
		var rec robotRecord
		switch err := decode(robots.Get(v), &rec); {
		case v == nil:
			c.bad(meta.Finding{Detail: fmt.Sprintf("robotSecrets/ holds a bucket at %s where a robot name belongs", short(k))})
		case robots.Get(v) == nil:
			c.add(&finding{Finding: meta.Finding{Kind: FindingRobotSecret,
				Detail: fmt.Sprintf("secret hash %s names robot %q, which does not exist", short(k), v)},
				fix: fixRobotSecret(string(k))})
		case err != nil:
			// Reported below, with the robot.
		case rec.Hash != string(k):
			c.add(&finding{Finding: meta.Finding{Kind: FindingRobotSecret,
				Detail: fmt.Sprintf("secret hash %s names robot %q, whose secret has another hash", short(k), v)},
				fix: fixRobotSecret(string(k))})
		}
	})
	if err != nil {
		return err
	}
	return c.each(robots, func(k, v []byte) {
		var rec robotRecord
		if err := decode(v, &rec); err != nil {
			c.bad(meta.Finding{Detail: fmt.Sprintf("robots/ record of %q: %v", k, err)})
			return
		}
		if rec.Hash == "" {
			c.bad(meta.Finding{Detail: fmt.Sprintf("robots/ record of %q has no secret hash", k)})
			return
		}
		if string(secrets.Get([]byte(rec.Hash))) != string(k) {
			c.add(&finding{Finding: meta.Finding{Kind: FindingRobotSecret,
				Detail: fmt.Sprintf("robot %q: its secret hash %s is not indexed, so its secret is refused", k, short([]byte(rec.Hash)))},
				fix: fixRobotSecret(rec.Hash)})
		}
	})
}

// validUploadID reports whether id can name a session: a single path
// element.
func validUploadID(id string) bool {
	return id != "" && id != "." && id != ".." && !strings.ContainsAny(id, "/\\\x00") && filepath.Base(id) == id
}

func (c *checker) uploads() error {
	return c.each(c.tx.Bucket(bucketUploads), func(k, v []byte) {
		var rec record.Upload
		if err := decode(v, &rec); err != nil {
			c.bad(meta.Finding{Detail: fmt.Sprintf("uploads/ record of %q: %v", k, err)})
		} else if !validUploadID(string(k)) {
			c.bad(meta.Finding{Repo: rec.Repo, Detail: fmt.Sprintf("uploads/ key %q cannot name a session", k)})
		}
	})
}

// outbox checks that every delivery and dead letter decodes.
func (c *checker) outbox() error {
	err := c.each(c.tx.Bucket(bucketOutbox), func(k, v []byte) {
		if d, err := decodeDelivery(k, v); err != nil {
			c.bad(meta.Finding{Repo: d.Key, Detail: err.Error()})
		}
	})
	if err != nil {
		return err
	}
	return c.each(c.tx.Bucket(bucketDeadLetters), func(k, v []byte) {
		if d, err := decodeDeadLetter(k, v); err != nil {
			c.bad(meta.Finding{Repo: d.Key, Detail: err.Error()})
		}
	})
}

func (c *checker) history() error {
	hist := c.tx.Bucket(bucketHistory)
	return c.each(hist, func(name, v []byte) {
		repo := string(name)
		rh := hist.Bucket(name)
		if v != nil || rh == nil {
			c.bad(meta.Finding{Repo: repo, Detail: "history/ holds a record where a repository bucket belongs"})
			return
		}
		_ = c.each(rh, func(tag, v []byte) {
			th := rh.Bucket(tag)
			if v != nil || th == nil {
				c.bad(meta.Finding{Repo: repo, Tag: string(tag), Detail: "history/" + repo + "/ holds a record where a tag bucket belongs"})
				return
			}
			_ = c.each(th, func(k, v []byte) {
				var m meta.Move
				if err := decode(v, &m); err != nil || len(k) != 8 {
					detail := fmt.Sprintf("key %x is not a sequence number", k)
					if err != nil {
						detail = fmt.Sprintf("record %x: %v", k, err)
					}
					c.bad(meta.Finding{Repo: repo, Tag: string(tag), Detail: "history/" + repo + "/" + string(tag) + " " + detail})
				}
			})
		})
	})
}

func (c *checker) pulls() error {
	return c.each(c.tx.Bucket(bucketPulls), func(k, v []byte) {
		repo, d, _, _, ok := parsePullKey(k)
		var rec record.Pull
		switch err := decode(v, &rec); {
		case !ok || d.Validate() != nil:
			c.bad(meta.Finding{Repo: repo, Detail: fmt.Sprintf("pulls/ key %q names no repository, digest and identity", k)})
		case err != nil:
			c.bad(meta.Finding{Repo: repo, Digest: string(d), Detail: fmt.Sprintf("pulls/ record of %q: %v", k, err)})
		}
	})
}

// lookup answers, from the records of one transaction, whether a derived
// entry should exist. With a cache, manifest records are decoded once per
// check rather than once per entry.
type lookup struct {
	tx    *bolt.Tx
	cache map[string]cachedManifest
}

type cachedManifest struct {
	exists bool
	rec    *record.Manifest // nil if it does not decode
}

// maxCached bounds the manifest records a check keeps decoded.
const maxCached = 4096

func newLookup(btx *bolt.Tx, cache bool) *lookup {
	l := &lookup{tx: btx}
	if cache {
		l.cache = map[string]cachedManifest{}
	}
	return l
}

// manifest returns whether repo holds a manifest record of d and, if it
// decodes, the record.
func (l *lookup) manifest(repo string, d digest.Digest) cachedManifest {
	key := repo + "\x00" + string(d)
	if m, ok := l.cache[key]; ok {
		return m
	}
	var m cachedManifest
	if rb := l.tx.Bucket(bucketRepos).Bucket([]byte(repo)); rb != nil {
		manifests := rb.Bucket(bucketManifests)
		m.exists = has(manifests, []byte(d))
		var rec record.Manifest
		if m.exists && decode(manifests.Get([]byte(d)), &rec) == nil {
			m.rec = &rec
		}
	}
	if l.cache != nil {
		if len(l.cache) >= maxCached {
			clear(l.cache)
		}
		l.cache[key] = m
	}
	return m
}

// sub returns the nested bucket name of repo, or nil.
func (l *lookup) sub(repo string, name []byte) *bolt.Bucket {
	if rb := l.tx.Bucket(bucketRepos).Bucket([]byte(repo)); rb != nil {
		return rb.Bucket(name)
	}
	return nil
}

// useWanted: a link or manifest record exists at the key (whether or not
// it decodes: garbage collection must not lose a use to a bad record), or
// the referencing manifest's record references the digest (or does not
// decode, so that nobody can tell).
func (l *lookup) useWanted(k []byte) bool {
	d, u, ok := parseUseKey(k)
	if !ok {
		return false
	}
	switch u.Kind {
	case meta.UseLink:
		return has(l.sub(u.Repo, bucketLinks), []byte(d))
	case meta.UseManifest:
		return has(l.sub(u.Repo, bucketManifests), []byte(d))
	}
	m := l.manifest(u.Repo, u.Manifest)
	if !m.exists {
		return false
	}
	if m.rec == nil {
		return true
	}
	for _, ref := range m.rec.References {
		if ref == d {
			return true
		}
	}
	return false
}

// taggedWanted: the tag names the digest.
func (l *lookup) taggedWanted(k []byte) bool {
	repo, d, tag, ok := parseTaggedKey(k)
	if !ok {
		return false
	}
	tags := l.sub(repo, bucketTags)
	return tags != nil && string(tags.Get([]byte(tag))) == string(d)
}

// searchWanted: the manifest record has the indexed pair (or does not
// decode).
func (l *lookup) searchWanted(k []byte) bool {
	e, ok := parseSearchKey(k)
	if !ok || !indexed(e.key, e.value) {
		return false
	}
	m := l.manifest(e.repo, e.digest)
	if !m.exists {
		return false
	}
	if m.rec == nil {
		return true
	}
	pairs := m.rec.Annotations
	if e.kind == meta.Label {
		pairs = m.rec.Labels
	}
	v, ok := pairs[e.key]
	return ok && v == e.value
}

// referrer says whether repo should have a referrers entry for d under
// subject, and its value; known is false when d's record does not decode,
// so that nobody can tell.
func (l *lookup) referrer(repo string, subject, d digest.Digest) (want bool, value []byte, known bool) {
	m := l.manifest(repo, d)
	if m.exists && m.rec == nil {
		return false, nil, false
	}
	if !m.exists || m.rec.Subject == nil || m.rec.Subject.Digest != subject {
		return false, nil, true
	}
	value, err := json.Marshal(m.rec.Meta().Descriptor(d))
	if err != nil {
		return false, nil, false
	}
	return true, value, true
}

// sameDescriptor reports whether the stored referrers entry got encodes
// the descriptor want does.
func sameDescriptor(got, want []byte) bool {
	var desc any
	if json.Unmarshal(got, &desc) != nil {
		return false
	}
	var w any
	if json.Unmarshal(want, &w) != nil {
		return false
	}
	a, err1 := json.Marshal(desc)
	b, err2 := json.Marshal(w)
	return err1 == nil && err2 == nil && bytes.Equal(a, b)
}

// syncEntry is the repair of a derived entry: add it if wanted, remove it
// if not.
func syncEntry(bucket, key []byte, wanted func(*lookup, []byte) bool) func(*bolt.Tx) (string, error) {
	return func(btx *bolt.Tx) (string, error) {
		b := btx.Bucket(bucket)
		w, h := wanted(newLookup(btx, false), key), has(b, key)
		switch {
		case w && !h:
			if err := b.Put(key, nil); err != nil {
				return "", fmt.Errorf("add %s entry: %w", bucket, err)
			}
			return "added the entry", nil
		case !w && h:
			if err := b.Delete(key); err != nil {
				return "", fmt.Errorf("remove %s entry: %w", bucket, err)
			}
			return "removed the entry", nil
		}
		return "", nil
	}
}

// fixReferrer makes the referrers entry of d under subject in repo what
// the manifest record says.
func fixReferrer(repo string, subject, d digest.Digest) func(*bolt.Tx) (string, error) {
	return func(btx *bolt.Tx) (string, error) {
		rb := btx.Bucket(bucketRepos).Bucket([]byte(repo))
		if rb == nil || rb.Bucket(bucketReferrers) == nil {
			return "", nil
		}
		refs := rb.Bucket(bucketReferrers)
		want, value, known := newLookup(btx, false).referrer(repo, subject, d)
		if !known {
			return "", nil
		}
		sb := refs.Bucket([]byte(subject))
		var got []byte
		if sb != nil {
			got = sb.Get([]byte(d))
		}
		switch {
		case want && got != nil && sameDescriptor(got, value):
			return "", nil
		case want:
			sb, err := refs.CreateBucketIfNotExists([]byte(subject))
			if err != nil {
				return "", fmt.Errorf("referrers of %s: %w", subject, err)
			}
			if err := sb.Put([]byte(d), value); err != nil {
				return "", fmt.Errorf("write referrer: %w", err)
			}
			if got != nil {
				return "rewrote the referrers entry", nil
			}
			return "added the referrers entry", nil
		case has(sb, []byte(d)):
			if err := dropReferrer(refs, []byte(subject), []byte(d)); err != nil {
				return "", err
			}
			return "removed the referrers entry", nil
		}
		return "", nil
	}
}

// fixRobotSecret restores the invariant of robotSecrets/ for hash: an
// entry that names no robot, or a robot with another hash, is deleted; a
// robot whose hash has no entry gets it back.
func fixRobotSecret(hash string) func(*bolt.Tx) (string, error) {
	return func(btx *bolt.Tx) (string, error) {
		robots, secrets := btx.Bucket(bucketRobots), btx.Bucket(bucketRobotSecrets)
		key := []byte(hash)
		if name := secrets.Get(key); name != nil {
			var rec robotRecord
			if decode(robots.Get(name), &rec) == nil && rec.Hash == hash {
				return "", nil // consistent now
			}
			if err := secrets.Delete(key); err != nil {
				return "", fmt.Errorf("remove secret entry: %w", err)
			}
			return "removed the stale secret entry", nil
		}
		var owner []byte
		_ = robots.ForEach(func(k, v []byte) error {
			var rec robotRecord
			if decode(v, &rec) == nil && rec.Hash == hash {
				owner = bytes.Clone(k)
			}
			return nil
		})
		if owner == nil {
			return "", nil
		}
		if err := secrets.Put(key, owner); err != nil {
			return "", fmt.Errorf("index secret hash: %w", err)
		}
		return fmt.Sprintf("indexed the secret hash of robot %q again", owner), nil
	}
}
