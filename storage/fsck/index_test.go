package fsck_test

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	bbolt "go.etcd.io/bbolt"

	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/fsck"
	"github.com/berth-registry/berth/storage/gc"
	"github.com/berth-registry/berth/storage/internal/clienttest"
	"github.com/berth-registry/berth/storage/meta"
	"github.com/berth-registry/berth/storage/meta/bolt"
)

// The derived indexes of the bolt backend (search/, uses/, tagged/; see
// storage/meta/bolt/schema.go for their keys) are checked and rebuilt by
// fsck through meta.Checker. These tests break them in the bbolt file,
// deleting entries the records make and adding entries they do not, and
// show both that the breakage misleads the store and that a repair
// mends it.

// indexWorld is a repository with two images, x (tagged v1, annotated
// team=red) and y (annotated team=blue).
type indexWorld struct {
	*fsckStore
	x, y  digest.Digest
	layer digest.Digest // x's own layer
}

func newIndexWorld(t *testing.T) *indexWorld {
	t.Helper()
	f := &fsckStore{Store: clienttest.Open(t, "", clienttest.Options{}), t: t}
	w := &indexWorld{fsckStore: f}
	image := func(seed, team string, tags ...string) (digest.Digest, digest.Digest) {
		cfg := f.PutBlob("app", ocispec.MediaTypeImageConfig, []byte(`{"config":{"Labels":{"seed":"`+seed+`"}}}`))
		layer := f.PutBlob("app", ocispec.MediaTypeImageLayer, []byte("layer of "+seed))
		d, _ := f.PutManifest("app", ocispec.Manifest{Config: cfg, Layers: []ocispec.Descriptor{layer},
			Annotations: map[string]string{"org.example.team": team}}, tags...)
		return d, layer.Digest
	}
	w.x, w.layer = image("x", "red", "v1")
	w.y, _ = image("y", "blue")
	if r := f.check(fsck.Options{}); len(r.Problems)+len(r.Orphans) != 0 {
		t.Fatalf("a fresh store has problems: %+v", r)
	}
	return w
}

// search returns the digests a search finds.
func (w *indexWorld) search(q storage.Query) []digest.Digest {
	w.t.Helper()
	q.N = 10
	res, _, err := w.Svc.Search(context.Background(), q)
	if err != nil {
		w.t.Fatal(err)
	}
	var out []digest.Digest
	for _, r := range res {
		out = append(out, r.Digest)
	}
	return out
}

// backendFindings returns the problems of kind, checking that they are all
// the report has.
func backendFindings(t *testing.T, r *fsck.Report, kind string) []fsck.Problem {
	t.Helper()
	var out []fsck.Problem
	for _, p := range r.Problems {
		if p.Kind != kind || p.Harmless {
			t.Errorf("unexpected problem %s", p)
			continue
		}
		out = append(out, p)
	}
	if len(r.Orphans) != 0 {
		t.Errorf("orphans %v", r.Orphans)
	}
	return out
}

// repairOnly repairs the store and checks that every problem found was
// repaired and nothing remains.
func (w *indexWorld) repairOnly(want int) {
	w.t.Helper()
	r := w.check(fsck.Options{Repair: true})
	if len(r.Problems) != want || len(r.Repaired) != want || len(r.Remaining) != 0 || r.Inconsistent() != 0 {
		for _, fix := range r.Repaired {
			w.t.Logf("repaired %s: %s", fix.Problem, fix.Action)
		}
		w.t.Fatalf("repair: %d problems, %d repairs (want %d each), remaining %v", len(r.Problems), len(r.Repaired), want, r.Remaining)
	}
	for _, fix := range r.Repaired {
		if fix.Action == "" {
			w.t.Errorf("repair of %s says nothing", fix.Problem)
		}
	}
	if again := w.check(fsck.Options{}); len(again.Problems)+len(again.Orphans) != 0 {
		w.t.Fatalf("after repair: %+v", again)
	}
}

// suffixed returns the keys of b that end with suffix.
func suffixed(b *bbolt.Bucket, suffix []byte) [][]byte {
	var out [][]byte
	_ = b.ForEach(func(k, _ []byte) error {
		if bytes.HasSuffix(k, suffix) {
			out = append(out, bytes.Clone(k))
		}
		return nil
	})
	return out
}

func TestCheckRebuildsSearchIndex(t *testing.T) {
	w := newIndexWorld(t)
	red := storage.Query{Annotations: map[string]string{"org.example.team": "red"}}
	seedX := storage.Query{Labels: map[string]string{"seed": "x"}}
	if got := w.search(red); !slices.Equal(got, []digest.Digest{w.x}) {
		t.Fatalf("search before the damage: %v", got)
	}
	// x loses its entries (its annotation and its label); y gains x's
	// annotation, which it does not have.
	var lost [][]byte
	w.raw(func(tx *bbolt.Tx) error {
		search := tx.Bucket([]byte("search"))
		lost = suffixed(search, []byte("\x00"+w.x))
		for _, k := range lost {
			if err := search.Delete(k); err != nil {
				return err
			}
		}
		for _, k := range lost {
			if k[0] == 'a' {
				forged := append(bytes.TrimSuffix(bytes.Clone(k), []byte(w.x)), w.y...)
				if err := search.Put(forged, nil); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if len(lost) != 2 {
		t.Fatalf("x had %d search entries, want its annotation and its label", len(lost))
	}
	// The damage misleads the search.
	if got := w.search(red); slices.Contains(got, w.x) {
		t.Fatalf("search with x's entries gone still finds x: %v", got)
	}
	if got := w.search(seedX); len(got) != 0 {
		t.Fatalf("search by x's label with its entry gone: %v", got)
	}

	r := w.check(fsck.Options{})
	problems := backendFindings(t, r, bolt.FindingSearchIndex)
	var missing, stale int
	for _, p := range problems {
		switch {
		case p.Digest == string(w.x) && p.Repo == "app":
			missing++
		case p.Digest == string(w.y) && p.Repo == "app":
			stale++
		default:
			t.Errorf("search-index problem %s", p)
		}
	}
	if missing != 2 || stale != 1 || r.Inconsistent() != 3 {
		t.Fatalf("search-index problems %v: want 2 missing entries of x and 1 stale of y", problems)
	}
	w.repairOnly(3)
	if got := w.search(red); !slices.Equal(got, []digest.Digest{w.x}) {
		t.Fatalf("search for red after repair: %v", got)
	}
	if got := w.search(seedX); !slices.Equal(got, []digest.Digest{w.x}) {
		t.Fatalf("search for x's label after repair: %v", got)
	}
	if got := w.search(storage.Query{Annotations: map[string]string{"org.example.team": "blue"}}); !slices.Equal(got, []digest.Digest{w.y}) {
		t.Fatalf("search for blue after repair: %v", got)
	}
}

func TestCheckRebuildsUseIndex(t *testing.T) {
	ctx := context.Background()
	w := newIndexWorld(t)
	ghost := digest.FromString("linked nowhere")
	// Old enough for garbage collection (ageing rewrites the records, so
	// it comes before the damage).
	w.Age(2 * time.Hour)
	// x's layer loses its uses in app (its link, and x's reference to
	// it); a digest linked nowhere gains a link.
	var lost [][]byte
	w.raw(func(tx *bbolt.Tx) error {
		uses := tx.Bucket([]byte("uses"))
		prefix := []byte(string(w.layer) + "\x00app\x00")
		_ = uses.ForEach(func(k, _ []byte) error {
			if bytes.HasPrefix(k, prefix) {
				lost = append(lost, bytes.Clone(k))
			}
			return nil
		})
		for _, k := range lost {
			if err := uses.Delete(k); err != nil {
				return err
			}
		}
		return uses.Put([]byte(string(ghost)+"\x00app\x00l"), nil)
	})
	if len(lost) != 2 {
		t.Fatalf("x's layer had %d uses in app, want its link and x's reference", len(lost))
	}
	// The damage would let garbage collection take a layer x needs.
	if rep, err := gc.Collect(ctx, w.Svc, gc.Options{Grace: time.Hour, DryRun: true}); err != nil || rep.LinksRemoved != 1 || rep.BlobsRemoved != 1 {
		t.Fatalf("dry-run gc over the damaged index: %+v %v; want x's layer planned away", rep, err)
	}

	r := w.check(fsck.Options{})
	problems := backendFindings(t, r, bolt.FindingUseIndex)
	var missing, stale int
	for _, p := range problems {
		switch p.Digest {
		case string(w.layer):
			missing++
		case string(ghost):
			stale++
		default:
			t.Errorf("use-index problem %s", p)
		}
	}
	if missing != 2 || stale != 1 {
		t.Fatalf("use-index problems %v: want 2 missing uses of x's layer and 1 stale", problems)
	}
	w.repairOnly(3)
	var uses []meta.Use
	err := w.Svc.View(ctx, func(tx meta.Tx) error {
		uses = uses[:0]
		return tx.Uses(w.layer, "", func(u meta.Use) error { uses = append(uses, u); return nil })
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []meta.Use{{Repo: "app", Kind: meta.UseLink}, {Repo: "app", Kind: meta.UseReference, Manifest: w.x}}
	if !slices.Equal(uses, want) {
		t.Fatalf("uses of x's layer after repair: %+v, want %+v", uses, want)
	}
	if rep, err := gc.Collect(ctx, w.Svc, gc.Options{Grace: time.Hour}); err != nil || rep.LinksRemoved+rep.BlobsRemoved != 0 {
		t.Fatalf("gc after repair: %+v %v", rep, err)
	}
	w.PullAll("app", "v1")
}

func TestCheckRebuildsTagIndex(t *testing.T) {
	ctx := context.Background()
	w := newIndexWorld(t)
	tagsOf := func(d digest.Digest) []string {
		var tags []string
		err := w.Svc.View(ctx, func(tx meta.Tx) error {
			var err error
			tags, err = tx.TagsOf("app", d)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return tags
	}
	// v1 loses its entry; y gains a tag it does not have.
	w.raw(func(tx *bbolt.Tx) error {
		tagged := tx.Bucket([]byte("tagged"))
		key := []byte("app\x00" + string(w.x) + "\x00v1")
		if tagged.Get(key) == nil {
			t.Error("no tagged/ entry for v1: the test breaks nothing")
		}
		return errors.Join(tagged.Delete(key), tagged.Put([]byte("app\x00"+string(w.y)+"\x00ghost"), nil))
	})
	if got := tagsOf(w.x); len(got) != 0 {
		t.Fatalf("tags of x with the entry gone: %v", got)
	}
	r := w.check(fsck.Options{})
	problems := backendFindings(t, r, bolt.FindingTagIndex)
	if len(problems) != 2 {
		t.Fatalf("tag-index problems %v, want 2", problems)
	}
	for _, p := range problems {
		if !(p.Tag == "v1" && p.Digest == string(w.x)) && !(p.Tag == "ghost" && p.Digest == string(w.y)) {
			t.Errorf("tag-index problem %s", p)
		}
	}
	w.repairOnly(2)
	if got := tagsOf(w.x); !slices.Equal(got, []string{"v1"}) {
		t.Fatalf("tags of x after repair: %v", got)
	}
	if got := tagsOf(w.y); len(got) != 0 {
		t.Fatalf("tags of y after repair: %v", got)
	}
	// Deleting x takes its tag with it again.
	if err := w.Svc.DeleteManifest(ctx, "app", w.x); err != nil {
		t.Fatal(err)
	}
	if tags, _, err := w.Svc.ListTags(ctx, "app", "", 10); err != nil || len(tags) != 0 {
		t.Fatalf("tags after deleting x: %v %v", tags, err)
	}
	if r := w.check(fsck.Options{}); len(r.Problems) != 0 {
		t.Fatalf("check after deleting x: %v", r.Problems)
	}
}
