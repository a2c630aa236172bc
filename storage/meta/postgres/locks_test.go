package postgres

import (
	"context"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/meta"
)

// TestLockRecorded: LockRecorded excludes the other holders of the digest,
// and reads the record after the lock is held, so it sees what the holder
// before it committed while it waited.
func TestLockRecorded(t *testing.T) {
	s := openTemp(t)
	ctx := context.Background()
	d := digest.FromString("content")

	unlock, recorded, err := s.LockRecorded(ctx, d)
	noErr(t, err)
	if recorded {
		t.Error("LockRecorded of a digest without a record says it has one")
	}
	unlock()

	// A holds the lock and records the blob; B waits for the lock.
	unlockA, err := s.LockDigests(ctx, d)
	noErr(t, err)
	type locked struct {
		unlock   func()
		recorded bool
		err      error
	}
	got := make(chan locked, 1)
	go func() {
		u, r, err := s.LockRecorded(ctx, d)
		got <- locked{u, r, err}
	}()
	select {
	case l := <-got:
		t.Fatalf("LockRecorded returned (%v, %v) while another held the lock", l.recorded, l.err)
	case <-time.After(300 * time.Millisecond):
	}
	noErr(t, s.Update(ctx, func(tx meta.Tx) error { return tx.PutBlob(d, meta.Blob{Size: 7, Created: time.Now()}) }))
	unlockA()
	var l locked
	select {
	case l = <-got:
	case <-time.After(30 * time.Second):
		t.Fatal("LockRecorded still waits after the lock was released")
	}
	noErr(t, l.err)
	if !l.recorded {
		t.Error("LockRecorded did not see the record committed while it waited for the lock")
	}
	// B holds it now: A waits.
	ctxA, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if u, err := s.LockDigests(ctxA, d); err == nil {
		u()
		t.Error("LockDigests took a lock LockRecorded holds")
	}
	l.unlock()
	u, err := s.LockDigests(ctx, d)
	noErr(t, err)
	u()
}
