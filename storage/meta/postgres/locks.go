package postgres

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"slices"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/opencontainers/go-digest"
)

// lockKey is the advisory lock key of d: the first eight bytes of the
// SHA-256 of its string form. Digests whose keys collide share a lock,
// which only makes one wait for the other.
func lockKey(d digest.Digest) int64 {
	sum := sha256.Sum256([]byte(d))
	return int64(binary.BigEndian.Uint64(sum[:8]))
}

// LockDigests locks the given digests against every other holder of any of
// them, in this process or any other on the same database: it takes a
// session of the lock pool and, on it, the session advisory lock of each
// digest's key, in ascending order of key, each once, so that two holders
// cannot deadlock. The session is held until the unlock, which releases
// its locks and returns it to the pool in the background: the caller
// does not wait for that round trip, and holding the locks a moment
// longer only makes another holder wait (Close waits for it). A done ctx cancels the wait on the
// server and returns its error, holding nothing (the session is closed).
// The unlock may be called more than once.
func (s *Store) LockDigests(ctx context.Context, ds ...digest.Digest) (func(), error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("lock digests: %w", err)
	}
	if len(ds) == 0 {
		return func() {}, nil
	}
	keys := make([]int64, 0, len(ds))
	for _, d := range ds {
		keys = append(keys, lockKey(d))
	}
	slices.Sort(keys)
	keys = slices.Compact(keys)
	conn, err := s.locks.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("lock digests: %w", lockErr(ctx, err))
	}
	for _, k := range keys {
		if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", k); err != nil {
			// The server may have granted the lock as the wait was
			// cancelled: closing the session releases whatever it holds.
			discard(conn)
			return nil, fmt.Errorf("lock digests: %w", lockErr(ctx, err))
		}
	}
	var once sync.Once
	return func() { once.Do(func() { go release(conn) }) }, nil
}

// LockRecorded is LockDigests of d that also reports whether d has a
// blob record once the lock is held, in the same round trip: the record
// is read by a statement of its own, after the one that waits for the
// lock, and a statement of the locks' sessions sees what was committed
// when it began (they run at READ COMMITTED, whatever the database's
// default: see Open).
func (s *Store) LockRecorded(ctx context.Context, d digest.Digest) (unlock func(), recorded bool, err error) {
	if err := ctx.Err(); err != nil {
		return nil, false, fmt.Errorf("lock digests: %w", err)
	}
	conn, err := s.locks.Acquire(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("lock digests: %w", lockErr(ctx, err))
	}
	b := &pgx.Batch{}
	b.Queue("SELECT pg_advisory_lock($1)", lockKey(d))
	b.Queue("SELECT EXISTS (SELECT 1 FROM blobs WHERE digest = $1)", string(d))
	br := conn.SendBatch(ctx, b)
	_, err = br.Exec()
	if err == nil {
		err = br.QueryRow().Scan(&recorded)
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		// Whether the lock was granted or not, closing the session
		// releases what it holds.
		discard(conn)
		return nil, false, fmt.Errorf("lock digests: %w", lockErr(ctx, err))
	}
	var once sync.Once
	return func() { once.Do(func() { go release(conn) }) }, recorded, nil
}

// lockErr is the error of a failed lock: ctx's when it ended the wait.
func lockErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return classify(err)
}

// release unlocks every advisory lock of conn's session (the session is
// this holder's alone) and returns it to the pool; a session that cannot
// be unlocked is closed, which releases its locks on the server.
func release(conn *pgxpool.Conn) {
	if _, err := conn.Exec(context.Background(), "SELECT pg_advisory_unlock_all()"); err != nil {
		discard(conn)
		return
	}
	conn.Release()
}

// discard closes conn's session and gives it back to the pool, which
// drops it.
func discard(conn *pgxpool.Conn) {
	_ = conn.Conn().Close(context.Background())
	conn.Release()
}
