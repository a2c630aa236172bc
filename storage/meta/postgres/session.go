package postgres

import (
	"context"
	"errors"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// session is the connection of one transaction, which puts off what needs
// no answer and sends it together with the next statement that does, in
// one round trip:
//
//   - the transaction's BEGIN: a transaction that runs no statement never
//     reaches the server;
//   - the savepoints of a group commit, and the rollbacks to them that need
//     no answer (see group.go);
//   - changes whose only possible failure is the database's (tx.later):
//     their failure aborts the transaction, as any failed statement does,
//     and is reported by the statement that carried them.
//
// The statements run in the order they were given, so a query sees every
// change put off before it. A change put off by one function of a group
// commit may be carried by the next function's first statement, or by the
// commit: its failure then names the function that put it off (carried),
// and group.go rolls that function back alone.
//
// A session is used by one goroutine at a time.
type session struct {
	conn *pgxpool.Conn
	// begin is the statement that begins the transaction, sent with the
	// first statement.
	begin string
	// pending is what was put off since, in order.
	pending []pendingStmt
	// sent is set once anything has been sent: then the server has a
	// transaction to end.
	sent bool
	// sends counts the round trips, for mark.
	sends int
	// owner numbers the function of a group commit whose statements are
	// being given now; carried, when not -1, is the owner of a statement
	// put off by another function that failed as a statement of owner's
	// carried it.
	owner, carried int
}

// pendingStmt is a statement put off, with its arguments and its owner.
type pendingStmt struct {
	sql   string
	args  []any
	owner int
}

// beginSession acquires a connection of pool for a transaction that begins
// with begin, put off until its first statement.
func beginSession(ctx context.Context, pool *pgxpool.Pool, begin string) (*session, error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	return &session{conn: conn, begin: begin, carried: -1}, nil
}

// pgConn is the session's connection, for doomOf.
func (s *session) pgConn() *pgx.Conn { return s.conn.Conn() }

// later puts off sql until the next statement that is sent.
func (s *session) later(sql string, args ...any) {
	s.pending = append(s.pending, pendingStmt{sql: sql, args: args, owner: s.owner})
}

// dropAll forgets everything put off.
func (s *session) dropAll() { s.pending = s.pending[:0] }

// mark is a point in what a session has sent and put off.
type mark struct{ sends, pending int }

// mark returns the point after everything sent and put off so far.
func (s *session) mark() mark { return mark{s.sends, len(s.pending)} }

// drop forgets what was put off after m and is not sent yet: the changes
// of a function that failed, about to be rolled back anyway.
func (s *session) drop(m mark) {
	if s.sends == m.sends {
		s.pending = s.pending[:m.pending]
		return
	}
	s.pending = s.pending[:0]
}

// direct reports whether a statement can go alone, nothing being put off.
func (s *session) direct() bool { return s.sent && len(s.pending) == 0 }

// send sends the BEGIN if it is not sent yet, what is pending, then b's
// statements (b may be nil), in one round trip, and reads the results of
// what went before b's; the caller reads b's and closes the results.
func (s *session) send(ctx context.Context, b *pgx.Batch) (pgx.BatchResults, error) {
	nb := &pgx.Batch{}
	var owners []int
	if !s.sent {
		nb.Queue(s.begin)
		owners = append(owners, s.owner)
	}
	for _, p := range s.pending {
		nb.Queue(p.sql, p.args...)
		owners = append(owners, p.owner)
	}
	if b != nil {
		nb.QueuedQueries = append(nb.QueuedQueries, b.QueuedQueries...)
	}
	s.pending = s.pending[:0]
	s.sent = true
	s.sends++
	br := s.conn.SendBatch(ctx, nb)
	for _, owner := range owners {
		if _, err := br.Exec(); err != nil {
			_ = br.Close()
			if owner != s.owner {
				s.carried = owner
			}
			return nil, err
		}
	}
	return br, nil
}

// flush sends the BEGIN and what is pending, if not sent yet.
func (s *session) flush(ctx context.Context) error {
	if s.direct() {
		return nil
	}
	br, err := s.send(ctx, nil)
	if err != nil {
		return err
	}
	return br.Close()
}

// sendOne is send of a batch of the one statement sql.
func (s *session) sendOne(ctx context.Context, sql string, args ...any) (pgx.BatchResults, error) {
	b := &pgx.Batch{}
	b.Queue(sql, args...)
	return s.send(ctx, b)
}

// exec runs a statement that returns no rows, after what is pending.
func (s *session) exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if s.direct() {
		s.sends++
		return s.conn.Exec(ctx, sql, args...)
	}
	br, err := s.sendOne(ctx, sql, args...)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	tag, err := br.Exec()
	return tag, errors.Join(err, br.Close())
}

// execAlone sends what is pending, then sql in a round trip of its own by
// the simple protocol: for statements made up on the spot (the names of
// cursors), which a batch would add to the cache of prepared statements.
func (s *session) execAlone(ctx context.Context, sql string) (pgconn.CommandTag, error) {
	if err := s.flush(ctx); err != nil {
		return pgconn.CommandTag{}, err
	}
	s.sends++
	return s.conn.Exec(ctx, sql)
}

// query runs a query after what is pending; the caller closes its rows.
func (s *session) query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if s.direct() {
		s.sends++
		return s.conn.Query(ctx, sql, args...)
	}
	br, err := s.sendOne(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	rows, err := br.Query()
	if err != nil {
		_ = br.Close()
		return nil, err
	}
	return &batchRows{Rows: rows, br: br}, nil
}

// queryPlanned runs a query planned for its arguments' values each time
// (an unnamed statement), after sending what is pending. A keyset walk
// needs that: a prepared statement's generic plan cannot see that one
// repository holds half the table, and pages through it by reading the
// rest of it and sorting.
func (s *session) queryPlanned(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if err := s.flush(ctx); err != nil {
		return nil, err
	}
	s.sends++
	return s.conn.Query(ctx, sql, append([]any{pgx.QueryExecModeExec}, args...)...)
}

// batchRows are the rows of the last query of a batch: closing them
// closes the batch's results too.
type batchRows struct {
	pgx.Rows
	br  pgx.BatchResults
	err error
}

func (r *batchRows) Close() {
	if r.br == nil {
		return
	}
	r.Rows.Close()
	r.err = r.br.Close()
	r.br = nil
}

func (r *batchRows) Err() error {
	if err := r.Rows.Err(); err != nil {
		return err
	}
	return r.err
}

// sendBatch runs b's statements after what is pending, in one round trip.
func (s *session) sendBatch(ctx context.Context, b *pgx.Batch) error {
	br, err := s.send(ctx, b)
	if err != nil {
		return err
	}
	return br.Close()
}

// errCommitRollback is the error of a commit that the server turned into
// a rollback: the transaction had failed.
var errCommitRollback = errors.New("the transaction had failed and was rolled back")

// commit sends what is pending and commits. A transaction that never sent
// anything and put nothing off has nothing to commit.
func (s *session) commit(ctx context.Context) error {
	if !s.sent && len(s.pending) == 0 {
		return nil
	}
	tag, err := s.exec(ctx, "COMMIT")
	if err != nil {
		return err
	}
	if strings.EqualFold(tag.String(), "ROLLBACK") {
		return errCommitRollback
	}
	return nil
}

// release ends the session: it rolls back what the server may hold open
// and returns the connection to the pool, which drops a connection left
// in any other state than idle.
func (s *session) release() {
	s.pending = nil
	if s.sent && s.conn.Conn().PgConn().TxStatus() != 'I' {
		if _, err := s.conn.Exec(context.Background(), "ROLLBACK"); err != nil {
			_ = s.conn.Conn().Close(context.Background())
		}
	}
	s.conn.Release()
}
