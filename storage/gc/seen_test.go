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
// link it looks up either keeps the link (it marked the link first) or
// answers that the blob is unknown (collection claimed it first); it is
// never told "found" about a link the collection then removes. Each case
// is driven deterministically: the removal transaction pauses at one of
// its steps until a lookup, in another goroutine, has answered.
func TestGCLookupDuringLinkRemoval(t *testing.T) {
	cases := []struct {
		name string
		// at is the method of the removal transaction, for the link,
		// before which the lookup runs.
		at string
		// fail makes that method fail, rolling the transaction back.
		fail bool
		// found is what the lookup must answer, kept whether the link
		// survives the collection.
		found, kept bool
	}{
		// The removal reads the link, checks its uses, claims it, then
		// deletes it. Before the claim, the lookup marks the link seen:
		// the claim fails and the link stays.
		{name: "lookup before the claim", at: "Link", found: true, kept: true},
		// After the claim, before the commit: the lookup answers unknown
		// at once, and the link goes.
		{name: "lookup after the claim", at: "DeleteLink", found: false, kept: false},
		// After the claim, and the transaction then rolls back: unknown
		// during the claim (harmless, the client uploads), and the link
		// is there again once the claim ends.
		{name: "lookup after a claim that rolls back", at: "DeleteLink", fail: true, found: false, kept: true},
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
			// A fresh mark on other keeps it, and so the repository.
			if _, err := s.Svc.StatBlob(ctx, "app", other.Digest); err != nil {
				t.Fatal(err)
			}
			sink.take()

			var once sync.Once
			var lookupErr error
			var eventsDuring []storage.Event
			failed := errors.New("the index failed")
			w.setHook(func(method, repo string, d digest.Digest) error {
				if method != c.at || repo != "app" || d != b.Digest {
					return nil
				}
				once.Do(func() {
					done := make(chan struct{})
					go func() {
						defer close(done)
						_, lookupErr = s.Svc.StatBlob(ctx, "app", b.Digest)
					}()
					<-done
					eventsDuring = sink.take()
				})
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
			if found := lookupErr == nil; found != c.found {
				t.Fatalf("the lookup during the removal answered %v; want found=%v", lookupErr, c.found)
			}
			if lookupErr != nil && !errors.Is(lookupErr, storage.ErrBlobUnknown) {
				t.Fatalf("the lookup failed with %v, want ErrBlobUnknown", lookupErr)
			}
			if len(eventsDuring) != 0 {
				t.Fatalf("events published before the removal committed: %+v", eventsDuring)
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

func countLinkEvents(events []storage.Event, d digest.Digest) int {
	n := 0
	for _, e := range events {
		if e.Action == storage.EventGC && e.Repo != "" && e.Digest == d && e.MediaType == "" && e.Tag == "" {
			n++
		}
	}
	return n
}
