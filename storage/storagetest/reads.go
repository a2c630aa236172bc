package storagetest

import (
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/storage"
)

// readBound is how long a read may take before the suite decides it is
// waiting for a writer. It is generous: the reads return at once unless
// they wait.
const readBound = 10 * time.Second

// wantReadsReturn reads blob d and manifest m of repo from another
// goroutine, HEAD and GET alike, and fails if they do not all return,
// successfully, within readBound.
func wantReadsReturn(t *testing.T, s *store, repo string, d, m digest.Digest, while string) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		done <- func() error {
			if _, err := s.StatBlob(ctx(), repo, d); err != nil {
				return err
			}
			f, _, err := s.OpenBlob(ctx(), repo, d)
			if err != nil {
				return err
			}
			_, err = io.Copy(io.Discard, f)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
			if _, err := s.StatManifest(ctx(), repo, string(m)); err != nil {
				return err
			}
			_, _, err = s.GetManifest(ctx(), repo, string(m))
			return err
		}()
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("read %s while %s: %v", d, while, err)
		}
	case <-time.After(readBound):
		t.Fatalf("reads of %s did not return within %s while %s: they wait for writers", d, readBound, while)
	}
}

// readFixture is a blob and a manifest over it in repo "r".
func readFixture(t *testing.T, s *store) (blobDigest, manifestDigest digest.Digest) {
	t.Helper()
	cfg := putBlob(t, s, "r", ocispec.MediaTypeImageConfig, []byte(`{"architecture":"riscv64","os":"linux"}`))
	m, _ := putManifest(t, s, "r", ocispec.Manifest{Config: cfg, Layers: []ocispec.Descriptor{}}, "v1")
	return cfg.Digest, m
}

// Lookups and reads take no digest lock: they return while another
// goroutine holds the lock of the very digests they read, as a commit of
// the same content or a garbage collection batch would.
func testReadsDoNotWaitForDigestLocks(t *testing.T, b Backends) {
	s := open(t, b)
	d, m := readFixture(t, s)
	unlock, err := s.LockDigests(ctx(), d, m)
	if err != nil {
		t.Fatal(err)
	}
	released := false
	defer func() {
		if !released {
			unlock()
		}
	}()
	wantReadsReturn(t, s, "r", d, m, "their digests are locked")

	// A writer of the same digest, blocked inside its transaction while
	// holding the lock, as a commit recording the content would be.
	unlock()
	released = true
	entered, release := make(chan struct{}), newLatch(t)
	writerDone := make(chan error, 1)
	go func() {
		unlock, err := s.LockDigests(ctx(), d)
		if err != nil {
			close(entered)
			writerDone <- err
			return
		}
		defer unlock()
		writerDone <- s.Update(ctx(), func(tx *storage.Tx) error {
			select {
			case <-entered:
			default:
				close(entered)
			}
			<-release.C
			return nil
		})
	}()
	<-entered
	wantReadsReturn(t, s, "r", d, m, "a writer of the same digest holds its lock in a transaction")
	release.open()
	if err := <-writerDone; err != nil {
		t.Fatal(err)
	}
}

// Lookups and reads run while a write transaction is open and blocked,
// one that changes the very records they read.
func testReadsDoNotWaitForAnOpenUpdate(t *testing.T, b Backends) {
	s := open(t, b)
	d, m := readFixture(t, s)
	entered, release := make(chan struct{}), newLatch(t)
	writerDone := make(chan error, 1)
	go func() {
		writerDone <- s.Update(ctx(), func(tx *storage.Tx) error {
			// Change what the reads read: relink the blob, move the tag.
			if err := tx.DeleteLink("r", d); err != nil {
				return err
			}
			if _, err := tx.MoveTag("r", "v1", "", storage.MoveDelete); err != nil {
				return err
			}
			select {
			case <-entered:
			default:
				close(entered)
			}
			<-release.C
			return errRollBack
		})
	}()
	<-entered
	wantReadsReturn(t, s, "r", d, m, "a write transaction is open")
	release.open()
	if err := <-writerDone; !errors.Is(err, errRollBack) {
		t.Fatalf("blocked writer: %v", err)
	}
	// It rolled back: everything is as it was.
	wantReadsReturn(t, s, "r", d, m, "nothing is written")
	if got, err := s.StatManifest(ctx(), "r", "v1"); err != nil || got.Digest != m {
		t.Fatalf("v1 after a rolled-back move: %s, %v", got.Digest, err)
	}
}

// latch is a channel closed once, by open or when the test ends,
// so that a goroutine a failed test leaves blocked on it ends too (and
// with it the transaction it holds open).
type latch struct {
	C    chan struct{}
	once sync.Once
}

// newLatch returns a shut latch that the test's cleanup opens.
func newLatch(t *testing.T) *latch {
	l := &latch{C: make(chan struct{})}
	t.Cleanup(l.open)
	return l
}

func (l *latch) open() { l.once.Do(func() { close(l.C) }) }

// errRollBack is what the suite's own transactions return to roll back.
var errRollBack = errors.New("storagetest: roll back")
