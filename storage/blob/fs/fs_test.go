package fs_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/blob"
	"github.com/berth-registry/berth/storage/blob/blobtest"
	blobfs "github.com/berth-registry/berth/storage/blob/fs"
)

func openStore(t *testing.T, root string, fsys blobfs.FS) *blobfs.Store {
	t.Helper()
	s, err := blobfs.Open(t.Context(), root, blobfs.Options{FS: fsys})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	return s
}

func TestSuite(t *testing.T) {
	blobtest.Run(t, func(t *testing.T) blob.Store { return openStore(t, t.TempDir(), nil) })
}

// put commits data through an upload session and returns its digest.
func put(t *testing.T, s *blobfs.Store, data []byte) digest.Digest {
	t.Helper()
	st, err := s.Stage(t.Context(), newID())
	if err != nil {
		t.Fatal(err)
	}
	appendAll(t, st, data)
	d := digest.FromBytes(data)
	if err := st.Commit(t.Context(), d); err != nil {
		t.Fatalf("commit: %v", err)
	}
	return d
}

// newID returns a fresh session id.
func newID() string { return rand.Text() }

func appendAll(t *testing.T, st blob.Staged, data []byte) {
	t.Helper()
	if _, err := st.Append(t.Context(), bytes.NewReader(data), int64(len(data)), nil); err != nil {
		t.Fatalf("append: %v", err)
	}
}

func blobPath(root string, d digest.Digest) string {
	return filepath.Join(root, "blobs", string(d.Algorithm()), d.Encoded()[:2], d.Encoded())
}

// entries lists the names of everything under dir (recursively, without
// directories), relative to dir.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !e.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func wantEmpty(t *testing.T, dir string) {
	t.Helper()
	if got := entries(t, dir); len(got) != 0 {
		t.Fatalf("%s holds %v, want nothing", filepath.Base(dir), got)
	}
}

// wantComplete checks that every file under blobs/ holds the content its
// path names: nothing partial is ever visible.
func wantComplete(t *testing.T, root string) {
	t.Helper()
	for _, name := range entries(t, filepath.Join(root, "blobs")) {
		parts := strings.Split(name, "/")
		d := digest.Digest(parts[0] + ":" + parts[len(parts)-1])
		b, err := os.ReadFile(filepath.Join(root, "blobs", name))
		if err != nil {
			t.Fatal(err)
		}
		if d.Validate() != nil || d.Algorithm().FromBytes(b) != d {
			t.Fatalf("blobs/%s holds %d bytes that are not its content", name, len(b))
		}
	}
}

func TestLayout(t *testing.T) {
	ctx := t.Context()
	root := t.TempDir()
	s := openStore(t, root, nil)
	for _, sub := range []string{"blobs", "uploads", "tmp"} {
		fi, err := os.Lstat(filepath.Join(root, sub))
		if err != nil || !fi.IsDir() || fi.Mode().Perm()&^0o750 != 0 {
			t.Fatalf("%s: %v, %v; want a directory of mode 0750 at most", sub, fi.Mode(), err)
		}
	}

	// An upload session is uploads/<id>, committed content
	// blobs/<algorithm>/<hex[0:2]>/<hex>.
	data := []byte("layout")
	st, err := s.Stage(ctx, "3f2a9c")
	if err != nil {
		t.Fatal(err)
	}
	if got := entries(t, filepath.Join(root, "uploads")); !slices.Equal(got, []string{"3f2a9c"}) {
		t.Fatalf("uploads/ holds %v", got)
	}
	appendAll(t, st, data)
	if b, err := os.ReadFile(filepath.Join(root, "uploads", "3f2a9c")); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("uploads/3f2a9c: %q, %v", b, err)
	}
	d := digest.FromBytes(data)
	if err := st.Commit(ctx, d); err != nil {
		t.Fatal(err)
	}
	want := "sha256/" + d.Encoded()[:2] + "/" + d.Encoded()
	if got := entries(t, filepath.Join(root, "blobs")); !slices.Equal(got, []string{want}) {
		t.Fatalf("blobs/ holds %v, want %s", got, want)
	}
	fi, err := os.Stat(blobPath(root, d))
	if err != nil || fi.Mode().Perm()&^0o600 != 0 {
		t.Fatalf("blob file: %v, %v; want mode 0600 at most", fi.Mode(), err)
	}
	wantEmpty(t, filepath.Join(root, "uploads"))

	// Walk names objects by their path from the root.
	var names []string
	err = s.Walk(ctx, func(e blob.Entry) error {
		names = append(names, e.Name)
		return nil
	})
	if err != nil || !slices.Equal(names, []string{"blobs/" + want}) {
		t.Fatalf("Walk names %v, %v", names, err)
	}

	// Anonymous content is a file in tmp/ until committed.
	st, err = s.Stage(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	other := []byte("anonymous layout")
	appendAll(t, st, other)
	if got := entries(t, filepath.Join(root, "tmp")); len(got) != 1 {
		t.Fatalf("tmp/ holds %v, want one file", got)
	}
	wantEmpty(t, filepath.Join(root, "uploads"))
	do := digest.SHA512.FromBytes(other)
	if err := st.Commit(ctx, do); err != nil {
		t.Fatal(err)
	}
	wantEmpty(t, filepath.Join(root, "tmp"))
	if b, err := os.ReadFile(blobPath(root, do)); err != nil || !bytes.Equal(b, other) {
		t.Fatalf("blobs/sha512/...: %q, %v", b, err)
	}

	// Quarantine is quarantine/<algorithm>-<hex>, in a directory of mode 0700.
	where, err := s.Quarantine(ctx, d)
	if err != nil || where != "quarantine/sha256-"+d.Encoded() {
		t.Fatalf("quarantine: %q, %v", where, err)
	}
	if b, err := os.ReadFile(filepath.Join(root, "quarantine", "sha256-"+d.Encoded())); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("quarantined file: %q, %v", b, err)
	}
	if fi, err := os.Stat(filepath.Join(root, "quarantine")); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("quarantine directory: %v, %v; want mode 0700", fi.Mode(), err)
	}
	if _, err := os.Lstat(blobPath(root, d)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("quarantined blob still in place: %v", err)
	}
}

// A data directory written by earlier releases keeps working: content and
// sessions are found where those releases put them.
func TestExistingDataDirectory(t *testing.T) {
	ctx := t.Context()
	root := t.TempDir()
	data, partial := []byte("written by an earlier release"), []byte("half an upl")
	d := digest.FromBytes(data)
	if err := os.MkdirAll(filepath.Dir(blobPath(root, d)), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(blobPath(root, d), data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "uploads"), 0o750); err != nil {
		t.Fatal(err)
	}
	id := "0123456789abcdef0123456789abcdef"
	if err := os.WriteFile(filepath.Join(root, "uploads", id), partial, 0o600); err != nil {
		t.Fatal(err)
	}
	s := openStore(t, root, nil)
	if size, err := s.Stat(ctx, d); err != nil || size != int64(len(data)) {
		t.Fatalf("stat: %d, %v", size, err)
	}
	st, err := s.Resume(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if size, err := st.Size(ctx); err != nil || size != int64(len(partial)) {
		t.Fatalf("size of the session: %d, %v", size, err)
	}
	appendAll(t, st, []byte("oad"))
	full := []byte("half an upload")
	if err := st.Commit(ctx, digest.FromBytes(full)); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(blobPath(root, digest.FromBytes(full))); err != nil || !bytes.Equal(b, full) {
		t.Fatalf("committed: %q, %v", b, err)
	}
}

func TestOpenReturnsOSFile(t *testing.T) {
	s := openStore(t, t.TempDir(), nil)
	d := put(t, s, []byte("sendfile"))
	f, err := s.Open(t.Context(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, ok := f.(*os.File); !ok {
		t.Fatalf("Open returns %T, want *os.File so that net/http can use sendfile", f)
	}
}

// What tmp/ holds belongs to a dead process: Open removes it, and nothing
// else.
func TestOpenClearsTmp(t *testing.T) {
	ctx := t.Context()
	root := t.TempDir()
	s := openStore(t, root, nil)
	d := put(t, s, []byte("kept"))
	st, err := s.Stage(ctx, "live")
	if err != nil {
		t.Fatal(err)
	}
	appendAll(t, st, []byte("in flight"))
	anon, err := s.Stage(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	appendAll(t, anon, []byte("cut off by a crash"))
	if err := os.MkdirAll(filepath.Join(root, "tmp", "dir", "sub"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "tmp", "dir", "sub", "f"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, root, nil)
	if got, err := os.ReadDir(filepath.Join(root, "tmp")); err != nil || len(got) != 0 {
		t.Fatalf("tmp/ after Open: %v, %v; want empty", got, err)
	}
	if size, err := s.Stat(ctx, d); err != nil || size != 4 {
		t.Fatalf("committed content after Open: %d, %v", size, err)
	}
	st, err = s.Resume(ctx, "live")
	if err != nil {
		t.Fatal(err)
	}
	if size, err := st.Size(ctx); err != nil || size != int64(len("in flight")) {
		t.Fatalf("session after Open: %d, %v", size, err)
	}
}

func TestInvalidDigests(t *testing.T) {
	ctx := t.Context()
	base := t.TempDir()
	root := filepath.Join(base, "store")
	victim := filepath.Join(base, "victim")
	if err := os.WriteFile(victim, []byte("not the store's"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := openStore(t, root, nil)
	hex := digest.FromString("x").Encoded()
	for _, d := range []digest.Digest{
		"",
		"sha256:",
		"sha256",
		"sha256:../../../victim",
		digest.Digest("sha256:../../victim" + hex[:45]),
		digest.Digest("sha256:" + strings.ToUpper(hex)),
		digest.Digest("sha256:" + strings.Repeat("g", 64)),
		digest.Digest("sha256:" + hex[:63]),
		digest.Digest("sha256:" + hex + "/"),
		"md5:d41d8cd98f00b204e9800998ecf8427e",
		digest.Digest("../sha256:" + hex),
	} {
		if _, err := s.Stat(ctx, d); err == nil {
			t.Errorf("Stat(%q) succeeded", d)
		}
		if f, err := s.Open(ctx, d); err == nil {
			f.Close()
			t.Errorf("Open(%q) succeeded", d)
		}
		if err := s.Delete(ctx, d); err == nil {
			t.Errorf("Delete(%q) succeeded", d)
		}
		if _, err := s.Quarantine(ctx, d); err == nil {
			t.Errorf("Quarantine(%q) succeeded", d)
		}
		// A session keeps its content; anonymous content is dropped.
		st, err := s.Stage(ctx, "s")
		if err != nil {
			t.Fatal(err)
		}
		appendAll(t, st, []byte("content"))
		if err := st.Commit(ctx, d); err == nil {
			t.Errorf("Commit(%q) succeeded", d)
		}
		if size, err := st.Size(ctx); err != nil || size != 7 {
			t.Errorf("session after Commit(%q): %d, %v", d, size, err)
		}
		if err := st.Cancel(ctx); err != nil {
			t.Fatal(err)
		}
		anon, err := s.Stage(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		appendAll(t, anon, []byte("content"))
		if err := anon.Commit(ctx, d); err == nil {
			t.Errorf("anonymous Commit(%q) succeeded", d)
		}
		wantEmpty(t, filepath.Join(root, "tmp"))
	}
	wantEmpty(t, filepath.Join(root, "blobs"))
	if b, err := os.ReadFile(victim); err != nil || string(b) != "not the store's" {
		t.Fatalf("file outside the store: %q, %v", b, err)
	}
	if got, _ := os.ReadDir(base); len(got) != 2 {
		t.Fatalf("the store's parent holds %d entries, want 2", len(got))
	}
}

func TestSessionIDs(t *testing.T) {
	ctx := t.Context()
	base := t.TempDir()
	root := filepath.Join(base, "store")
	s := openStore(t, root, nil)
	for _, id := range []string{".", "..", "../escape", "a/b", "/abs", `a\b`, "x\x00y", "uploads/../../escape"} {
		if st, err := s.Stage(ctx, id); err == nil {
			_ = st.Cancel(ctx)
			t.Errorf("Stage(%q) succeeded", id)
		}
		if _, err := s.Resume(ctx, id); !errors.Is(err, blob.ErrNotFound) {
			t.Errorf("Resume(%q): %v, want ErrNotFound", id, err)
		}
	}
	wantEmpty(t, filepath.Join(root, "uploads"))
	for _, p := range []string{filepath.Join(base, "escape"), filepath.Join(root, "escape"), filepath.Join(root, "b")} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s exists: %v", p, err)
		}
	}
	// Stage of a live session fails without touching it.
	st, err := s.Stage(ctx, "taken")
	if err != nil {
		t.Fatal(err)
	}
	appendAll(t, st, []byte("abc"))
	if _, err := s.Stage(ctx, "taken"); !errors.Is(err, os.ErrExist) {
		t.Fatalf("Stage of a live session: %v, want one that wraps fs.ErrExist", err)
	}
	if size, err := st.Size(ctx); err != nil || size != 3 {
		t.Fatalf("session after a second Stage: %d, %v", size, err)
	}
}

// LastWrite is the staged file's modification time.
func TestLastWriteIsModTime(t *testing.T) {
	ctx := t.Context()
	root := t.TempDir()
	s := openStore(t, root, nil)
	if _, err := s.Stage(ctx, "idle"); err != nil {
		t.Fatal(err)
	}
	old := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := os.Chtimes(filepath.Join(root, "uploads", "idle"), old, old); err != nil {
		t.Fatal(err)
	}
	st, err := s.Resume(ctx, "idle")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := st.LastWrite(ctx); err != nil || !got.Equal(old) {
		t.Fatalf("last write %v, %v; want %v", got, err, old)
	}
	appendAll(t, st, []byte("x"))
	if got, err := st.LastWrite(ctx); err != nil || !got.After(old) {
		t.Fatalf("last write after append %v, %v; want after %v", got, err, old)
	}
	if err := st.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := st.LastWrite(ctx); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("last write of a cancelled session: %v, want ErrNotFound", err)
	}
}

// Content in place whose file is damaged (of another length) is replaced
// by a commit of the same digest, which has been verified.
func TestCommitReplacesDamagedCopy(t *testing.T) {
	ctx := t.Context()
	root := t.TempDir()
	s := openStore(t, root, nil)
	data := bytes.Repeat([]byte("damaged "), 1000)
	d := put(t, s, data)
	if err := os.Truncate(blobPath(root, d), 100); err != nil {
		t.Fatal(err)
	}
	st, err := s.Stage(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	appendAll(t, st, data)
	if err := st.Commit(ctx, d); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(blobPath(root, d)); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("blob after the commit: %d bytes, %v; want %d", len(b), err, len(data))
	}
}

// A symbolic link in the place of a blob is never followed: the blob
// counts as absent, a commit replaces the link, and its target is left
// alone.
func TestSymlinkInPlaceOfBlob(t *testing.T) {
	ctx := t.Context()
	base := t.TempDir()
	root := filepath.Join(base, "store")
	s := openStore(t, root, nil)
	data := []byte("the real content")
	d := digest.FromBytes(data)
	target := filepath.Join(base, "target")
	if err := os.WriteFile(target, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(blobPath(root, d)), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, blobPath(root, d)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(ctx, d); !errors.Is(err, blob.ErrNotFound) || !strings.Contains(err.Error(), "symbolic link") {
		t.Fatalf("stat of a symlink: %v, want ErrNotFound naming a symbolic link", err)
	}
	if f, err := s.Open(ctx, d); !errors.Is(err, blob.ErrNotFound) {
		if f != nil {
			f.Close()
		}
		t.Fatalf("open of a symlink: %v, want ErrNotFound", err)
	}
	var seen []blob.Entry
	if err := s.Walk(ctx, func(e blob.Entry) error { seen = append(seen, e); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 1 || seen[0].Digest != d || !strings.Contains(seen[0].Irregular, "symbolic link") {
		t.Fatalf("Walk: %+v, want the link with its digest and Irregular set", seen)
	}
	if got := put(t, s, data); got != d {
		t.Fatal(got)
	}
	if fi, err := os.Lstat(blobPath(root, d)); err != nil || !fi.Mode().IsRegular() {
		t.Fatalf("blob after commit: %v, %v; want a regular file", fi.Mode(), err)
	}
	if b, err := os.ReadFile(target); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("link target: %q, %v", b, err)
	}
}

// Quarantine moves a symbolic link as a link, not what it points at.
func TestQuarantineSymlink(t *testing.T) {
	ctx := t.Context()
	base := t.TempDir()
	root := filepath.Join(base, "store")
	s := openStore(t, root, nil)
	d := digest.FromString("linked")
	target := filepath.Join(base, "target")
	if err := os.WriteFile(target, []byte("linked"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(blobPath(root, d)), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, blobPath(root, d)); err != nil {
		t.Fatal(err)
	}
	where, err := s.Quarantine(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(filepath.Join(root, filepath.FromSlash(where))); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("quarantined %s: %v, %v; want the link", where, fi.Mode(), err)
	}
	if b, err := os.ReadFile(target); err != nil || string(b) != "linked" {
		t.Fatalf("link target: %q, %v", b, err)
	}
}

// A Store holds nothing open and needs no closing; errors of the context
// stop a Walk.
func TestWalkCancelled(t *testing.T) {
	s := openStore(t, t.TempDir(), nil)
	put(t, s, []byte("a"))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := s.Walk(ctx, func(blob.Entry) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Fatalf("Walk with a cancelled context: %v", err)
	}
	if err := s.WalkStaged(ctx, func(blob.Entry) error { return nil }); err != nil {
		t.Fatalf("WalkStaged of nothing with a cancelled context: %v", err)
	}
	if _, err := s.Stage(t.Context(), "x"); err != nil {
		t.Fatal(err)
	}
	if err := s.WalkStaged(ctx, func(blob.Entry) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Fatalf("WalkStaged with a cancelled context: %v", err)
	}
}
