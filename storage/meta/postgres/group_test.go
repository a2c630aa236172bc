package postgres

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/meta"
)

// noErr fails t at once on err.
func noErr(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// queueLen is the number of writers waiting for the transaction in
// flight.
func queueLen(s *Store) int {
	s.group.mu.Lock()
	defer s.group.mu.Unlock()
	return len(s.group.queue)
}

// waitQueued waits, for at most ten seconds, until n writers wait.
func waitQueued(t *testing.T, s *Store, n int) {
	t.Helper()
	for range 10_000 {
		if queueLen(s) >= n {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("%d writers queued, want %d", queueLen(s), n)
}

// blockLeader starts an Update whose function waits for release, so that
// the Updates that follow queue behind its transaction. It returns once
// the function runs, with the leader's result to come on done.
func blockLeader(t *testing.T, s *Store) (release func(), done <-chan error) {
	t.Helper()
	entered, gate, result := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		result <- s.Update(context.Background(), func(tx meta.Tx) error {
			close(entered)
			<-gate
			return tx.PutBlob(digest.FromString("leader"), meta.Blob{Size: 1})
		})
	}()
	<-entered
	var once sync.Once
	release = func() { once.Do(func() { close(gate) }) }
	t.Cleanup(release)
	return release, result
}

// TestGroupCommitBatches: writers that arrive while a transaction is in
// flight share the next one, and each one's record is kept.
func TestGroupCommitBatches(t *testing.T) {
	s := openTemp(t)
	before := s.commits.Load()
	release, leader := blockLeader(t, s)
	const n = 15
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			errs <- s.Update(context.Background(), func(tx meta.Tx) error {
				return tx.PutBlob(digest.FromString(fmt.Sprint(i)), meta.Blob{Size: int64(i)})
			})
		})
	}
	waitQueued(t, s, n)
	release()
	noErr(t, <-leader)
	wg.Wait()
	close(errs)
	for err := range errs {
		noErr(t, err)
	}
	if got := s.commits.Load() - before; got != 2 {
		t.Errorf("%d writers behind one transaction took %d commits, want 2 (the leader's and one for them all)", n, got)
	}
	err := s.View(context.Background(), func(tx meta.Tx) error {
		for i := range n {
			if b, ok, _ := tx.Blob(digest.FromString(fmt.Sprint(i))); !ok || b.Size != int64(i) {
				t.Errorf("writer %d's record = %+v, %v", i, b, ok)
			}
		}
		return nil
	})
	noErr(t, err)
}

// TestGroupCommitBatchBound: a queue longer than maxBatch is carried by
// several transactions, and every writer's record is kept.
func TestGroupCommitBatchBound(t *testing.T) {
	s := openTemp(t)
	before := s.commits.Load()
	release, leader := blockLeader(t, s)
	const n = maxBatch + 10
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			errs <- s.Update(context.Background(), func(tx meta.Tx) error {
				return tx.PutBlob(digest.FromString(fmt.Sprint(i)), meta.Blob{Size: int64(i)})
			})
		})
	}
	waitQueued(t, s, n)
	release()
	noErr(t, <-leader)
	wg.Wait()
	close(errs)
	for err := range errs {
		noErr(t, err)
	}
	if got := s.commits.Load() - before; got != 3 {
		t.Errorf("%d writers behind one transaction took %d commits, want 3 (the leader's, %d, then %d)", n, got, maxBatch, n-maxBatch)
	}
	err := s.View(context.Background(), func(tx meta.Tx) error {
		for i := range n {
			if b, ok, _ := tx.Blob(digest.FromString(fmt.Sprint(i))); !ok || b.Size != int64(i) {
				t.Errorf("writer %d's record = %+v, %v", i, b, ok)
			}
		}
		return nil
	})
	noErr(t, err)
}

// TestGroupCommitLoneWriter: a writer alone commits alone, at once.
func TestGroupCommitLoneWriter(t *testing.T) {
	s := openTemp(t)
	before := s.commits.Load()
	for i := range 5 {
		err := s.Update(context.Background(), func(tx meta.Tx) error {
			if q := queueLen(s); q != 0 {
				t.Errorf("a lone writer runs with %d calls queued behind it", q)
			}
			return tx.PutBlob(digest.FromString(fmt.Sprint(i)), meta.Blob{Size: 1})
		})
		noErr(t, err)
	}
	if got := s.commits.Load() - before; got != 5 {
		t.Errorf("5 lone Updates took %d commits", got)
	}
}

// logOf reads the log the ordering tests append to.
func logOf(tx meta.Tx) (string, error) {
	u, _, err := tx.Upload("log")
	return u.Repo, err
}

func appendLog(tx meta.Tx, entry string) (seen string, err error) {
	seen, err = logOf(tx)
	if err != nil {
		return seen, err
	}
	return seen, tx.PutUpload("log", meta.Upload{Repo: seen + "," + entry})
}

var errSentinel = errors.New("this function fails")

// behaviour is what a function of the batching tests does after it
// appends to the log.
type behaviour string

const (
	succeed      behaviour = "ok"
	fail         behaviour = "fail"       // returns an error of its own
	failSQL      behaviour = "sql"        // returns a statement's error (division by zero)
	ignoreSQL    behaviour = "ignore"     // ignores a statement's error and returns nil
	panics       behaviour = "panic"      // panics
	conflictOnce behaviour = "conflict1"  // fails to serialise in its first run
	conflicts    behaviour = "conflict"   // fails to serialise in every run
	loseConnOnce behaviour = "lostconn1"  // ends its session in its first run
	goexit       behaviour = "goexit"     // calls runtime.Goexit
	slowCancel   behaviour = "cancelling" // its caller leaves as it runs
	failPutOff   behaviour = "putoff"     // puts off a change that fails, and returns nil
)

// result is what became of one function of a batching test.
type result struct {
	err      error
	panicked any
	seen     string // what the function saw in its last run
	runs     int
}

// raise40001 fails the statement, and the transaction, as a
// serialisation failure does.
const raise40001 = `DO $$ BEGIN RAISE EXCEPTION 'serialisation failure for the test' USING ERRCODE = '40001'; END $$`

// runBatch queues one Update per behaviour of plan behind a blocked
// leader, in plan order, so that they share a batch, lets them run and
// returns what became of each.
func runBatch(t *testing.T, s *Store, plan []behaviour) []result {
	t.Helper()
	noErr(t, s.Update(context.Background(), func(tx meta.Tx) error { return tx.PutUpload("log", meta.Upload{Repo: "L"}) }))
	release, leader := blockLeader(t, s)
	out := make([]result, len(plan))
	var wg sync.WaitGroup
	for i, what := range plan {
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		wg.Go(func() {
			defer func() { out[i].panicked = recover() }()
			out[i].err = s.Update(ctx, func(mt meta.Tx) error {
				out[i].runs++
				first := out[i].runs == 1
				seen, err := appendLog(mt, fmt.Sprint(i))
				out[i].seen = seen
				if err != nil {
					return err
				}
				xt := mt.(*tx)
				switch {
				case what == fail:
					return fmt.Errorf("function %d: %w", i, errSentinel)
				case what == failSQL:
					_, err := xt.exec(fmt.Sprintf("function %d divides", i), "SELECT 1/0")
					return err
				case what == ignoreSQL:
					_, _ = xt.exec("divide", "SELECT 1/0")
				case what == panics:
					panic(fmt.Sprintf("function %d panics", i))
				case what == conflicts, what == conflictOnce && first:
					_, err := xt.exec("conflict", raise40001)
					return err
				case what == loseConnOnce && first:
					_, err := xt.exec("end the session", "SELECT pg_terminate_backend(pg_backend_pid())")
					return err
				case what == goexit:
					runtime.Goexit()
				case what == failPutOff:
					// A tag in a repository that does not exist: the
					// change is put off, and its foreign key fails it
					// as a later statement carries it.
					return mt.SetTag(fmt.Sprintf("no-repository-%d", i), "v1", digest.FromString("x"))
				case what == slowCancel:
					cancel()
					_, err := xt.exec("after the caller left", "SELECT 1")
					return err
				}
				return nil
			})
		})
		waitQueued(t, s, i+1) // arrival order is plan order
	}
	release()
	if err := <-leader; err != nil {
		t.Errorf("leader: %v", err)
	}
	wg.Wait()
	var runs []int
	for _, o := range out {
		runs = append(runs, o.runs)
	}
	t.Logf("plan %v: runs per function %v", plan, runs)
	return out
}

// wantLog checks the log the functions of runBatch appended to.
func wantLog(t *testing.T, s *Store, want string) {
	t.Helper()
	err := s.View(context.Background(), func(tx meta.Tx) error {
		log, err := logOf(tx)
		if log != want {
			t.Errorf("log = %q, want %q", log, want)
		}
		return err
	})
	noErr(t, err)
}

// wantOK checks that the functions at is succeeded.
func wantOK(t *testing.T, out []result, is ...int) {
	t.Helper()
	for _, i := range is {
		if out[i].err != nil || out[i].panicked != nil {
			t.Errorf("function %d: %v, %v; want success", i, out[i].err, out[i].panicked)
		}
	}
}

// TestGroupCommitFailures: in one batch, functions that fail in every way
// a function can get their own results and leave nothing, and every other
// function commits having seen exactly the functions before it, each
// function running once.
func TestGroupCommitFailures(t *testing.T) {
	s := openTemp(t)
	before := s.commits.Load()
	plan := []behaviour{succeed, fail, succeed, failSQL, succeed, ignoreSQL, succeed, panics, succeed}
	out := runBatch(t, s, plan)
	wantOK(t, out, 0, 2, 4, 6, 8)
	if o := out[1]; !errors.Is(o.err, errSentinel) || !strings.Contains(o.err.Error(), "function 1") {
		t.Errorf("function 1 returned %v, want its own error", o.err)
	}
	var pe *pgconn.PgError
	if o := out[3]; !errors.As(o.err, &pe) || pe.Code != "22012" || !strings.Contains(o.err.Error(), "function 3 divides") {
		t.Errorf("function 3 returned %v, want its statement's error (22012)", o.err)
	}
	if o := out[5]; o.err == nil || !strings.Contains(o.err.Error(), "failed statement") || !errors.As(o.err, &pe) || pe.Code != "22012" {
		t.Errorf("function 5, which ignored a failed statement, returned %v", o.err)
	}
	if o := out[7]; o.panicked != "function 7 panics" {
		t.Errorf("function 7: caller recovered %v, want its panic", o.panicked)
	}
	// As if alone, in order: each saw the successes before it.
	for i, want := range []string{"L", "L,0", "L,0", "L,0,2", "L,0,2", "L,0,2,4", "L,0,2,4", "L,0,2,4,6", "L,0,2,4,6"} {
		if out[i].seen != want {
			t.Errorf("function %d saw %q, want %q", i, out[i].seen, want)
		}
	}
	for i, o := range out {
		if o.runs != 1 {
			t.Errorf("function %d ran %d times, want once: a function's failure costs the others nothing", i, o.runs)
		}
	}
	wantLog(t, s, "L,0,2,4,6,8")
	// The log's first entry, the leader, the batch.
	if got := s.commits.Load() - before; got != 3 {
		t.Errorf("%d commits, want 3", got)
	}
	// The queue still works.
	noErr(t, s.Update(context.Background(), func(tx meta.Tx) error { _, err := appendLog(tx, "after"); return err }))
}

// TestGroupCommitPutOffFailures: a change a function puts off fails when
// a later statement carries it, the next function's or the commit's; that
// function alone fails and leaves nothing, the functions after it run
// again, and every other function commits as if each had run alone.
func TestGroupCommitPutOffFailures(t *testing.T) {
	s := openTemp(t)
	plan := []behaviour{succeed, failPutOff, succeed, succeed, failPutOff}
	out := runBatch(t, s, plan)
	wantOK(t, out, 0, 2, 3)
	var pe *pgconn.PgError
	for _, i := range []int{1, 4} {
		if o := out[i]; !errors.As(o.err, &pe) || pe.Code != "23503" {
			t.Errorf("function %d returned %v, want its change's error (23503, a foreign key)", i, o.err)
		}
	}
	for i, want := range []string{"L", "L,0", "L,0", "L,0,2", "L,0,2,3"} {
		if out[i].seen != want {
			t.Errorf("function %d saw %q, want %q", i, out[i].seen, want)
		}
	}
	// Function 2's first statement carried function 1's change: it ran
	// again; function 4's change failed at the commit, after every
	// function had run.
	for i, want := range []int{1, 1, 2, 1, 1} {
		if out[i].runs != want {
			t.Errorf("function %d ran %d times, want %d", i, out[i].runs, want)
		}
	}
	wantLog(t, s, "L,0,2,3")
	noErr(t, s.View(context.Background(), func(tx meta.Tx) error {
		for _, repo := range []string{"no-repository-1", "no-repository-4"} {
			if ok, err := tx.Repository(repo); ok || err != nil {
				t.Errorf("repository %s: %v, %v; want none", repo, ok, err)
			}
		}
		return nil
	}))
	// Alone, the commit carries the change, and the Update fails.
	err := s.Update(context.Background(), func(tx meta.Tx) error {
		if _, err := appendLog(tx, "alone"); err != nil {
			return err
		}
		return tx.SetTag("no-repository", "v1", digest.FromString("x"))
	})
	if !errors.As(err, &pe) || pe.Code != "23503" {
		t.Errorf("a lone Update whose change fails returned %v, want 23503", err)
	}
	wantLog(t, s, "L,0,2,3")
}

// TestGroupCommitOnlyFailures: a batch whose every function fails commits
// nothing and gives each its own error.
func TestGroupCommitOnlyFailures(t *testing.T) {
	s := openTemp(t)
	out := runBatch(t, s, []behaviour{fail, failSQL, fail})
	for _, i := range []int{0, 2} {
		if !errors.Is(out[i].err, errSentinel) {
			t.Errorf("function %d returned %v, want its own error", i, out[i].err)
		}
	}
	var pe *pgconn.PgError
	if !errors.As(out[1].err, &pe) || pe.Code != "22012" {
		t.Errorf("function 1 returned %v, want its statement's error", out[1].err)
	}
	wantLog(t, s, "L")
}

// TestGroupCommitConflictReruns: a batch whose transaction fails to
// serialise runs again, every function of it, and each commits once.
func TestGroupCommitConflictReruns(t *testing.T) {
	s := openTemp(t)
	before, retries := s.commits.Load(), s.retries.Load()
	out := runBatch(t, s, []behaviour{succeed, succeed, conflictOnce, succeed, fail})
	wantOK(t, out, 0, 1, 2, 3)
	if !errors.Is(out[4].err, errSentinel) {
		t.Errorf("function 4 returned %v, want its own error", out[4].err)
	}
	for i, want := range []int{2, 2, 2, 1, 1} {
		if out[i].runs != want {
			t.Errorf("function %d ran %d times, want %d", i, out[i].runs, want)
		}
	}
	for i, want := range []string{"L", "L,0", "L,0,1", "L,0,1,2", "L,0,1,2,3"} {
		if out[i].seen != want {
			t.Errorf("function %d last saw %q, want %q", i, out[i].seen, want)
		}
	}
	wantLog(t, s, "L,0,1,2,3")
	if got := s.commits.Load() - before; got != 3 {
		t.Errorf("%d commits, want 3 (the log's, the leader's, the batch's second run)", got)
	}
	if got := s.retries.Load() - retries; got != 5 {
		t.Errorf("%d functions ran again, want the batch's 5", got)
	}
}

// TestGroupCommitConflictPersists: a function whose transactions keep
// failing to serialise gets a conflict error after maxAttempts runs; the
// functions that shared its batch commit, each once.
func TestGroupCommitConflictPersists(t *testing.T) {
	s := openTemp(t)
	out := runBatch(t, s, []behaviour{succeed, conflicts, succeed})
	wantOK(t, out, 0, 2)
	var pe *pgconn.PgError
	if err := out[1].err; !errors.As(err, &pe) || pe.Code != codeSerializationFailure ||
		!strings.Contains(err.Error(), fmt.Sprintf("conflicted %d times", maxAttempts)) {
		t.Errorf("a function that always conflicts returned %v", err)
	}
	if out[1].runs != maxAttempts {
		t.Errorf("a function that always conflicts ran %d times, want %d", out[1].runs, maxAttempts)
	}
	wantLog(t, s, "L,0,2")
}

// TestGroupCommitLostConnection: a batch whose connection is lost under a
// function runs again on a new connection, and each function commits once.
func TestGroupCommitLostConnection(t *testing.T) {
	s := openTemp(t)
	out := runBatch(t, s, []behaviour{succeed, loseConnOnce, succeed})
	wantOK(t, out, 0, 1, 2)
	for i, want := range []int{2, 2, 1} {
		if out[i].runs != want {
			t.Errorf("function %d ran %d times, want %d", i, out[i].runs, want)
		}
	}
	wantLog(t, s, "L,0,1,2")
}

// TestGroupCommitCallerLeaves: a caller that leaves while its function
// runs in a batch gets its context's error and leaves nothing; the batch
// commits the others.
func TestGroupCommitCallerLeaves(t *testing.T) {
	s := openTemp(t)
	// The first function's context is the one the batch's own
	// statements derive from: its ending must not end them.
	out := runBatch(t, s, []behaviour{slowCancel, succeed, slowCancel, succeed})
	wantOK(t, out, 1, 3)
	for _, i := range []int{0, 2} {
		if !errors.Is(out[i].err, context.Canceled) {
			t.Errorf("function %d, whose caller left, returned %v", i, out[i].err)
		}
	}
	wantLog(t, s, "L,1,3")
}

// TestGroupCommitCancelWhileQueued: a writer whose context ends while it
// waits leaves the queue, and its function never runs.
func TestGroupCommitCancelWhileQueued(t *testing.T) {
	s := openTemp(t)
	release, leader := blockLeader(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	var ran atomic.Bool
	cancelled := make(chan error, 1)
	go func() {
		cancelled <- s.Update(ctx, func(tx meta.Tx) error {
			ran.Store(true)
			return tx.PutBlob(digest.FromString("cancelled"), meta.Blob{Size: 1})
		})
	}()
	waitQueued(t, s, 1)
	other := make(chan error, 1)
	go func() {
		other <- s.Update(context.Background(), func(tx meta.Tx) error {
			return tx.PutBlob(digest.FromString("other"), meta.Blob{Size: 1})
		})
	}()
	waitQueued(t, s, 2)
	cancel()
	if err := <-cancelled; !errors.Is(err, context.Canceled) {
		t.Errorf("a cancelled queued Update returned %v", err)
	}
	if q := queueLen(s); q != 1 {
		t.Errorf("%d writers queued after one withdrew, want 1", q)
	}
	release()
	noErr(t, <-leader)
	noErr(t, <-other)
	if ran.Load() {
		t.Error("the function of a withdrawn Update ran")
	}
	// An already cancelled context runs nothing.
	if err := s.Update(ctx, func(meta.Tx) error { ran.Store(true); return nil }); !errors.Is(err, context.Canceled) || ran.Load() {
		t.Errorf("Update with a cancelled context: %v, ran %v", err, ran.Load())
	}
}

// TestGroupCommitGoexit: a function that ends its goroutine (as t.FailNow
// does) abandons its batch, whose other callers get errGoexit, and does
// not wedge the queue.
func TestGroupCommitGoexit(t *testing.T) {
	s := openTemp(t)
	release, leader := blockLeader(t, s)
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		_ = s.Update(context.Background(), func(meta.Tx) error {
			runtime.Goexit()
			return nil
		})
		t.Error("Update returned after its function called runtime.Goexit")
	}()
	waitQueued(t, s, 1)
	behind := make(chan error, 1)
	go func() {
		behind <- s.Update(context.Background(), func(tx meta.Tx) error {
			return tx.PutBlob(digest.FromString("behind"), meta.Blob{Size: 1})
		})
	}()
	waitQueued(t, s, 2)
	release()
	noErr(t, <-leader)
	<-exited
	if err := <-behind; !errors.Is(err, errGoexit) {
		t.Errorf("an Update sharing a batch with runtime.Goexit returned %v, want errGoexit", err)
	}
	noErr(t, s.Update(context.Background(), func(tx meta.Tx) error {
		if _, ok, _ := tx.Blob(digest.FromString("behind")); ok {
			t.Error("the abandoned batch was committed")
		}
		return tx.PutBlob(digest.FromString("after"), meta.Blob{Size: 1})
	}))
}

// TestUpdatePanicAlone: a lone writer's panic reaches its caller and
// leaves nothing, and the store stays usable.
func TestUpdatePanicAlone(t *testing.T) {
	s := openTemp(t)
	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Errorf("recovered %v, want the function's panic", r)
			}
		}()
		_ = s.Update(context.Background(), func(tx meta.Tx) error {
			noErr(t, tx.PutBlob(digest.FromString("x"), meta.Blob{Size: 1}))
			panic("boom")
		})
	}()
	noErr(t, s.Update(context.Background(), func(tx meta.Tx) error {
		if _, ok, _ := tx.Blob(digest.FromString("x")); ok {
			t.Error("a panicking function's change was kept")
		}
		return nil
	}))
}

// TestGroupCommitConcurrentWriters: read-modify-write Updates from many
// goroutines all apply exactly once, in fewer transactions than Updates
// once they overlap.
func TestGroupCommitConcurrentWriters(t *testing.T) {
	s := openTemp(t)
	counter := digest.FromString("counter")
	const writers, each = 32, 10
	before := s.commits.Load()
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for range writers {
		wg.Go(func() {
			for range each {
				errs <- s.Update(context.Background(), func(tx meta.Tx) error {
					b, _, err := tx.Blob(counter)
					if err != nil {
						return err
					}
					b.Size++
					return tx.PutBlob(counter, b)
				})
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("update: %v", err)
		}
	}
	err := s.View(context.Background(), func(tx meta.Tx) error {
		b, _, err := tx.Blob(counter)
		if err == nil && b.Size != writers*each {
			err = fmt.Errorf("counter = %d after %d updates", b.Size, writers*each)
		}
		return err
	})
	noErr(t, err)
	t.Logf("%d Updates from %d writers took %d commits", writers*each, writers, s.commits.Load()-before)
}

// TestGroupCommitDeadlineWhileQueued: a writer whose deadline passes while
// it waits behind a transaction in flight (an index too slow to serve in
// time) gets meta.ErrUnavailable, and its function never runs.
func TestGroupCommitDeadlineWhileQueued(t *testing.T) {
	s := openTemp(t)
	release, leader := blockLeader(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	var ran atomic.Bool
	err := s.Update(ctx, func(meta.Tx) error { ran.Store(true); return nil })
	if !errors.Is(err, meta.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("an Update whose deadline passed in the queue returned %v, want meta.ErrUnavailable", err)
	}
	release()
	noErr(t, <-leader)
	if ran.Load() {
		t.Error("the function of an Update whose deadline passed in the queue ran")
	}
}

// TestGroupCommitReadsAhead: the functions of a batch announce what they
// read (meta.WithPrefetch), the batch reads it all at once, and still
// each function reads what the functions before it changed, and none
// reads what a function that failed changed: each moves one tag, from
// the digest the one before it set, numbering the move after the one
// before; the third changes the tag and its history, then fails.
func TestGroupCommitReadsAhead(t *testing.T) {
	s := openTemp(t)
	ctx := context.Background()
	noErr(t, s.Update(ctx, func(tx meta.Tx) error {
		return tx.PutLink("r", digest.FromString("l"), meta.Link{Linked: time.Now()})
	}))
	release, leader := blockLeader(t, s)
	const n = 6
	dg := func(i int) digest.Digest { return digest.FromString(fmt.Sprint("m", i)) }
	type seen struct {
		from digest.Digest
		seq  uint64
		err  error
	}
	out := make([]seen, n)
	var wg sync.WaitGroup
	for i := range n {
		hint := meta.WithPrefetch(ctx, meta.Prefetch{Repo: "r", Tags: []string{"t"}, Blobs: []digest.Digest{dg(i)}})
		wg.Go(func() {
			out[i].err = s.Update(hint, func(mt meta.Tx) error {
				from, _, err := mt.Tag("r", "t")
				if err != nil {
					return err
				}
				out[i].from = from
				if err := mt.SetTag("r", "t", dg(i)); err != nil {
					return err
				}
				m, err := mt.AppendMove("r", "t", meta.Move{Time: time.Unix(int64(i), 0), Previous: from, Digest: dg(i), Action: "push"})
				out[i].seq = m.Seq
				if err != nil {
					return err
				}
				if i == 2 {
					return errSentinel
				}
				return nil
			})
		})
		waitQueued(t, s, i+1)
	}
	release()
	noErr(t, <-leader)
	wg.Wait()
	var prev digest.Digest
	var seq uint64
	for i, o := range out {
		if i == 2 {
			if !errors.Is(o.err, errSentinel) {
				t.Errorf("function 2 returned %v, want its own error", o.err)
			}
			continue
		}
		if o.err != nil {
			t.Errorf("function %d: %v", i, o.err)
		}
		seq++
		if o.from != prev || o.seq != seq {
			t.Errorf("function %d moved the tag from %.19s as move %d, want from %.19s as move %d", i, o.from, o.seq, prev, seq)
		}
		prev = dg(i)
	}
	noErr(t, s.View(ctx, func(tx meta.Tx) error {
		if d, _, err := tx.Tag("r", "t"); err != nil || d != prev {
			t.Errorf("tag names %.19s (%v), want %.19s", d, err, prev)
		}
		var seqs []uint64
		err := tx.Moves("r", "t", 0, func(m meta.Move) error {
			seqs = append(seqs, m.Seq)
			return nil
		})
		if fmt.Sprint(seqs) != "[5 4 3 2 1]" {
			t.Errorf("history numbered %v, want [5 4 3 2 1]", seqs)
		}
		return err
	}))
}
