package postgres

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/meta"
)

// TestLockDigestsAcrossStores: a digest locked by one store (one Berth
// process) is not granted to another store on the same database until the
// first unlocks it; a lock of another digest is granted at once.
func TestLockDigestsAcrossStores(t *testing.T) {
	dsn := pg.Database(t)
	a, b := openDSN(t, dsn), openDSN(t, dsn)
	d := digest.FromString("shared layer")
	unlockA, err := a.LockDigests(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	// Another digest: granted although a holds d.
	unlockOther, err := b.LockDigests(context.Background(), digest.FromString("another layer"))
	if err != nil {
		t.Fatal(err)
	}
	unlockOther()

	got := make(chan error, 1)
	var unlockB func()
	go func() {
		var err error
		unlockB, err = b.LockDigests(context.Background(), d)
		got <- err
	}()
	// Wait, boundedly, until the server shows b's session waiting for
	// the advisory lock: then b is blocked by a, not merely slow.
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	waiting := false
	for range 600 {
		var n int
		err := conn.QueryRow(context.Background(),
			"SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted").Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			waiting = true
			break
		}
		select {
		case err := <-got:
			t.Fatalf("the second store took a digest the first holds (err %v)", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	if !waiting {
		t.Fatal("the second store's lock never waited on the server")
	}
	select {
	case err := <-got:
		t.Fatalf("the second store took a digest the first holds (err %v)", err)
	default:
	}
	unlockA()
	if err := <-got; err != nil {
		t.Fatalf("the second store's lock after the unlock: %v", err)
	}
	unlockB()
}

// updatesAcrossStores runs workers goroutines, each making each Updates
// of fn, alternately on two stores of one new database (two replicas),
// fails t for every Update that failed, and returns the second store.
func updatesAcrossStores(t *testing.T, workers, each int, fn func(tx meta.Tx, w, i int) error) *Store {
	t.Helper()
	dsn := pg.Database(t)
	stores := []*Store{openDSN(t, dsn), openDSN(t, dsn)}
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		s := stores[w%2]
		wg.Go(func() {
			for i := range each {
				errs <- s.Update(context.Background(), func(tx meta.Tx) error { return fn(tx, w, i) })
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
	return stores[1]
}

// TestUpdatesAcrossStores: read-modify-write Updates from two stores on
// one database (two replicas) all apply exactly once.
func TestUpdatesAcrossStores(t *testing.T) {
	counter := digest.FromString("counter")
	const workers, each = 8, 10
	s := updatesAcrossStores(t, workers, each, func(tx meta.Tx, _, _ int) error {
		b, _, err := tx.Blob(counter)
		if err != nil {
			return err
		}
		b.Size++
		return tx.PutBlob(counter, b)
	})
	err := s.View(context.Background(), func(tx meta.Tx) error {
		b, _, err := tx.Blob(counter)
		if err == nil && b.Size != workers*each {
			err = fmt.Errorf("counter = %d after %d updates from two stores", b.Size, workers*each)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestHistoryAcrossStores: moves appended to one tag's history from two
// stores, each numbering its move from the prefetched history (the change
// put off), all apply, numbered 1 to n without a gap or a repeat.
func TestHistoryAcrossStores(t *testing.T) {
	const workers, each = 8, 10
	s := updatesAcrossStores(t, workers, each, func(mt meta.Tx, w, i int) error {
		if err := mt.(*tx).Prefetch(meta.Prefetch{Repo: "r", Tags: []string{"t"}}); err != nil {
			return err
		}
		_, err := mt.AppendMove("r", "t", meta.Move{Time: time.Unix(int64(w*each+i), 0), Action: "push"})
		return err
	})
	err := s.View(context.Background(), func(tx meta.Tx) error {
		next := uint64(workers * each)
		return tx.Moves("r", "t", 0, func(m meta.Move) error {
			if m.Seq != next {
				return fmt.Errorf("move numbered %d, want %d", m.Seq, next)
			}
			next--
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestOutboxOrderAcrossStores: deliveries of one endpoint and key appended
// by two stores at once are numbered in the order their transactions
// commit. A reader watching the outbox meanwhile never sees a delivery
// commit below the highest number it has already seen: what it saw is,
// below that number, all there will ever be.
func TestOutboxOrderAcrossStores(t *testing.T) {
	dsn := pg.Database(t)
	stores := []*Store{openDSN(t, dsn), openDSN(t, dsn)}
	const workers, each = 8, 8
	var snapshots [][]uint64
	writing := make(chan struct{})
	read := make(chan struct{})
	go func() {
		defer close(read)
		for done := false; !done; {
			select {
			case <-writing:
				done = true
			default:
			}
			var seqs []uint64
			err := stores[0].View(context.Background(), func(tx meta.Tx) error {
				return tx.Deliveries("hooks", func(d meta.Delivery) error { seqs = append(seqs, d.Seq); return nil })
			})
			if err != nil {
				t.Error(err)
				return
			}
			snapshots = append(snapshots, seqs)
		}
	}()
	var wg sync.WaitGroup
	for w := range workers {
		s := stores[w%2]
		wg.Go(func() {
			for i := range each {
				err := s.Update(context.Background(), func(tx meta.Tx) error {
					_, err := tx.AppendDelivery(meta.Delivery{Endpoint: "hooks", Key: "repo", EventID: fmt.Sprint(w, "-", i),
						Payload: []byte(`{}`), Created: time.Now()})
					return err
				})
				if err != nil {
					t.Errorf("append: %v", err)
				}
			}
		})
	}
	wg.Wait()
	close(writing)
	<-read
	var final []uint64
	if err := stores[1].View(context.Background(), func(tx meta.Tx) error {
		return tx.Deliveries("hooks", func(d meta.Delivery) error { final = append(final, d.Seq); return nil })
	}); err != nil {
		t.Fatal(err)
	}
	if len(final) != workers*each {
		t.Fatalf("%d deliveries, want %d", len(final), workers*each)
	}
	for _, seen := range snapshots {
		if len(seen) == 0 {
			continue
		}
		top := seen[len(seen)-1]
		var below int
		for _, s := range final {
			if s <= top {
				below++
			}
		}
		if below != len(seen) {
			t.Fatalf("a reader saw %d deliveries up to %d; %d up to it committed in the end: some committed below a number already seen", len(seen), top, below)
		}
	}
	t.Logf("%d snapshots of the outbox checked", len(snapshots))
}
