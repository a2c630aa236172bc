//go:build linux

package fs_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/blob"
)

// Walk reports what the blob tree holds besides blobs, never following a
// symbolic link or opening what is not a regular file; Sweep removes stray
// regular files inside blobs/ and nothing else.
func TestStraysWalkAndSweep(t *testing.T) {
	ctx := t.Context()
	base := t.TempDir()
	root := filepath.Join(base, "store")
	s := openStore(t, root, nil)
	real := put(t, s, []byte("a real blob"))
	hex := digest.FromString("stray").Encoded()
	write := func(name, content string) {
		t.Helper()
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	mkdirFor := func(name string) string {
		t.Helper()
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
			t.Fatal(err)
		}
		return p
	}

	strays := map[string]string{ // name: content
		"blobs/README":           "readme",
		"blobs/sha256/README":    "readme too",
		"blobs/sha256/ab/ab12":   "short hex",
		"blobs/sha256/cd/" + hex: "wrong prefix directory",
		"blobs/sha256/" + hex[:2] + "/" + strings.ToUpper(hex): "upper case",
		"blobs/md5/d4/d41d8cd98f00b204e9800998ecf8427e":        "unsupported algorithm",
		"blobs/sha256/" + hex[:2] + "/" + hex + "/extra":       "too deep",
	}
	for name, content := range strays {
		write(name, content)
	}
	// Outside the blob tree, a directory and a file a link points at.
	outside := filepath.Join(base, "outside")
	write("../outside/"+hex, "outside the store")
	linkDir := mkdirFor("blobs/sha256/linkdir")
	if err := os.Symlink(outside, linkDir); err != nil {
		t.Fatal(err)
	}
	linkedBlob := digest.FromString("linked")
	linkBlob := mkdirFor("blobs/sha256/" + linkedBlob.Encoded()[:2] + "/" + linkedBlob.Encoded())
	if err := os.Symlink(filepath.Join(outside, hex), linkBlob); err != nil {
		t.Fatal(err)
	}
	fifo := mkdirFor("blobs/sha256/fi/fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	fifoBlob := digest.FromString("fifo")
	fifoBlobPath := mkdirFor("blobs/sha256/" + fifoBlob.Encoded()[:2] + "/" + fifoBlob.Encoded())
	if err := syscall.Mkfifo(fifoBlobPath, 0o600); err != nil {
		t.Fatal(err)
	}

	got := map[string]blob.Entry{}
	if err := s.Walk(ctx, func(e blob.Entry) error { got[e.Name] = e; return nil }); err != nil {
		t.Fatal(err)
	}
	want := map[string]blob.Entry{
		"blobs/sha256/" + real.Encoded()[:2] + "/" + real.Encoded(): {Digest: real, Size: int64(len("a real blob"))},
		"blobs/sha256/linkdir": {Irregular: "not a regular file but a symbolic link"},
		"blobs/sha256/" + linkedBlob.Encoded()[:2] + "/" + linkedBlob.Encoded(): {Digest: linkedBlob, Irregular: "not a regular file but a symbolic link"},
		"blobs/sha256/fi/fifo": {Irregular: "not a regular file but a named pipe"},
		"blobs/sha256/" + fifoBlob.Encoded()[:2] + "/" + fifoBlob.Encoded(): {Digest: fifoBlob, Irregular: "not a regular file but a named pipe"},
	}
	for name, content := range strays {
		want[name] = blob.Entry{Size: int64(len(content))}
	}
	if len(got) != len(want) {
		t.Errorf("Walk reports %d objects, want %d", len(got), len(want))
	}
	for name, w := range want {
		g, ok := got[name]
		switch {
		case !ok:
			t.Errorf("Walk misses %s", name)
		case g.Digest != w.Digest || g.Irregular != w.Irregular || (w.Irregular == "" && g.Size != w.Size):
			t.Errorf("Walk reports %s as %+v, want %+v", name, g, w)
		}
	}
	for name := range got {
		if strings.Contains(name, "linkdir/") {
			t.Errorf("Walk followed a link into %s", name)
		}
	}

	// Content that is a named pipe is absent, and never opened (which
	// would block).
	if _, err := s.Stat(ctx, fifoBlob); !errors.Is(err, blob.ErrNotFound) || !strings.Contains(err.Error(), "named pipe") {
		t.Fatalf("stat of a named pipe: %v", err)
	}
	if _, err := s.Open(ctx, fifoBlob); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("open of a named pipe: %v", err)
	}

	// Stray regular files go.
	for name := range strays {
		if err := s.Sweep(ctx, name); err != nil {
			t.Errorf("sweep %s: %v", name, err)
		}
		if _, err := os.Lstat(filepath.Join(root, filepath.FromSlash(name))); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after sweep: %v", name, err)
		}
		if err := s.Sweep(ctx, name); err != nil {
			t.Errorf("sweep again %s: %v", name, err)
		}
	}

	// Nothing else does.
	if err := os.WriteFile(filepath.Join(root, "index.db"), []byte("index"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "uploads", "x"), []byte("upload"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{
		"blobs/sha256/linkdir",                                      // a symbolic link
		"blobs/sha256/linkdir/" + hex,                               // through one
		"blobs/sha256/fi/fifo",                                      // a named pipe
		"blobs/sha256/" + real.Encoded()[:2] + "/" + real.Encoded(), // a blob
		"blobs/sha256/" + linkedBlob.Encoded()[:2] + "/" + linkedBlob.Encoded(),
		"blobs/sha256/fi", // a directory
		"uploads/x",
		"index.db",
		"blobs/../index.db",
		"blobs//sha256/fi/fifo",
		"./blobs/sha256/fi/fifo",
		"../outside/" + hex,
		"blobs/../../outside/" + hex,
		filepath.Join(outside, hex),
		"/etc/passwd",
		"blobs",
		"blobs/",
		"",
	} {
		if err := s.Sweep(ctx, name); err == nil {
			t.Errorf("Sweep(%q) succeeded", name)
		}
	}
	for _, p := range []string{linkDir, linkBlob, fifo, fifoBlobPath, filepath.Join(outside, hex),
		filepath.Join(root, "index.db"), filepath.Join(root, "uploads", "x"), filepath.Join(root, "blobs", "sha256", "fi")} {
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("%s after refused sweeps: %v", p, err)
		}
	}
	if size, err := s.Stat(ctx, real); err != nil || size != int64(len("a real blob")) {
		t.Errorf("blob after refused sweeps: %d, %v", size, err)
	}
}

// WalkStaged reports what uploads/ holds, irregular files included, and
// Resume and Cancel never touch what is not a regular file.
func TestWalkStagedIrregular(t *testing.T) {
	ctx := t.Context()
	root := t.TempDir()
	s := openStore(t, root, nil)
	st, err := s.Stage(ctx, "live")
	if err != nil {
		t.Fatal(err)
	}
	appendAll(t, st, []byte("12345"))
	if err := syscall.Mkfifo(filepath.Join(root, "uploads", "pipe"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(root, "uploads", "link")); err != nil {
		t.Fatal(err)
	}
	got := map[string]blob.Entry{}
	if err := s.WalkStaged(ctx, func(e blob.Entry) error { got[e.Name] = e; return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got["live"].Size != 5 || got["live"].Irregular != "" ||
		!strings.Contains(got["pipe"].Irregular, "named pipe") || !strings.Contains(got["link"].Irregular, "symbolic link") {
		t.Fatalf("WalkStaged: %+v", got)
	}
	for _, id := range []string{"pipe", "link"} {
		if _, err := s.Resume(ctx, id); err == nil || errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("resume of %s: %v, want an error other than ErrNotFound", id, err)
		}
		if _, err := os.Lstat(filepath.Join(root, "uploads", id)); err != nil {
			t.Fatalf("%s after resume: %v", id, err)
		}
	}
}
