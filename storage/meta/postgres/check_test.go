package postgres

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/storage"
	blobfs "github.com/berth-registry/berth/storage/blob/fs"
	"github.com/berth-registry/berth/storage/fsck"
	"github.com/berth-registry/berth/storage/manifest"
	"github.com/berth-registry/berth/storage/meta"
)

// checkWorld is a store on this index and the file blob store, with one
// repository of two images: x (tagged v1, annotated team=red, a referrer
// of y) and y (annotated team=blue); and a connection to its database, to
// break it as a bug or a hand could.
type checkWorld struct {
	t     *testing.T
	index *Store
	svc   *storage.Service
	db    *pgx.Conn
	x, y  digest.Digest
	layer digest.Digest // x's own layer
}

func newCheckWorld(t *testing.T) *checkWorld {
	dsn := pg.Database(t)
	w := &checkWorld{t: t, index: openDSN(t, dsn)}
	blobs, err := blobfs.Open(context.Background(), t.TempDir(), blobfs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	w.svc = storage.New(w.index, blobs, storage.Options{})
	w.db, err = pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.db.Close(context.Background()) })
	put := func(mediaType string, b []byte) ocispec.Descriptor {
		d := digest.FromBytes(b)
		if _, err := w.svc.PutBlob(context.Background(), "app", d, bytes.NewReader(b), int64(len(b))); err != nil {
			t.Fatal(err)
		}
		return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(b))}
	}
	image := func(seed, team string, subject *ocispec.Descriptor, tags ...string) (digest.Digest, ocispec.Descriptor, digest.Digest) {
		cfg := put(ocispec.MediaTypeImageConfig, []byte(`{"config":{"Labels":{"seed":"`+seed+`"}}}`))
		layer := put(ocispec.MediaTypeImageLayer, []byte("layer of "+seed))
		body, err := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
			Config: cfg, Layers: []ocispec.Descriptor{layer}, Subject: subject, Annotations: map[string]string{"org.example.team": team}})
		if err != nil {
			t.Fatal(err)
		}
		parsed, err := manifest.Parse("", body)
		if err != nil {
			t.Fatal(err)
		}
		d, err := w.svc.PutManifest(context.Background(), "app", "", body, parsed, tags)
		if err != nil {
			t.Fatal(err)
		}
		return d, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: d, Size: int64(len(body))}, layer.Digest
	}
	var yDesc ocispec.Descriptor
	w.y, yDesc, _ = image("y", "blue", nil)
	w.x, _, w.layer = image("x", "red", &yDesc, "v1")
	if r := w.check(fsck.Options{}); len(r.Problems)+len(r.Orphans) != 0 {
		t.Fatalf("a fresh store has problems: %+v", r)
	}
	return w
}

func (w *checkWorld) check(opts fsck.Options) *fsck.Report {
	w.t.Helper()
	r, err := fsck.Check(context.Background(), w.svc, w.index, opts)
	if err != nil {
		w.t.Fatalf("fsck: %v", err)
	}
	return r
}

func (w *checkWorld) sql(q string, args ...any) {
	w.t.Helper()
	if _, err := w.db.Exec(context.Background(), q, args...); err != nil {
		w.t.Fatalf("%s: %v", q, err)
	}
}

func (w *checkWorld) search(q storage.Query) []digest.Digest {
	w.t.Helper()
	q.N = 10
	res, _, err := w.svc.Search(context.Background(), q)
	if err != nil {
		w.t.Fatal(err)
	}
	var out []digest.Digest
	for _, r := range res {
		out = append(out, r.Digest)
	}
	return out
}

// kinds counts the problems of r by kind.
func kinds(r *fsck.Report) map[string]int {
	out := map[string]int{}
	for _, p := range r.Problems {
		out[p.Kind]++
	}
	return out
}

// repairAll repairs the store, checking that each of the want problems
// was repaired with an action and that nothing remains.
func (w *checkWorld) repairAll(want int) {
	w.t.Helper()
	r := w.check(fsck.Options{Repair: true})
	if len(r.Problems) != want || len(r.Repaired) != want || len(r.Remaining) != 0 {
		w.t.Fatalf("repair: %d problems, %d repairs (want %d each), remaining %v", len(r.Problems), len(r.Repaired), want, r.Remaining)
	}
	for _, fix := range r.Repaired {
		if fix.Action == "" {
			w.t.Errorf("repair of %s says nothing", fix.Problem)
		}
	}
	if again := w.check(fsck.Options{}); len(again.Problems)+len(again.Orphans) != 0 {
		w.t.Fatalf("after repair: %+v", again.Problems)
	}
}

// TestCheckRebuildsDerivedRows: search pairs, manifest references and the
// subject column lost or forged are found by fsck, mislead the store
// until then, and are rebuilt by its repair.
func TestCheckRebuildsDerivedRows(t *testing.T) {
	w := newCheckWorld(t)
	red := storage.Query{Annotations: map[string]string{"org.example.team": "red"}}
	// x loses its search pairs and its references, and its subject; y
	// gains x's annotation and a reference it does not make.
	w.sql("DELETE FROM search_pairs WHERE digest = $1", w.x)
	w.sql("INSERT INTO search_pairs (kind, key, value, repo, digest) VALUES ('a', 'org.example.team', 'red', 'app', $1)", w.y)
	w.sql("DELETE FROM manifest_refs WHERE manifest = $1", w.x)
	w.sql("INSERT INTO manifest_refs (repo, manifest, ref) VALUES ('app', $1, $2)", w.y, w.layer)
	w.sql("UPDATE manifests SET subject = NULL WHERE digest = $1", w.x)

	if got := w.search(red); slices.Contains(got, w.x) {
		t.Fatalf("search with x's pairs gone still finds x: %v", got)
	}
	r := w.check(fsck.Options{})
	got := kinds(r)
	// x: 2 search pairs (annotation, label) and 2 references (config,
	// layer) missing, and its subject; y: 1 pair, 1 reference stale.
	want := map[string]int{FindingSearchIndex: 3, FindingUseIndex: 3, FindingDanglingReferrer: 1}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("%d problems of kind %s, want %d: %v", got[k], k, n, r.Problems)
		}
	}
	if len(r.Problems) != 7 {
		t.Fatalf("problems %v", r.Problems)
	}
	w.repairAll(7)
	if got := w.search(red); !slices.Equal(got, []digest.Digest{w.x}) {
		t.Fatalf("search for red after repair: %v", got)
	}
	if err := w.index.View(context.Background(), func(tx meta.Tx) error {
		n := 0
		err := tx.Referrers("app", w.y, func(ocispec.Descriptor) error { n++; return nil })
		if n != 1 {
			t.Errorf("y has %d referrers after repair, want x", n)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

// TestCheckReportsBadRecords: a record that does not decode and a digest
// key that is not a digest are reported, never repaired.
func TestCheckReportsBadRecords(t *testing.T) {
	w := newCheckWorld(t)
	w.sql(`INSERT INTO sync_runs (rule, rec) VALUES ('mirror', '{"tags": "many"}')`)
	w.sql(`UPDATE tags SET digest = 'not-a-digest' WHERE tag = 'v1'`)
	r := w.check(fsck.Options{Repair: true})
	var bad int
	for _, p := range r.Problems {
		if p.Kind == FindingBadRecord {
			bad++
		}
	}
	if bad != 2 {
		t.Fatalf("%d bad records found, want the sync run and the tag: %v", bad, r.Problems)
	}
	for _, fix := range r.Repaired {
		if fix.Kind == FindingBadRecord {
			t.Errorf("a bad record was repaired: %s", fix.Action)
		}
	}
}
