package postgres

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/berth-registry/berth/storage/meta"
)

// Group commit.
//
// A durable commit costs PostgreSQL a flush of its write-ahead log, and
// concurrent SERIALIZABLE transactions that touch the same rows conflict
// (SQLSTATE 40001) and run again. So a process runs one write transaction
// at a time: writers that arrive while it is in flight queue up; when it
// ends, the first of them becomes the leader and runs the queued functions
// (at most maxBatch), in arrival order, one after another in one
// transaction with one commit. There is no timer: a writer that finds no
// transaction in flight leads at once, alone, in a transaction of its own
// as an ungrouped Update would, so a lone writer pays nothing for the
// grouping.
//
// In a transaction of several functions each runs inside a savepoint. A
// function that fails (returns an error, ignores the failure of a
// statement, or panics) is rolled back to its savepoint and the next one
// goes on; it sees the changes of the functions before it in the batch and
// they are kept, so each committed function ran on exactly the state its
// predecessors committed and each failed one left nothing, as if each had
// run alone in arrival order. A failure that dooms the whole transaction
// (a serialisation failure or deadlock, 40001 or 40P01, now only against
// other processes or a garbage collection; a connection lost under a
// statement; a commit that failed to serialise) rolls it back, and the
// functions of the batch whose callers still wait run again together after
// a randomised, growing wait (after groupedRuns such transactions, each in
// a transaction of its own, so that a function whose transactions keep
// failing fails alone), bounded per function: maxAttempts transactions
// that conflicted, maxLost that lost their connection. A
// function's result is final only once the transaction it ran in
// committed, or failed to commit for a reason running it again would not
// cure; meta.Store.Update allows functions to run more than once.
//
// A function's changes that need no answer are put off (see session) and
// go with the next statement: the next function's first, or the commit.
// What the functions announced they will read (meta.WithPrefetch) is read
// for the whole batch at once, with the BEGIN. So a batch of pushes costs
// two round trips, not one a statement. Should a change put off fail, the
// function that made it is the one that failed: the transaction rolls
// back to that function's savepoint, which also undoes the functions
// after it (their statements never ran, or are rolled back), and they run
// again; a function may run more than once anyway.
//
// The leader hands leadership to the first writer still queued before it
// returns, so no caller waits for batches other than the one that carries
// its own function. A panic in a function is recovered by the leader,
// logged, and raised again in the goroutine whose function it was; a
// function that ends the leader's goroutine (runtime.Goexit) abandons the
// transaction, and the other callers of its batch get errGoexit.
//
// maxBatch bounds a batch by PostgreSQL's cache of subtransaction ids:
// beyond 64 subtransactions that wrote, a transaction overflows it and
// every other session's snapshots get slower while it runs.

const (
	// maxBatch bounds the functions one transaction runs.
	maxBatch = 64
	// maxLost bounds the runs of one Update's function in transactions
	// that lost their connection before they could commit.
	maxLost = 3
	// groupedRuns is the transactions a batch runs in together before
	// its functions that still wait run each in a transaction of its own.
	groupedRuns = 2
	// savepoint names the savepoint of each function of a batch.
	savepoint = "berth_update"
)

// callState says where a call is; group.mu guards it.
type callState uint8

const (
	// queued: waiting, not yet in a batch; it may still withdraw.
	queued callState = iota
	// leading: chosen to lead the next batch.
	leading
	// taken: in a batch; its result will come.
	taken
)

// call is one Update waiting for, or carried by, a group commit.
type call struct {
	ctx   context.Context
	fn    func(meta.Tx) error
	state callState
	// wake receives true when the call is to lead, false when its
	// result is set.
	wake chan bool
	// err is the result; panicked, when not nil, the value fn panicked
	// with.
	err      error
	panicked any
	// settled is set once err and panicked are final; delivered once
	// the caller is told (the leader needs no telling).
	settled, delivered bool
	// conflicts and lost count the transactions the call ran in that
	// failed to serialise or lost their connection.
	conflicts, lost int
}

// settle makes err and panicked the call's result.
func (c *call) settle(err error, panicked any) {
	c.err, c.panicked, c.settled = err, panicked, true
}

// result returns the call's error, or raises its panic again.
func (c *call) result() error {
	if c.panicked != nil {
		panic(c.panicked)
	}
	return c.err
}

// errGoexit is the result of the calls of a batch cut short by a function
// that ended its goroutine (runtime.Goexit, as t.FailNow does).
var errGoexit = errors.New("index update abandoned: a function of its group commit called runtime.Goexit")

// group is the queue of writers waiting for the transaction in flight.
type group struct {
	mu    sync.Mutex
	queue []*call
	// busy is set while a leader runs; the queue is empty when it is not.
	busy bool
}

// Update runs fn in a SERIALIZABLE transaction, grouped with the Updates
// of this process that arrive while another transaction is in flight (see
// the group commit above), and commits it if fn returns nil. fn's own
// error is returned as is; errors of the index are wrapped, those of a
// database out of reach wrapping meta.ErrUnavailable. A caller whose
// context ends while its function waits in the queue gets the context's
// error and its function never runs; once its function is in a
// transaction, the caller waits for that transaction's end.
func (s *Store) Update(ctx context.Context, fn func(meta.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c := &call{ctx: ctx, fn: fn, wake: make(chan bool, 1)}
	g := &s.group
	g.mu.Lock()
	g.queue = append(g.queue, c)
	if !g.busy {
		g.busy = true
		c.state = leading
		g.mu.Unlock()
		s.lead(c)
		return c.result()
	}
	g.mu.Unlock()
	select {
	case lead := <-c.wake:
		if lead {
			s.lead(c)
		}
		return c.result()
	case <-ctx.Done():
	}
	g.mu.Lock()
	if c.state == queued {
		// Still waiting: withdraw, and nothing ran.
		g.queue = slices.DeleteFunc(g.queue, func(q *call) bool { return q == c })
		g.mu.Unlock()
		return left(ctx)
	}
	g.mu.Unlock()
	// Already in a batch, or chosen to lead one: see it through.
	if <-c.wake {
		s.lead(c)
	}
	return c.result()
}

// lead runs the first calls of the queue, whose first is c, as one batch,
// then hands leadership on and delivers the results.
func (s *Store) lead(c *call) {
	g := &s.group
	g.mu.Lock()
	n := min(len(g.queue), maxBatch)
	batch := slices.Clone(g.queue[:n])
	g.queue = slices.Delete(g.queue, 0, n)
	for _, b := range batch {
		b.state = taken
	}
	g.mu.Unlock()

	// Deferred, so that a function calling runtime.Goexit on the
	// leader's goroutine does not wedge the queue.
	defer func() {
		for _, b := range batch {
			if !b.settled {
				b.settle(errGoexit, nil)
			}
		}
		g.mu.Lock()
		if len(g.queue) > 0 {
			next := g.queue[0]
			next.state = leading
			g.mu.Unlock()
			next.wake <- true
		} else {
			g.busy = false
			g.mu.Unlock()
		}
		deliver(batch, c)
	}()
	s.run(batch, c)
}

// deliver wakes the callers of batch whose results are set, but for the
// leader's.
func deliver(batch []*call, leader *call) {
	for _, b := range batch {
		if b.settled && !b.delivered {
			b.delivered = true
			if b != leader {
				b.wake <- false
			}
		}
	}
}

// run runs the calls of batch, led by leader, in transactions until each
// has its result: together for the first groupedRuns transactions, then,
// if they keep being doomed, each alone, so that a function whose
// transactions keep failing fails alone. Each caller is woken as soon as
// its result is set.
func (s *Store) run(batch []*call, leader *call) {
	pending := batch
	wait := retryBase
	for run := 1; len(pending) > 0; run++ {
		if run > 1 {
			deliver(batch, leader)
			s.retries.Add(uint64(len(pending)))
			time.Sleep(wait/2 + rand.N(wait/2+1))
			wait = min(2*wait, retryMax)
		}
		if run <= groupedRuns || len(pending) == 1 {
			pending = s.attempt(pending)
			continue
		}
		var again []*call
		for _, c := range pending {
			again = append(again, s.attempt([]*call{c})...)
		}
		pending = again
	}
}

// outcome is the result of a function that failed by itself in a
// transaction, rolled back to its savepoint.
type outcome struct {
	err      error
	panicked any
}

// doom says what a failure that ends a transaction does to its calls.
type doom uint8

const (
	// final: the failure is every call's result.
	final doom = iota
	// conflict: the transaction failed to serialise or deadlocked.
	conflict
	// lost: the transaction lost its connection before its commit.
	lost
)

// doomOf classifies err, which ended a transaction on conn (nil: before
// it had one).
func doomOf(err error, conn *pgx.Conn) doom {
	var ce *pgconn.ConnectError
	switch {
	case retryable(err):
		return conflict
	case conn != nil && conn.IsClosed():
		return lost
	case conn == nil && unavailable(err) && !errors.As(err, &ce):
		// A pooled connection found dead; a new one may serve.
		return lost
	}
	return final
}

// attempt runs calls in one transaction and sets the result of each that
// it decides; it returns those to run again in a new transaction.
func (s *Store) attempt(calls []*call) (again []*call) {
	live := make([]*call, 0, len(calls))
	for _, c := range calls {
		if c.ctx.Err() != nil {
			c.settle(left(c.ctx), nil) // nothing of it is kept
			continue
		}
		live = append(live, c)
	}
	if len(live) == 0 {
		return nil
	}
	ctx, stop := batchContext(live)
	defer stop()
	conn, err := beginSession(ctx, s.pool, beginWrite)
	if err != nil {
		err = fmt.Errorf("begin transaction: %w", classify(err))
		return doomed(live, -1, err, doomOf(err, nil), nil)
	}
	// Rolls back what a transaction that did not commit left open.
	defer conn.release()
	// A lone function needs no savepoint: its failure rolls back the
	// transaction, as an ungrouped Update's would. The savepoints, the
	// rollbacks to them and the changes a function puts off go with the
	// next statement (see session): the next function's first, or the
	// commit. When a change put off by live[k] fails so, live[k] failed:
	// the transaction rolls back to its savepoint, which undoes what
	// every later function did, and those run again.
	grouped := len(live) > 1
	own := make(map[*call]outcome)
	// What the functions announced they will read (meta.WithPrefetch) is
	// read in one round trip, with the BEGIN, and shared: a function
	// then reads nothing it announced, unless a function before it
	// changed it. What a function that failed changed is rolled back,
	// so everything read ahead is forgotten then.
	fetched := &fetchedSet{}
	var hints []meta.Prefetch
	for _, c := range live {
		if p, ok := meta.PrefetchOf(c.ctx); ok {
			hints = append(hints, p)
		}
	}
	if reads := fetched.missing(hints...); len(reads) > 0 {
		if err := fetched.fetch(ctx, conn, reads); err != nil {
			err = fmt.Errorf("read ahead: %w", classify(err))
			return doomed(live, -1, err, doomOf(err, conn.pgConn()), own)
		}
	}
	// carried handles the failure cause of a change live[k] put off,
	// found by a later statement: it returns the calls to run again and
	// true when the transaction is lost, else where to go on from.
	carried := func(k int, cause error) (again []*call, lost bool, next int) {
		if d := doomOf(cause, conn.pgConn()); d != final {
			return doomed(live, k, cause, d, own), true, 0
		}
		own[live[k]] = outcome{err: fmt.Errorf("change the index: %w", cause)}
		for _, c := range live[k+1:] {
			delete(own, c)
		}
		conn.dropAll()
		fetched.forget()
		if err := rollbackNow(ctx, conn); err != nil {
			return doomed(live, -1, err, doomOf(err, conn.pgConn()), own), true, 0
		}
		return nil, false, k + 1
	}
	for i := 0; ; {
		for i < len(live) {
			c := live[i]
			conn.owner = i
			if grouped {
				if i > 0 {
					conn.later("RELEASE SAVEPOINT " + savepoint)
				}
				conn.later("SAVEPOINT " + savepoint)
			}
			start := conn.mark()
			t := &tx{ctx: c.ctx, conn: conn, writable: true, fetched: fetched}
			p, ferr := s.call(c.fn, t)
			if k := conn.carried; k >= 0 {
				conn.carried = -1
				again, lost, next := carried(k, t.failed)
				if lost {
					return again
				}
				i = next
				continue
			}
			if t.failed != nil {
				if d := doomOf(t.failed, conn.pgConn()); d != final {
					// The transaction is lost, whatever fn made of it.
					cause := t.failed
					if d == lost && ferr != nil {
						cause = ferr
					}
					return doomed(live, i, cause, d, own)
				}
			}
			i++
			if ferr == nil && p == nil {
				if t.failed == nil {
					continue
				}
				// fn ignored an error of the index: what fn meant
				// cannot be committed.
				ferr = fmt.Errorf("commit transaction after a failed statement: %w", t.failed)
			}
			if !grouped {
				// Rolled back by the deferred release; nothing to
				// commit.
				c.settle(ferr, p)
				return nil
			}
			own[c] = outcome{ferr, p}
			conn.drop(start)
			fetched.forget()
			if t.failed == nil {
				conn.later("ROLLBACK TO SAVEPOINT " + savepoint)
				continue
			}
			if err := rollbackNow(ctx, conn); err != nil {
				return doomed(live, -1, err, doomOf(err, conn.pgConn()), own)
			}
		}
		if len(own) == len(live) {
			// Nothing to commit.
			for _, c := range live {
				c.settle(own[c].err, own[c].panicked)
			}
			return nil
		}
		conn.owner = len(live)
		err = conn.commit(ctx)
		if err == nil {
			break
		}
		if k := conn.carried; k >= 0 && grouped {
			conn.carried = -1
			again, lost, next := carried(k, classify(err))
			if lost {
				return again
			}
			i = next
			continue
		}
		err = fmt.Errorf("commit transaction: %w", classify(err))
		// A commit that lost its connection may have committed: it is
		// not run again, its functions get its error.
		d := final
		if retryable(err) {
			d = conflict
		}
		return doomed(live, -1, err, d, own)
	}
	s.commits.Add(1)
	for _, c := range live {
		o := own[c]
		c.settle(o.err, o.panicked)
	}
	return nil
}

// rollbackNow rolls the transaction of conn, failed by a statement, back
// to the savepoint at once rather than putting it off: until then the
// transaction is aborted, and pgx prepares no statement (its cache may
// have dropped some of a failed batch) before the transaction is good
// again.
func rollbackNow(ctx context.Context, conn *session) error {
	if _, err := conn.execAlone(ctx, "ROLLBACK TO SAVEPOINT "+savepoint); err != nil {
		return fmt.Errorf("roll back to savepoint: %w", classify(err))
	}
	return nil
}

// doomed decides what becomes of the calls of a transaction that cannot
// commit because of cause, which the function live[culprit] saw (-1: the
// transaction's own statements saw it), own holding the results of the
// functions that failed by themselves in it. Calls whose caller is gone
// get their context's error, the culprit its own. On a conflict or a lost
// connection the others run again, up to maxAttempts and maxLost runs;
// on a final failure the functions that failed by themselves get their
// own results, the others cause. It returns the calls to run again.
func doomed(live []*call, culprit int, cause error, d doom, own map[*call]outcome) (again []*call) {
	// A connection closed because the culprit's context ended (pgx
	// closes it then) is the culprit's doing, not the others'.
	forgiven := d == lost && culprit >= 0 && live[culprit].ctx.Err() != nil
	for i, c := range live {
		switch {
		case c.ctx.Err() != nil && (i == culprit || len(live) == 1):
			// cause is what its own context did.
			c.settle(cause, nil)
		case c.ctx.Err() != nil:
			c.settle(left(c.ctx), nil)
		case d == conflict:
			c.conflicts++
			if c.conflicts >= maxAttempts {
				c.settle(fmt.Errorf("index transaction conflicted %d times: %w", c.conflicts, cause), nil)
				continue
			}
			again = append(again, c)
		case forgiven:
			again = append(again, c)
		case d == lost:
			c.lost++
			if c.lost >= maxLost {
				c.settle(fmt.Errorf("index transaction lost its connection %d times: %w", c.lost, unavailableErr(cause)), nil)
				continue
			}
			again = append(again, c)
		default:
			if o, ok := own[c]; ok {
				c.settle(o.err, o.panicked)
			} else {
				c.settle(cause, nil)
			}
		}
	}
	return again
}

// left is the result of a call whose context ended before its function
// could commit: the context's error, wrapping meta.ErrUnavailable when it
// is a deadline (an index too slow to serve in time).
func left(ctx context.Context) error {
	return fmt.Errorf("wait for the index transaction: %w", classify(ctx.Err()))
}

// unavailableErr wraps err, the error of a lost connection, with
// meta.ErrUnavailable if it does not already.
func unavailableErr(err error) error {
	if errors.Is(err, meta.ErrUnavailable) {
		return err
	}
	return fmt.Errorf("%w: %w", meta.ErrUnavailable, err)
}

// call runs fn on t, recovering a panic as p, and ends t.
func (s *Store) call(fn func(meta.Tx) error, t *tx) (p any, err error) {
	defer func() {
		t.done = true
		if r := recover(); r != nil {
			s.log.Error("index update function panicked", "panic", r, "stack", string(debug.Stack()))
			p = r
		}
	}()
	return nil, fn(t)
}

// batchContext returns the context of a transaction's own statements
// (begin, savepoints, commit) for calls: the one caller's context when it
// is alone, else one that ends once every caller's context has ended, so
// that no single caller leaving abandons the others' transaction.
func batchContext(calls []*call) (context.Context, func()) {
	if len(calls) == 1 {
		return calls[0].ctx, func() {}
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(calls[0].ctx))
	var left atomic.Int64
	left.Store(int64(len(calls)))
	stops := make([]func() bool, len(calls))
	for i, c := range calls {
		stops[i] = context.AfterFunc(c.ctx, func() {
			if left.Add(-1) == 0 {
				cancel()
			}
		})
	}
	return ctx, func() {
		for _, stop := range stops {
			stop()
		}
		cancel()
	}
}
