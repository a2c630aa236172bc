package storecopy

import (
	"context"
	"fmt"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/meta"
)

// recordedRepositories is implemented by source transactions that can name
// every repository their records mention, those deleted since whose tag
// history or pull records remain included (storage/meta/bolt does).
// meta.RepoIndex.Repositories names only the live ones.
type recordedRepositories interface {
	RecordedRepositories(after string, fn func(repo string) error) error
}

// repositories copies every repository of the source, one at a time.
func (c *copier) repositories(ctx context.Context, stx meta.Tx) error {
	walk := stx.Repositories
	if rr, ok := stx.(recordedRepositories); ok {
		walk = rr.RecordedRepositories
		c.report.DeletedHistory = true
	} else {
		c.log.WarnContext(ctx, "the source index cannot name its deleted repositories: their tag history and pull records are not copied")
	}
	after := ""
	for {
		repo, ok, err := nextName(walk, after)
		if err != nil {
			return fmt.Errorf("list source repositories: %w", err)
		}
		if !ok {
			return nil
		}
		if err := c.repository(ctx, stx, repo); err != nil {
			return fmt.Errorf("repository %s: %w", repo, err)
		}
		after = repo
	}
}

// repository copies repo: links, manifests, tags and history, cache
// records and pull records.
func (c *copier) repository(ctx context.Context, stx meta.Tx, repo string) error {
	live, err := stx.Repository(repo)
	if err != nil {
		return err
	}
	if live {
		c.report.Repositories++
		if err := c.links(ctx, stx, repo); err != nil {
			return err
		}
		if err := c.manifests(ctx, stx, repo); err != nil {
			return err
		}
	} else {
		c.report.Deleted++
	}
	if err := c.tags(ctx, stx, repo); err != nil {
		return err
	}
	if live {
		if err := c.cached(ctx, stx, repo); err != nil {
			return err
		}
	}
	return c.pulls(ctx, stx, repo)
}

// links copies the blob links of repo; a link the destination has keeps
// its times.
func (c *copier) links(ctx context.Context, stx meta.Tx, repo string) error {
	b := c.newBatch()
	err := stx.Links(repo, func(d digest.Digest, l meta.Link) error {
		return b.add(ctx, func(tx meta.Tx, t *Report) error {
			_, ok, err := tx.Link(repo, d)
			switch {
			case err != nil:
				return err
			case ok:
				t.Links.Present++
				return nil
			}
			t.Links.Copied++
			if c.check {
				return nil
			}
			return tx.PutLink(repo, d, l)
		})
	})
	if err != nil {
		return fmt.Errorf("links: %w", err)
	}
	return b.flush(ctx)
}

// maxPasses bounds the passes over a repository's manifests: one per level
// of nesting (an index of indexes of images needs three).
const maxPasses = 16

// manifests copies the manifests of repo. A manifest is copied only once
// the destination holds each child manifest it references that the
// source repository holds, so that the destination never records an index
// without its children: each pass copies the manifests whose children are
// there, the first pass counts those present already.
func (c *copier) manifests(ctx context.Context, stx meta.Tx, repo string) error {
	for pass := 1; ; pass++ {
		if pass > maxPasses {
			return fmt.Errorf("manifests nest deeper than %d levels", maxPasses)
		}
		before := c.report.waiting
		b := c.newBatch()
		err := stx.Manifests(repo, "", func(d digest.Digest, m meta.Manifest) error {
			return b.add(ctx, func(tx meta.Tx, t *Report) error {
				have, ok, err := tx.Manifest(repo, d)
				switch {
				case err != nil:
					return err
				case ok && !sameManifest(have, m):
					return c.conflict("manifest %s@%s: the destination's record differs (%s, %d bytes; the source's %s, %d bytes)",
						repo, d, have.MediaType, have.Size, m.MediaType, m.Size)
				case ok:
					if pass == 1 {
						t.Manifests.Present++
					}
					return nil
				}
				if !c.check {
					for _, ref := range m.References {
						_, child, err := stx.Manifest(repo, ref)
						if err != nil {
							return err
						}
						if !child {
							continue // a blob, linked already
						}
						if _, there, err := tx.Manifest(repo, ref); err != nil {
							return err
						} else if !there {
							t.waiting++
							return nil // in a later pass
						}
					}
				}
				t.Manifests.Copied++
				if c.check {
					return nil
				}
				return tx.PutManifest(repo, d, m)
			})
		})
		if err == nil {
			err = b.flush(ctx)
		}
		if err != nil {
			return fmt.Errorf("manifests: %w", err)
		}
		if c.report.waiting == before || c.check {
			return nil
		}
	}
}

// tags copies every tag of repo and every tag that has a history (deleted
// tags too), each with its history and its cache check, in one
// transaction per tag.
func (c *copier) tags(ctx context.Context, stx meta.Tx, repo string) error {
	live := func(after string, fn func(string) error) error {
		return stx.Tags(repo, after, func(tag string, _ digest.Digest) error { return fn(tag) })
	}
	past := func(after string, fn func(string) error) error { return stx.HistoryTags(repo, after, fn) }
	b := c.newBatch()
	after := ""
	for {
		a, aok, err := nextName(live, after)
		if err != nil {
			return fmt.Errorf("tags: %w", err)
		}
		h, hok, err := nextName(past, after)
		if err != nil {
			return fmt.Errorf("tag history: %w", err)
		}
		tag := a
		switch {
		case !aok && !hok:
			return b.flush(ctx)
		case !aok || (hok && h < a):
			tag = h
		}
		if err := b.add(ctx, c.tagOp(stx, repo, tag)); err != nil {
			return err
		}
		after = tag
	}
}

// tagOp copies tag: its history, the tag itself, its cache check. A tag
// the destination has differently is a conflict, unless the destination's
// tag is where its history left it and the source's history goes on from
// there: then the source moved (or deleted) the tag since an earlier copy,
// and the tag follows it, as its history says.
func (c *copier) tagOp(stx meta.Tx, repo, tag string) op {
	return func(tx meta.Tx, t *Report) error {
		last, hasLast, err := newestMove(tx, repo, tag)
		if err != nil {
			return err
		}
		dd, dok, err := tx.Tag(repo, tag)
		if err != nil {
			return err
		}
		srcN, ok, err := c.history(stx, tx, repo, tag, t)
		if err != nil || !ok {
			return err
		}
		sd, sok, err := stx.Tag(repo, tag)
		if err != nil {
			return err
		}
		asLeft := hasLast && ((dok && dd == last.Digest) || (!dok && last.Digest == ""))
		switch {
		case sok && dok && sd == dd:
			t.Tags.Present++
		case !sok && !dok:
			// Deleted in both.
		case asLeft && srcN > last.Seq:
			// Moved in the source since: follow its history.
			t.Tags.Copied++
			if c.check {
				break
			}
			if sok {
				err = tx.SetTag(repo, tag, sd)
			} else {
				err = tx.DeleteTag(repo, tag)
			}
			if err != nil {
				return err
			}
		case sok && dok:
			return c.conflict("tag %s:%s names %s in the destination, %s in the source", repo, tag, dd, sd)
		case dok:
			return c.conflict("tag %s:%s names %s in the destination; the source deleted it", repo, tag, dd)
		case sok:
			t.Tags.Copied++
			if !c.check {
				if err := tx.SetTag(repo, tag, sd); err != nil {
					return err
				}
			}
		}
		return c.tagCheck(stx, tx, repo, tag, t)
	}
}

// tagCheck copies the pull-through cache's last check of tag, unless the
// destination has one.
func (c *copier) tagCheck(stx, tx meta.Tx, repo, tag string, t *Report) error {
	chk, ok, err := stx.TagCheck(repo, tag)
	if err != nil || !ok {
		return err
	}
	if _, there, err := tx.TagCheck(repo, tag); err != nil {
		return err
	} else if there {
		t.TagChecks.Present++
		return nil
	}
	t.TagChecks.Copied++
	if c.check {
		return nil
	}
	return tx.PutTagCheck(repo, tag, chk)
}

// cached copies the pull-through cache's records of repo's manifests; a
// record the destination has stays as it is.
func (c *copier) cached(ctx context.Context, stx meta.Tx, repo string) error {
	b := c.newBatch()
	err := stx.CachedManifests(repo, func(d digest.Digest, rec meta.Cached) error {
		return b.add(ctx, func(tx meta.Tx, t *Report) error {
			if _, held, err := stx.Manifest(repo, d); err != nil {
				return err
			} else if !held {
				t.Skipped.StaleCache++
				return nil
			}
			if _, ok, err := tx.Cached(repo, d); err != nil {
				return err
			} else if ok {
				t.Cached.Present++
				return nil
			}
			t.Cached.Copied++
			if c.check {
				return nil
			}
			return tx.PutCached(repo, d, rec)
		})
	})
	if err != nil {
		return fmt.Errorf("cache records: %w", err)
	}
	return b.flush(ctx)
}

// pulls copies the pull records of repo; one the destination has of the
// same identity and digest stays if it is as late or later.
func (c *copier) pulls(ctx context.Context, stx meta.Tx, repo string) error {
	b := c.newBatch()
	err := stx.Pulls(repo, "", func(p meta.Pull) error {
		return b.add(ctx, func(tx meta.Tx, t *Report) error {
			var later bool
			err := tx.Pulls(repo, p.Digest, func(q meta.Pull) error {
				if q.Actor.Kind == p.Actor.Kind && q.Actor.Name == p.Actor.Name {
					later = !q.Time.Before(p.Time)
					return meta.ErrStop
				}
				return nil
			})
			if err != nil {
				return err
			}
			if later {
				t.Pulls.Present++
				return nil
			}
			t.Pulls.Copied++
			if c.check {
				return nil
			}
			return tx.PutPull(p)
		})
	})
	if err != nil {
		return fmt.Errorf("pull records: %w", err)
	}
	return b.flush(ctx)
}
