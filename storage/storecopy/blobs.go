package storecopy

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	"github.com/berth-registry/berth/storage/blob"
	"github.com/berth-registry/berth/storage/meta"
)

// blobs copies every blob the source records, opts.Jobs at a time; when
// checking, it compares the records and finds each source content.
func (c *copier) blobs(ctx context.Context, stx meta.Tx) error {
	if c.check {
		return c.checkBlobs(ctx, stx)
	}
	type item struct {
		d   digest.Digest
		rec meta.Blob
	}
	g, gctx := errgroup.WithContext(ctx)
	work := make(chan item)
	for range c.opts.Jobs {
		g.Go(func() error {
			for it := range work {
				if err := c.copyBlob(gctx, it.d, it.rec); err != nil {
					return err
				}
			}
			return nil
		})
	}
	g.Go(func() error {
		defer close(work)
		n := 0
		return stx.Blobs(func(d digest.Digest, b meta.Blob) error {
			select {
			case work <- item{d, b}:
			case <-gctx.Done():
				return gctx.Err()
			}
			if n++; n%1000 == 0 {
				c.log.InfoContext(gctx, "blobs", "done", n)
			}
			return nil
		})
	})
	return g.Wait()
}

// checkBlobs finds the content of every blob the source records, of its
// recorded size, and compares the destination's records.
func (c *copier) checkBlobs(ctx context.Context, stx meta.Tx) error {
	b := c.newBatch()
	err := stx.Blobs(func(d digest.Digest, rec meta.Blob) error {
		if err := d.Validate(); err != nil {
			return fmt.Errorf("%w: blob record %q: %w", ErrSource, d, err)
		}
		size, err := c.src.Blobs.Stat(ctx, d)
		if errors.Is(err, blob.ErrNotFound) {
			return fmt.Errorf("%w: blob %s is recorded but its content is missing (run berth fsck on the source)", ErrSource, d)
		}
		if err != nil {
			return fmt.Errorf("stat source blob %s: %w", d, err)
		}
		if size != rec.Size {
			return fmt.Errorf("%w: blob %s is recorded with %d bytes, its content has %d (run berth fsck on the source)", ErrSource, d, rec.Size, size)
		}
		return b.add(ctx, func(tx meta.Tx, t *Report) error {
			have, ok, err := tx.Blob(d)
			switch {
			case err != nil:
				return err
			case ok && have.Size != rec.Size:
				return c.conflict("blob %s: the destination records %d bytes, the source %d", d, have.Size, rec.Size)
			case ok:
				t.Blobs.Present++
				t.Blobs.PresentBytes += rec.Size
			default:
				t.Blobs.Copied++
				t.Blobs.Bytes += rec.Size
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	return b.flush(ctx)
}

// copyBlob copies the content of d, unless the destination holds it, and
// records it, under d's lock in the destination, so that the content is
// durable before its record.
func (c *copier) copyBlob(ctx context.Context, d digest.Digest, rec meta.Blob) error {
	unlock, err := c.dst.Index.LockDigests(ctx, d)
	if err != nil {
		return fmt.Errorf("lock %s in the destination: %w", d, err)
	}
	defer unlock()
	var recorded bool
	err = c.dst.Index.View(ctx, func(tx meta.Tx) error {
		have, ok, err := tx.Blob(d)
		if err != nil {
			return err
		}
		if ok && have.Size != rec.Size {
			return c.conflict("blob %s: the destination records %d bytes, the source %d", d, have.Size, rec.Size)
		}
		recorded = ok
		return nil
	})
	if err != nil {
		return err
	}
	size, err := c.dst.Blobs.Stat(ctx, d)
	if err != nil && !errors.Is(err, blob.ErrNotFound) {
		return fmt.Errorf("stat destination blob %s: %w", d, err)
	}
	placed := err == nil && size == rec.Size
	if recorded && placed {
		c.count(func(r *Report) {
			r.Blobs.Present++
			r.Blobs.PresentBytes += rec.Size
		})
		return nil
	}
	var transferred int64
	if placed {
		// Placed by a copy that stopped before recording it, or by
		// another writer: hash it again before the index says it is
		// there.
		if placed, err = c.verifyPlaced(ctx, d); err != nil {
			return err
		}
	}
	if !placed {
		if err := c.transferRetrying(ctx, d, rec.Size); err != nil {
			return err
		}
		transferred = rec.Size
	}
	err = c.dst.Index.Update(ctx, func(tx meta.Tx) error {
		if _, ok, err := tx.Blob(d); err != nil || ok {
			return err
		}
		return tx.PutBlob(d, rec)
	})
	if err != nil {
		return fmt.Errorf("record blob %s in the destination: %w", d, err)
	}
	c.count(func(r *Report) {
		r.Blobs.Copied++
		r.Blobs.Bytes += rec.Size
		r.Blobs.Transferred += transferred
	})
	return nil
}

// count changes the report under its lock.
func (c *copier) count(fn func(*Report)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fn(&c.report)
}

// transferAttempts bounds the attempts to transfer one blob.
const transferAttempts = 3

// transferRetrying transfers d, again after a failure of the stores (an
// object store refusing for a moment, say): each attempt stages afresh
// and cancels what it staged when it fails. A source that cannot be
// copied faithfully is not tried again.
func (c *copier) transferRetrying(ctx context.Context, d digest.Digest, size int64) error {
	for attempt := 1; ; attempt++ {
		err := c.transfer(ctx, d, size)
		if err == nil || errors.Is(err, ErrSource) || ctx.Err() != nil || attempt == transferAttempts {
			return err
		}
		c.log.WarnContext(ctx, "blob copy failed: trying again", "digest", d, "attempt", attempt, "error", err)
	}
}

// transfer streams the source's content of d into the destination's blob
// store, hashing the bytes read from the source, and commits it under d
// only if they hash to d and number size.
func (c *copier) transfer(ctx context.Context, d digest.Digest, size int64) error {
	r, err := c.src.Blobs.Open(ctx, d)
	if err != nil {
		return fmt.Errorf("open source blob %s: %w", d, err)
	}
	defer r.Close()
	st, err := c.dst.Blobs.Stage(ctx, "")
	if err != nil {
		return fmt.Errorf("stage blob %s in the destination: %w", d, err)
	}
	h := d.Algorithm().Hash()
	if _, err := st.Append(ctx, r, size, h); err != nil {
		_ = st.Cancel(ctx)
		if errors.Is(err, blob.ErrSizeMismatch) {
			return fmt.Errorf("%w: blob %s: the source's content does not have its recorded %d bytes: %w", ErrSource, d, size, err)
		}
		return fmt.Errorf("copy blob %s: %w", d, err)
	}
	if got := digest.NewDigest(d.Algorithm(), h); got != d {
		_ = st.Cancel(ctx)
		return fmt.Errorf("%w: blob %s: the source's content hashes to %s (run berth fsck --verify-content on the source)", ErrSource, d, got)
	}
	if err := st.Commit(ctx, d); err != nil {
		_ = st.Cancel(ctx)
		return fmt.Errorf("commit blob %s in the destination: %w", d, err)
	}
	return nil
}

// verifyPlaced hashes the destination's content of d and reports whether
// it is d's; content that is not is removed, to be copied again.
func (c *copier) verifyPlaced(ctx context.Context, d digest.Digest) (bool, error) {
	r, err := c.dst.Blobs.Open(ctx, d)
	if errors.Is(err, blob.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("open destination blob %s: %w", d, err)
	}
	h := d.Algorithm().Hash()
	_, err = io.Copy(h, r)
	_ = r.Close()
	if err != nil {
		return false, fmt.Errorf("read destination blob %s: %w", d, err)
	}
	if digest.NewDigest(d.Algorithm(), h) == d {
		return true, nil
	}
	c.log.WarnContext(ctx, "the destination held content under a digest it does not hash to: copying it again", "digest", d)
	if err := c.dst.Blobs.Delete(ctx, d); err != nil {
		return false, fmt.Errorf("remove corrupt destination blob %s: %w", d, err)
	}
	return false, nil
}
