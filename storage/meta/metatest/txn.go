package metatest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/meta"
)

// hangGuard bounds the waits that only a deadlock or a backend that
// serialises what it must not can make long. It is no speed assertion:
// each wait it guards takes microseconds when the backend is right.
const hangGuard = 2 * time.Minute

// testViewSnapshot: a View sees one snapshot while an Update commits, and
// the Update does not wait for the View.
func testViewSnapshot(t *testing.T, h *handle) {
	d := dg("b")
	h.update(t, func(tx meta.Tx) error { return tx.PutBlob(d, meta.Blob{Size: 1}) })
	started := make(chan struct{})
	updated := make(chan error, 1)
	go func() {
		<-started
		updated <- h.s.Update(context.Background(), func(tx meta.Tx) error {
			if err := tx.PutBlob(d, meta.Blob{Size: 2}); err != nil {
				return err
			}
			return tx.PutLink("new", d, meta.Link{Linked: at(1)})
		})
	}()
	h.view(t, func(tx meta.Tx) error {
		if b, _, _ := tx.Blob(d); b.Size != 1 {
			t.Fatalf("Blob before the update = %d, want 1", b.Size)
		}
		close(started)
		select {
		case err := <-updated:
			must(t, err)
		case <-time.After(hangGuard):
			t.Fatal("an Update waits for an open View")
		}
		if b, _, _ := tx.Blob(d); b.Size != 1 {
			t.Errorf("a View sees an Update committed after it began: size %d", b.Size)
		}
		if ok, _ := tx.Repository("new"); ok {
			t.Error("a View sees a repository created after it began")
		}
		return nil
	})
	h.view(t, func(tx meta.Tx) error {
		if b, _, _ := tx.Blob(d); b.Size != 2 {
			t.Errorf("a View after the Update sees size %d, want 2", b.Size)
		}
		return nil
	})
}

// testDurability: what an Update committed survives a restart, derived
// indexes included; what one refused does not.
func testDurability(t *testing.T, h *handle) {
	subject, m, ref := dg("subject"), dg("manifest"), dg("layer")
	rec := fullManifest(subject, ref)
	h.update(t, func(tx meta.Tx) error {
		must(t, tx.PutBlob(ref, meta.Blob{Size: 10, Created: at(1)}))
		must(t, tx.PutLink("r", ref, meta.Link{Linked: at(1)}))
		must(t, tx.PutManifest("r", m, rec))
		must(t, tx.SetTag("r", "v1", m))
		_, err := tx.AppendMove("r", "v1", meta.Move{Time: at(2), Digest: m, Action: "push"})
		must(t, err)
		must(t, tx.PutUpload("u", meta.Upload{Repo: "r", Algorithm: "sha256", Started: at(3), Owner: "user:a"}))
		return tx.PutRobot(meta.Robot{Name: "ci", Scopes: []string{"s"}, Created: at(1), Expires: at(9), Hash: "h"})
	})
	err := h.s.Update(context.Background(), func(tx meta.Tx) error {
		must(t, tx.PutBlob(dg("refused"), meta.Blob{Size: 1}))
		return errSentinel
	})
	if !errors.Is(err, errSentinel) {
		t.Fatalf("a failing Update returned %v", err)
	}
	h.reopen(t)
	h.view(t, func(tx meta.Tx) error {
		if b, ok, _ := tx.Blob(ref); !ok || b.Size != 10 {
			t.Errorf("blob after restart = %+v, %v", b, ok)
		}
		if _, ok, _ := tx.Blob(dg("refused")); ok {
			t.Error("a refused Update's change survives a restart")
		}
		if _, ok, _ := tx.Link("r", ref); !ok {
			t.Error("link lost in a restart")
		}
		if got := manifestOf(t, tx, "r", m); norm(got) != norm(rec) {
			t.Errorf("manifest after restart:\n got %s\nwant %s", norm(got), norm(rec))
		}
		if d, ok, _ := tx.Tag("r", "v1"); !ok || d != m {
			t.Errorf("tag after restart = %s, %v", d, ok)
		}
		tags, err := tx.TagsOf("r", m)
		must(t, err)
		equal(t, "TagsOf after restart", tags, []string{"v1"})
		equal(t, "Uses after restart", uses(t, tx, ref, ""), useSet(
			meta.Use{Repo: "r", Kind: meta.UseLink}, meta.Use{Repo: "r", Kind: meta.UseReference, Manifest: m}))
		equal(t, "Referrers after restart", referrers(t, tx, "r", subject), []string{normDesc(rec.Descriptor(m))})
		equal(t, "FindPair after restart", pairs(t, tx, meta.Annotation, "k", "v", "", ""), []string{"r@" + string(m)})
		var moves int
		must(t, tx.Moves("r", "v1", 0, func(meta.Move) error { moves++; return nil }))
		if moves != 1 {
			t.Errorf("history after restart has %d moves, want 1", moves)
		}
		if u, ok, _ := tx.Upload("u"); !ok || u.Owner != "user:a" {
			t.Errorf("upload after restart = %+v, %v", u, ok)
		}
		if name, ok, _ := tx.RobotBySecret("h"); !ok || name != "ci" {
			t.Errorf("robot after restart = %q, %v", name, ok)
		}
		return nil
	})
	// The numbering of moves goes on after a restart.
	h.update(t, func(tx meta.Tx) error {
		mv, err := tx.AppendMove("r", "v1", meta.Move{Time: at(3), Previous: m, Action: "delete"})
		if err == nil && mv.Seq != 2 {
			t.Errorf("first move after restart numbered %d, want 2", mv.Seq)
		}
		return err
	})
}

// testUpdateRollsBack: an Update whose function fails keeps nothing of
// what it did, derived entries included, and returns its error.
func testUpdateRollsBack(t *testing.T, h *handle) {
	h.update(t, func(tx meta.Tx) error { return tx.PutManifest("r", dg("keep"), fullManifest("")) })
	err := h.s.Update(context.Background(), func(tx meta.Tx) error {
		must(t, tx.PutBlob(dg("b"), meta.Blob{Size: 1}))
		must(t, tx.PutLink("r2", dg("b"), meta.Link{Linked: at(1)}))
		must(t, tx.PutManifest("r", dg("m"), fullManifest(dg("subject"), dg("b"))))
		must(t, tx.SetTag("r", "t", dg("m")))
		must(t, tx.DeleteManifest("r", dg("keep")))
		_, err := tx.AppendMove("r", "t", meta.Move{Time: at(1), Digest: dg("m"), Action: "push"})
		must(t, err)
		return fmt.Errorf("wrapped: %w", errSentinel)
	})
	if !errors.Is(err, errSentinel) {
		t.Fatalf("Update returned %v, want the function's error", err)
	}
	h.view(t, func(tx meta.Tx) error {
		if _, ok, _ := tx.Blob(dg("b")); ok {
			t.Error("a rolled-back PutBlob is visible")
		}
		if ok, _ := tx.Repository("r2"); ok {
			t.Error("a rolled-back PutLink created its repository")
		}
		if _, ok, _ := tx.Manifest("r", dg("m")); ok {
			t.Error("a rolled-back PutManifest is visible")
		}
		if _, ok, _ := tx.Manifest("r", dg("keep")); !ok {
			t.Error("a rolled-back DeleteManifest removed the manifest")
		}
		if _, ok, _ := tx.Tag("r", "t"); ok {
			t.Error("a rolled-back SetTag is visible")
		}
		equal(t, "Uses after a rollback", uses(t, tx, dg("b"), ""), nil)
		equal(t, "Referrers after a rollback", referrers(t, tx, "r", dg("subject")), nil)
		equal(t, "FindPair after a rollback", pairs(t, tx, meta.Annotation, "k", "v", "", ""), []string{"r@" + string(dg("keep"))})
		must(t, tx.Moves("r", "t", 0, func(m meta.Move) error {
			t.Errorf("a rolled-back AppendMove is visible: %+v", m)
			return nil
		}))
		return nil
	})
}

// counter is a blob record whose size counts the functions that committed.
var counter = dg("counter")

// increment adds one to the counter, as a read-modify-write.
func increment(tx meta.Tx) error {
	b, _, err := tx.Blob(counter)
	if err != nil {
		return err
	}
	b.Size++
	return tx.PutBlob(counter, b)
}

func counterValue(t *testing.T, h *handle) int64 {
	var n int64
	h.view(t, func(tx meta.Tx) error {
		b, _, err := tx.Blob(counter)
		n = b.Size
		return err
	})
	return n
}

// testUpdateConcurrent: Updates from many goroutines all apply exactly
// once, however often the backend runs each function.
func testUpdateConcurrent(t *testing.T, h *handle) {
	const workers, each = 32, 8
	var runs atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				mine := dg(fmt.Sprintf("worker %d update %d", w, i))
				errs <- h.s.Update(context.Background(), func(tx meta.Tx) error {
					runs.Add(1)
					if err := increment(tx); err != nil {
						return err
					}
					return tx.PutBlob(mine, meta.Blob{Size: int64(w)})
				})
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent Update: %v", err)
		}
	}
	if n := counterValue(t, h); n != workers*each {
		t.Errorf("counter = %d after %d Updates (functions ran %d times); want each applied once", n, workers*each, runs.Load())
	}
	h.view(t, func(tx meta.Tx) error {
		for w := range workers {
			for i := range each {
				if b, ok, _ := tx.Blob(dg(fmt.Sprintf("worker %d update %d", w, i))); !ok || b.Size != int64(w) {
					t.Errorf("worker %d update %d missing", w, i)
				}
			}
		}
		return nil
	})
	t.Logf("%d Updates ran their functions %d times", workers*each, runs.Load())
}

// testUpdateConcurrentFailures: among concurrent Updates, those whose
// functions fail have no effect and get their own error; the others all
// commit once.
func testUpdateConcurrentFailures(t *testing.T, h *handle) {
	const workers, each = 32, 8
	var wg sync.WaitGroup
	var ok, failed atomic.Int64
	for w := range workers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 7))
			for i := range each {
				fail := r.IntN(3) == 0
				mine := dg(fmt.Sprintf("worker %d update %d", w, i))
				own := fmt.Errorf("worker %d update %d fails: %w", w, i, errSentinel)
				err := h.s.Update(context.Background(), func(tx meta.Tx) error {
					if err := increment(tx); err != nil {
						return err
					}
					if err := tx.PutBlob(mine, meta.Blob{Size: 1}); err != nil {
						return err
					}
					if fail {
						return own
					}
					return nil
				})
				switch {
				case fail && err != own && !errors.Is(err, own):
					t.Errorf("worker %d update %d: a failing function's Update returned %v, want its own error", w, i, err)
				case !fail && err != nil:
					t.Errorf("worker %d update %d: %v", w, i, err)
				case fail:
					failed.Add(1)
				default:
					ok.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if n := counterValue(t, h); n != ok.Load() {
		t.Errorf("counter = %d; want %d, the functions that succeeded (%d failed)", n, ok.Load(), failed.Load())
	}
	h.view(t, func(tx meta.Tx) error {
		for w := range workers {
			r := rand.New(rand.NewPCG(uint64(w), 7))
			for i := range each {
				fail := r.IntN(3) == 0
				_, present, _ := tx.Blob(dg(fmt.Sprintf("worker %d update %d", w, i)))
				if present == fail {
					t.Errorf("worker %d update %d (failing: %v): its record present: %v", w, i, fail, present)
				}
			}
		}
		return nil
	})
}

// testUpdateOrder: each caller's function sees the effects of all the
// Updates that returned before it began, whatever the grouping.
func testUpdateOrder(t *testing.T, h *handle) {
	const workers, each = 16, 10
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				var seen int64
				// A function run again starts afresh: seen is reset.
				err := h.s.Update(context.Background(), func(tx meta.Tx) error {
					b, _, err := tx.Blob(counter)
					if err != nil {
						return err
					}
					seen = b.Size
					b.Size++
					return tx.PutBlob(counter, b)
				})
				if err != nil {
					t.Errorf("worker %d: %v", w, err)
					return
				}
				// The worker's own earlier increments are behind it.
				if seen < int64(i) {
					t.Errorf("worker %d update %d saw counter %d, below its own %d earlier updates", w, i, seen, i)
				}
			}
		})
	}
	wg.Wait()
	if n := counterValue(t, h); n != workers*each {
		t.Errorf("counter = %d, want %d", n, workers*each)
	}
}

// testLockExclusion: one holder of a digest at a time.
func testLockExclusion(t *testing.T, h *handle) {
	ds := []digest.Digest{dg("x"), dg("y"), dg("z")}
	var holders [3]atomic.Int32
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for i := range 100 {
				mine := ds[(w+i)%3]
				set := []digest.Digest{mine}
				if i%2 == 0 {
					set = append(set, ds[(w+i+1)%3])
				}
				unlock, err := h.s.LockDigests(context.Background(), set...)
				if err != nil {
					t.Errorf("LockDigests: %v", err)
					return
				}
				for _, d := range set {
					idx := indexOf(ds, d)
					if n := holders[idx].Add(1); n != 1 {
						t.Errorf("%d holders of one digest at once", n)
					}
				}
				for _, d := range set {
					holders[indexOf(ds, d)].Add(-1)
				}
				unlock()
			}
		})
	}
	wg.Wait()
}

func indexOf(ds []digest.Digest, d digest.Digest) int {
	for i, x := range ds {
		if x == d {
			return i
		}
	}
	return -1
}

// testLockNoDeadlock: overlapping sets locked in different orders, with
// repeats, all complete.
func testLockNoDeadlock(t *testing.T, h *handle) {
	var ds []digest.Digest
	for i := range 12 {
		ds = append(ds, dg(fmt.Sprintf("d%d", i)))
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Go(func() {
				r := rand.New(rand.NewPCG(uint64(w), 3))
				for range 200 {
					set := make([]digest.Digest, 1+r.IntN(6))
					for i := range set {
						set[i] = ds[r.IntN(len(ds))] // repeats included
					}
					unlock, err := h.s.LockDigests(context.Background(), set...)
					if err != nil {
						t.Errorf("LockDigests: %v", err)
						return
					}
					unlock()
				}
			})
		}
		wg.Wait()
	}()
	select {
	case <-done:
	case <-time.After(hangGuard):
		t.Fatal("LockDigests deadlocked")
	}
	// No digests at all is a valid, empty lock.
	unlock, err := h.s.LockDigests(context.Background())
	must(t, err)
	unlock()
}

// testLockCancel: a wait for a held digest ends with its context, and
// leaves nothing held.
func testLockCancel(t *testing.T, h *handle) {
	d, other := dg("held"), dg("other")
	unlock, err := h.s.LockDigests(context.Background(), d)
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	result := make(chan error, 1)
	go func() {
		// other first or not, the wait for d must end with ctx.
		u, err := h.s.LockDigests(ctx, other, d)
		if err == nil {
			u()
			err = errors.New("LockDigests took a held digest")
		}
		result <- err
	}()
	cancel()
	select {
	case err := <-result:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("LockDigests with a cancelled context returned %v, want context.Canceled", err)
		}
	case <-time.After(hangGuard):
		t.Fatal("LockDigests ignores its context")
	}
	unlock()
	// Neither d nor other was left held by the cancelled wait.
	again := make(chan error, 1)
	go func() {
		u, err := h.s.LockDigests(context.Background(), d, other)
		if err == nil {
			u()
		}
		again <- err
	}()
	select {
	case err := <-again:
		must(t, err)
	case <-time.After(hangGuard):
		t.Fatal("a cancelled LockDigests left a digest held")
	}
}
