package metatest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"

	"github.com/berth-registry/berth/storage/meta"
)

// outboxTests are the tests of meta.OutboxIndex, run by Run.
var outboxTests = []struct {
	name string
	fn   func(t *testing.T, h *handle)
}{
	{"Outbox", testOutbox},
	{"OutboxHeads", testOutboxHeads},
	{"OutboxDurability", testOutboxDurability},
	{"OutboxCommitOrder", testOutboxCommitOrder},
	{"OutboxReadOnly", testOutboxReadOnly},
	{"DeadLetters", testDeadLetters},
}

// delivery is a delivery for endpoint and key whose payload names it.
func delivery(endpoint, key, name string) meta.Delivery {
	return meta.Delivery{Endpoint: endpoint, Key: key, EventID: "id-" + name,
		Payload: []byte(`{"name":` + strconv.Quote(name) + `,"n":[1,2]}`), Created: at(len(name))}
}

// appendAll appends ds in one Update and returns them as recorded.
func appendAll(t *testing.T, h *handle, ds ...meta.Delivery) []meta.Delivery {
	t.Helper()
	var out []meta.Delivery
	h.update(t, func(tx meta.Tx) error {
		out = out[:0]
		for _, d := range ds {
			got, err := tx.AppendDelivery(d)
			if err != nil {
				return err
			}
			out = append(out, got)
		}
		return nil
	})
	return out
}

// names lists the payload names of ds, as "key/name".
func names(ds []meta.Delivery) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.Endpoint+":"+d.Key+"/"+d.EventID)
	}
	return out
}

func deliveries(t *testing.T, tx meta.Tx, endpoint string) []meta.Delivery {
	t.Helper()
	var out []meta.Delivery
	must(t, tx.Deliveries(endpoint, func(d meta.Delivery) error {
		out = append(out, d)
		return nil
	}))
	return out
}

func heads(t *testing.T, tx meta.Tx, endpoint string) []meta.Delivery {
	t.Helper()
	var out []meta.Delivery
	must(t, tx.DeliveryHeads(endpoint, func(d meta.Delivery) error {
		out = append(out, d)
		return nil
	}))
	return out
}

// sameDelivery reports how got differs from want, or "".
func sameDelivery(got, want meta.Delivery) string {
	switch {
	case got.Seq != want.Seq || got.Endpoint != want.Endpoint || got.Key != want.Key || got.EventID != want.EventID:
		return fmt.Sprintf("identity %d %s %q %s, want %d %s %q %s", got.Seq, got.Endpoint, got.Key, got.EventID,
			want.Seq, want.Endpoint, want.Key, want.EventID)
	case string(got.Payload) != string(want.Payload):
		return fmt.Sprintf("payload %s, want %s", got.Payload, want.Payload)
	case !got.Created.Equal(want.Created) || !got.NextAttempt.Equal(want.NextAttempt) ||
		!got.LeaseUntil.Equal(want.LeaseUntil) || !got.Died.Equal(want.Died):
		return fmt.Sprintf("times %v %v %v %v, want %v %v %v %v", got.Created, got.NextAttempt, got.LeaseUntil, got.Died,
			want.Created, want.NextAttempt, want.LeaseUntil, want.Died)
	case got.Attempts != want.Attempts || got.LastError != want.LastError || got.Holder != want.Holder:
		return fmt.Sprintf("state %d %q %q, want %d %q %q", got.Attempts, got.LastError, got.Holder,
			want.Attempts, want.LastError, want.Holder)
	}
	return ""
}

// testOutbox: deliveries are numbered, read back whole, updated, walked
// by endpoint, key and Seq, and removed.
func testOutbox(t *testing.T, h *handle) {
	got := appendAll(t, h,
		delivery("hooks", "apps/web", "a"), delivery("hooks", "apps/api", "b"), delivery("chat", "apps/web", "c"),
		delivery("hooks", "apps/web", "d"), delivery("hooks", "", "e"))
	seen := map[uint64]bool{}
	for i, d := range got {
		if d.Seq == 0 || seen[d.Seq] || (i > 0 && d.Seq <= got[i-1].Seq) {
			t.Fatalf("AppendDelivery numbers %d after %v; want unique, growing numbers", d.Seq, got[:i])
		}
		seen[d.Seq] = true
	}
	h.view(t, func(tx meta.Tx) error {
		for _, want := range got {
			d, ok, err := tx.Delivery(want.Endpoint, want.Key, want.Seq)
			must(t, err)
			if !ok {
				t.Errorf("Delivery(%s, %q, %d) absent", want.Endpoint, want.Key, want.Seq)
			} else if diff := sameDelivery(d, want); diff != "" {
				t.Errorf("Delivery(%s, %q, %d): %s", want.Endpoint, want.Key, want.Seq, diff)
			}
		}
		if _, ok, _ := tx.Delivery("hooks", "apps/web", got[1].Seq); ok {
			t.Error("Delivery finds a Seq under another key")
		}
		if _, ok, _ := tx.Delivery("nobody", "apps/web", got[0].Seq); ok {
			t.Error("Delivery finds a Seq under another endpoint")
		}
		equal(t, "Deliveries(hooks)", names(deliveries(t, tx, "hooks")),
			[]string{"hooks:/id-e", "hooks:apps/api/id-b", "hooks:apps/web/id-a", "hooks:apps/web/id-d"})
		equal(t, "Deliveries(all)", names(deliveries(t, tx, "")),
			[]string{"chat:apps/web/id-c", "hooks:/id-e", "hooks:apps/api/id-b", "hooks:apps/web/id-a", "hooks:apps/web/id-d"})
		equal(t, "Deliveries(unknown)", names(deliveries(t, tx, "hook")), nil)
		return nil
	})

	// An attempt that failed, leased and then released.
	upd := got[0]
	upd.Attempts, upd.LastError, upd.NextAttempt = 2, "503 Service Unavailable", at(100)
	upd.Holder, upd.LeaseUntil = "worker-1", at(90)
	h.update(t, func(tx meta.Tx) error { return tx.PutDelivery(upd) })
	h.view(t, func(tx meta.Tx) error {
		d, ok, err := tx.Delivery(upd.Endpoint, upd.Key, upd.Seq)
		must(t, err)
		if diff := sameDelivery(d, upd); !ok || diff != "" {
			t.Errorf("Delivery after PutDelivery (%v): %s", ok, diff)
		}
		return nil
	})

	h.update(t, func(tx meta.Tx) error {
		must(t, tx.DeleteDelivery(got[0].Endpoint, got[0].Key, got[0].Seq))
		return tx.DeleteDelivery("hooks", "apps/web", 1<<40) // absent: fine
	})
	h.view(t, func(tx meta.Tx) error {
		if _, ok, _ := tx.Delivery(got[0].Endpoint, got[0].Key, got[0].Seq); ok {
			t.Error("Delivery after DeleteDelivery is present")
		}
		equal(t, "Deliveries(hooks) after delete", names(deliveries(t, tx, "hooks")),
			[]string{"hooks:/id-e", "hooks:apps/api/id-b", "hooks:apps/web/id-d"})
		return nil
	})

	// What cannot be a key is refused, and changes nothing.
	for _, bad := range []meta.Delivery{delivery("", "r", "x"), delivery("a\x00b", "r", "x"), delivery("hooks", "r\x00", "x")} {
		err := h.s.Update(context.Background(), func(tx meta.Tx) error {
			_, err := tx.AppendDelivery(bad)
			return err
		})
		if err == nil {
			t.Errorf("AppendDelivery(endpoint %q, key %q) succeeded", bad.Endpoint, bad.Key)
		}
	}
	h.view(t, func(tx meta.Tx) error {
		if n := len(deliveries(t, tx, "")); n != 4 {
			t.Errorf("%d deliveries after refused appends, want 4", n)
		}
		return nil
	})
}

// testOutboxHeads: the head of each key is its lowest Seq, and the heads
// follow deletions and appends.
func testOutboxHeads(t *testing.T, h *handle) {
	var ds []meta.Delivery
	for i := range 5 {
		for _, key := range []string{"b", "a", "a/b", ""} {
			ds = append(ds, delivery("hooks", key, fmt.Sprintf("%s-%d", key, i)))
		}
		ds = append(ds, delivery("hooks2", "a", fmt.Sprintf("other-%d", i)))
	}
	got := appendAll(t, h, ds...)
	h.view(t, func(tx meta.Tx) error {
		equal(t, "DeliveryHeads", names(heads(t, tx, "hooks")),
			[]string{"hooks:/id--0", "hooks:a/id-a-0", "hooks:a/b/id-a/b-0", "hooks:b/id-b-0"})
		equal(t, "DeliveryHeads(hooks2)", names(heads(t, tx, "hooks2")), []string{"hooks2:a/id-other-0"})
		equal(t, "DeliveryHeads(unknown)", names(heads(t, tx, "nobody")), nil)
		return nil
	})
	// Deliver the heads of "a" twice and of "" once.
	h.update(t, func(tx meta.Tx) error {
		for _, d := range got {
			if d.Endpoint == "hooks" && (d.EventID == "id-a-0" || d.EventID == "id-a-1" || d.EventID == "id--0") {
				if err := tx.DeleteDelivery(d.Endpoint, d.Key, d.Seq); err != nil {
					return err
				}
			}
		}
		return nil
	})
	h.view(t, func(tx meta.Tx) error {
		hs := heads(t, tx, "hooks")
		equal(t, "DeliveryHeads after deliveries", names(hs),
			[]string{"hooks:/id--1", "hooks:a/id-a-2", "hooks:a/b/id-a/b-0", "hooks:b/id-b-0"})
		for _, d := range hs {
			var low uint64
			must(t, tx.Deliveries("hooks", func(o meta.Delivery) error {
				if o.Key == d.Key && (low == 0 || o.Seq < low) {
					low = o.Seq
				}
				return nil
			}))
			if d.Seq != low {
				t.Errorf("head of %q has Seq %d, the lowest of its key is %d", d.Key, d.Seq, low)
			}
		}
		// fn may stop the walk, and its error ends it.
		n := 0
		must(t, tx.DeliveryHeads("hooks", func(meta.Delivery) error { n++; return meta.ErrStop }))
		if n != 1 {
			t.Errorf("DeliveryHeads went on after ErrStop: %d calls", n)
		}
		if err := tx.DeliveryHeads("hooks", func(meta.Delivery) error { return errSentinel }); !errors.Is(err, errSentinel) {
			t.Errorf("DeliveryHeads returns %v when fn fails", err)
		}
		if err := tx.Deliveries("", func(meta.Delivery) error { return errSentinel }); !errors.Is(err, errSentinel) {
			t.Errorf("Deliveries returns %v when fn fails", err)
		}
		return nil
	})
	// A new delivery of a key without one is a head at once.
	appendAll(t, h, delivery("hooks", "0", "new"))
	h.view(t, func(tx meta.Tx) error {
		if hs := heads(t, tx, "hooks"); len(hs) != 5 || hs[0].Key != "" || hs[1].Key != "0" {
			t.Errorf("DeliveryHeads after an append to a new key: %v", names(hs))
		}
		return nil
	})
}

// testOutboxDurability: deliveries and dead letters survive a restart,
// and numbering goes on above them.
func testOutboxDurability(t *testing.T, h *handle) {
	got := appendAll(t, h, delivery("hooks", "r", "a"), delivery("hooks", "r", "b"))
	dead := got[1]
	dead.Attempts, dead.LastError, dead.Died = 5, "timeout", at(500)
	h.update(t, func(tx meta.Tx) error {
		must(t, tx.DeleteDelivery(dead.Endpoint, dead.Key, dead.Seq))
		return tx.PutDeadLetter(dead)
	})
	h.reopen(t)
	h.view(t, func(tx meta.Tx) error {
		d, ok, err := tx.Delivery("hooks", "r", got[0].Seq)
		must(t, err)
		if diff := sameDelivery(d, got[0]); !ok || diff != "" {
			t.Errorf("delivery after a restart (%v): %s", ok, diff)
		}
		dl, ok, err := tx.DeadLetter(dead.Seq)
		must(t, err)
		if diff := sameDelivery(dl, dead); !ok || diff != "" {
			t.Errorf("dead letter after a restart (%v): %s", ok, diff)
		}
		return nil
	})
	next := appendAll(t, h, delivery("hooks", "r", "c"))
	if next[0].Seq <= dead.Seq {
		t.Errorf("after a restart AppendDelivery numbers %d, not above %d", next[0].Seq, dead.Seq)
	}
}

// testOutboxCommitOrder: deliveries of one endpoint and key appended by
// concurrent Updates are numbered in the order the Updates commit, which
// each sees as the value of a counter it increments.
func testOutboxCommitOrder(t *testing.T, h *handle) {
	const workers, each = 16, 8
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for range each {
				err := h.s.Update(context.Background(), func(tx meta.Tx) error {
					b, _, err := tx.Blob(counter)
					if err != nil {
						return err
					}
					b.Size++
					if err := tx.PutBlob(counter, b); err != nil {
						return err
					}
					d := delivery("hooks", "repo", strconv.FormatInt(b.Size, 10))
					_, err = tx.AppendDelivery(d)
					return err
				})
				if err != nil {
					t.Errorf("worker %d: %v", w, err)
					return
				}
			}
		})
	}
	wg.Wait()
	h.view(t, func(tx meta.Tx) error {
		ds := deliveries(t, tx, "hooks")
		if len(ds) != workers*each {
			t.Fatalf("%d deliveries, want %d", len(ds), workers*each)
		}
		for i, d := range ds {
			if want := "id-" + strconv.Itoa(i+1); d.EventID != want {
				t.Fatalf("delivery %d in Seq order is %s, committed as %s: Seq does not follow commit order", i, want, d.EventID)
			}
		}
		return nil
	})
}

// testOutboxReadOnly: every change of the outbox fails in a View.
func testOutboxReadOnly(t *testing.T, h *handle) {
	got := appendAll(t, h, delivery("hooks", "r", "a"))[0]
	dead := got
	dead.Seq = got.Seq + 100
	h.update(t, func(tx meta.Tx) error { return tx.PutDeadLetter(dead) })
	writes := map[string]func(tx meta.Tx) error{
		"AppendDelivery": func(tx meta.Tx) error {
			_, err := tx.AppendDelivery(delivery("hooks", "r", "b"))
			return err
		},
		"PutDelivery":      func(tx meta.Tx) error { got.Attempts = 3; return tx.PutDelivery(got) },
		"DeleteDelivery":   func(tx meta.Tx) error { return tx.DeleteDelivery("hooks", "r", got.Seq) },
		"PutDeadLetter":    func(tx meta.Tx) error { d := got; d.Seq = 9999; return tx.PutDeadLetter(d) },
		"DeleteDeadLetter": func(tx meta.Tx) error { return tx.DeleteDeadLetter(dead.Seq) },
	}
	for name, w := range writes {
		h.view(t, func(tx meta.Tx) error {
			if err := w(tx); err == nil {
				t.Errorf("%s in a View succeeded", name)
			}
			return nil
		})
	}
	h.view(t, func(tx meta.Tx) error {
		ds := deliveries(t, tx, "")
		if len(ds) != 1 || ds[0].Attempts != 0 {
			t.Errorf("the outbox after changes in Views: %+v", ds)
		}
		if _, ok, _ := tx.DeadLetter(dead.Seq); !ok {
			t.Error("DeleteDeadLetter in a View removed it")
		}
		if _, ok, _ := tx.DeadLetter(9999); ok {
			t.Error("PutDeadLetter in a View recorded it")
		}
		return nil
	})
}

// testDeadLetters: dead letters keep their endpoint, key and Seq, walk in
// Seq order from a cursor, and go.
func testDeadLetters(t *testing.T, h *handle) {
	got := appendAll(t, h, delivery("hooks", "r1", "a"), delivery("chat", "", "b"), delivery("hooks", "r2", "c"))
	var dead []meta.Delivery
	h.update(t, func(tx meta.Tx) error {
		dead = dead[:0]
		for i, d := range got {
			if err := tx.DeleteDelivery(d.Endpoint, d.Key, d.Seq); err != nil {
				return err
			}
			d.Attempts, d.LastError, d.Died = 10, fmt.Sprintf("error %d", i), at(1000+i)
			if err := tx.PutDeadLetter(d); err != nil {
				return err
			}
			dead = append(dead, d)
		}
		return nil
	})
	walk := func(tx meta.Tx, after uint64) []meta.Delivery {
		var out []meta.Delivery
		must(t, tx.DeadLetters(after, func(d meta.Delivery) error {
			out = append(out, d)
			return nil
		}))
		return out
	}
	h.view(t, func(tx meta.Tx) error {
		if n := len(deliveries(t, tx, "")); n != 0 {
			t.Errorf("%d deliveries left in the outbox", n)
		}
		all := walk(tx, 0)
		if len(all) != 3 {
			t.Fatalf("DeadLetters: %v", names(all))
		}
		for i, d := range all {
			if diff := sameDelivery(d, dead[i]); diff != "" {
				t.Errorf("dead letter %d: %s", i, diff)
			}
		}
		equal(t, "DeadLetters after the first", names(walk(tx, dead[0].Seq)), names(dead[1:]))
		equal(t, "DeadLetters after the last", names(walk(tx, dead[2].Seq)), nil)
		d, ok, err := tx.DeadLetter(dead[1].Seq)
		must(t, err)
		if diff := sameDelivery(d, dead[1]); !ok || diff != "" {
			t.Errorf("DeadLetter (%v): %s", ok, diff)
		}
		if _, ok, _ := tx.DeadLetter(dead[2].Seq + 1); ok {
			t.Error("DeadLetter finds an unknown Seq")
		}
		if err := tx.DeadLetters(0, func(meta.Delivery) error { return errSentinel }); !errors.Is(err, errSentinel) {
			t.Errorf("DeadLetters returns %v when fn fails", err)
		}
		return nil
	})
	h.update(t, func(tx meta.Tx) error {
		must(t, tx.DeleteDeadLetter(dead[0].Seq))
		return tx.DeleteDeadLetter(12345)
	})
	h.view(t, func(tx meta.Tx) error {
		rest := walk(tx, 0)
		equal(t, "DeadLetters after a delete", names(rest), names(dead[1:]))
		if !slices.ContainsFunc(rest, func(d meta.Delivery) bool { return d.Endpoint == "chat" && d.Key == "" }) {
			t.Error("the dead letter of an empty key lost its endpoint or key")
		}
		return nil
	})
}
