package storecopy

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/berth-registry/berth/storage/meta"
)

// robots copies the robot credentials, revoked ones included, with their
// secret's hash: the same secrets log in at the destination.
func (c *copier) robots(ctx context.Context, stx meta.Tx) error {
	b := c.newBatch()
	err := stx.Robots(func(r meta.Robot) error {
		return b.add(ctx, func(tx meta.Tx, t *Report) error {
			have, ok, err := tx.Robot(r.Name)
			switch {
			case err != nil:
				return err
			case ok && sameRobot(have, r):
				t.Robots.Present++
				return nil
			case ok:
				return c.conflict("robot %s: the destination's record differs (scopes, times or secret)", r.Name)
			}
			if name, taken, err := tx.RobotBySecret(r.Hash); err != nil {
				return err
			} else if taken {
				return c.conflict("robot %s: its secret is the destination's robot %s's", r.Name, name)
			}
			t.Robots.Copied++
			if c.check {
				return nil
			}
			return tx.PutRobot(r)
		})
	})
	if err != nil {
		return fmt.Errorf("robots: %w", err)
	}
	return b.flush(ctx)
}

// sameRobot reports whether two robot records agree.
func sameRobot(a, b meta.Robot) bool {
	sameTime := func(x, y *time.Time) bool { return (x == nil) == (y == nil) && (x == nil || x.Equal(*y)) }
	return a.Name == b.Name && slices.Equal(a.Scopes, b.Scopes) && a.Created.Equal(b.Created) &&
		a.Expires.Equal(b.Expires) && sameTime(a.Revoked, b.Revoked) && sameTime(a.Rotated, b.Rotated) && a.Hash == b.Hash
}

// syncRecords copies replication's records of the rules opts.Rules names:
// the last run of each and what push rules delivered. A record the
// destination has stays as it is.
func (c *copier) syncRecords(ctx context.Context, stx meta.Tx) error {
	for _, rule := range c.opts.Rules {
		b := c.newBatch()
		run, ok, err := stx.SyncRun(rule)
		if err != nil {
			return fmt.Errorf("replication rule %s: %w", rule, err)
		}
		if ok {
			err := b.add(ctx, func(tx meta.Tx, t *Report) error {
				if _, there, err := tx.SyncRun(rule); err != nil {
					return err
				} else if there {
					t.SyncRuns.Present++
					return nil
				}
				t.SyncRuns.Copied++
				if c.check {
					return nil
				}
				return tx.PutSyncRun(rule, run)
			})
			if err != nil {
				return err
			}
		}
		err = stx.SyncedTags(rule, func(repo, tag string, s meta.SyncedTag) error {
			return b.add(ctx, func(tx meta.Tx, t *Report) error {
				if _, there, err := tx.SyncedTag(rule, repo, tag); err != nil {
					return err
				} else if there {
					t.SyncedTags.Present++
					return nil
				}
				t.SyncedTags.Copied++
				if c.check {
					return nil
				}
				return tx.PutSyncedTag(rule, repo, tag, s)
			})
		})
		if err != nil {
			return fmt.Errorf("replication rule %s: %w", rule, err)
		}
		if err := b.flush(ctx); err != nil {
			return err
		}
	}
	return nil
}

// skipped counts what a copy leaves out: open upload sessions and the
// webhook outbox.
func (c *copier) skipped(_ context.Context, stx meta.Tx) error {
	var s Skipped
	if err := stx.Uploads(func(string, meta.Upload) error { s.Uploads++; return nil }); err != nil {
		return fmt.Errorf("upload sessions: %w", err)
	}
	if err := stx.Deliveries("", func(meta.Delivery) error { s.Deliveries++; return nil }); err != nil {
		return fmt.Errorf("webhook outbox: %w", err)
	}
	if err := stx.DeadLetters(0, func(meta.Delivery) error { s.DeadLetters++; return nil }); err != nil {
		return fmt.Errorf("dead letters: %w", err)
	}
	s.StaleCache = c.report.Skipped.StaleCache
	c.report.Skipped = s
	return nil
}
