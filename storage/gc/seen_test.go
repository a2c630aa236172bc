package gc_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/gc"
	"github.com/berth-registry/berth/storage/internal/clienttest"
	"github.com/berth-registry/berth/storage/meta"
)

// A blob lookup (HEAD or GET) that runs while collection is removing the
// link it looks up either keeps the link (its record of Seen committed
// first) or answers that the blob is unknown (the removal committed
// first); it is never told "found" about a link the collection then
// removes. The index serialises the two transactions, so a lookup started
// inside the removal's transaction waits for it to end.
func TestGCLookupDuringLinkRemoval(t *testing.T) {
	cases := []struct {
		name string
		// during starts the lookup inside the removal's transaction, just
		// before it deletes the link; otherwise it runs, and ends, before
		// the collection.
		during bool
		// fail makes the deletion fail, rolling the transaction back.
		fail bool
		// found is what the lookup must answer, kept whether the link
		// survives the collection.
		found, kept bool
	}{
		// The lookup records Seen before the collection: its removal
		// transaction finds the link seen since the cutoff and keeps it.
		{name: "lookup before the collection", found: true, kept: true},
		// The removal commits first: the lookup, re-reading the link in
		// its own transaction, finds it gone and answers unknown.
		{name: "lookup during the removal", during: true, found: false, kept: false},
		// The removal rolls back: the lookup finds the link, records Seen
		// and answers found.
		{name: "lookup during a removal that rolls back", during: true, fail: true, found: true, kept: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			sink := &recorder{}
			var w *watchedIndex
			s := clienttest.Open(t, "", clienttest.Options{
				Core: storage.Options{Sinks: []storage.Sink{sink}},
				Wrap: func(m meta.Store) meta.Store { w = watch(m); return w },
			})
			b := s.PutBlob("app", "application/octet-stream", []byte("looked up while collected"))
			other := s.PutBlob("app", "application/octet-stream", []byte("keeps the repository"))
			s.Age(2 * time.Hour)
			// A fresh Seen on other keeps it, and so the repository.
			if _, err := s.Svc.StatBlob(ctx, "app", other.Digest); err != nil {
				t.Fatal(err)
			}
			sink.take()

			var lookupErr error
			var once sync.Once
			lookupDone := make(chan struct{})
			lookup := func() {
				defer close(lookupDone)
				_, lookupErr = s.Svc.StatBlob(ctx, "app", b.Digest)
			}
			if !c.during {
				lookup()
			}
			failed := errors.New("the index failed")
			w.setHook(func(method, repo string, d digest.Digest) error {
				if method != "DeleteLink" || repo != "app" || d != b.Digest {
					return nil
				}
				once.Do(func() { go lookup() })
				if c.fail {
					return failed
				}
				return nil
			})
			rep, err := gc.Collect(ctx, s.Svc, gc.Options{Grace: time.Hour})
			w.setHook(nil)
			switch {
			case c.fail && !errors.Is(err, failed):
				t.Fatalf("collection: %v, want the injected failure", err)
			case !c.fail && err != nil:
				t.Fatal(err)
			}
			select {
			case <-lookupDone:
			default:
				if !c.during {
					t.Fatal("the lookup did not run")
				}
				once.Do(func() { t.Fatal("the collection never tried to remove the link: the test shows nothing") })
				<-lookupDone
			}
			if found := lookupErr == nil; found != c.found {
				t.Fatalf("the lookup answered %v; want found=%v", lookupErr, c.found)
			}
			if lookupErr != nil && !errors.Is(lookupErr, storage.ErrBlobUnknown) {
				t.Fatalf("the lookup failed with %v, want ErrBlobUnknown", lookupErr)
			}
			_, after := s.Svc.StatBlob(ctx, "app", b.Digest)
			if kept := after == nil; kept != c.kept {
				t.Fatalf("after the collection the lookup answers %v; want the link kept=%v (report %+v)", after, c.kept, rep)
			}
			if c.found && !c.kept {
				t.Fatal("a lookup was told found about a link the collection removed")
			}
			events := sink.take()
			if wantLinks := map[bool]int{true: 0, false: 1}[c.kept]; rep.LinksRemoved != wantLinks || countLinkEvents(events, b.Digest) != wantLinks {
				t.Fatalf("report %+v, events %+v; want %d link removal", rep, events, wantLinks)
			}
			if _, err := s.Svc.StatBlob(ctx, "app", other.Digest); err != nil {
				t.Fatalf("the other blob: %v", err)
			}
		})
	}
}

// A lookup records Seen in the index at most once per refresh period:
// lookups of a link found active within it write nothing.
func TestLookupRecordsSeenOncePerRefresh(t *testing.T) {
	ctx := context.Background()
	var w *watchedIndex
	s := clienttest.Open(t, "", clienttest.Options{Wrap: func(m meta.Store) meta.Store { w = watch(m); return w }})
	b := s.PutBlob("app", "application/octet-stream", []byte("looked up often"))
	lookups := func(n int) int {
		w.reset()
		for range n {
			if _, err := s.Svc.StatBlob(ctx, "app", b.Digest); err != nil {
				t.Fatal(err)
			}
		}
		return w.count(inUpdate, "PutLink")
	}
	// Just pushed: linked within the refresh period.
	if n := lookups(5); n != 0 {
		t.Fatalf("lookups of a link just pushed wrote it %d times", n)
	}
	s.Age(time.Hour)
	if n := lookups(5); n != 1 {
		t.Fatalf("lookups of an old link wrote it %d times, want once", n)
	}
	var l meta.Link
	s.Update(func(tx meta.Tx) error {
		var err error
		l, _, err = tx.Link("app", b.Digest)
		return err
	})
	if time.Since(l.Seen) > time.Hour || !l.Seen.After(l.Linked) {
		t.Fatalf("link after the lookups: %+v; want Seen recorded now", l)
	}
}

// A grace that is not several refresh periods long is refused: a lookup
// could not protect its link for long enough.
func TestGCRefusesGraceNearTheRefresh(t *testing.T) {
	s := clienttest.Open(t, "", clienttest.Options{Core: storage.Options{SeenRefresh: time.Minute}})
	for _, grace := range []time.Duration{time.Second, time.Minute, 3 * time.Minute} {
		if _, err := gc.Collect(context.Background(), s.Svc, gc.Options{Grace: grace}); !errors.Is(err, gc.ErrGraceTooShort) {
			t.Fatalf("grace %s with a refresh of a minute: %v, want ErrGraceTooShort", grace, err)
		}
	}
	for _, grace := range []time.Duration{0, gc.MinGraceRefreshes * time.Minute} {
		if _, err := gc.Collect(context.Background(), s.Svc, gc.Options{Grace: grace}); err != nil {
			t.Fatalf("grace %s: %v", grace, err)
		}
	}
}

func countLinkEvents(events []storage.Event, d digest.Digest) int {
	n := 0
	for _, e := range events {
		if e.Action == storage.EventGC && e.Repo != "" && e.Digest == d && e.MediaType == "" && e.Tag == "" {
			n++
		}
	}
	return n
}
