package storage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ExpireUploads ends every upload session that has received nothing for at
// least idle as of now, removing its file and index record, and returns how
// many it ended. Activity is read from the upload file's modification time,
// which every chunk updates, so appending costs no index write. A session
// that a request holds at that moment is active and left alone.
func (s *Store) ExpireUploads(ctx context.Context, idle time.Duration, now time.Time) (int, error) {
	type candidate struct {
		id      string
		started time.Time
	}
	var all []candidate
	err := s.db.View(func(tx *bolt.Tx) error {
		return forEachJSON(tx.Bucket(bucketUploads), func(k []byte, rec uploadRecord) error {
			all = append(all, candidate{string(k), rec.Started})
			return nil
		})
	})
	if err != nil {
		return 0, fmt.Errorf("list uploads: %w", err)
	}
	ended := 0
	for _, c := range all {
		if err := ctx.Err(); err != nil {
			return ended, err
		}
		if !s.idleSince(c.id, c.started, now, idle) {
			continue
		}
		sess := s.sessions.entry(c.id)
		if !sess.mu.TryLock() {
			continue // a request is using it right now
		}
		// Look again under the lock: a chunk may have landed meanwhile, or
		// the session may have ended.
		if sess.gone || !s.idleSince(c.id, c.started, now, idle) {
			sess.mu.Unlock()
			continue
		}
		err := s.endLocked(c.id, sess)
		sess.mu.Unlock()
		if err != nil {
			return ended, fmt.Errorf("expire upload %s: %w", c.id, err)
		}
		s.log.DebugContext(ctx, "upload session expired", "id", c.id)
		ended++
	}
	return ended, nil
}

// idleSince reports whether the session has been idle for at least idle.
// A session whose file is missing (a crash between creating the record and
// the file) counts from when it started.
func (s *Store) idleSince(id string, started, now time.Time, idle time.Duration) bool {
	last := started
	fi, err := os.Stat(s.uploadPath(id))
	if err == nil {
		last = fi.ModTime()
	} else if !errors.Is(err, os.ErrNotExist) {
		return false
	}
	return now.Sub(last) >= idle
}
