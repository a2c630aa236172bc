package storage

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	bolt "go.etcd.io/bbolt"

	"github.com/berth-registry/berth/storage/manifest"
)

// fsckStore is a store filled through the normal API, with names for its
// content so that tests can break it piece by piece.
type fsckStore struct {
	t       *testing.T
	dir     string
	s       *Store
	blobs   map[string]digest.Digest // by role
	content map[digest.Digest][]byte
	m1      digest.Digest // team/app:v1, references every layer
	m2      digest.Digest // team/app:v2, references cfg and keep
	ref     digest.Digest // referrer of m2
	upload  string        // live upload session in team/app
	size    int64         // bytes of all blobs and manifests
}

const (
	fsckApp   = "team/app"
	fsckOther = "team/other"
)

func newFsckStore(t *testing.T, opts Options) *fsckStore {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(ctx, dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	f := &fsckStore{t: t, dir: dir, s: s, blobs: map[string]digest.Digest{}, content: map[digest.Digest][]byte{}}

	put := func(role string, b []byte) ocispec.Descriptor {
		d := digest.FromBytes(b)
		if _, err := s.PutBlob(ctx, fsckApp, d, bytes.NewReader(b), int64(len(b))); err != nil {
			t.Fatalf("put %s: %v", role, err)
		}
		f.blobs[role], f.content[d] = d, b
		f.size += int64(len(b))
		return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: d, Size: int64(len(b))}
	}
	cfg := put("cfg", []byte(`{"architecture":"amd64","os":"linux"}`))
	cfg.MediaType = ocispec.MediaTypeImageConfig
	empty := put("empty", []byte(`{}`))
	empty.MediaType = ocispec.MediaTypeEmptyJSON
	var layers []ocispec.Descriptor
	for i, role := range []string{"keep", "gone", "short", "rot", "unrecorded"} {
		layers = append(layers, put(role, randomBytes(t, 1000+i*517)))
	}
	for _, role := range []string{"keep", "rot"} {
		if _, err := s.MountBlob(ctx, fsckOther, fsckApp, f.blobs[role]); err != nil {
			t.Fatalf("mount %s: %v", role, err)
		}
	}

	f.m1 = f.putManifest(fsckApp, ocispec.Manifest{Config: cfg, Layers: layers}, "v1")
	f.m2 = f.putManifest(fsckApp, ocispec.Manifest{Config: cfg, Layers: layers[:1]}, "v2")
	f.ref = f.putManifest(fsckApp, ocispec.Manifest{
		ArtifactType: "application/vnd.example.sbom",
		Config:       empty,
		Layers:       []ocispec.Descriptor{empty},
		Subject:      &ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: f.m2, Size: int64(len(f.content[f.m2]))},
	})

	up, err := s.StartUpload(ctx, fsckApp, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.AppendUpload(ctx, fsckApp, up.ID, 0, strings.NewReader("half an upload"), -1); err != nil {
		t.Fatal(err)
	}
	f.upload = up.ID
	if _, err := s.CreateRobot(ctx, "ci", []string{"repository:team/*:pull"}, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fsckStore) putManifest(repo string, m ocispec.Manifest, tags ...string) digest.Digest {
	f.t.Helper()
	m.Versioned = specs.Versioned{SchemaVersion: 2}
	m.MediaType = ocispec.MediaTypeImageManifest
	body, err := json.Marshal(m)
	if err != nil {
		f.t.Fatal(err)
	}
	parsed, err := manifest.Parse("", body)
	if err != nil {
		f.t.Fatal(err)
	}
	d := digest.FromBytes(body)
	if err := f.s.PutManifest(context.Background(), repo, d, body, parsed, tags); err != nil {
		f.t.Fatalf("put manifest: %v", err)
	}
	f.content[d] = body
	f.size += int64(len(body))
	return d
}

func (f *fsckStore) check(opts CheckOptions) *CheckReport {
	f.t.Helper()
	r, err := f.s.Check(context.Background(), opts)
	if err != nil {
		f.t.Fatalf("check %+v: %v", opts, err)
	}
	return r
}

func (f *fsckStore) update(fn func(tx *bolt.Tx) error) {
	f.t.Helper()
	if err := f.s.db.Update(fn); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fsckStore) write(rel string, b []byte) {
	f.t.Helper()
	path := filepath.Join(f.dir, rel)
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		f.t.Fatal(err)
	}
}

// finding is what a test expects of a Problem.
type finding struct{ kind, digest, repo string }

func findings(ps []Problem) []finding {
	out := []finding{}
	for _, p := range ps {
		d := p.Digest
		if d == "" {
			d = p.Tag + p.Path // something to tell them apart
		}
		out = append(out, finding{p.Kind, d, p.Repo})
	}
	return out
}

func sortFindings(fs []finding) []finding {
	fs = slices.Clone(fs)
	sort.Slice(fs, func(i, j int) bool { return fmt.Sprint(fs[i]) < fmt.Sprint(fs[j]) })
	return fs
}

func sameFindings(t *testing.T, what string, got []Problem, want []finding) {
	t.Helper()
	g, w := sortFindings(findings(got)), sortFindings(want)
	if !slices.Equal(g, w) {
		var b strings.Builder
		for _, p := range got {
			fmt.Fprintf(&b, "\n  %s", p)
		}
		t.Fatalf("%s:\n got %v\nwant %v\nproblems:%s", what, g, w, b.String())
	}
}

func TestCheckCleanStore(t *testing.T) {
	f := newFsckStore(t, Options{})
	for _, opts := range []CheckOptions{{}, {VerifyContent: true}, {VerifyContent: true, Repair: true}} {
		r := f.check(opts)
		if len(r.Problems) != 0 || len(r.Orphans) != 0 || len(r.Repaired) != 0 || len(r.Remaining) != 0 || r.Inconsistent() != 0 {
			t.Fatalf("%+v: clean store reported %+v", opts, r)
		}
		want := CheckReport{VerifyContent: opts.VerifyContent, Repair: opts.Repair,
			Blobs: len(f.content), Repos: 2, Links: 7 + 2, Manifests: 3, Tags: 2, Referrers: 1, Uploads: 1, Robots: 1}
		if opts.VerifyContent {
			want.BytesVerified = f.size
		}
		got := *r
		got.Problems, got.Orphans, got.Repaired, got.Remaining = nil, nil, nil, nil
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%+v: counts\n got %+v\nwant %+v", opts, got, want)
		}
	}
}

func TestCheckFindsAndRepairsEachProblem(t *testing.T) {
	ctx := context.Background()
	f := newFsckStore(t, Options{})
	s, b := f.s, f.blobs

	// A blob file deleted, one truncated, one with a byte flipped.
	if err := os.Remove(s.blobPath(b["gone"])); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(s.blobPath(b["short"]), 10); err != nil {
		t.Fatal(err)
	}
	rotted := bytes.Clone(f.content[b["rot"]])
	rotted[len(rotted)/2] ^= 0x01
	if err := os.WriteFile(s.blobPath(b["rot"]), rotted, 0o600); err != nil {
		t.Fatal(err)
	}
	// Records broken with bbolt directly.
	ghost := digest.FromString("no such manifest")
	noBlob := digest.FromString("no such blob")
	noBody := digest.FromString("a manifest record without content")
	noRef := digest.FromString("no such referrer")
	f.update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketBlobs).Delete([]byte(b["unrecorded"])); err != nil {
			return err
		}
		app, other := repoBucket(tx, fsckApp), repoBucket(tx, fsckOther)
		if err := app.Bucket(bucketTags).Put([]byte("ghost"), []byte(ghost)); err != nil {
			return err
		}
		if err := putJSON(other.Bucket(bucketLinks), []byte(noBlob), linkRecord{Linked: time.Now()}); err != nil {
			return err
		}
		if err := putManifestRecord(tx, other, fsckOther, noBody, manifestRecord{MediaType: ocispec.MediaTypeImageManifest, Size: 3,
			Annotations: map[string]string{"org.opencontainers.image.revision": "lost"}}); err != nil {
			return err
		}
		if err := other.Bucket(bucketTags).Put([]byte("stale"), []byte(noBody)); err != nil {
			return err
		}
		if err := putJSON(app.Bucket(bucketReferrers).Bucket([]byte(f.m2)), []byte(noRef), ocispec.Descriptor{Digest: noRef}); err != nil {
			return err
		}
		if err := putJSON(tx.Bucket(bucketUploads), []byte("deadbeef"), uploadRecord{Repo: fsckApp, Algorithm: "sha256"}); err != nil {
			return err
		}
		return tx.Bucket(bucketRobotSecrets).Put([]byte(hashRobotSecret("berth_nobody")), []byte("nobody"))
	})
	// Files no record names.
	orphan := []byte("content whose record never committed")
	od := digest.FromBytes(orphan)
	f.write(f.s.rel(s.blobPath(od)), orphan)
	f.write("blobs/sha256/README", []byte("not a blob"))
	f.write("uploads/cafe", []byte("an upload without a session"))
	f.write("tmp/content-stale", []byte("partial"))

	index := []finding{
		{ProblemMissing, string(b["gone"]), ""},
		{ProblemSize, string(b["short"]), ""},
		{ProblemDanglingLink, string(b["unrecorded"]), fsckApp},
		{ProblemDanglingLink, string(noBlob), fsckOther},
		{ProblemDanglingManifest, string(noBody), fsckOther},
		{ProblemDanglingTag, string(ghost), fsckApp},
		{ProblemDanglingReferrer, string(noRef), fsckApp},
		{ProblemDanglingUpload, "uploads/deadbeef", fsckApp},
		{ProblemRobotSecret, "", ""},
		{ProblemIncompleteManifest, string(f.m1), fsckApp},
	}
	orphans := []finding{
		{OrphanBlob, string(b["unrecorded"]), ""},
		{OrphanBlob, string(od), ""},
		{OrphanBlob, "blobs/sha256/README", ""},
		{OrphanUpload, "uploads/cafe", ""},
		{OrphanTemp, "tmp/content-stale", ""},
	}
	r := f.check(CheckOptions{})
	sameFindings(t, "problems", r.Problems, index)
	sameFindings(t, "orphans", r.Orphans, orphans)
	if got := r.Inconsistent(); got != len(index)-2 { // dangling-upload, incomplete-manifest
		t.Fatalf("Inconsistent() = %d, want %d", got, len(index)-2)
	}
	if r.BytesVerified != 0 {
		t.Fatalf("bytes verified without VerifyContent: %d", r.BytesVerified)
	}

	withContent := append(slices.Clone(index), finding{ProblemCorrupt, string(b["rot"]), ""})
	r = f.check(CheckOptions{VerifyContent: true})
	sameFindings(t, "problems with content", r.Problems, withContent)
	sameFindings(t, "orphans with content", r.Orphans, orphans)
	if r.BytesVerified == 0 {
		t.Fatal("no bytes verified with VerifyContent")
	}
	for _, p := range r.Problems {
		if p.Kind == ProblemCorrupt && !strings.Contains(p.Detail, string(digest.FromBytes(rotted))) {
			t.Errorf("corrupt detail does not name what the content hashes to: %s", p)
		}
		if p.Kind == ProblemRobotSecret && strings.Contains(fmt.Sprint(p), hashRobotSecret("berth_nobody")) {
			t.Errorf("report shows a whole secret hash: %s", p)
		}
	}

	r = f.check(CheckOptions{VerifyContent: true, Repair: true})
	if r.Inconsistent() != 0 {
		t.Fatalf("inconsistencies remain after repair: %v", r.Remaining)
	}
	if len(r.Repaired) != len(withContent)-1+len(orphans) { // all but incomplete-manifest
		for _, fix := range r.Repaired {
			t.Logf("repaired %s: %s", fix.Problem, fix.Action)
		}
		t.Fatalf("%d repairs, want %d", len(r.Repaired), len(withContent)-1+len(orphans))
	}
	// What remains: m1 references what was lost, and says so.
	sameFindings(t, "remaining", r.Remaining, []finding{{ProblemIncompleteManifest, string(f.m1), fsckApp}})
	for _, role := range []string{"gone", "short", "rot", "unrecorded"} {
		if !strings.Contains(r.Remaining[0].Detail, string(b[role])) {
			t.Errorf("incomplete-manifest does not name %s: %s", role, r.Remaining[0])
		}
	}

	again := f.check(CheckOptions{VerifyContent: true})
	if again.Inconsistent() != 0 || len(again.Orphans) != 0 {
		t.Fatalf("after repair: %d inconsistencies, orphans %v, problems %v", again.Inconsistent(), again.Orphans, again.Problems)
	}
	sameFindings(t, "after repair", again.Problems, []finding{{ProblemIncompleteManifest, string(f.m1), fsckApp}})
	if rerun := f.check(CheckOptions{VerifyContent: true, Repair: true}); len(rerun.Repaired) != 0 {
		t.Fatalf("a second repair did something: %v", rerun.Repaired)
	}

	// Corrupt and wrong-size files are in quarantine, as they were.
	for role, want := range map[string][]byte{"rot": rotted, "short": f.content[b["short"]][:10]} {
		d := b[role]
		got, err := os.ReadFile(filepath.Join(f.dir, "quarantine", "sha256-"+d.Encoded()))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("quarantined %s: %v (content equal: %v)", role, err, bytes.Equal(got, want))
		}
	}
	if fi, err := os.Stat(filepath.Join(f.dir, "quarantine")); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("quarantine directory: %v %v", fi, err)
	}
	// Removed blobs are unknown in every repository; intact content reads back.
	for _, repo := range []string{fsckApp, fsckOther} {
		if _, err := s.StatBlob(ctx, repo, b["rot"]); !errors.Is(err, ErrBlobUnknown) {
			t.Errorf("quarantined blob still linked in %s: %v", repo, err)
		}
		if got := readBlob(t, s, repo, b["keep"]); !bytes.Equal(got, f.content[b["keep"]]) {
			t.Errorf("intact blob differs in %s", repo)
		}
	}
	for _, role := range []string{"gone", "short", "unrecorded"} {
		if _, err := s.StatBlob(ctx, fsckApp, b[role]); !errors.Is(err, ErrBlobUnknown) {
			t.Errorf("%s still linked: %v", role, err)
		}
	}
	for _, d := range []digest.Digest{f.m1, f.m2, f.ref} {
		if _, body, err := s.GetManifest(ctx, fsckApp, string(d)); err != nil || !bytes.Equal(body, f.content[d]) {
			t.Errorf("manifest %s after repair: %v", d, err)
		}
	}
	if refs, err := s.Referrers(ctx, fsckApp, f.m2, ""); err != nil || len(refs) != 1 || refs[0].Digest != f.ref {
		t.Errorf("referrers of m2 after repair: %v %v", refs, err)
	}
	if _, err := s.StatManifest(ctx, fsckOther, "stale"); !errors.Is(err, ErrManifestUnknown) {
		t.Errorf("tag of a dangling manifest survived: %v", err)
	}
	// Both ways a repair removes a tag keep the history invariant.
	for _, c := range []struct {
		repo, tag string
		was       digest.Digest
	}{{fsckApp, "ghost", ghost}, {fsckOther, "stale", noBody}} {
		moves, _, err := s.TagHistory(ctx, c.repo, c.tag, 0, 10)
		if err != nil || len(moves) != 1 || moves[0].Action != MoveRepair || moves[0].Previous != c.was ||
			moves[0].Digest != "" || moves[0].Actor.Kind != ActorSystem {
			t.Errorf("history of %s:%s after repair: %+v %v", c.repo, c.tag, moves, err)
		}
	}
	if up, err := s.UploadStatus(ctx, fsckApp, f.upload); err != nil || up.Offset != int64(len("half an upload")) {
		t.Errorf("live upload after repair: %+v %v", up, err)
	}
	if _, _, _, err := s.VerifyRobot(ctx, "berth_nobody", time.Now()); !errors.Is(err, ErrRobotUnknown) {
		t.Errorf("stale secret entry: %v", err)
	}
	// The dangling manifest left the search index with its record.
	checkSearchIndex(t, s)
	if res, _, err := s.Search(ctx, Query{Annotations: map[string]string{"org.opencontainers.image.revision": "lost"}, N: 10}); err != nil || len(res) != 0 {
		t.Errorf("search after repair: %v %v", res, err)
	}
}

func TestCheckReportJSON(t *testing.T) {
	f := newFsckStore(t, Options{})
	f.write("tmp/content-stale", []byte("partial"))
	if err := os.Remove(f.s.blobPath(f.blobs["gone"])); err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(f.check(CheckOptions{}))
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Inconsistencies int       `json:"inconsistencies"`
		Blobs           int       `json:"blobs"`
		Problems        []Problem `json:"problems"`
		Orphans         []Problem `json:"orphans"`
		Repaired        []Repair  `json:"repaired"`
	}
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	if got.Inconsistencies != 1 || got.Blobs != len(f.content) || len(got.Problems) != 1 || got.Problems[0].Kind != ProblemMissing ||
		len(got.Orphans) != 1 || !got.Orphans[0].Harmless || got.Repaired == nil {
		t.Fatalf("report JSON: %s", raw)
	}
}

// A repair cut off midway leaves a store that the next repair finishes.
func TestCheckRepairInterrupted(t *testing.T) {
	fsys := &fsckFlakyFS{}
	f := newFsckStore(t, Options{FS: fsys})
	d := f.blobs["rot"]
	if err := os.WriteFile(f.s.blobPath(d), bytes.Repeat([]byte{0}, len(f.content[d])), 0o600); err != nil {
		t.Fatal(err)
	}
	fsys.failRename = true
	r, err := f.s.Check(context.Background(), CheckOptions{VerifyContent: true, Repair: true})
	if !errors.Is(err, syscall.EIO) || r == nil || len(r.Problems) != 1 || len(r.Repaired) != 0 {
		t.Fatalf("failed repair: err=%v report=%+v", err, r)
	}
	fsys.failRename = false

	// As if the process died after moving the file, before the index
	// transaction: the record now names an absent file.
	if err := os.MkdirAll(filepath.Join(f.dir, "quarantine"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(f.s.blobPath(d), filepath.Join(f.dir, "quarantine", "sha256-"+d.Encoded())); err != nil {
		t.Fatal(err)
	}
	r = f.check(CheckOptions{VerifyContent: true, Repair: true})
	sameFindings(t, "after an interrupted repair", r.Problems, []finding{{ProblemMissing, string(d), ""}})
	if r.Inconsistent() != 0 {
		t.Fatalf("inconsistencies remain: %v", r.Remaining)
	}
	if _, err := f.s.StatBlob(context.Background(), fsckOther, d); !errors.Is(err, ErrBlobUnknown) {
		t.Fatalf("link to the removed blob survived: %v", err)
	}
}

// fsckFlakyFS is the operating system's file system, with renames that
// fail on demand.
type fsckFlakyFS struct {
	osFS
	failRename bool
}

func (f *fsckFlakyFS) Rename(oldpath, newpath string) error {
	if f.failRename {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: syscall.EIO}
	}
	return os.Rename(oldpath, newpath)
}

// Symbolic links and other files that are not regular are reported, never
// followed, and never removed.
func TestCheckLeavesSymlinksAlone(t *testing.T) {
	f := newFsckStore(t, Options{})
	target := filepath.Join(t.TempDir(), "elsewhere")
	if err := os.WriteFile(target, []byte("not the store's"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(f.dir, "blobs", "sha256", "ab", "ab"+strings.Repeat("0", 62))
	if err := os.MkdirAll(filepath.Dir(link), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, link); err != nil {
		t.Skipf("symlink: %v", err)
	}
	// A recorded blob replaced by a link to a file of the right size.
	keep := f.blobs["keep"]
	if err := os.WriteFile(target, f.content[keep], 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(f.s.blobPath(keep)); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, f.s.blobPath(keep)); err != nil {
		t.Fatal(err)
	}
	r := f.check(CheckOptions{VerifyContent: true, Repair: true})
	sameFindings(t, "problems", r.Problems, []finding{{ProblemMissing, string(keep), ""}})
	sameFindings(t, "orphans", r.Orphans, []finding{{OrphanBlob, string(digest.Digest("sha256:ab" + strings.Repeat("0", 62))), ""}})
	if !r.Orphans[0].keep || !strings.Contains(r.Orphans[0].Detail, "not a regular file") {
		t.Fatalf("symlink orphan: %s", r.Orphans[0])
	}
	if r.Inconsistent() != 0 {
		t.Fatalf("inconsistencies remain: %v", r.Remaining)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("orphan symlink removed: %v", err)
	}
	if fi, err := os.Lstat(filepath.Join(f.dir, "quarantine", "sha256-"+keep.Encoded())); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("link in place of a blob not quarantined as a link: %v", err)
	}
	if got, err := os.ReadFile(target); err != nil || !bytes.Equal(got, f.content[keep]) {
		t.Fatalf("link target touched: %v", err)
	}
}

func TestOpenOffline(t *testing.T) {
	ctx := context.Background()
	empty := t.TempDir()
	if _, err := OpenOffline(ctx, empty, Options{}); err == nil {
		t.Fatal("OpenOffline opened a directory without a store")
	}
	if _, err := os.Stat(filepath.Join(empty, "index.db")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("OpenOffline created an index: %v", err)
	}

	dir := t.TempDir()
	s := openStore(t, dir)
	_, err := OpenOffline(ctx, dir, Options{OpenTimeout: 50 * time.Millisecond})
	if !errors.Is(err, ErrInUse) {
		t.Fatalf("OpenOffline of a store in use: %v, want ErrInUse", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = OpenOffline(ctx, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}
