package fsck

import (
	"context"
	"errors"
	"fmt"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/blob"
	"github.com/berth-registry/berth/storage/meta"
)

// repair fixes the problems and orphans of r, recording each fix.
func (c *checker) repair(ctx context.Context, r *Report) error {
	ctx = storage.WithActor(ctx, storage.System())
	// Content first: purging a blob also removes the records that name it,
	// which may settle dangling problems found below.
	order := []string{
		ProblemCorrupt, ProblemSize, ProblemMissing,
		ProblemDanglingManifest, ProblemDanglingLink, ProblemDanglingTag, ProblemDanglingUpload,
		ProblemStaleCache,
	}
	for _, kind := range order {
		for _, p := range r.Problems {
			if p.Kind != kind {
				continue
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			action, err := c.repairProblem(ctx, p)
			if err != nil {
				return fmt.Errorf("repair %s: %w", p, err)
			}
			c.record(ctx, r, p, action)
		}
	}
	// Then what only the index backend knows, now that the records the
	// repairs above removed have taken their derived entries with them.
	if c.backend != nil {
		err := c.backend.Check(ctx, true, func(f meta.Finding) {
			c.record(ctx, r, fromFinding(f), f.Repaired)
		})
		if err != nil {
			return fmt.Errorf("repair index: %w", err)
		}
	}
	for _, p := range r.Orphans {
		if err := ctx.Err(); err != nil {
			return err
		}
		action, err := c.removeOrphan(ctx, p)
		if err != nil {
			return fmt.Errorf("remove %s: %w", p, err)
		}
		c.record(ctx, r, p, action)
	}
	return nil
}

// record notes a repair that did something.
func (c *checker) record(ctx context.Context, r *Report, p Problem, action string) {
	if action == "" {
		return
	}
	c.log.InfoContext(ctx, "fsck repaired", "kind", p.Kind, "digest", p.Digest, "repo", p.Repo, "path", p.Path, "action", action)
	r.Repaired = append(r.Repaired, Repair{Problem: p, Action: action})
}

// repairProblem fixes one problem, each in its own transaction that checks
// the problem's premise again. It returns what it did, or "" if nothing
// needed doing any more.
func (c *checker) repairProblem(ctx context.Context, p Problem) (string, error) {
	d := digest.Digest(p.Digest)
	switch p.Kind {
	case ProblemCorrupt, ProblemSize, ProblemMissing:
		// Corrupt or wrong-size content, or what stands where missing
		// content belongs, is kept aside rather than deleted.
		moved, err := c.quarantine(ctx, d)
		if err != nil {
			return "", err
		}
		var n purged
		err = c.svc.Update(ctx, func(tx *storage.Tx) error {
			var err error
			n, err = purgeBlob(tx, d)
			return err
		})
		if err != nil {
			return "", fmt.Errorf("update index: %w", err)
		}
		action := fmt.Sprintf("removed the blob record, %s", n)
		if moved != "" {
			action = fmt.Sprintf("moved the content to %s; %s", moved, action)
		}
		return action, nil
	case ProblemDanglingManifest:
		var tags int
		done, err := c.update(ctx, func(tx *storage.Tx) (bool, error) {
			if ok, err := hasBlob(tx, d); err != nil || ok {
				return false, err
			}
			if _, ok, err := tx.Manifest(p.Repo, d); err != nil || !ok {
				return false, err
			}
			var err error
			tags, err = dropManifest(tx, p.Repo, d)
			return err == nil, err
		})
		if !done || err != nil {
			return "", err
		}
		return fmt.Sprintf("removed the manifest record and %d tags", tags), nil
	case ProblemDanglingLink:
		done, err := c.update(ctx, func(tx *storage.Tx) (bool, error) {
			if ok, err := hasBlob(tx, d); err != nil || ok {
				return false, err
			}
			if _, ok, err := tx.Link(p.Repo, d); err != nil || !ok {
				return false, err
			}
			return true, tx.DeleteLink(p.Repo, d)
		})
		if !done || err != nil {
			return "", err
		}
		return "removed the link", nil
	case ProblemDanglingTag:
		done, err := c.update(ctx, func(tx *storage.Tx) (bool, error) {
			if _, ok, err := tx.Manifest(p.Repo, d); err != nil || ok {
				return false, err
			}
			if target, ok, err := tx.Tag(p.Repo, p.Tag); err != nil || !ok || target != d {
				return false, err
			}
			return true, tx.RecordRepair(p.Repo, p.Tag, d)
		})
		if !done || err != nil {
			return "", err
		}
		return "removed the tag", nil
	case ProblemDanglingUpload:
		if _, err := c.blobs.Resume(ctx, p.upload); !errors.Is(err, blob.ErrNotFound) {
			return "", nil
		}
		done, err := c.update(ctx, func(tx *storage.Tx) (bool, error) {
			if _, ok, err := tx.Upload(p.upload); err != nil || !ok {
				return false, err
			}
			return true, tx.DeleteUpload(p.upload)
		})
		if !done || err != nil {
			return "", err
		}
		return "removed the upload session record", nil
	case ProblemStaleCache:
		done, err := c.update(ctx, func(tx *storage.Tx) (bool, error) {
			if _, ok, err := tx.Manifest(p.Repo, d); err != nil || ok {
				return false, err
			}
			if _, ok, err := tx.Cached(p.Repo, d); err != nil || !ok {
				return false, err
			}
			return true, tx.DeleteCached(p.Repo, d)
		})
		if !done || err != nil {
			return "", err
		}
		return "removed the cache record", nil
	}
	return "", nil
}

// update runs fn in a transaction of the core; fn reports whether it
// changed anything.
func (c *checker) update(ctx context.Context, fn func(*storage.Tx) (bool, error)) (bool, error) {
	var done bool
	err := c.svc.Update(ctx, func(tx *storage.Tx) error {
		var err error
		done, err = fn(tx)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("update index: %w", err)
	}
	return done, nil
}

func hasBlob(tx meta.Tx, d digest.Digest) (bool, error) {
	_, ok, err := tx.Blob(d)
	return ok, err
}

// quarantine sets the content of d aside, or deletes it when the blob
// store cannot; it returns where the content went, if anywhere.
func (c *checker) quarantine(ctx context.Context, d digest.Digest) (string, error) {
	if q, ok := c.blobs.(blob.Quarantiner); ok {
		where, err := q.Quarantine(ctx, d)
		if err != nil {
			return "", fmt.Errorf("quarantine %s: %w", d, err)
		}
		return where, nil
	}
	if err := c.blobs.Delete(ctx, d); err != nil {
		return "", fmt.Errorf("delete %s: %w", d, err)
	}
	return "", nil
}

// purged counts the records removed with a blob.
type purged struct{ links, manifests, tags int }

func (n purged) String() string {
	return fmt.Sprintf("%d links, %d manifest records and %d tags", n.links, n.manifests, n.tags)
}

// purgeBlob deletes the record of d and every record that names d: its
// links and, if it is a manifest, its manifest records with their tags,
// in every repository. Manifests that reference d are left: they become
// incomplete.
func purgeBlob(tx *storage.Tx, d digest.Digest) (purged, error) {
	var n purged
	var uses []meta.Use
	err := tx.Uses(d, "", func(u meta.Use) error {
		if u.Kind != meta.UseReference {
			uses = append(uses, u)
		}
		return nil
	})
	if err != nil {
		return n, err
	}
	for _, u := range uses {
		switch u.Kind {
		case meta.UseLink:
			if err := tx.DeleteLink(u.Repo, d); err != nil {
				return n, fmt.Errorf("delete link in %s: %w", u.Repo, err)
			}
			n.links++
		case meta.UseManifest:
			tags, err := dropManifest(tx, u.Repo, d)
			if err != nil {
				return n, fmt.Errorf("delete manifest in %s: %w", u.Repo, err)
			}
			n.manifests++
			n.tags += tags
		}
	}
	if err := tx.DeleteBlob(d); err != nil {
		return n, fmt.Errorf("delete blob record: %w", err)
	}
	return n, nil
}

// dropManifest deletes a manifest record from a repository with every tag
// naming it, recorded in their history as repairs. Unlike the core's
// RemoveManifest it removes immutable tags too: they name content that is
// gone.
func dropManifest(tx *storage.Tx, repo string, d digest.Digest) (int, error) {
	tags, err := tx.TagsOf(repo, d)
	if err != nil {
		return 0, err
	}
	for _, tag := range tags {
		if err := tx.RecordRepair(repo, tag, d); err != nil {
			return 0, err
		}
	}
	if err := tx.DeleteManifest(repo, d); err != nil {
		return 0, fmt.Errorf("delete manifest record: %w", err)
	}
	if err := tx.DeleteCached(repo, d); err != nil {
		return 0, fmt.Errorf("delete cache record: %w", err)
	}
	return len(tags), nil
}

// removeOrphan removes an orphan after checking, in the index, that it is
// still one. Objects that are not regular files are left in place.
func (c *checker) removeOrphan(ctx context.Context, p Problem) (string, error) {
	if p.keep {
		return "", nil
	}
	switch p.Kind {
	case OrphanBlob:
		if p.Digest == "" {
			s, ok := c.blobs.(blob.Sweeper)
			if !ok {
				return "", nil
			}
			if err := s.Sweep(ctx, p.Path); err != nil {
				return "", err
			}
			return "removed it", nil
		}
		var recorded bool
		err := c.svc.View(ctx, func(tx meta.Tx) error {
			var err error
			recorded, err = hasBlob(tx, digest.Digest(p.Digest))
			return err
		})
		if err != nil || recorded {
			return "", err
		}
		if err := c.blobs.Delete(ctx, digest.Digest(p.Digest)); err != nil {
			return "", err
		}
		return "removed it", nil
	case OrphanUpload:
		var recorded bool
		err := c.svc.View(ctx, func(tx meta.Tx) error {
			_, ok, err := tx.Upload(p.upload)
			recorded = ok
			return err
		})
		if err != nil || recorded {
			return "", err
		}
		st, err := c.blobs.Resume(ctx, p.upload)
		if errors.Is(err, blob.ErrNotFound) {
			return "", nil
		}
		if err != nil {
			return "", err
		}
		if err := st.Cancel(ctx); err != nil {
			return "", err
		}
		return "removed it", nil
	}
	return "", nil
}
