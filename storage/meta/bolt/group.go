package bolt

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// Group commit.
//
// bbolt makes each write transaction durable with an fsync of the index
// file, and runs one at a time. Writers that arrive while a commit is in
// flight queue up; when it ends, the first of them becomes the leader and
// runs every queued function, in arrival order, in one transaction with
// one commit. There is no timer: a writer that finds no commit in flight
// leads at once, alone, so a lone writer pays nothing for the grouping.
//
// Results are those of running each function alone, in arrival order. If a
// function fails (returns an error or panics), the transaction is rolled
// back; the functions before it run again and commit, then it runs again
// first in a transaction of its own, where a failure is its result, and
// the functions after it continue from there. Every committed function
// therefore ran last on exactly the state its predecessors committed, and
// every failed one left nothing. Functions may run more than once, which
// meta.Store.Update allows.
//
// The leader hands leadership to the first writer that queued during its
// commit before it returns, so no caller waits for batches other than the
// one that carries its own function. A panic in a function is recovered by
// the leader, which carries on with the others, and raised again in the
// goroutine whose function it was.

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
	fn    func(*bolt.Tx) error
	state callState
	// wake receives true when the call is to lead, false when its
	// result is set.
	wake chan bool
	// err is the result; panicked, when not nil, the value fn panicked
	// with.
	err      error
	panicked any
	// settled is set once err and panicked are final.
	settled bool
}

// errGoexit is the result of the calls of a batch cut short by a function
// that ended its goroutine (runtime.Goexit, as t.FailNow does).
var errGoexit = errors.New("index update abandoned: a function of its group commit called runtime.Goexit")

// result returns the call's error, or raises its panic again.
func (c *call) result() error {
	if c.panicked != nil {
		panic(c.panicked)
	}
	return c.err
}

// group is the queue of writers waiting for the commit in flight.
type group struct {
	mu    sync.Mutex
	queue []*call
	// busy is set while a leader runs; the queue is empty when it is not.
	busy bool
}

// update runs fn in a write transaction, grouped with concurrent ones.
func (s *Store) update(ctx context.Context, fn func(*bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c := &call{fn: fn, wake: make(chan bool, 1)}
	if s.solo {
		s.run([]*call{c})
		return c.result()
	}
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
		return ctx.Err()
	}
	g.mu.Unlock()
	// Already in a batch, or chosen to lead one: see it through.
	if <-c.wake {
		s.lead(c)
	}
	return c.result()
}

// lead runs the queue, whose first call is c, as one batch, then hands
// leadership on and delivers the results.
func (s *Store) lead(c *call) {
	g := &s.group
	g.mu.Lock()
	batch := g.queue
	g.queue = nil
	for _, b := range batch {
		b.state = taken
	}
	g.mu.Unlock()

	// Deferred, so that a function calling runtime.Goexit on the
	// leader's goroutine does not wedge the queue.
	defer func() {
		for _, b := range batch {
			if !b.settled {
				b.err, b.panicked = errGoexit, nil
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
		for _, b := range batch {
			if b != c {
				b.wake <- false
			}
		}
	}()
	s.run(batch)
}

// run runs the calls of batch in as few transactions as their results
// allow, and sets the result of each.
func (s *Store) run(batch []*call) {
	pending, limit := batch, len(batch)
	for len(pending) > 0 {
		failed, err := s.attempt(pending[:limit])
		switch {
		case failed < 0:
			// Committed, or the commit failed for all of them.
			for _, c := range pending[:limit] {
				c.err, c.panicked, c.settled = err, nil, true
			}
			pending = pending[limit:]
			limit = len(pending)
		case failed == 0:
			// It failed first in its transaction, as it would alone:
			// that is its result, set by attempt.
			pending = pending[1:]
			limit = len(pending)
		default:
			// Commit those before it, then run it first.
			limit = failed
		}
	}
}

// attempt runs calls in one transaction. If one fails it rolls back and
// returns its index, having set its result if it was the first; otherwise
// it commits and returns -1 with the commit's error.
func (s *Store) attempt(calls []*call) (failed int, err error) {
	btx, err := s.db.Begin(true)
	if err != nil {
		return -1, fmt.Errorf("begin write transaction: %w", err)
	}
	done := false
	defer func() {
		if r := recover(); r != nil {
			// A panic of bbolt itself, outside any function.
			s.log.Error("index commit panicked", "panic", r, "stack", string(debug.Stack()))
			failed, err = -1, fmt.Errorf("index commit panicked: %v", r)
		}
		if !done {
			_ = btx.Rollback()
		}
	}()
	for i, c := range calls {
		p, ferr := s.call(c.fn, btx)
		if ferr != nil || p != nil {
			if i == 0 {
				c.err, c.panicked, c.settled = ferr, p, true
			}
			return i, nil
		}
	}
	err = btx.Commit()
	done = true // committed, or rolled back by the failed commit
	if err != nil {
		return -1, fmt.Errorf("commit index: %w", err)
	}
	s.commits.Add(1)
	return -1, nil
}

// call runs fn, recovering a panic as p.
func (s *Store) call(fn func(*bolt.Tx) error, btx *bolt.Tx) (p any, err error) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("index update function panicked", "panic", r, "stack", string(debug.Stack()))
			p = r
		}
	}()
	return nil, fn(btx)
}
