package registry

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// OpenStore with Offline opens only an existing store, and not one a
// server holds.
func TestOpenStoreOffline(t *testing.T) {
	ctx := context.Background()
	empty := t.TempDir()
	if _, err := OpenStore(ctx, empty, StoreOptions{Offline: true}); err == nil {
		t.Fatal("an offline open succeeded in a directory without a store")
	}
	if entries, err := os.ReadDir(empty); err != nil || len(entries) != 0 {
		t.Fatalf("an offline open left %v in an empty directory (%v)", entries, err)
	}

	dir := t.TempDir()
	s, err := OpenStore(ctx, dir, StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "index.db")); err != nil {
		t.Fatalf("the index of a new store: %v", err)
	}
	_, err = OpenStore(ctx, dir, StoreOptions{Offline: true, Timeout: 50 * time.Millisecond})
	if !errors.Is(err, ErrInUse) {
		t.Fatalf("an offline open of a store in use: %v, want ErrInUse", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = OpenStore(ctx, dir, StoreOptions{Offline: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}
