package storagetest

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/gc"
	"github.com/berth-registry/berth/storage/meta"
	"github.com/berth-registry/berth/storage/retention"
)

// routing is the Outbox of the tests: every event goes to "all", events
// naming a tag to "tags" as well, and events of repositories under "quiet/"
// nowhere.
type routing struct{}

func (routing) Endpoints(e storage.Event) []string {
	switch {
	case len(e.Repo) >= 6 && e.Repo[:6] == "quiet/":
		return nil
	case e.Tag != "":
		return []string{"all", "tags"}
	}
	return []string{"all"}
}

// outboxWatch reads the outbox as the test goes, and remembers which
// deliveries it has seen.
type outboxWatch struct {
	s    *store
	seen map[uint64]bool
}

// fresh returns the deliveries of the outbox not returned before, in Seq
// order.
func (w *outboxWatch) fresh(t *testing.T) []meta.Delivery {
	t.Helper()
	var out []meta.Delivery
	err := w.s.View(ctx(), func(tx meta.Tx) error {
		out = out[:0]
		return tx.Deliveries("", func(d meta.Delivery) error {
			if !w.seen[d.Seq] {
				out = append(out, d)
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(out, func(a, b meta.Delivery) int { return cmp.Compare(a.Seq, b.Seq) })
	for _, d := range out {
		w.seen[d.Seq] = true
	}
	return out
}

// check compares the deliveries queued since the last check with the
// events published meanwhile: each event once to "all", once more to
// "tags" if it names a tag, under one event identifier, keyed by its
// repository, with its time, and for each endpoint in the order published.
func (w *outboxWatch) check(t *testing.T, what string, published []storage.Event) {
	t.Helper()
	got := w.fresh(t)
	want := map[string][]string{}
	for _, e := range published {
		for _, ep := range (routing{}).Endpoints(e) {
			want[ep] = append(want[ep], eventKey(e))
		}
	}
	have := map[string][]string{}
	ids := map[string]string{}
	for _, d := range got {
		e, err := storage.DecodeEvent(d)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		have[d.Endpoint] = append(have[d.Endpoint], eventKey(e))
		if d.Key != e.Repo || !d.Created.Equal(e.Time) || d.EventID == "" || d.Attempts != 0 || d.Holder != "" {
			t.Errorf("%s: delivery %d of %s: key %q, created %v, id %q, attempts %d, holder %q; want the event's repository and time, an id, no attempt",
				what, d.Seq, eventKey(e), d.Key, d.Created, d.EventID, d.Attempts, d.Holder)
		}
		k := eventKey(e) + " " + e.Time.String()
		if id, ok := ids[k]; ok && id != d.EventID {
			t.Errorf("%s: the deliveries of %s to two endpoints have the ids %s and %s", what, eventKey(e), id, d.EventID)
		}
		ids[k] = d.EventID
	}
	for _, ep := range []string{"all", "tags"} {
		if !slices.Equal(have[ep], want[ep]) {
			t.Errorf("%s: the outbox holds for %s\n  %q\nwant\n  %q", what, ep, have[ep], want[ep])
		}
	}
	if len(published) == 0 {
		t.Errorf("%s published nothing", what)
	}
}

// Every change writes, in its own transaction, one delivery of each of its
// events to each endpoint the Outbox names, and the sinks hear of it only
// once the deliveries are there.
func testOutboxHoldsTheEventsOfEachChange(t *testing.T, b Backends) {
	rec := &recorder{}
	s := open(t, b, withOptions(storage.Options{Sinks: []storage.Sink{rec}, Outbox: routing{}}))
	rec.svc = s.Service
	w := &outboxWatch{s: s, seen: map[uint64]bool{}}
	step := func(what string, do func()) {
		t.Helper()
		do()
		w.check(t, what, rec.take(t))
	}
	var a, b2 = putImage(t, s, "apps/web", "a", "latest"), putImage(t, s, "apps/web", "b")
	w.check(t, "pushes", rec.take(t))
	step("tag move", func() { putImage(t, s, "apps/web", "b", "latest", "v2") })
	step("promotion", func() {
		if _, _, err := s.Promote(ctx(), "apps/web", "latest", "apps/prod", "live"); err != nil {
			t.Fatal(err)
		}
	})
	step("rollback", func() {
		if _, err := s.RollbackTag(ctx(), "apps/web", "latest", a); err != nil {
			t.Fatal(err)
		}
	})
	step("tag delete", func() {
		if err := s.DeleteTag(ctx(), "apps/web", "v2"); err != nil {
			t.Fatal(err)
		}
	})
	step("manifest delete", func() {
		if err := s.DeleteManifest(ctx(), "apps/web", b2); err != nil {
			t.Fatal(err)
		}
	})
	putImage(t, s, "quiet/x", "q", "t")
	if got := w.fresh(t); len(got) != 0 || len(rec.take(t)) == 0 {
		t.Errorf("a push the Outbox routes nowhere queued %d deliveries", len(got))
	}
	step("retention", func() {
		for i := range 3 {
			putImage(t, s, "ret", fmt.Sprint("r", i), fmt.Sprint("t", i))
		}
		rctx := storage.WithActor(ctx(), storage.Actor{Kind: storage.ActorSystem, Name: "retention"})
		if _, err := retention.Apply(rctx, s.Service, []retention.Policy{{Repositories: repoMatcher{"ret"}, KeepLast: 1, DeleteUntaggedAfter: time.Hour}},
			retention.Options{Now: time.Now().Add(2 * time.Hour)}); err != nil {
			t.Fatal(err)
		}
	})
	step("gc", func() {
		if _, err := gc.Collect(ctx(), s.Service, gc.Options{Grace: 0, Now: time.Now().Add(time.Minute)}); err != nil {
			t.Fatal(err)
		}
	})
	// Blob removals from the store as a whole have no repository: their
	// key is empty.
	var storeWide int
	must(t, s.View(ctx(), func(tx meta.Tx) error {
		return tx.Deliveries("all", func(d meta.Delivery) error {
			if d.Key == "" {
				storeWide++
			}
			return nil
		})
	}))
	if storeWide == 0 {
		t.Error("no delivery of a blob removed from the store, keyed by no repository")
	}
	// And the outbox outlives the process.
	n := len(w.seen)
	s = s.restart(t)
	var after int
	must(t, s.View(ctx(), func(tx meta.Tx) error {
		return tx.Deliveries("", func(meta.Delivery) error { after++; return nil })
	}))
	if after != n {
		t.Errorf("%d deliveries after a restart, %d before", after, n)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// A refused or rolled-back write queues nothing, and an Outbox that names
// no endpoint queues nothing either.
func testOutboxNothingForRefusedWrites(t *testing.T, b Backends) {
	s := open(t, b, withOptions(storage.Options{Outbox: routing{},
		Tags: tagRulesFunc(func(repo, tag string) bool { return tag == "stable" })}))
	w := &outboxWatch{s: s, seen: map[uint64]bool{}}
	const repo = "apps/web"
	putImage(t, s, repo, "a", "stable")
	other := putImage(t, s, repo, "other")
	w.fresh(t)
	_, otherBody, err := s.GetManifest(ctx(), repo, string(other))
	must(t, err)
	if _, err := s.PutManifest(ctx(), repo, "", otherBody, mustParse(t, otherBody), []string{"latest", "stable"}); !errors.Is(err, storage.ErrTagImmutable) {
		t.Fatalf("push moving an immutable tag: %v", err)
	}
	if err := s.DeleteTag(ctx(), repo, "stable"); !errors.Is(err, storage.ErrTagImmutable) {
		t.Fatalf("delete of an immutable tag: %v", err)
	}
	failure := errors.New("the function fails")
	err = s.Update(ctx(), func(tx *storage.Tx) error {
		if _, err := tx.MoveTag(repo, "latest", other, storage.MovePush); err != nil {
			return err
		}
		tx.Publish(storage.Event{Action: storage.EventPush, Repo: repo, Digest: other})
		return failure
	})
	if !errors.Is(err, failure) {
		t.Fatalf("failing update: %v", err)
	}
	if got := w.fresh(t); len(got) != 0 {
		t.Errorf("refused writes queued %d deliveries: %+v", len(got), got)
	}
}

// failingOutbox is an index whose transactions cannot append deliveries.
type failingOutbox struct{ meta.Store }

var errNoOutbox = errors.New("storagetest: the outbox refuses deliveries")

func (s failingOutbox) Update(ctx context.Context, fn func(meta.Tx) error) error {
	return s.Store.Update(ctx, func(tx meta.Tx) error { return fn(noAppendTx{tx}) })
}

type noAppendTx struct{ meta.Tx }

func (noAppendTx) AppendDelivery(meta.Delivery) (meta.Delivery, error) {
	return meta.Delivery{}, errNoOutbox
}

// The deliveries are part of the change's transaction: a change whose
// deliveries cannot be written is not made, and publishes nothing.
func testOutboxFailureFailsTheChange(t *testing.T, b Backends) {
	rec := &recorder{}
	s := open(t, b, withOptions(storage.Options{Sinks: []storage.Sink{rec}, Outbox: routing{}}),
		withIndex(func(ix meta.Store) meta.Store { return failingOutbox{ix} }))
	rec.svc = s.Service
	// What the Outbox routes nowhere needs no delivery and goes through.
	putImage(t, s, "quiet/r", "q", "t")
	rec.take(t)
	before := readState(t, s)
	content := []byte("layer")
	if _, err := s.PutBlob(ctx(), "apps/web", digest.FromBytes(content), bytes.NewReader(content), int64(len(content))); !errors.Is(err, errNoOutbox) {
		t.Fatalf("PutBlob with a failing outbox: %v, want its error", err)
	}
	if err := s.DeleteTag(ctx(), "quiet/r", "t"); err != nil {
		t.Fatalf("delete of a tag routed nowhere: %v", err)
	}
	rec.take(t)
	delete(before.tags, [2]string{"quiet/r", "t"})
	after := readState(t, s)
	if diff := removals("removed", before, after); len(diff) != 0 {
		t.Errorf("a change whose deliveries failed changed the index: %v", diff)
	}
	if diff := removals("added", after, before); len(diff) != 0 {
		t.Errorf("a change whose deliveries failed changed the index: %v", diff)
	}
	if events := rec.take(t); len(events) != 0 {
		t.Errorf("a change whose deliveries failed published %v", events)
	}
}

// A backend may run a transaction's function more than once: only the run
// that committed queues deliveries.
func testOutboxRetriedUpdateQueuesOnce(t *testing.T, b Backends) {
	rec := &recorder{}
	s := open(t, b, withOptions(storage.Options{Sinks: []storage.Sink{rec}, Outbox: routing{}}),
		withIndex(func(ix meta.Store) meta.Store { return retryingIndex{ix} }))
	rec.svc = s.Service
	w := &outboxWatch{s: s, seen: map[uint64]bool{}}
	cfg := putBlob(t, s, "r", ocispec.MediaTypeImageConfig, []byte(`{"architecture":"s390x","os":"linux"}`))
	putManifest(t, s, "r", ocispec.Manifest{Config: cfg, Layers: []ocispec.Descriptor{}}, "v1", "v2")
	w.check(t, "push under retried transactions", rec.take(t))
}
