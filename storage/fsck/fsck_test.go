package fsck_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	bbolt "go.etcd.io/bbolt"

	"github.com/berth-registry/berth/registry/auth"
	"github.com/berth-registry/berth/storage"
	blobfs "github.com/berth-registry/berth/storage/blob/fs"
	"github.com/berth-registry/berth/storage/fsck"
	"github.com/berth-registry/berth/storage/internal/clienttest"
	"github.com/berth-registry/berth/storage/meta"
	"github.com/berth-registry/berth/storage/meta/bolt"
)

// fsckStore is a store filled through the normal API, with names for its
// content so that tests can break it piece by piece.
type fsckStore struct {
	*clienttest.Store
	t       *testing.T
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

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func newFsckStore(t *testing.T, opts clienttest.Options) *fsckStore {
	t.Helper()
	ctx := context.Background()
	s := clienttest.Open(t, "", opts)
	f := &fsckStore{Store: s, t: t, blobs: map[string]digest.Digest{}, content: map[digest.Digest][]byte{}}

	put := func(role string, b []byte) ocispec.Descriptor {
		desc := s.PutBlob(fsckApp, ocispec.MediaTypeImageLayer, b)
		f.blobs[role], f.content[desc.Digest] = desc.Digest, b
		f.size += int64(len(b))
		return desc
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
		if _, err := s.Svc.MountBlob(ctx, fsckOther, fsckApp, f.blobs[role]); err != nil {
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
		Annotations:  map[string]string{"org.example.kind": "sbom"},
	})

	up, err := s.Svc.StartUpload(ctx, fsckApp, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Svc.AppendUpload(ctx, fsckApp, up.ID, 0, strings.NewReader("half an upload"), -1); err != nil {
		t.Fatal(err)
	}
	f.upload = up.ID
	if _, err := f.robots().Create(ctx, "ci", []string{"repository:team/*:pull"}, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fsckStore) robots() *auth.Robots { return auth.NewRobots(auth.IndexRobots(f.Bolt), nil) }

func (f *fsckStore) putManifest(repo string, m ocispec.Manifest, tags ...string) digest.Digest {
	f.t.Helper()
	d, desc := f.PutManifest(repo, m, tags...)
	_, body, err := f.Svc.GetManifest(context.Background(), repo, string(d))
	if err != nil {
		f.t.Fatal(err)
	}
	f.content[d] = body
	f.size += desc.Size
	return d
}

func (f *fsckStore) check(opts fsck.Options) *fsck.Report {
	f.t.Helper()
	r, err := fsck.Check(context.Background(), f.Svc, f.Bolt, opts)
	if err != nil {
		f.t.Fatalf("check %+v: %v", opts, err)
	}
	return r
}

// blobPath is where the file blob store keeps the content of d.
func (f *fsckStore) blobPath(d digest.Digest) string {
	return filepath.Join(f.Dir, "blobs", string(d.Algorithm()), d.Encoded()[:2], d.Encoded())
}

func (f *fsckStore) write(rel string, b []byte) {
	f.t.Helper()
	path := filepath.Join(f.Dir, rel)
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		f.t.Fatal(err)
	}
}

// raw changes the index file with bbolt directly, the store closed, for
// what no transaction of the index can do: break what the backend keeps
// by itself (derived entries, the robot secret index).
func (f *fsckStore) raw(fn func(tx *bbolt.Tx) error) {
	f.t.Helper()
	f.Close()
	db, err := bbolt.Open(f.IndexPath(), 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		f.t.Fatal(err)
	}
	if err := db.Update(fn); err != nil {
		f.t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		f.t.Fatal(err)
	}
	f.Reopen()
}

// finding is what a test expects of a Problem.
type finding struct{ kind, digest, repo string }

func findings(ps []fsck.Problem) []finding {
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

func sameFindings(t *testing.T, what string, got []fsck.Problem, want []finding) {
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

func hashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

func TestCheckCleanStore(t *testing.T) {
	f := newFsckStore(t, clienttest.Options{})
	for _, opts := range []fsck.Options{{}, {VerifyContent: true}, {VerifyContent: true, Repair: true}} {
		r := f.check(opts)
		if len(r.Problems) != 0 || len(r.Orphans) != 0 || len(r.Repaired) != 0 || len(r.Remaining) != 0 || r.Inconsistent() != 0 {
			t.Fatalf("%+v: clean store reported %+v", opts, r)
		}
		want := fsck.Report{VerifyContent: opts.VerifyContent, Repair: opts.Repair,
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
	f := newFsckStore(t, clienttest.Options{})
	b := f.blobs

	// A blob's content deleted, one truncated, one with a byte flipped.
	if err := os.Remove(f.blobPath(b["gone"])); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(f.blobPath(b["short"]), 10); err != nil {
		t.Fatal(err)
	}
	rotted := bytes.Clone(f.content[b["rot"]])
	rotted[len(rotted)/2] ^= 0x01
	if err := os.WriteFile(f.blobPath(b["rot"]), rotted, 0o600); err != nil {
		t.Fatal(err)
	}
	// Records broken through the index's transactions, as a crash or a
	// bug of an earlier release could have left them.
	ghost := digest.FromString("no such manifest")
	noBlob := digest.FromString("no such blob")
	noBody := digest.FromString("a manifest record without content")
	f.Update(func(tx meta.Tx) error {
		return errors.Join(
			tx.DeleteBlob(b["unrecorded"]),
			tx.SetTag(fsckApp, "ghost", ghost),
			tx.PutLink(fsckOther, noBlob, meta.Link{Linked: time.Now()}),
			tx.PutManifest(fsckOther, noBody, meta.Manifest{MediaType: ocispec.MediaTypeImageManifest, Size: 3, Created: time.Now(),
				Annotations: map[string]string{"org.opencontainers.image.revision": "lost"}}),
			tx.SetTag(fsckOther, "stale", noBody),
			tx.PutUpload("deadbeef", meta.Upload{Repo: fsckApp, Algorithm: "sha256", Started: time.Now()}),
		)
	})
	// What only the backend keeps, broken in the bbolt file.
	noRef := digest.FromString("no such referrer")
	f.raw(func(tx *bbolt.Tx) error {
		refs := tx.Bucket([]byte("repos")).Bucket([]byte(fsckApp)).Bucket([]byte("referrers")).Bucket([]byte(f.m2))
		desc, err := json.Marshal(ocispec.Descriptor{Digest: noRef})
		if err != nil {
			return err
		}
		return errors.Join(refs.Put([]byte(noRef), desc),
			tx.Bucket([]byte("robotSecrets")).Put([]byte(hashSecret("berth_nobody")), []byte("nobody")))
	})
	// Files no record names.
	orphan := []byte("content whose record never committed")
	od := digest.FromBytes(orphan)
	f.write(filepath.Join("blobs", "sha256", od.Encoded()[:2], od.Encoded()), orphan)
	f.write("blobs/sha256/README", []byte("not a blob"))
	f.write("uploads/cafe", []byte("an upload without a session"))

	index := []finding{
		{fsck.ProblemMissing, string(b["gone"]), ""},
		{fsck.ProblemSize, string(b["short"]), ""},
		{fsck.ProblemDanglingLink, string(b["unrecorded"]), fsckApp},
		{fsck.ProblemDanglingLink, string(noBlob), fsckOther},
		{fsck.ProblemDanglingManifest, string(noBody), fsckOther},
		{fsck.ProblemDanglingTag, string(ghost), fsckApp},
		{bolt.FindingDanglingReferrer, string(noRef), fsckApp},
		{fsck.ProblemDanglingUpload, "deadbeef", fsckApp},
		{bolt.FindingRobotSecret, "", ""},
		{fsck.ProblemIncompleteManifest, string(f.m1), fsckApp},
	}
	orphans := []finding{
		{fsck.OrphanBlob, string(b["unrecorded"]), ""},
		{fsck.OrphanBlob, string(od), ""},
		{fsck.OrphanBlob, "blobs/sha256/README", ""},
		{fsck.OrphanUpload, "cafe", ""},
	}
	r := f.check(fsck.Options{})
	sameFindings(t, "problems", r.Problems, index)
	sameFindings(t, "orphans", r.Orphans, orphans)
	if got := r.Inconsistent(); got != len(index)-2 { // dangling-upload, incomplete-manifest
		t.Fatalf("Inconsistent() = %d, want %d", got, len(index)-2)
	}
	if r.BytesVerified != 0 {
		t.Fatalf("bytes verified without VerifyContent: %d", r.BytesVerified)
	}

	withContent := append(slices.Clone(index), finding{fsck.ProblemCorrupt, string(b["rot"]), ""})
	r = f.check(fsck.Options{VerifyContent: true})
	sameFindings(t, "problems with content", r.Problems, withContent)
	sameFindings(t, "orphans with content", r.Orphans, orphans)
	if r.BytesVerified == 0 {
		t.Fatal("no bytes verified with VerifyContent")
	}
	for _, p := range r.Problems {
		if p.Kind == fsck.ProblemCorrupt && !strings.Contains(p.Detail, string(digest.FromBytes(rotted))) {
			t.Errorf("corrupt detail does not name what the content hashes to: %s", p)
		}
		if p.Kind == bolt.FindingRobotSecret && strings.Contains(fmt.Sprint(p), hashSecret("berth_nobody")) {
			t.Errorf("report shows a whole secret hash: %s", p)
		}
	}

	r = f.check(fsck.Options{VerifyContent: true, Repair: true})
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
	sameFindings(t, "remaining", r.Remaining, []finding{{fsck.ProblemIncompleteManifest, string(f.m1), fsckApp}})
	for _, role := range []string{"gone", "short", "rot", "unrecorded"} {
		if !strings.Contains(r.Remaining[0].Detail, string(b[role])) {
			t.Errorf("incomplete-manifest does not name %s: %s", role, r.Remaining[0])
		}
	}

	again := f.check(fsck.Options{VerifyContent: true})
	if again.Inconsistent() != 0 || len(again.Orphans) != 0 {
		t.Fatalf("after repair: %d inconsistencies, orphans %v, problems %v", again.Inconsistent(), again.Orphans, again.Problems)
	}
	sameFindings(t, "after repair", again.Problems, []finding{{fsck.ProblemIncompleteManifest, string(f.m1), fsckApp}})
	if rerun := f.check(fsck.Options{VerifyContent: true, Repair: true}); len(rerun.Repaired) != 0 {
		t.Fatalf("a second repair did something: %v", rerun.Repaired)
	}

	// Corrupt and wrong-size content is in quarantine, as it was.
	for role, want := range map[string][]byte{"rot": rotted, "short": f.content[b["short"]][:10]} {
		d := b[role]
		got, err := os.ReadFile(filepath.Join(f.Dir, "quarantine", "sha256-"+d.Encoded()))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("quarantined %s: %v (content equal: %v)", role, err, bytes.Equal(got, want))
		}
	}
	if fi, err := os.Stat(filepath.Join(f.Dir, "quarantine")); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("quarantine directory: %v %v", fi, err)
	}
	// Removed blobs are unknown in every repository; intact content reads back.
	for _, repo := range []string{fsckApp, fsckOther} {
		if _, err := f.Svc.StatBlob(ctx, repo, b["rot"]); !errors.Is(err, storage.ErrBlobUnknown) {
			t.Errorf("quarantined blob still linked in %s: %v", repo, err)
		}
		if got := f.ReadBlob(repo, b["keep"]); !bytes.Equal(got, f.content[b["keep"]]) {
			t.Errorf("intact blob differs in %s", repo)
		}
	}
	for _, role := range []string{"gone", "short", "unrecorded"} {
		if _, err := f.Svc.StatBlob(ctx, fsckApp, b[role]); !errors.Is(err, storage.ErrBlobUnknown) {
			t.Errorf("%s still linked: %v", role, err)
		}
	}
	for _, d := range []digest.Digest{f.m1, f.m2, f.ref} {
		if _, body, err := f.Svc.GetManifest(ctx, fsckApp, string(d)); err != nil || !bytes.Equal(body, f.content[d]) {
			t.Errorf("manifest %s after repair: %v", d, err)
		}
	}
	if refs, err := f.Svc.Referrers(ctx, fsckApp, f.m2, ""); err != nil || len(refs) != 1 || refs[0].Digest != f.ref {
		t.Errorf("referrers of m2 after repair: %v %v", refs, err)
	}
	if _, err := f.Svc.StatManifest(ctx, fsckOther, "stale"); !errors.Is(err, storage.ErrManifestUnknown) {
		t.Errorf("tag of a dangling manifest survived: %v", err)
	}
	// Both ways a repair removes a tag keep the history invariant.
	for _, c := range []struct {
		repo, tag string
		was       digest.Digest
	}{{fsckApp, "ghost", ghost}, {fsckOther, "stale", noBody}} {
		moves, _, err := f.Svc.TagHistory(ctx, c.repo, c.tag, 0, 10)
		if err != nil || len(moves) != 1 || moves[0].Action != storage.MoveRepair || moves[0].Previous != c.was ||
			moves[0].Digest != "" || moves[0].Actor.Kind != storage.ActorSystem {
			t.Errorf("history of %s:%s after repair: %+v %v", c.repo, c.tag, moves, err)
		}
	}
	if up, err := f.Svc.UploadStatus(ctx, fsckApp, f.upload); err != nil || up.Offset != int64(len("half an upload")) {
		t.Errorf("live upload after repair: %+v %v", up, err)
	}
	if _, err := f.robots().VerifyRobot(ctx, "berth_nobody", time.Now()); !errors.Is(err, auth.ErrRobotUnknown) {
		t.Errorf("stale secret entry: %v", err)
	}
	// The dangling manifest left the search index with its record.
	if res, _, err := f.Svc.Search(ctx, storage.Query{Annotations: map[string]string{"org.opencontainers.image.revision": "lost"}, N: 10}); err != nil || len(res) != 0 {
		t.Errorf("search after repair: %v %v", res, err)
	}
}

func TestCheckReportJSON(t *testing.T) {
	f := newFsckStore(t, clienttest.Options{})
	f.write("uploads/stale", []byte("partial"))
	if err := os.Remove(f.blobPath(f.blobs["gone"])); err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(f.check(fsck.Options{}))
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Inconsistencies int            `json:"inconsistencies"`
		Blobs           int            `json:"blobs"`
		Problems        []fsck.Problem `json:"problems"`
		Orphans         []fsck.Problem `json:"orphans"`
		Repaired        []fsck.Repair  `json:"repaired"`
	}
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	if got.Inconsistencies != 1 || got.Blobs != len(f.content) || len(got.Problems) != 1 || got.Problems[0].Kind != fsck.ProblemMissing ||
		got.Problems[0].Digest != string(f.blobs["gone"]) || got.Problems[0].Harmless ||
		len(got.Orphans) != 1 || !got.Orphans[0].Harmless || got.Orphans[0].Path != "stale" || got.Repaired == nil {
		t.Fatalf("report JSON: %s", raw)
	}
	// The remaining problems are only written after a repair.
	if strings.Contains(string(raw), `"remaining"`) {
		t.Fatalf("report JSON of a check has remaining: %s", raw)
	}
}

// Content in flight of a dead process, under tmp/, is cleared when the
// store opens, so fsck has nothing to report about it. (Berth's first
// fsck reported it as an orphan-temp; that kind is gone.)
func TestOpenClearsTemporaryContent(t *testing.T) {
	f := newFsckStore(t, clienttest.Options{})
	f.write("tmp/content-stale", []byte("partial"))
	f.Reopen()
	if entries, err := os.ReadDir(filepath.Join(f.Dir, "tmp")); err != nil || len(entries) != 0 {
		t.Fatalf("tmp/ after open: %v %v", entries, err)
	}
	if r := f.check(fsck.Options{}); len(r.Problems)+len(r.Orphans) != 0 {
		t.Fatalf("check: %+v", r)
	}
}

// flakyFS is the operating system's file system, with renames that fail
// on demand.
type flakyFS struct {
	blobfs.OS
	mu         sync.Mutex
	failRename bool
}

func (f *flakyFS) fail(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failRename = on
}

func (f *flakyFS) Rename(oldpath, newpath string) error {
	f.mu.Lock()
	fail := f.failRename
	f.mu.Unlock()
	if fail {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: syscall.EIO}
	}
	return f.OS.Rename(oldpath, newpath)
}

// A repair cut off midway leaves a store that the next repair finishes.
func TestCheckRepairInterrupted(t *testing.T) {
	fsys := &flakyFS{}
	f := newFsckStore(t, clienttest.Options{FS: fsys})
	d := f.blobs["rot"]
	if err := os.WriteFile(f.blobPath(d), bytes.Repeat([]byte{0}, len(f.content[d])), 0o600); err != nil {
		t.Fatal(err)
	}
	fsys.fail(true)
	r, err := fsck.Check(context.Background(), f.Svc, f.Bolt, fsck.Options{VerifyContent: true, Repair: true})
	if !errors.Is(err, syscall.EIO) || r == nil || len(r.Problems) != 1 || len(r.Repaired) != 0 {
		t.Fatalf("failed repair: err=%v report=%+v", err, r)
	}
	fsys.fail(false)
	// Nothing changed in the index: the blob is still linked.
	if _, err := f.Svc.StatBlob(context.Background(), fsckOther, d); err != nil {
		t.Fatalf("a failed repair changed the index: %v", err)
	}

	// As if the process died after moving the content, before the index
	// transaction: the record now names absent content.
	if err := os.MkdirAll(filepath.Join(f.Dir, "quarantine"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(f.blobPath(d), filepath.Join(f.Dir, "quarantine", "sha256-"+d.Encoded())); err != nil {
		t.Fatal(err)
	}
	r = f.check(fsck.Options{VerifyContent: true, Repair: true})
	sameFindings(t, "after an interrupted repair", r.Problems, []finding{{fsck.ProblemMissing, string(d), ""}})
	if r.Inconsistent() != 0 {
		t.Fatalf("inconsistencies remain: %v", r.Remaining)
	}
	if _, err := f.Svc.StatBlob(context.Background(), fsckOther, d); !errors.Is(err, storage.ErrBlobUnknown) {
		t.Fatalf("link to the removed blob survived: %v", err)
	}
}

// Symbolic links and other files that are not regular are reported, never
// followed, and never removed.
func TestCheckLeavesSymlinksAlone(t *testing.T) {
	f := newFsckStore(t, clienttest.Options{})
	target := filepath.Join(t.TempDir(), "elsewhere")
	if err := os.WriteFile(target, []byte("not the store's"), 0o600); err != nil {
		t.Fatal(err)
	}
	stray := digest.Digest("sha256:ab" + strings.Repeat("0", 62))
	link := f.blobPath(stray)
	if err := os.MkdirAll(filepath.Dir(link), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, link); err != nil {
		t.Fatalf("symlink: %v", err)
	}
	// A recorded blob replaced by a link to a file of the right size.
	keep := f.blobs["keep"]
	if err := os.WriteFile(target, f.content[keep], 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(f.blobPath(keep)); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, f.blobPath(keep)); err != nil {
		t.Fatal(err)
	}
	r := f.check(fsck.Options{VerifyContent: true, Repair: true})
	sameFindings(t, "problems", r.Problems, []finding{{fsck.ProblemMissing, string(keep), ""}})
	sameFindings(t, "orphans", r.Orphans, []finding{{fsck.OrphanBlob, string(stray), ""}})
	if !strings.Contains(r.Orphans[0].Detail, "not a regular file") || !strings.Contains(r.Orphans[0].Detail, "left in place") {
		t.Fatalf("symlink orphan: %s", r.Orphans[0])
	}
	if !strings.Contains(r.Problems[0].Detail, "symbolic link") {
		t.Fatalf("link in place of a blob: %s", r.Problems[0])
	}
	for _, fix := range r.Repaired {
		if fix.Kind == fsck.OrphanBlob {
			t.Fatalf("repair acted on the symlink orphan: %s", fix.Action)
		}
	}
	if r.Inconsistent() != 0 {
		t.Fatalf("inconsistencies remain: %v", r.Remaining)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("orphan symlink removed: %v", err)
	}
	if fi, err := os.Lstat(filepath.Join(f.Dir, "quarantine", "sha256-"+keep.Encoded())); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("link in place of a blob not quarantined as a link: %v", err)
	}
	if got, err := os.ReadFile(target); err != nil || !bytes.Equal(got, f.content[keep]) {
		t.Fatalf("link target touched: %v", err)
	}
}

// A manifest whose content is lost goes from every repository that holds
// it, with its tags (recorded as repairs) and its search entries; an index
// that references it is left, incomplete.
func TestCheckRepairsLostManifest(t *testing.T) {
	ctx := context.Background()
	s := clienttest.Open(t, "", clienttest.Options{})
	f := &fsckStore{Store: s, t: t}
	var x digest.Digest
	for _, repo := range []string{"a", "b"} {
		cfg := s.PutBlob(repo, ocispec.MediaTypeImageConfig, []byte(`{}`))
		x, _ = s.PutManifest(repo, ocispec.Manifest{Config: cfg, Layers: []ocispec.Descriptor{},
			Annotations: map[string]string{"org.example.lost": "yes"}}, "latest")
	}
	idx, _ := s.PutIndex("a", []ocispec.Descriptor{s.Descriptor("a", x)}, "multi")
	if err := os.Remove(f.blobPath(x)); err != nil {
		t.Fatal(err)
	}
	r := f.check(fsck.Options{Repair: true})
	sameFindings(t, "problems", r.Problems, []finding{{fsck.ProblemMissing, string(x), ""}})
	if len(r.Repaired) != 1 || !strings.Contains(r.Repaired[0].Action, "2 manifest records and 2 tags") {
		t.Fatalf("repairs %+v", r.Repaired)
	}
	sameFindings(t, "remaining", r.Remaining, []finding{{fsck.ProblemIncompleteManifest, string(idx), "a"}})
	for _, repo := range []string{"a", "b"} {
		if _, err := s.Svc.StatManifest(ctx, repo, string(x)); !errors.Is(err, storage.ErrManifestUnknown) {
			t.Errorf("lost manifest in %s: %v", repo, err)
		}
		moves, _, err := s.Svc.TagHistory(ctx, repo, "latest", 0, 10)
		if err != nil || len(moves) != 2 || moves[0].Action != storage.MoveRepair || moves[0].Previous != x {
			t.Errorf("history of %s:latest: %+v %v", repo, moves, err)
		}
	}
	if res, _, err := s.Svc.Search(ctx, storage.Query{Annotations: map[string]string{"org.example.lost": "yes"}, N: 10}); err != nil || len(res) != 0 {
		t.Errorf("search for the lost manifest: %v %v", res, err)
	}
	if _, err := s.Svc.StatManifest(ctx, "a", "multi"); err != nil {
		t.Errorf("the index referencing it: %v", err)
	}
}
