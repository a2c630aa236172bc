package storage_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage"
)

// A transaction that panics after claiming a link for removal (as garbage
// collection does) releases the claim: lookups find the link again.
func TestClaimReleasedWhenUpdatePanics(t *testing.T) {
	ctx := context.Background()
	s, _, _ := openService(t, t.TempDir(), nil, storage.Options{})
	c := []byte("claimed, then the collection panicked")
	d := digest.FromBytes(c)
	if _, err := s.PutBlob(ctx, "r", d, bytes.NewReader(c), int64(len(c))); err != nil {
		t.Fatal(err)
	}
	var err error
	func() {
		defer func() {
			if recover() == nil {
				t.Fatalf("Update returned %v; want the function's panic raised in its caller", err)
			}
		}()
		err = s.Update(ctx, func(tx *storage.Tx) error {
			// No t.Fatal here: the function may run on another goroutine.
			if !tx.Claim("r", d, time.Now().Add(time.Hour)) {
				return errors.New("claim refused")
			}
			panic("a bug in a client's transaction")
		})
	}()
	if _, err := s.StatBlob(ctx, "r", d); err != nil {
		t.Fatalf("lookup after a panicked transaction: %v", err)
	}
}
