package storage

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// Online garbage collection.
//
// CollectGarbage removes, while the store keeps serving reads and writes:
//
//  1. upload sessions idle for longer than GCOptions.UploadIdle;
//  2. referrers whose subject manifest is no longer in their repository
//     (a signature or SBOM of a deleted image), repeatedly, since a
//     referrer of a removed referrer is orphaned in turn;
//  3. repository blob links that no manifest record of the repository
//     references;
//  4. blobs (index record and file) that no repository links, that are no
//     repository's manifest, and that no manifest references;
//  5. repository buckets left with nothing in them, so that the catalog
//     forgets them (tag history lives outside them and stays).
//
// It never removes a manifest merely because no tag names it: deployments
// pull by digest, and deciding that an untagged manifest is no longer
// wanted is the job of retention policies. Once retention (or a client)
// deletes a manifest, collection reclaims what only it referenced.
//
// The invariant: collection never deletes a link or a blob that a
// committed manifest references, nor one that an upload or manifest push
// in progress is about to reference. It rests on four things.
//
//   - Grace. Nothing younger than GCOptions.Grace is a candidate: a link's
//     time is refreshed whenever the blob is uploaded or mounted into the
//     repository again, so the blobs of a push in progress are younger
//     than the grace as long as the push takes less than the grace.
//   - Seen. A link that a HEAD or GET found (StatBlob, OpenBlob) within
//     the grace is kept: the client may be about to reference it from a
//     manifest without uploading it. The mark is made under the digest's
//     lock before the lookup, and collection checks marks under the same
//     lock, so either collection sees the mark, or its transaction has
//     committed before the lookup begins and the lookup finds no link (the
//     client then uploads the blob). The marks live in memory (a restart
//     forgets them) and the grace should exceed the time a client takes
//     from checking a blob to pushing the manifest that references it.
//   - Transactions. Every removal happens in a bbolt write transaction
//     that first checks again, against the committed state, that the
//     candidate is still unreferenced and old. bbolt serialises write
//     transactions and PutManifest checks its references in its own, so
//     either the manifest commits first and collection sees the reference,
//     or collection commits first and the push fails cleanly with
//     ErrManifestBlobUnknown (which the grace and the seen marks make
//     impossible for a client that uploaded or checked its blobs in time).
//   - Digest locks. commitBlob places a file before its transaction. It
//     holds the digest's lock (a stripe of digestLocks) from placing to
//     committing, and PutManifest holds it across its transaction;
//     collection holds the locks of a batch of candidates across its
//     transaction and the removal of their files, so it never removes a
//     file that a concurrent commit has just placed and is recording.
//
// Files are removed after the transaction deleting their records commits:
// a crash in between leaves orphan files (harmless; fsck --repair removes
// them), never records without files.

// gcBatch bounds the candidates removed in one write transaction, so that
// pushes are never stalled for long.
const gcBatch = 128

// GCOptions tune one garbage collection.
type GCOptions struct {
	// Grace is the age below which nothing is collected; see gc.go.
	Grace time.Duration
	// Now is the time of the collection; zero means time.Now().
	Now time.Time
	// UploadIdle, when positive, expires upload sessions idle that long.
	UploadIdle time.Duration
	// DryRun reports what would be removed and removes nothing. Upload
	// sessions are not counted.
	DryRun bool
}

// GCReport says what one garbage collection removed (or, in a dry run,
// would remove).
type GCReport struct {
	UploadsExpired      int           `json:"uploadsExpired"`
	ManifestsRemoved    int           `json:"manifestsRemoved"`
	LinksRemoved        int           `json:"linksRemoved"`
	BlobsRemoved        int           `json:"blobsRemoved"`
	BytesReclaimed      int64         `json:"bytesReclaimed"`
	RepositoriesRemoved int           `json:"repositoriesRemoved"`
	DryRun              bool          `json:"dryRun"`
	Duration            time.Duration `json:"duration"`
}

// gcRepo is one repository as the planning snapshot saw it.
type gcRepo struct {
	manifests map[digest.Digest]manifestRecord
	links     map[digest.Digest]linkRecord
	// removed are the orphan referrers planned for removal; kept are the
	// other manifests, whose references are known.
	removed []digest.Digest
	kept    map[digest.Digest]bool
	// referenced is what the kept manifests reference.
	referenced map[digest.Digest]bool
	// unlinked are the links planned for removal.
	unlinked []digest.Digest
	other    bool // holds something this collection does not know of
}

// gcPlan is what a collection means to remove, worked out from one
// snapshot of the index. Each removal checks again when it happens.
type gcPlan struct {
	repos map[string]*gcRepo
	names []string
	blobs []digest.Digest
	sizes map[digest.Digest]int64
}

// CollectGarbage removes what nothing references any more, as described
// above, and reports what it removed. It runs while the store serves
// other requests; it may be stopped through ctx between two batches.
func (s *Store) CollectGarbage(ctx context.Context, opts GCOptions) (rep GCReport, err error) {
	start := time.Now()
	rep.DryRun = opts.DryRun
	if opts.Grace < 0 {
		return rep, fmt.Errorf("gc: negative grace %s", opts.Grace)
	}
	now := opts.Now
	if now.IsZero() {
		now = start
	}
	cutoff := now.Add(-opts.Grace)
	defer func() { rep.Duration = time.Since(start) }()

	if opts.UploadIdle > 0 && !opts.DryRun {
		n, err := s.ExpireUploads(ctx, opts.UploadIdle, now)
		rep.UploadsExpired = n
		if err != nil {
			return rep, fmt.Errorf("gc: %w", err)
		}
	}
	var plan *gcPlan
	err = s.db.View(func(tx *bolt.Tx) error {
		var err error
		plan, err = s.planGC(ctx, tx, cutoff)
		return err
	})
	if err != nil {
		return rep, fmt.Errorf("gc: plan: %w", err)
	}
	if opts.DryRun {
		plan.report(&rep)
		return rep, nil
	}
	if err := s.removeOrphanReferrers(ctx, plan, cutoff, &rep); err != nil {
		return rep, fmt.Errorf("gc: %w", err)
	}
	if err := s.removeLinks(ctx, plan, cutoff, &rep); err != nil {
		return rep, fmt.Errorf("gc: %w", err)
	}
	if err := s.removeBlobs(ctx, plan, cutoff, &rep); err != nil {
		return rep, fmt.Errorf("gc: %w", err)
	}
	if err := s.removeEmptyRepos(ctx, &rep); err != nil {
		return rep, fmt.Errorf("gc: %w", err)
	}
	s.seen.prune(cutoff)
	s.log.InfoContext(ctx, "garbage collected", "uploads", rep.UploadsExpired, "manifests", rep.ManifestsRemoved,
		"links", rep.LinksRemoved, "blobs", rep.BlobsRemoved, "bytes", rep.BytesReclaimed,
		"repositories", rep.RepositoriesRemoved, "grace", opts.Grace, "duration", time.Since(start))
	return rep, nil
}

// planGC reads the snapshot tx and works out the candidates: orphan
// referrers, then the links and blobs that only they or nothing reference.
func (s *Store) planGC(ctx context.Context, tx *bolt.Tx, cutoff time.Time) (*gcPlan, error) {
	plan := &gcPlan{repos: map[string]*gcRepo{}, sizes: map[digest.Digest]int64{}}
	err := tx.Bucket(bucketRepos).ForEachBucket(func(name []byte) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		r, err := readGCRepo(tx.Bucket(bucketRepos).Bucket(name))
		if err != nil {
			return fmt.Errorf("repository %s: %w", name, err)
		}
		plan.repos[string(name)] = r
		plan.names = append(plan.names, string(name))
		return nil
	})
	if err != nil {
		return nil, err
	}
	// What stays a manifest, stays referenced or stays linked anywhere
	// keeps its blob.
	live := map[digest.Digest]bool{}
	for _, name := range plan.names {
		r := plan.repos[name]
		r.planManifests(cutoff)
		for d, l := range r.links {
			if !r.referenced[d] && l.Linked.Before(cutoff) && !s.seen.since(name, d, cutoff) {
				r.unlinked = append(r.unlinked, d)
			} else {
				live[d] = true
			}
		}
		slices.Sort(r.unlinked)
		for d := range r.kept {
			live[d] = true
		}
		for d := range r.referenced {
			live[d] = true
		}
	}
	blobs := tx.Bucket(bucketBlobs)
	err = blobs.ForEach(func(k, v []byte) error {
		d := digest.Digest(k)
		if live[d] {
			return nil
		}
		var rec blobRecord
		if err := decodeJSON(k, v, &rec); err != nil {
			return err
		}
		if rec.Created.Before(cutoff) {
			plan.blobs = append(plan.blobs, d)
			plan.sizes[d] = rec.Size
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("blobs: %w", err)
	}
	return plan, nil
}

// readGCRepo reads a repository bucket's manifests and links.
func readGCRepo(rb *bolt.Bucket) (*gcRepo, error) {
	r := &gcRepo{manifests: map[digest.Digest]manifestRecord{}, links: map[digest.Digest]linkRecord{}}
	if b := rb.Bucket(bucketManifests); b != nil {
		err := forEachJSON(b, func(k []byte, rec manifestRecord) error {
			r.manifests[digest.Digest(k)] = rec
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	if b := rb.Bucket(bucketLinks); b != nil {
		err := forEachJSON(b, func(k []byte, rec linkRecord) error {
			r.links[digest.Digest(k)] = rec
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	// Buckets or keys that other features keep in a repository make it
	// non-empty whatever happens to its content.
	err := rb.ForEach(func(k, v []byte) error {
		switch {
		case v != nil:
			r.other = true
		case slices.ContainsFunc([][]byte{bucketLinks, bucketManifests, bucketTags, bucketReferrers}, func(b []byte) bool { return string(b) == string(k) }):
		default:
			if c, _ := rb.Bucket(k).Cursor().First(); c != nil {
				r.other = true
			}
		}
		return nil
	})
	return r, err
}

// planManifests finds the orphan referrers, repeating until a pass finds
// none, and what the remaining manifests reference.
func (r *gcRepo) planManifests(cutoff time.Time) {
	r.kept = map[digest.Digest]bool{}
	for d := range r.manifests {
		r.kept[d] = true
	}
	// Each pass removes at least one manifest, so there are at most as
	// many passes as manifests.
	for range len(r.manifests) + 1 {
		var found []digest.Digest
		for d := range r.kept {
			rec := r.manifests[d]
			if rec.Subject != nil && !r.kept[rec.Subject.Digest] && rec.Created.Before(cutoff) {
				found = append(found, d)
			}
		}
		if len(found) == 0 {
			break
		}
		slices.Sort(found)
		for _, d := range found {
			delete(r.kept, d)
		}
		r.removed = append(r.removed, found...)
	}
	r.referenced = map[digest.Digest]bool{}
	for d := range r.kept {
		for _, ref := range r.manifests[d].References {
			r.referenced[ref] = true
		}
	}
}

// report fills rep with what the plan would remove.
func (p *gcPlan) report(rep *GCReport) {
	for _, name := range p.names {
		r := p.repos[name]
		rep.ManifestsRemoved += len(r.removed)
		rep.LinksRemoved += len(r.unlinked)
		// With no manifest kept, no tag is left either: tags name
		// manifests, and removing a manifest removes its tags.
		if !r.other && len(r.kept) == 0 && len(r.unlinked) == len(r.links) {
			rep.RepositoriesRemoved++
		}
	}
	rep.BlobsRemoved = len(p.blobs)
	for _, d := range p.blobs {
		rep.BytesReclaimed += p.sizes[d]
	}
}

// removeOrphanReferrers removes the planned orphan referrers, one
// transaction each, checking again that each is still an old orphan. One
// with an immutable tag is left alone.
func (s *Store) removeOrphanReferrers(ctx context.Context, plan *gcPlan, cutoff time.Time, rep *GCReport) error {
	for _, name := range plan.names {
		for _, d := range plan.repos[name].removed {
			if err := ctx.Err(); err != nil {
				return err
			}
			removed := false
			err := s.db.Update(func(tx *bolt.Tx) error {
				rb := repoBucket(tx, name)
				if rb == nil {
					return nil
				}
				var rec manifestRecord
				if ok, err := getJSON(rb.Bucket(bucketManifests), []byte(d), &rec); err != nil || !ok {
					return err
				}
				if rec.Subject == nil || !rec.Created.Before(cutoff) ||
					rb.Bucket(bucketManifests).Get([]byte(rec.Subject.Digest)) != nil {
					return nil
				}
				if err := s.removeManifest(ctx, tx, rb, name, d, rec, MoveGC); err != nil {
					return err
				}
				removed = true
				return nil
			})
			if errors.Is(err, ErrTagImmutable) {
				s.log.InfoContext(ctx, "gc: orphan referrer kept: an immutable tag names it", "repo", name, "digest", d)
				continue
			}
			if err != nil {
				return fmt.Errorf("remove orphan referrer %s in %s: %w", d, name, err)
			}
			if removed {
				rep.ManifestsRemoved++
			}
		}
	}
	return nil
}

// newReferences returns what the manifests of rb reference that the plan
// did not account for: manifests pushed since the snapshot, or planned
// for removal but kept.
func newReferences(rb *bolt.Bucket, r *gcRepo, into map[digest.Digest]bool) error {
	return rb.Bucket(bucketManifests).ForEach(func(k, v []byte) error {
		if r != nil && r.kept[digest.Digest(k)] {
			return nil
		}
		var rec manifestRecord
		if err := decodeJSON(k, v, &rec); err != nil {
			return err
		}
		for _, ref := range rec.References {
			into[ref] = true
		}
		return nil
	})
}

// removeLinks removes the planned links in batches, each under the locks
// of its digests, checking each again in the transaction.
func (s *Store) removeLinks(ctx context.Context, plan *gcPlan, cutoff time.Time, rep *GCReport) error {
	for _, name := range plan.names {
		r := plan.repos[name]
		for batch := range slices.Chunk(r.unlinked, gcBatch) {
			if err := ctx.Err(); err != nil {
				return err
			}
			n, err := s.removeLinkBatch(name, r, batch, cutoff)
			if err != nil {
				return fmt.Errorf("remove links in %s: %w", name, err)
			}
			rep.LinksRemoved += n
		}
	}
	return nil
}

func (s *Store) removeLinkBatch(name string, r *gcRepo, batch []digest.Digest, cutoff time.Time) (int, error) {
	defer s.locks.lockAll(batch)()
	n := 0
	err := s.db.Update(func(tx *bolt.Tx) error {
		n = 0
		rb := repoBucket(tx, name)
		if rb == nil {
			return nil
		}
		fresh := map[digest.Digest]bool{}
		if err := newReferences(rb, r, fresh); err != nil {
			return err
		}
		links := rb.Bucket(bucketLinks)
		for _, d := range batch {
			var l linkRecord
			if ok, err := getJSON(links, []byte(d), &l); err != nil {
				return err
			} else if !ok {
				continue
			}
			if r.referenced[d] || fresh[d] || !l.Linked.Before(cutoff) || s.seen.since(name, d, cutoff) {
				continue
			}
			if err := links.Delete([]byte(d)); err != nil {
				return fmt.Errorf("unlink %s: %w", d, err)
			}
			n++
		}
		return nil
	})
	return n, err
}

// removeBlobs removes the planned blobs in batches: under the locks of
// the batch's digests, a transaction checks each again and deletes its
// record, then the files go.
func (s *Store) removeBlobs(ctx context.Context, plan *gcPlan, cutoff time.Time, rep *GCReport) error {
	for batch := range slices.Chunk(plan.blobs, gcBatch) {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := s.removeBlobBatch(ctx, plan, batch, cutoff, rep); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) removeBlobBatch(ctx context.Context, plan *gcPlan, batch []digest.Digest, cutoff time.Time, rep *GCReport) error {
	defer s.locks.lockAll(batch)()
	var gone []digest.Digest
	var bytes int64
	err := s.db.Update(func(tx *bolt.Tx) error {
		gone, bytes = gone[:0], 0
		repos := tx.Bucket(bucketRepos)
		fresh := map[digest.Digest]bool{}
		err := repos.ForEachBucket(func(name []byte) error {
			return newReferences(repos.Bucket(name), plan.repos[string(name)], fresh)
		})
		if err != nil {
			return err
		}
		blobs := tx.Bucket(bucketBlobs)
	candidates:
		for _, d := range batch {
			var rec blobRecord
			if ok, err := getJSON(blobs, []byte(d), &rec); err != nil {
				return err
			} else if !ok || !rec.Created.Before(cutoff) || fresh[d] {
				continue
			}
			c := repos.Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				if v != nil {
					continue
				}
				rb := repos.Bucket(k)
				if bucketGet(rb, bucketLinks, []byte(d)) != nil || bucketGet(rb, bucketManifests, []byte(d)) != nil {
					continue candidates
				}
			}
			if err := blobs.Delete([]byte(d)); err != nil {
				return fmt.Errorf("delete blob record %s: %w", d, err)
			}
			gone = append(gone, d)
			bytes += rec.Size
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("remove blobs: %w", err)
	}
	rep.BlobsRemoved += len(gone)
	rep.BytesReclaimed += bytes
	// Still under the locks: no commit of these digests can be placing
	// their files now, and any later one finds no record and places anew.
	for _, d := range gone {
		if err := s.removeFile(s.blobPath(d)); err != nil {
			// An orphan file: harmless, and fsck --repair removes it.
			s.log.WarnContext(ctx, "gc: remove blob file", "digest", d, "error", err)
		}
	}
	return nil
}

// removeEmptyRepos deletes the repository buckets that hold nothing.
func (s *Store) removeEmptyRepos(ctx context.Context, rep *GCReport) error {
	var empty []string
	err := s.db.View(func(tx *bolt.Tx) error {
		repos := tx.Bucket(bucketRepos)
		return repos.ForEachBucket(func(name []byte) error {
			if emptyRepo(repos.Bucket(name)) {
				empty = append(empty, string(name))
			}
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("list empty repositories: %w", err)
	}
	for batch := range slices.Chunk(empty, gcBatch) {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := 0
		err := s.db.Update(func(tx *bolt.Tx) error {
			n = 0
			repos := tx.Bucket(bucketRepos)
			for _, name := range batch {
				if rb := repos.Bucket([]byte(name)); rb == nil || !emptyRepo(rb) {
					continue
				}
				if err := repos.DeleteBucket([]byte(name)); err != nil {
					return fmt.Errorf("delete repository %s: %w", name, err)
				}
				n++
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("remove empty repositories: %w", err)
		}
		rep.RepositoriesRemoved += n
	}
	return nil
}

// emptyRepo reports whether a repository bucket holds no key and only
// empty buckets.
func emptyRepo(rb *bolt.Bucket) bool {
	empty := true
	_ = rb.ForEach(func(k, v []byte) error {
		if v != nil {
			empty = false
		} else if c, _ := rb.Bucket(k).Cursor().First(); c != nil {
			empty = false
		}
		return nil
	})
	return empty
}
