package storage

import (
	"bytes"
	"context"
	"errors"
	"os"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func TestExpireUploads(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	defer s.Close()
	start := func() string {
		up, err := s.StartUpload(ctx, "r", "")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.AppendUpload(ctx, "r", up.ID, 0, bytes.NewReader([]byte("chunk")), 5); err != nil {
			t.Fatal(err)
		}
		return up.ID
	}
	idle, active, busy, fileless := start(), start(), start(), start()
	now := time.Now()
	old := now.Add(-2 * time.Hour)
	for _, id := range []string{idle, busy} {
		if err := os.Chtimes(s.uploadPath(id), old, old); err != nil {
			t.Fatal(err)
		}
	}
	// A session whose file vanished, started long ago: its record must go.
	if err := os.Remove(s.uploadPath(fileless)); err != nil {
		t.Fatal(err)
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		return putJSON(tx.Bucket(bucketUploads), []byte(fileless), uploadRecord{Repo: "r", Algorithm: "sha256", Started: old})
	})
	if err != nil {
		t.Fatal(err)
	}
	// A request holds the busy session while expiry runs.
	held := s.sessions.entry(busy)
	held.mu.Lock()
	n, err := s.ExpireUploads(ctx, time.Hour, now)
	held.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Fatalf("expired %d sessions, want 2 (idle and fileless)", n)
	}
	for _, id := range []string{idle, fileless} {
		if _, err := s.UploadStatus(ctx, "r", id); !errors.Is(err, ErrUploadUnknown) {
			t.Fatalf("expired session %s still answers: %v", id, err)
		}
		if _, err := os.Stat(s.uploadPath(id)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("expired session %s left its file: %v", id, err)
		}
	}
	for _, id := range []string{active, busy} {
		st, err := s.UploadStatus(ctx, "r", id)
		if err != nil || st.Offset != 5 {
			t.Fatalf("live session %s: %+v %v", id, st, err)
		}
	}
	// Once free, the idle busy session goes on the next pass.
	if n, err := s.ExpireUploads(ctx, time.Hour, now); err != nil || n != 1 {
		t.Fatalf("second pass expired %d, %v; want 1", n, err)
	}
}
