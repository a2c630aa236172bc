// Package gc is Berth's online garbage collection: a client of the storage
// core that removes, while the store keeps serving reads and writes, what
// nothing references any more.
//
// Collect removes:
//
//  1. upload sessions idle for longer than Options.UploadIdle;
//  2. referrers whose subject manifest is no longer in their repository
//     (a signature or SBOM of a deleted image), repeatedly, since a
//     referrer of a removed referrer is orphaned in turn;
//  3. repository blob links that no manifest of the repository references;
//  4. blobs (index record and content) that no repository links, that are
//     no repository's manifest, and that no manifest references;
//  5. repositories left with nothing in them, so that the catalog forgets
//     them (tag history outlives them).
//
// It never removes a manifest merely because no tag names it: deployments
// pull by digest, and deciding that an untagged manifest is no longer
// wanted is the job of retention policies. Once retention (or a client)
// deletes a manifest, collection reclaims what only it referenced.
//
// A collection plans from one snapshot of the index, then removes in
// batches, each in a transaction of its own that checks every candidate
// again against the committed state. The re-check asks the index who uses
// the candidate (meta.Tx.Uses: links, manifests and references by digest),
// so its cost follows the candidates, not the size of the store.
//
// # The invariant
//
// Collection never deletes a link or a blob that a committed manifest
// references, nor one that an upload, a lookup or a manifest push in
// progress is about to reference; and this holds with a collection
// running in every replica at once, over one shared index and one shared
// blob store, while every replica serves pushes and pulls. No collection
// relies on anything held in a process's memory. It rests on five things.
//
//   - Grace. Nothing whose last activity is younger than Options.Grace is
//     a candidate: a link's Linked time is refreshed whenever the blob is
//     uploaded or mounted into the repository again, so the blobs of a
//     push in progress are younger than the grace as long as the push
//     takes less than the grace.
//   - Seen, in the index. A lookup (HEAD or GET of a blob) that tells a
//     client a link exists has recorded in the index, within the
//     refresh period before it (storage.Options.SeenRefresh), that the
//     link was active: its Linked or its Seen time (storage/seen.go). A
//     lookup that writes Seen re-reads the link in the same transaction
//     and answers unknown if it is gone. A link is thus removed only by a
//     collection whose cutoff is after the link's recorded activity, one
//     that began at least the grace less one refresh period after the
//     lookup. Collection refuses a positive grace below MinGraceRefreshes
//     refresh periods, so that a client always has most of the grace to
//     push the manifest that references what it found. (A grace of 0, for
//     a registry where nothing is being pushed, protects no lookup.)
//   - Serialisable transactions that check again. Every removal happens
//     in a read-write transaction (meta.Store.Update, serialisable: bolt
//     has one writer; a database backend runs SERIALIZABLE and retries)
//     that first checks again, against the committed state, that the
//     candidate is still old (Linked, Seen, Created) and unused
//     (meta.Tx.Uses). A manifest push checks its references, and a lookup
//     re-reads its link, in transactions of their own, so for each pair
//     one commits first: the push or the lookup, and collection sees the
//     reference or the Seen time and keeps the candidate; or collection,
//     and the push fails cleanly with MANIFEST_BLOB_UNKNOWN (which the
//     grace and Seen make impossible for a client that uploaded or checked
//     its blobs in time) or the lookup answers unknown. Two collections
//     removing the same candidate are ordered the same way: the second
//     finds it gone and counts nothing.
//   - Digest locks across replicas. The core places content before the
//     transaction that records it, holding the digest's lock
//     (meta.Store.LockDigests, which every replica sharing the index
//     honours) from placing to committing. Collection holds the locks of a
//     batch of blob candidates across its transaction and the removal of
//     their content, so it never removes content that a concurrent commit
//     on any replica has just placed and is recording, and a commit that
//     comes after finds no record and places the content anew.
//   - Content after records. Content is removed only after the
//     transaction deleting its record commits, under the digest's lock: a
//     crash in between leaves content without a record (harmless; fsck
//     --repair removes it), never a record without content.
//
// The margins are wall-clock times compared across replicas: the grace
// must exceed the longest push plus the refresh period plus any
// difference between the replicas' clocks.
//
// The pull-through cache records manifests before the content they
// reference arrives (storage.PutOptions.Upstream): such a reference is
// pending, and there is nothing to remove for it. Its use entry exists from
// the manifest's transaction on, so the content, once a fill commits it
// (placed and recorded under its digest's lock, linked in the same
// transaction), is referenced like any other, and the points above hold
// for it unchanged.
//
// Upload sessions expire by the staged content's last write, which the
// blob store keeps with the content, so an append in progress on any
// replica keeps its session alive (storage.Service.ExpireUploads).
package gc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/meta"
)

// batch bounds the candidates removed in one write transaction, so that
// pushes are never stalled for long.
const batch = 128

// MinGraceRefreshes is how many of the core's seen refresh periods
// (storage.Service.SeenRefresh) a grace must span at least, unless it is
// zero: a lookup guarantees its link only for the grace less one refresh
// period.
const MinGraceRefreshes = 4

// ErrGraceTooShort is returned by Collect for a grace that is positive but
// shorter than MinGraceRefreshes seen refresh periods.
var ErrGraceTooShort = errors.New("grace too short")

// Options tune one collection.
type Options struct {
	// Grace is the age below which nothing is collected. It must be at
	// least MinGraceRefreshes seen refresh periods of the Service, or
	// zero: no grace at all, for an operator who knows that nothing is
	// being pushed (a lookup then protects nothing).
	Grace time.Duration
	// Now is the time of the collection; zero means time.Now().
	Now time.Time
	// UploadIdle, when positive, expires upload sessions idle that long.
	UploadIdle time.Duration
	// DryRun reports what would be removed and removes nothing. Upload
	// sessions are not counted.
	DryRun bool
	// Logger receives a line per collection; nil discards it.
	Logger *slog.Logger
}

// Report says what one collection removed (or, in a dry run, would
// remove).
type Report struct {
	UploadsExpired      int           `json:"uploadsExpired"`
	ManifestsRemoved    int           `json:"manifestsRemoved"`
	LinksRemoved        int           `json:"linksRemoved"`
	BlobsRemoved        int           `json:"blobsRemoved"`
	BytesReclaimed      int64         `json:"bytesReclaimed"`
	RepositoriesRemoved int           `json:"repositoriesRemoved"`
	DryRun              bool          `json:"dryRun"`
	Duration            time.Duration `json:"duration"`
}

// Collect removes what nothing references any more, as the package
// comment describes, and reports what it removed. It runs while svc serves
// other requests; it may be stopped through ctx between two batches.
func Collect(ctx context.Context, svc *storage.Service, opts Options) (rep Report, err error) {
	start := time.Now()
	rep.DryRun = opts.DryRun
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.Grace < 0 {
		return rep, fmt.Errorf("gc: negative grace %s", opts.Grace)
	}
	if least := MinGraceRefreshes * svc.SeenRefresh(); opts.Grace > 0 && opts.Grace < least {
		return rep, fmt.Errorf("gc: %w: grace %s is less than %d times the seen refresh period %s: "+
			"use at least %s (or 0 when nothing is being pushed)", ErrGraceTooShort, opts.Grace, MinGraceRefreshes, svc.SeenRefresh(), least)
	}
	now := opts.Now
	if now.IsZero() {
		now = start
	}
	cutoff := now.Add(-opts.Grace)
	defer func() { rep.Duration = time.Since(start) }()
	ctx = storage.WithActor(ctx, storage.System())

	if opts.UploadIdle > 0 && !opts.DryRun {
		n, err := svc.ExpireUploads(ctx, opts.UploadIdle, now)
		rep.UploadsExpired = n
		if err != nil {
			return rep, fmt.Errorf("gc: %w", err)
		}
	}
	var p *plan
	err = svc.View(ctx, func(tx meta.Tx) error {
		var err error
		p, err = makePlan(ctx, svc, tx, cutoff)
		return err
	})
	if err != nil {
		return rep, fmt.Errorf("gc: plan: %w", err)
	}
	if opts.DryRun {
		p.report(&rep)
		return rep, nil
	}
	c := collection{svc: svc, plan: p, cutoff: cutoff, log: log, rep: &rep}
	for _, step := range []func(context.Context) error{c.removeOrphans, c.removeLinks, c.removeBlobs, c.removeRepos} {
		if err := step(ctx); err != nil {
			return rep, fmt.Errorf("gc: %w", err)
		}
	}
	log.InfoContext(ctx, "garbage collected", "uploads", rep.UploadsExpired, "manifests", rep.ManifestsRemoved,
		"links", rep.LinksRemoved, "blobs", rep.BlobsRemoved, "bytes", rep.BytesReclaimed,
		"repositories", rep.RepositoriesRemoved, "grace", opts.Grace, "duration", time.Since(start))
	return rep, nil
}

// repoPlan is what a collection means to remove from one repository.
type repoPlan struct {
	// orphans are the orphan referrers, in the order of the passes that
	// found them (a referrer of an orphan after the orphan).
	orphans  []digest.Digest
	orphaned map[digest.Digest]bool
	// unlinked are the links to remove, in digest order.
	unlinked []digest.Digest
	unlink   map[digest.Digest]bool
	// manifests and links count what the repository holds; empty says
	// it holds nothing once the plan is carried out.
	manifests, links int
}

// plan is what a collection means to remove, worked out from one snapshot
// of the index. Each removal checks again when it happens.
type plan struct {
	repos  []string
	byRepo map[string]*repoPlan
	blobs  []digest.Digest
	sizes  map[digest.Digest]int64
}

// makePlan reads the snapshot tx and works out the candidates: orphan
// referrers, then the links and blobs that only they or nothing use.
func makePlan(ctx context.Context, svc *storage.Service, tx meta.Tx, cutoff time.Time) (*plan, error) {
	p := &plan{byRepo: map[string]*repoPlan{}, sizes: map[digest.Digest]int64{}}
	err := tx.Repositories("", func(repo string) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		r, err := planRepo(svc, tx, repo, cutoff)
		if err != nil {
			return fmt.Errorf("repository %s: %w", repo, err)
		}
		p.repos = append(p.repos, repo)
		p.byRepo[repo] = r
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = tx.Blobs(func(d digest.Digest, b meta.Blob) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !b.Created.Before(cutoff) {
			return nil
		}
		used, err := p.used(tx, d)
		if err != nil || used {
			return err
		}
		p.blobs = append(p.blobs, d)
		p.sizes[d] = b.Size
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("blobs: %w", err)
	}
	return p, nil
}

// planRepo finds the orphan referrers of repo, repeating until a pass
// finds none, then the links nothing else in repo references.
func planRepo(svc *storage.Service, tx meta.Tx, repo string, cutoff time.Time) (*repoPlan, error) {
	r := &repoPlan{orphaned: map[digest.Digest]bool{}, unlink: map[digest.Digest]bool{}}
	subjects := map[digest.Digest]digest.Digest{} // old referrers to their subject
	err := tx.Manifests(repo, "", func(d digest.Digest, m meta.Manifest) error {
		r.manifests++
		if m.Subject != nil && m.Created.Before(cutoff) {
			subjects[d] = m.Subject.Digest
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// An orphan that an immutable tag names stays (removeOrphans cannot
	// remove it), and so it is no orphan: the plan, and a dry run, must
	// say what the collection does.
	for d := range subjects {
		tags, err := tx.TagsOf(repo, d)
		if err != nil {
			return nil, err
		}
		if slices.ContainsFunc(tags, func(tag string) bool { return svc.Immutable(repo, tag) }) {
			delete(subjects, d)
		}
	}
	// Each pass finds at least one orphan, so there are at most as many
	// passes as referrers.
	for range len(subjects) + 1 {
		var found []digest.Digest
		for d, subj := range subjects {
			if r.orphaned[d] {
				continue
			}
			_, present, err := tx.Manifest(repo, subj)
			if err != nil {
				return nil, err
			}
			if !present || r.orphaned[subj] {
				found = append(found, d)
			}
		}
		if len(found) == 0 {
			break
		}
		slices.Sort(found)
		for _, d := range found {
			r.orphaned[d] = true
		}
		r.orphans = append(r.orphans, found...)
	}
	err = tx.Links(repo, func(d digest.Digest, l meta.Link) error {
		r.links++
		if !storage.LastActive(l).Before(cutoff) {
			return nil
		}
		referenced := false
		err := tx.Uses(d, repo, func(u meta.Use) error {
			if u.Kind == meta.UseReference && !r.orphaned[u.Manifest] {
				referenced = true
				return meta.ErrStop
			}
			return nil
		})
		if err != nil || referenced {
			return err
		}
		r.unlinked = append(r.unlinked, d)
		r.unlink[d] = true
		return nil
	})
	return r, err
}

// used reports whether the plan leaves d any use: a link, a manifest or a
// reference that the plan does not remove.
func (p *plan) used(tx meta.Tx, d digest.Digest) (bool, error) {
	used := false
	err := tx.Uses(d, "", func(u meta.Use) error {
		r := p.byRepo[u.Repo]
		switch {
		case r == nil: // a repository created since the walk above
		case u.Kind == meta.UseLink && r.unlink[d]:
			return nil
		case u.Kind == meta.UseManifest && r.orphaned[d]:
			return nil
		case u.Kind == meta.UseReference && r.orphaned[u.Manifest]:
			return nil
		}
		used = true
		return meta.ErrStop
	})
	return used, err
}

// report fills rep with what the plan would remove.
func (p *plan) report(rep *Report) {
	for _, repo := range p.repos {
		r := p.byRepo[repo]
		rep.ManifestsRemoved += len(r.orphans)
		rep.LinksRemoved += len(r.unlinked)
		if r.empty() {
			rep.RepositoriesRemoved++
		}
	}
	rep.BlobsRemoved = len(p.blobs)
	for _, d := range p.blobs {
		rep.BytesReclaimed += p.sizes[d]
	}
}

// empty reports whether the repository holds nothing once the plan is
// carried out. With no manifest left, no tag is left either: tags name
// manifests, and removing a manifest removes its tags.
func (r *repoPlan) empty() bool {
	return len(r.orphans) == r.manifests && len(r.unlinked) == r.links
}

// collection carries out a plan.
type collection struct {
	svc    *storage.Service
	plan   *plan
	cutoff time.Time
	log    *slog.Logger
	rep    *Report
}

// removeOrphans removes the planned orphan referrers, one transaction
// each, checking again that each is still an old orphan. One that an
// immutable tag names is left alone.
func (c *collection) removeOrphans(ctx context.Context) error {
	for _, repo := range c.plan.repos {
		for _, d := range c.plan.byRepo[repo].orphans {
			if err := ctx.Err(); err != nil {
				return err
			}
			removed := false
			err := c.svc.Update(ctx, func(tx *storage.Tx) error {
				removed = false
				m, ok, err := tx.Manifest(repo, d)
				if err != nil || !ok || m.Subject == nil || !m.Created.Before(c.cutoff) {
					return err
				}
				if _, present, err := tx.Manifest(repo, m.Subject.Digest); err != nil || present {
					return err
				}
				if err := tx.RemoveManifest(repo, d, storage.MoveGC); err != nil {
					return err
				}
				removed = true
				return nil
			})
			if errors.Is(err, storage.ErrTagImmutable) {
				c.log.InfoContext(ctx, "gc: orphan referrer kept: an immutable tag names it", "repo", repo, "digest", d)
				continue
			}
			if err != nil {
				return fmt.Errorf("remove orphan referrer %s in %s: %w", d, repo, err)
			}
			if removed {
				c.rep.ManifestsRemoved++
			}
		}
	}
	return nil
}

// removeLinks removes the planned links in batches, checking each again in
// the transaction: still old (neither linked nor seen by a lookup since the
// cutoff) and unreferenced. Links need no digest lock: a commit that links
// a blob again, and a lookup that records Seen, change the link in their
// own transactions, which the index orders with this one.
func (c *collection) removeLinks(ctx context.Context) error {
	for _, repo := range c.plan.repos {
		for ds := range slices.Chunk(c.plan.byRepo[repo].unlinked, batch) {
			if err := ctx.Err(); err != nil {
				return err
			}
			n := 0
			err := c.svc.Update(ctx, func(tx *storage.Tx) error {
				n = 0
				for _, d := range ds {
					l, ok, err := tx.Link(repo, d)
					if err != nil {
						return err
					}
					if !ok || !storage.LastActive(l).Before(c.cutoff) {
						continue // gone, or linked or seen since the cutoff
					}
					if referenced, err := referencedIn(tx, repo, d); err != nil {
						return err
					} else if referenced {
						continue
					}
					if err := tx.DeleteLink(repo, d); err != nil {
						return fmt.Errorf("unlink %s: %w", d, err)
					}
					tx.Publish(storage.Event{Action: storage.EventGC, Repo: repo, Digest: d, Actor: storage.System()})
					n++
				}
				return nil
			})
			if err != nil {
				return fmt.Errorf("remove links in %s: %w", repo, err)
			}
			c.rep.LinksRemoved += n
		}
	}
	return nil
}

// referencedIn reports whether a manifest of repo references d.
func referencedIn(tx meta.Tx, repo string, d digest.Digest) (bool, error) {
	found := false
	err := tx.Uses(d, repo, func(u meta.Use) error {
		if u.Kind == meta.UseReference {
			found = true
			return meta.ErrStop
		}
		return nil
	})
	return found, err
}

// removeBlobs removes the planned blobs in batches: under the locks of
// the batch's digests, a transaction checks each again and deletes its
// record, then the content goes.
func (c *collection) removeBlobs(ctx context.Context) error {
	for ds := range slices.Chunk(c.plan.blobs, batch) {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := c.removeBlobBatch(ctx, ds); err != nil {
			return err
		}
	}
	return nil
}

func (c *collection) removeBlobBatch(ctx context.Context, ds []digest.Digest) error {
	unlock, err := c.svc.LockDigests(ctx, ds...)
	if err != nil {
		return err
	}
	defer unlock()
	var gone []digest.Digest
	var bytes int64
	err = c.svc.Update(ctx, func(tx *storage.Tx) error {
		gone, bytes = gone[:0], 0
		for _, d := range ds {
			b, ok, err := tx.Blob(d)
			if err != nil {
				return err
			}
			if !ok || !b.Created.Before(c.cutoff) {
				continue
			}
			used := false
			if err := tx.Uses(d, "", func(meta.Use) error { used = true; return meta.ErrStop }); err != nil {
				return err
			}
			if used {
				continue
			}
			if err := tx.DeleteBlob(d); err != nil {
				return fmt.Errorf("delete blob record %s: %w", d, err)
			}
			tx.Publish(storage.Event{Action: storage.EventGC, Digest: d, Size: b.Size, Actor: storage.System()})
			gone = append(gone, d)
			bytes += b.Size
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("remove blobs: %w", err)
	}
	c.rep.BlobsRemoved += len(gone)
	c.rep.BytesReclaimed += bytes
	// Still under the locks: no commit of these digests can be placing
	// their content now, and any later one finds no record and places anew.
	for _, d := range gone {
		if err := c.svc.Blobs().Delete(ctx, d); err != nil {
			// Content without a record: harmless, and fsck --repair
			// removes it.
			c.log.WarnContext(ctx, "gc: remove blob content", "digest", d, "error", err)
		}
	}
	return nil
}

// removeRepos deletes the repositories the plan leaves empty, if they are.
func (c *collection) removeRepos(ctx context.Context) error {
	var empty []string
	for _, repo := range c.plan.repos {
		if c.plan.byRepo[repo].empty() {
			empty = append(empty, repo)
		}
	}
	for names := range slices.Chunk(empty, batch) {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := 0
		err := c.svc.Update(ctx, func(tx *storage.Tx) error {
			n = 0
			for _, repo := range names {
				deleted, err := tx.DeleteRepository(repo)
				if err != nil {
					return fmt.Errorf("delete repository %s: %w", repo, err)
				}
				if deleted {
					n++
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("remove empty repositories: %w", err)
		}
		c.rep.RepositoriesRemoved += n
	}
	return nil
}
