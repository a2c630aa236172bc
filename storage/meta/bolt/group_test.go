package bolt

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

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/meta"
)

// queueLen is the number of writers waiting for the commit in flight.
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
// the Updates that follow queue behind its commit. It returns once the
// function runs, with the leader's result to come on done.
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
	return func() { once.Do(func() { close(gate) }) }, result
}

// TestGroupCommitBatches: writers that arrive while a commit is in flight
// share the next commit.
func TestGroupCommitBatches(t *testing.T) {
	s := openTemp(t)
	defer s.Close()
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
	must(t, <-leader)
	wg.Wait()
	close(errs)
	for err := range errs {
		must(t, err)
	}
	if got := s.commits.Load() - before; got != 2 {
		t.Errorf("%d writers behind one commit took %d commits, want 2 (the leader's and one for them all)", n, got)
	}
	err := s.View(context.Background(), func(tx meta.Tx) error {
		for i := range n {
			if b, ok, _ := tx.Blob(digest.FromString(fmt.Sprint(i))); !ok || b.Size != int64(i) {
				t.Errorf("writer %d's record = %+v, %v", i, b, ok)
			}
		}
		return nil
	})
	must(t, err)
}

// TestGroupCommitLoneWriter: a writer alone commits alone, at once.
func TestGroupCommitLoneWriter(t *testing.T) {
	s := openTemp(t)
	defer s.Close()
	before := s.commits.Load()
	for i := range 5 {
		err := s.Update(context.Background(), func(tx meta.Tx) error {
			if q := queueLen(s); q != 0 {
				t.Errorf("a lone writer runs with %d calls queued behind it", q)
			}
			return tx.PutBlob(digest.FromString(fmt.Sprint(i)), meta.Blob{Size: 1})
		})
		must(t, err)
	}
	if got := s.commits.Load() - before; got != 5 {
		t.Errorf("5 lone Updates took %d commits", got)
	}
}

// logOf reads the log the ordering test appends to.
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

// TestGroupCommitFailures: in one batch, a failing function and a
// panicking one get their own results and leave nothing, and every other
// function commits having seen exactly the functions before it.
func TestGroupCommitFailures(t *testing.T) {
	s := openTemp(t)
	defer s.Close()
	must(t, s.Update(context.Background(), func(tx meta.Tx) error { return tx.PutUpload("log", meta.Upload{Repo: "L"}) }))
	release, leader := blockLeader(t, s)
	type outcome struct {
		err      error
		panicked any
		seen     string // what the function saw in its last run
		runs     int
	}
	plan := []string{"ok", "fail", "ok", "panic", "ok"}
	out := make([]outcome, len(plan))
	var wg sync.WaitGroup
	for i, what := range plan {
		wg.Go(func() {
			defer func() { out[i].panicked = recover() }()
			out[i].err = s.Update(context.Background(), func(tx meta.Tx) error {
				out[i].runs++
				seen, err := appendLog(tx, fmt.Sprint(i))
				out[i].seen = seen
				switch {
				case err != nil:
					return err
				case what == "fail":
					return fmt.Errorf("function %d: %w", i, errSentinel)
				case what == "panic":
					panic(fmt.Sprintf("function %d panics", i))
				}
				return nil
			})
		})
		waitQueued(t, s, i+1) // arrival order is plan order
	}
	release()
	must(t, <-leader)
	wg.Wait()
	for i, what := range plan {
		o := out[i]
		switch what {
		case "ok":
			if o.err != nil || o.panicked != nil {
				t.Errorf("function %d: %v, %v; want success", i, o.err, o.panicked)
			}
		case "fail":
			if !errors.Is(o.err, errSentinel) || !strings.Contains(o.err.Error(), fmt.Sprint("function ", i)) {
				t.Errorf("function %d returned %v, want its own error", i, o.err)
			}
		case "panic":
			if o.panicked != fmt.Sprintf("function %d panics", i) {
				t.Errorf("function %d: caller recovered %v, want its panic", i, o.panicked)
			}
		}
	}
	// As if alone, in order: each saw the successes before it.
	for i, want := range map[int]string{0: "L", 2: "L,0", 4: "L,0,2", 1: "L,0", 3: "L,0,2"} {
		if out[i].seen != want {
			t.Errorf("function %d last saw %q, want %q", i, out[i].seen, want)
		}
	}
	err := s.View(context.Background(), func(tx meta.Tx) error {
		log, err := logOf(tx)
		if log != "L,0,2,4" {
			t.Errorf("log = %q, want L,0,2,4: the failed functions left nothing, the others one entry each", log)
		}
		return err
	})
	must(t, err)
	// The queue still works.
	must(t, s.Update(context.Background(), func(tx meta.Tx) error { _, err := appendLog(tx, "after"); return err }))
	var runs []int
	for _, o := range out {
		runs = append(runs, o.runs)
	}
	t.Logf("runs per function: %v", runs)
}

var errSentinel = errors.New("this function fails")

// TestGroupCommitCancelWhileQueued: a writer whose context ends while it
// waits leaves the queue, and its function never runs.
func TestGroupCommitCancelWhileQueued(t *testing.T) {
	s := openTemp(t)
	defer s.Close()
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
	must(t, <-leader)
	must(t, <-other)
	if ran.Load() {
		t.Error("the function of a withdrawn Update ran")
	}
	// An already cancelled context runs nothing.
	if err := s.Update(ctx, func(meta.Tx) error { ran.Store(true); return nil }); !errors.Is(err, context.Canceled) || ran.Load() {
		t.Errorf("Update with a cancelled context: %v, ran %v", err, ran.Load())
	}
}

// TestGroupCommitGoexit: a function that ends its goroutine (as
// t.FailNow does) does not wedge the queue.
func TestGroupCommitGoexit(t *testing.T) {
	s := openTemp(t)
	defer s.Close()
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
	must(t, <-leader)
	<-exited
	if err := <-behind; !errors.Is(err, errGoexit) {
		t.Errorf("an Update sharing a batch with runtime.Goexit returned %v, want errGoexit", err)
	}
	must(t, s.Update(context.Background(), func(tx meta.Tx) error {
		return tx.PutBlob(digest.FromString("after"), meta.Blob{Size: 1})
	}))
}

// TestUpdatePanicAlone: a lone writer's panic reaches its caller and
// leaves the store usable.
func TestUpdatePanicAlone(t *testing.T) {
	s := openTemp(t)
	defer s.Close()
	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Errorf("recovered %v, want the function's panic", r)
			}
		}()
		_ = s.Update(context.Background(), func(tx meta.Tx) error {
			must(t, tx.PutBlob(digest.FromString("x"), meta.Blob{Size: 1}))
			panic("boom")
		})
	}()
	must(t, s.Update(context.Background(), func(tx meta.Tx) error {
		if _, ok, _ := tx.Blob(digest.FromString("x")); ok {
			t.Error("a panicking function's change was kept")
		}
		return nil
	}))
}

// TestTxAfterFunction: a Tx kept past its function fails.
func TestTxAfterFunction(t *testing.T) {
	s := openTemp(t)
	defer s.Close()
	var kept meta.Tx
	must(t, s.Update(context.Background(), func(tx meta.Tx) error { kept = tx; return nil }))
	if _, _, err := kept.Blob(digest.FromString("x")); !errors.Is(err, errFinished) {
		t.Errorf("Blob on a finished Tx: %v", err)
	}
	if err := kept.PutBlob(digest.FromString("x"), meta.Blob{}); !errors.Is(err, errFinished) {
		t.Errorf("PutBlob on a finished Tx: %v", err)
	}
	must(t, s.View(context.Background(), func(tx meta.Tx) error { kept = tx; return nil }))
	if _, err := kept.Repository("r"); !errors.Is(err, errFinished) {
		t.Errorf("Repository on a finished Tx: %v", err)
	}
}

// TestInvalidKeys: names and digests the keys cannot hold are refused.
func TestInvalidKeys(t *testing.T) {
	s := openTemp(t)
	defer s.Close()
	d := digest.FromString("x")
	for name, fn := range map[string]func(tx meta.Tx) error{
		"empty repository":    func(tx meta.Tx) error { return tx.PutLink("", d, meta.Link{}) },
		"NUL in a repository": func(tx meta.Tx) error { return tx.PutLink("a\x00b", d, meta.Link{}) },
		"invalid digest":      func(tx meta.Tx) error { return tx.PutBlob("sha256:nothex", meta.Blob{}) },
		"invalid link digest": func(tx meta.Tx) error { return tx.PutLink("r", "x", meta.Link{}) },
		"invalid reference": func(tx meta.Tx) error {
			return tx.PutManifest("r", d, meta.Manifest{References: []digest.Digest{"bad"}})
		},
		"empty tag":            func(tx meta.Tx) error { _ = tx.PutLink("r", d, meta.Link{}); return tx.SetTag("r", "", d) },
		"empty upload id":      func(tx meta.Tx) error { return tx.PutUpload("", meta.Upload{}) },
		"robot without a hash": func(tx meta.Tx) error { return tx.PutRobot(meta.Robot{Name: "r"}) },
	} {
		if err := s.Update(context.Background(), fn); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("%s: %v, want ErrInvalidKey", name, err)
		}
	}
	err := s.View(context.Background(), func(tx meta.Tx) error {
		if err := tx.PutBlob(d, meta.Blob{}); !errors.Is(err, ErrReadOnly) {
			t.Errorf("PutBlob in a View: %v, want ErrReadOnly", err)
		}
		return nil
	})
	must(t, err)
}

// TestWalkWhileChanging: in an Update, a walk's function may change what
// it walks; the walk goes on from the key after the last it gave.
func TestWalkWhileChanging(t *testing.T) {
	s := openTemp(t)
	defer s.Close()
	m := digest.FromString("m")
	must(t, s.Update(context.Background(), func(tx meta.Tx) error {
		must(t, tx.PutManifest("r", m, meta.Manifest{MediaType: "m"}))
		for i := range 50 {
			must(t, tx.SetTag("r", fmt.Sprintf("t%02d", i), m))
			must(t, tx.PutLink("r", digest.FromString(fmt.Sprint(i)), meta.Link{}))
		}
		return nil
	}))
	must(t, s.Update(context.Background(), func(tx meta.Tx) error {
		var tags, links int
		must(t, tx.Tags("r", "", func(tag string, _ digest.Digest) error {
			tags++
			if tag == "t10" {
				must(t, tx.SetTag("r", "t10a", m)) // added after the current key: walked
			}
			return tx.DeleteTag("r", tag)
		}))
		must(t, tx.Links("r", func(d digest.Digest, _ meta.Link) error {
			links++
			return tx.DeleteLink("r", d)
		}))
		if tags != 51 || links != 50 {
			t.Errorf("deleting while walking visited %d tags and %d links, want 51 and 50", tags, links)
		}
		return nil
	}))
	must(t, s.View(context.Background(), func(tx meta.Tx) error {
		if got, _ := tx.TagsOf("r", m); len(got) != 0 {
			t.Errorf("tags left: %q", got)
		}
		return nil
	}))
	checkClean(t, s)
}

// TestLockDigestsUnlockTwice: an unlock called twice releases once.
func TestLockDigestsUnlockTwice(t *testing.T) {
	s := openTemp(t)
	defer s.Close()
	a, b := digest.FromString("a"), digest.FromString("b")
	unlock, err := s.LockDigests(context.Background(), a, a, b)
	must(t, err)
	unlock()
	unlock()
	held, err := s.LockDigests(context.Background(), a)
	must(t, err)
	// a is held once: a second holder must wait (its context ends it).
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := s.LockDigests(ctx, a); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a second holder of a held digest: %v", err)
	}
	held()
}
