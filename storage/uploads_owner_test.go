package storage

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/opencontainers/go-digest"
)

// TestUploadBelongsToItsOpener checks that an upload session answers only
// the actor (kind and name) that opened it: to any other, even one with
// push on the repository that learnt the id, it is unknown, for every
// operation; the opener goes on with it from another address.
func TestUploadBelongsToItsOpener(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	alice := WithActor(context.Background(), Actor{Kind: ActorUser, Name: "alice", Address: "192.0.2.1"})
	up, err := s.StartUpload(alice, "r", "")
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("chunk of alice")
	for name, ctx := range map[string]context.Context{
		"another user":           WithActor(context.Background(), Actor{Kind: ActorUser, Name: "bob"}),
		"a robot of the name":    WithActor(context.Background(), Actor{Kind: ActorRobot, Name: "alice"}),
		"an anonymous caller":    context.Background(),
		"the system (retention)": WithActor(context.Background(), Actor{Kind: ActorSystem, Name: "retention"}),
	} {
		if _, err := s.UploadStatus(ctx, "r", up.ID); !errors.Is(err, ErrUploadUnknown) {
			t.Errorf("%s: status: %v, want ErrUploadUnknown", name, err)
		}
		if _, err := s.AppendUpload(ctx, "r", up.ID, -1, bytes.NewReader([]byte("intruder")), -1); !errors.Is(err, ErrUploadUnknown) {
			t.Errorf("%s: append: %v, want ErrUploadUnknown", name, err)
		}
		if _, err := s.CommitUpload(ctx, "r", up.ID, digest.FromBytes(nil), -1, nil, -1); !errors.Is(err, ErrUploadUnknown) {
			t.Errorf("%s: commit: %v, want ErrUploadUnknown", name, err)
		}
		if err := s.CancelUpload(ctx, "r", up.ID); !errors.Is(err, ErrUploadUnknown) {
			t.Errorf("%s: cancel: %v, want ErrUploadUnknown", name, err)
		}
	}
	// Untouched, the session goes on for its opener, whatever its address.
	again := WithActor(context.Background(), Actor{Kind: ActorUser, Name: "alice", Address: "198.51.100.2"})
	info, err := s.AppendUpload(again, "r", up.ID, 0, bytes.NewReader(data), int64(len(data)))
	if err != nil || info.Offset != int64(len(data)) {
		t.Fatalf("alice appends: %+v %v", info, err)
	}
	blob, err := s.CommitUpload(alice, "r", up.ID, digest.FromBytes(data), -1, nil, -1)
	if err != nil || blob.Digest != digest.FromBytes(data) {
		t.Fatalf("alice commits: %+v %v", blob, err)
	}
}
