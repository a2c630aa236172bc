package storagetest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/meta"
)

// blockingReader is a request body that delivers nothing until released:
// a request holding its upload session. started is closed at the first
// Read.
type blockingReader struct {
	started chan struct{}
	release *latch
	once    bool
}

func newBlockingReader(t *testing.T) *blockingReader {
	return &blockingReader{started: make(chan struct{}), release: newLatch(t)}
}

func (r *blockingReader) Read([]byte) (int, error) {
	if !r.once {
		r.once = true
		close(r.started)
	}
	<-r.release.C
	return 0, io.EOF
}

// lastWrite is when the session's content last changed, as the blob store
// says.
func lastWrite(t *testing.T, s *store, id string) time.Time {
	t.Helper()
	st, err := s.blobs.Resume(ctx(), id)
	if err != nil {
		t.Fatal(err)
	}
	lw, err := st.LastWrite(ctx())
	if err != nil {
		t.Fatal(err)
	}
	return lw
}

// Sessions idle for longer than the limit end, with their content and
// record; an active one stays, and so does one a request holds while
// expiry runs, until the next pass.
func testExpireUploads(t *testing.T, b Backends) {
	s := open(t, b)
	start := func() string {
		up, err := s.StartUpload(ctx(), "r", "")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.AppendUpload(ctx(), "r", up.ID, 0, bytes.NewReader([]byte("chunk")), 5); err != nil {
			t.Fatal(err)
		}
		return up.ID
	}
	idle, busy, contentless := start(), start(), start()
	var older time.Time
	for _, id := range []string{idle, busy, contentless} {
		if lw := lastWrite(t, s, id); lw.After(older) {
			older = lw
		}
	}
	// The active session is written to strictly later than the others;
	// a blob store's clock may be coarse, so leave it time to tick.
	for i := 0; !time.Now().After(older.Add(50 * time.Millisecond)); i++ {
		if i > 1000 {
			t.Fatal("the clock does not move")
		}
		time.Sleep(10 * time.Millisecond)
	}
	active := start()
	newer := lastWrite(t, s, active)
	if !newer.After(older) {
		t.Fatalf("the blob store dates a later write %s, before the earlier %s", newer, older)
	}
	// Ages are measured as of now: just under an hour after the active
	// session's write, and so more than an hour after the others'.
	const limit = time.Hour
	now := newer.Add(limit - newer.Sub(older)/2)

	// A session whose content vanished, started long ago: its record
	// must go.
	st, err := s.blobs.Resume(ctx(), contentless)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Cancel(ctx()); err != nil {
		t.Fatal(err)
	}
	update(t, s, func(tx meta.Tx) error {
		u, ok, err := tx.Upload(contentless)
		if err != nil || !ok {
			return fmt.Errorf("record of %s: %v, %w", contentless, ok, err)
		}
		u.Started = older.Add(-2 * limit)
		return tx.PutUpload(contentless, u)
	})

	// A request holds the busy session while expiry runs.
	held := newBlockingReader(t)
	appended := make(chan error, 1)
	go func() {
		_, err := s.AppendUpload(ctx(), "r", busy, -1, held, -1)
		appended <- err
	}()
	select {
	case <-held.started:
	case <-time.After(10 * time.Second):
		t.Fatal("the append never started reading")
	}
	n, err := s.ExpireUploads(ctx(), limit, now)
	held.release.open()
	if aerr := <-appended; aerr != nil {
		t.Fatalf("the append holding the session: %v", aerr)
	}
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Fatalf("expired %d sessions, want 2 (idle and contentless)", n)
	}
	_, staged := stored(t, s)
	for _, id := range []string{idle, contentless} {
		if _, err := s.UploadStatus(ctx(), "r", id); !errors.Is(err, storage.ErrUploadUnknown) {
			t.Fatalf("expired session %s still answers: %v", id, err)
		}
		if _, ok := staged[id]; ok {
			t.Fatalf("expired session %s left its content", id)
		}
	}
	for _, id := range []string{active, busy} {
		st, err := s.UploadStatus(ctx(), "r", id)
		if err != nil || st.Offset != 5 {
			t.Fatalf("live session %s: %+v %v", id, st, err)
		}
	}
	// Once free, the idle busy session goes on the next pass.
	if n, err := s.ExpireUploads(ctx(), limit, now); err != nil || n != 1 {
		t.Fatalf("second pass expired %d, %v; want 1", n, err)
	}
	if _, err := s.UploadStatus(ctx(), "r", busy); !errors.Is(err, storage.ErrUploadUnknown) {
		t.Fatalf("busy session after the second pass: %v", err)
	}
	if _, staged := stored(t, s); len(staged) != 1 {
		t.Fatalf("staged content after expiry: %v, want the active session's only", staged)
	}
}

// An upload session belongs to the actor (kind and name) that opened it:
// to anyone else, another user, a robot of the same name, an anonymous
// caller, Berth itself, it does not exist, and nothing they try changes
// it; its owner carries on, from any address.
func testUploadBelongsToItsActor(t *testing.T, b Backends) {
	s := open(t, b)
	alice := storage.WithActor(ctx(), storage.Actor{Kind: storage.ActorUser, Name: "alice", Address: "192.0.2.1"})
	// The address is not part of who owns it: a client may move.
	aliceElsewhere := storage.WithActor(ctx(), storage.Actor{Kind: storage.ActorUser, Name: "alice", Address: "198.51.100.9"})
	others := map[string]storage.Actor{
		"another user":           {Kind: storage.ActorUser, Name: "bob"},
		"a robot of the name":    {Kind: storage.ActorRobot, Name: "alice"},
		"anonymous":              {Kind: storage.ActorAnonymous},
		"the system (retention)": {Kind: storage.ActorSystem, Name: "retention"},
	}
	content := []byte("alice's layer, in two chunks")
	d := digest.FromBytes(content)
	up, err := s.StartUpload(alice, "r", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.AppendUpload(alice, "r", up.ID, 0, bytes.NewReader(content[:10]), 10); err != nil {
		t.Fatal(err)
	}
	for name, a := range others {
		other := storage.WithActor(ctx(), a)
		if _, err := s.UploadStatus(other, "r", up.ID); !errors.Is(err, storage.ErrUploadUnknown) {
			t.Errorf("%s: status: %v, want ErrUploadUnknown", name, err)
		}
		if _, err := s.AppendUpload(other, "r", up.ID, 10, bytes.NewReader(content[10:]), int64(len(content)-10)); !errors.Is(err, storage.ErrUploadUnknown) {
			t.Errorf("%s: append: %v, want ErrUploadUnknown", name, err)
		}
		if _, err := s.CommitUpload(other, "r", up.ID, d, 10, bytes.NewReader(content[10:]), int64(len(content)-10)); !errors.Is(err, storage.ErrUploadUnknown) {
			t.Errorf("%s: commit: %v, want ErrUploadUnknown", name, err)
		}
		if _, err := s.CommitUpload(other, "r", up.ID, digest.FromString("wrong"), -1, nil, 0); !errors.Is(err, storage.ErrUploadUnknown) {
			t.Errorf("%s: commit with a wrong digest: %v, want ErrUploadUnknown", name, err)
		}
		if err := s.CancelUpload(other, "r", up.ID); !errors.Is(err, storage.ErrUploadUnknown) {
			t.Errorf("%s: cancel: %v, want ErrUploadUnknown", name, err)
		}
	}
	if _, err := s.StatBlob(ctx(), "r", d); !errors.Is(err, storage.ErrBlobUnknown) {
		t.Fatalf("another actor committed the session: %v", err)
	}
	if _, staged := stored(t, s); staged[up.ID] != 10 {
		t.Fatalf("another actor changed the session's content: %v", staged)
	}
	st, err := s.UploadStatus(aliceElsewhere, "r", up.ID)
	if err != nil || st.Offset != 10 {
		t.Fatalf("owner's status: %+v, %v", st, err)
	}
	if _, err := s.AppendUpload(alice, "r", up.ID, 10, bytes.NewReader(content[10:20]), 10); err != nil {
		t.Fatalf("owner's append: %v", err)
	}
	if _, err := s.CommitUpload(alice, "r", up.ID, d, 20, bytes.NewReader(content[20:]), int64(len(content)-20)); err != nil {
		t.Fatalf("owner's commit: %v", err)
	}
	if got := readBlob(t, s, "r", d); !bytes.Equal(got, content) {
		t.Fatalf("blob reads %q", got)
	}
	// And the owner alone can cancel.
	up2, err := s.StartUpload(alice, "r", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CancelUpload(alice, "r", up2.ID); err != nil {
		t.Fatalf("owner's cancel: %v", err)
	}
	if _, err := s.UploadStatus(alice, "r", up2.ID); !errors.Is(err, storage.ErrUploadUnknown) {
		t.Fatalf("cancelled session: %v", err)
	}
	wantOnlyBlobs(t, s, d)
}

// wantOnlyBlobs checks that the blob store holds exactly ds, and nothing
// in flight.
func wantOnlyBlobs(t *testing.T, s *store, ds ...digest.Digest) {
	t.Helper()
	blobs, staged := stored(t, s)
	want := map[digest.Digest]bool{}
	for _, d := range ds {
		want[d] = true
	}
	got := map[digest.Digest]bool{}
	for _, d := range blobs {
		got[d] = true
	}
	if len(got) != len(want) || len(blobs) != len(got) || len(staged) != 0 {
		t.Fatalf("blob store holds %v, staged %v; want %v", blobs, staged, ds)
	}
	for d := range want {
		if !got[d] {
			t.Fatalf("blob store holds %v, staged %v; want %v", blobs, staged, ds)
		}
	}
}

// A session cannot announce a digest algorithm Berth does not hash.
func testUploadUnsupportedAlgorithm(t *testing.T, b Backends) {
	s := open(t, b)
	if _, err := s.StartUpload(ctx(), "r", "md5"); !errors.Is(err, storage.ErrUnsupported) {
		t.Fatalf("md5 session: %v, want ErrUnsupported", err)
	}
	wantNoContent(t, s)
	if repos, _, err := s.ListRepositories(ctx(), "", 10); err != nil || len(repos) != 0 {
		t.Fatalf("repositories after a refused session: %v, %v", repos, err)
	}
}
