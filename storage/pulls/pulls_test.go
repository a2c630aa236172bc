package pulls_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/internal/clienttest"
	"github.com/berth-registry/berth/storage/meta"
	"github.com/berth-registry/berth/storage/pulls"
)

// gatedIndex counts the index's updates and, while gate is closed, holds
// every update before it runs.
type gatedIndex struct {
	meta.Store
	updates atomic.Int64
	mu      sync.Mutex
	gate    chan struct{}
}

func (g *gatedIndex) Update(ctx context.Context, fn func(meta.Tx) error) error {
	g.updates.Add(1)
	g.mu.Lock()
	gate := g.gate
	g.mu.Unlock()
	if gate != nil {
		<-gate
	}
	return g.Store.Update(ctx, fn)
}

// hold makes updates wait until the returned release is called.
func (g *gatedIndex) hold() (release func()) {
	ch := make(chan struct{})
	g.mu.Lock()
	g.gate = ch
	g.mu.Unlock()
	return func() {
		g.mu.Lock()
		g.gate = nil
		g.mu.Unlock()
		close(ch)
	}
}

func openGated(t *testing.T) (*clienttest.Store, *gatedIndex) {
	var g *gatedIndex
	s := clienttest.Open(t, "", clienttest.Options{Wrap: func(m meta.Store) meta.Store {
		g = &gatedIndex{Store: m}
		return g
	}})
	return s, g
}

// clock is a settable time.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func as(kind, name string) context.Context {
	return storage.WithActor(context.Background(), storage.Actor{Kind: kind, Name: name, Address: "192.0.2.10"})
}

// run runs the recorder until the test ends.
func run(t *testing.T, r *pulls.Recorder) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// waitWritten waits, a bounded time, until the recorder has written n
// records.
func waitWritten(t *testing.T, r *pulls.Recorder, n uint64) {
	t.Helper()
	for range 1000 {
		if r.Written() >= n {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("the recorder wrote %d records, want %d", r.Written(), n)
}

func list(t *testing.T, s *clienttest.Store, repo string) []pulls.Entry {
	t.Helper()
	out, err := pulls.List(context.Background(), s.Svc, repo, "")
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// A pull never waits for the index: while every write is held, Record
// still returns, however many pulls come.
func TestRecordNeverWaitsForAWrite(t *testing.T) {
	s, g := openGated(t)
	r := pulls.New(s.Svc, pulls.Options{Queue: 8})
	d := s.PutImage("apps/web", "one", "v1")
	release := g.hold()
	run(t, r)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 1000 {
			r.Record(as("robot", "deployer-"+string(rune('a'+i%26))+string(rune('a'+i/26))), "apps/web", d)
		}
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		release()
		t.Fatal("Record waited while the index's writes were held")
	}
	if r.Dropped() == 0 {
		t.Error("1000 pulls into a queue of 8 with writes held dropped nothing")
	}
	release()
	waitWritten(t, r, 8)
}

// One write per identity, repository and digest per interval; another
// identity or digest is another record; a pull after the interval writes
// again, with its time.
func TestRateLimitPerIdentityAndDigest(t *testing.T) {
	s, g := openGated(t)
	c := &clock{now: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)}
	r := pulls.New(s.Svc, pulls.Options{Now: c.Now})
	run(t, r)
	a := s.PutImage("apps/web", "a", "v1")
	b := s.PutImage("apps/web", "b", "v2")
	before := g.updates.Load()
	for range 50 {
		r.Record(as("robot", "prod"), "apps/web", a)
		c.Add(time.Second)
	}
	r.Record(as("robot", "staging"), "apps/web", a)
	r.Record(as("robot", "prod"), "apps/web", b)
	waitWritten(t, r, 3)
	got := list(t, s, "apps/web")
	if len(got) != 3 {
		t.Fatalf("records after 50 pulls by one robot and 2 others: %+v, want 3", got)
	}
	for _, p := range got {
		if p.Actor.Kind == "robot" && p.Actor.Name == "prod" && p.Digest == a {
			if !p.Time.Equal(time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)) || p.Actor.Address != "192.0.2.10" {
				t.Errorf("prod's record of a = %+v, want the first pull's time and address", p)
			}
		}
	}
	if n := g.updates.Load() - before; n > 3 {
		t.Errorf("3 records took %d writes", n)
	}
	// Past the interval, the same identity writes again.
	c.Add(time.Minute)
	r.Record(as("robot", "prod"), "apps/web", a)
	waitWritten(t, r, 4)
	for _, p := range list(t, s, "apps/web") {
		if p.Actor.Name == "prod" && p.Digest == a && !p.Time.Equal(c.Now().UTC()) {
			t.Errorf("prod's record of a after the interval = %s, want %s", p.Time, c.Now())
		}
	}
}

// Records queued while the writer is busy go in one transaction.
func TestQueuedRecordsShareATransaction(t *testing.T) {
	s, g := openGated(t)
	r := pulls.New(s.Svc, pulls.Options{Batch: 64})
	d := s.PutImage("apps/web", "a", "v1")
	before := g.updates.Load()
	for i := range 100 {
		r.Record(as("user", "u"+string(rune('a'+i%26))+string(rune('a'+i/26))), "apps/web", d)
	}
	run(t, r)
	waitWritten(t, r, 100)
	if n := g.updates.Load() - before; n != 2 {
		t.Errorf("100 queued records, batches of 64: %d transactions, want 2", n)
	}
	if got := list(t, s, "apps/web"); len(got) != 100 {
		t.Errorf("%d records, want 100", len(got))
	}
}

// A pull the full queue could not take is not remembered as written: the
// next pull of the same key is queued.
func TestDroppedPullIsRetried(t *testing.T) {
	s := clienttest.Open(t, "", clienttest.Options{})
	r := pulls.New(s.Svc, pulls.Options{Queue: 1})
	d := s.PutImage("apps/web", "a", "v1")
	r.Record(as("robot", "one"), "apps/web", d)
	r.Record(as("robot", "two"), "apps/web", d) // the queue is full
	if r.Dropped() != 1 {
		t.Fatalf("dropped %d, want 1", r.Dropped())
	}
	r.Flush(context.Background())
	r.Record(as("robot", "two"), "apps/web", d)
	r.Flush(context.Background())
	if got := list(t, s, "apps/web"); len(got) != 2 {
		t.Errorf("records = %+v, want one per robot", got)
	}
}

// Stopping Run writes what is still queued.
func TestRunFlushesOnStop(t *testing.T) {
	s := clienttest.Open(t, "", clienttest.Options{})
	r := pulls.New(s.Svc, pulls.Options{})
	d := s.PutImage("apps/web", "a", "v1")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r.Record(as("robot", "one"), "apps/web", d)
	r.Record(as("anonymous", ""), "apps/web", d)
	r.Run(ctx) // returns at once, after the flush
	got := list(t, s, "apps/web")
	if len(got) != 2 {
		t.Fatalf("records after a stop = %+v, want 2", got)
	}
}

// List gives the newest first, and one digest's when asked.
func TestListNewestFirst(t *testing.T) {
	s := clienttest.Open(t, "", clienttest.Options{})
	a, b := digest.FromString("a"), digest.FromString("b")
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	s.Update(func(tx meta.Tx) error {
		for i, p := range []pulls.Pull{
			{Repo: "r", Digest: a, Actor: storage.Actor{Kind: "robot", Name: "x"}, Time: t0},
			{Repo: "r", Digest: b, Actor: storage.Actor{Kind: "robot", Name: "y"}, Time: t0.Add(2 * time.Hour)},
			{Repo: "r", Digest: a, Actor: storage.Actor{Kind: "user", Name: "z"}, Time: t0.Add(time.Hour)},
		} {
			if err := tx.PutPull(p); err != nil {
				t.Errorf("put %d: %v", i, err)
			}
		}
		return nil
	})
	got := list(t, s, "r")
	if len(got) != 3 || got[0].Actor.Name != "y" || got[1].Actor.Name != "z" || got[2].Actor.Name != "x" {
		t.Errorf("List = %+v, want y, z, x", got)
	}
	only, err := pulls.List(context.Background(), s.Svc, "r", a)
	if err != nil || len(only) != 2 || only[0].Actor.Name != "z" {
		t.Errorf("List of a = %+v, %v", only, err)
	}
}
