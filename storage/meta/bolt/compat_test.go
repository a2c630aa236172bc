package bolt

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	bolt "go.etcd.io/bbolt"

	"github.com/berth-registry/berth/storage/meta"
)

// The digests of the hand-made schema 1 store.
var (
	v1Config  = digest.FromString("config")
	v1Layer   = digest.FromString("layer")
	v1Image   = digest.FromString("image manifest")
	v1Sig     = digest.FromString("signature manifest")
	v1SigBlob = digest.FromString("signature blob")
	v1Lib     = digest.FromString("lib manifest")
)

const (
	v1Time     = "2024-01-02T03:04:05Z"
	ociImage   = "application/vnd.oci.image.manifest.v1+json"
	robotHash  = "9f86d081884c7d659a2feb1a59f1a0f9cbaf1e6e7a4a15c2e1fcda0e8e02e3ee"
	robotHash2 = "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752"
)

// v1Records is a store of schema 1 as Berth before the index seam wrote
// it: the keys and JSON records byte for byte, as bucket path -> key ->
// value. History keys are 8-byte sequence numbers.
func v1Records(withSearch bool) map[string]map[string]string {
	imageRec := `{"mediaType":"` + ociImage + `","size":500,"annotations":{"org.opencontainers.image.title":"web"},` +
		`"references":["` + string(v1Config) + `","` + string(v1Layer) + `"],"created":"` + v1Time + `",` +
		`"labels":{"team":"a"},"configCreated":"2023-12-31T00:00:00Z"}`
	sigRec := `{"mediaType":"` + ociImage + `","size":300,"artifactType":"application/vnd.example.sig",` +
		`"subject":{"mediaType":"` + ociImage + `","digest":"` + string(v1Image) + `","size":500},` +
		`"references":["` + string(v1SigBlob) + `"],"created":"` + v1Time + `"}`
	sigDesc := `{"mediaType":"` + ociImage + `","digest":"` + string(v1Sig) + `","size":300,"artifactType":"application/vnd.example.sig"}`
	libRec := `{"mediaType":"` + ociImage + `","size":200,"references":["` + string(v1Layer) + `"],"created":"` + v1Time + `"}`
	link := `{"linked":"` + v1Time + `"}`
	blob := func(size int) string { return fmt.Sprintf(`{"size":%d,"created":"%s"}`, size, v1Time) }
	recs := map[string]map[string]string{
		"meta": {"schema": "1"},
		"blobs": {
			string(v1Config): blob(100), string(v1Layer): blob(1000), string(v1Image): blob(500),
			string(v1Sig): blob(300), string(v1SigBlob): blob(30), string(v1Lib): blob(200),
		},
		"uploads":                                {"0123456789abcdef0123456789abcdef": `{"repo":"app","algorithm":"sha256","started":"` + v1Time + `"}`},
		"repos/app/blobs":                        {string(v1Config): link, string(v1Layer): link, string(v1SigBlob): link},
		"repos/app/manifests":                    {string(v1Image): imageRec, string(v1Sig): sigRec},
		"repos/app/tags":                         {"latest": string(v1Image), "v1": string(v1Image), "sig": string(v1Sig)},
		"repos/app/referrers/" + string(v1Image): {string(v1Sig): sigDesc},
		"repos/lib/blobs":                        {string(v1Layer): link},
		"repos/lib/manifests":                    {string(v1Lib): libRec},
		"repos/lib/tags":                         {"stable": string(v1Lib)},
		"repos/lib/referrers":                    {},
		"history/app/latest": {
			seq(1): `{"seq":1,"time":"` + v1Time + `","digest":"` + string(v1Image) + `","action":"push","actor":{"kind":"user","name":"alice","address":"192.0.2.1"}}`,
		},
		"robots": {"ci": `{"scopes":["repository:app:pull"],"created":"` + v1Time + `","expires":"2030-01-01T00:00:00Z","hash":"` + robotHash + `"}`,
			"old": `{"scopes":["repository:lib:pull"],"created":"` + v1Time + `","expires":"2030-01-01T00:00:00Z","revoked":"` + v1Time + `","rotated":"` + v1Time + `","hash":"` + robotHash2 + `"}`},
		"robotSecrets": {robotHash: "ci", robotHash2: "old"},
	}
	if withSearch {
		recs["search"] = map[string]string{
			"a" + "org.opencontainers.image.title\x00web\x00app\x00" + string(v1Image): "",
			"l" + "team\x00a\x00app\x00" + string(v1Image):                             "",
		}
	}
	return recs
}

func seq(n uint64) string { return string(binary.BigEndian.AppendUint64(nil, n)) }

// writeRaw writes records (bucket path -> key -> value) into a new bbolt
// file, creating the buckets of each path; the history bucket of a tag
// gets the sequence of its last move, as NextSequence left it.
func writeRaw(t *testing.T, path string, records map[string]map[string]string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		for _, p := range slices.Sorted(maps.Keys(records)) {
			names := splitPath(p)
			b, err := tx.CreateBucketIfNotExists([]byte(names[0]))
			if err != nil {
				return err
			}
			for _, n := range names[1:] {
				if b, err = b.CreateBucketIfNotExists([]byte(n)); err != nil {
					return err
				}
			}
			for k, v := range records[p] {
				if err := b.Put([]byte(k), []byte(v)); err != nil {
					return err
				}
			}
			if names[0] == "history" {
				if err := b.SetSequence(uint64(len(records[p]))); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// splitPath splits a bucket path; a digest (with its colon) is one name.
func splitPath(p string) []string { return strings.Split(p, "/") }

// dump reads every record of the file under the given top buckets, as
// bucket path -> key -> value; nested buckets are walked.
func dump(t *testing.T, db *bolt.DB, tops ...string) map[string]map[string]string {
	t.Helper()
	out := map[string]map[string]string{}
	var walk func(path string, b *bolt.Bucket)
	walk = func(path string, b *bolt.Bucket) {
		if out[path] == nil {
			out[path] = map[string]string{}
		}
		_ = b.ForEach(func(k, v []byte) error {
			if v == nil {
				walk(path+"/"+string(k), b.Bucket(k))
				return nil
			}
			out[path][string(k)] = string(v)
			return nil
		})
	}
	err := db.View(func(tx *bolt.Tx) error {
		for _, top := range tops {
			if b := tx.Bucket([]byte(top)); b != nil {
				walk(top, b)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// recordBuckets are the buckets of records, which an upgrade must leave
// byte for byte as they were.
var recordBuckets = []string{"blobs", "uploads", "repos", "history", "robots", "robotSecrets"}

func TestOpenUpgradesSchema1(t *testing.T) {
	for _, withSearch := range []bool{true, false} {
		t.Run(fmt.Sprintf("search=%v", withSearch), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "index.db")
			writeRaw(t, path, v1Records(withSearch))
			s, err := Open(path, Options{})
			if err != nil {
				t.Fatalf("open a schema 1 store: %v", err)
			}
			defer s.Close()
			want := v1Records(withSearch)
			got := dump(t, s.db, recordBuckets...)
			paths := map[string]bool{}
			for p := range got {
				paths[p] = true
			}
			for p := range want {
				paths[p] = true
			}
			for p := range paths {
				if p != "meta" && p != "search" && !maps.Equal(got[p], want[p]) {
					t.Errorf("bucket %s changed by the upgrade:\n got %q\nwant %q", p, got[p], want[p])
				}
			}
			if v := dump(t, s.db, "meta")["meta"]["schema"]; v != SchemaVersion {
				t.Errorf("schema after the upgrade = %q, want %q", v, SchemaVersion)
			}
			// The search index is today's, byte for byte, built or kept.
			search := dump(t, s.db, "search")["search"]
			if !maps.Equal(search, v1Records(true)["search"]) {
				t.Errorf("search/ after opening = %q, want %q", search, v1Records(true)["search"])
			}
			checkV1Reads(t, s)
			checkClean(t, s)

			// The derived buckets are built once: reopening changes nothing.
			derived := dump(t, s.db, "uses", "tagged", "search")
			s2 := reopen(t, s).(*Store)
			defer s2.Close()
			if again := dump(t, s2.db, "uses", "tagged", "search"); !maps.EqualFunc(again, derived, maps.Equal) {
				t.Errorf("reopening an upgraded store changed its derived buckets:\n got %q\nwant %q", again, derived)
			}
			// The history's numbering goes on from the old sequence.
			err = s2.Update(context.Background(), func(tx meta.Tx) error {
				m, err := tx.AppendMove("app", "latest", meta.Move{Time: time.Now(), Previous: v1Image, Action: "delete"})
				if err == nil && m.Seq != 2 {
					t.Errorf("first move after the upgrade numbered %d, want 2", m.Seq)
				}
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

// checkV1Reads checks that the hand-made schema 1 store reads as it
// should, derived indexes included.
func checkV1Reads(t *testing.T, s *Store) {
	t.Helper()
	err := s.View(context.Background(), func(tx meta.Tx) error {
		m, ok, err := tx.Manifest("app", v1Image)
		if err != nil || !ok {
			t.Fatalf("Manifest of the image = %v, %v", ok, err)
		}
		cc := time.Date(2023, 12, 31, 0, 0, 0, 0, time.UTC)
		if m.MediaType != ociImage || m.Size != 500 || m.Annotations["org.opencontainers.image.title"] != "web" ||
			!slices.Equal(m.References, []digest.Digest{v1Config, v1Layer}) || m.Labels["team"] != "a" ||
			m.ConfigCreated == nil || !m.ConfigCreated.Equal(cc) || m.Created.Format(time.RFC3339) != v1Time {
			t.Errorf("Manifest of the image = %+v", m)
		}
		if b, ok, _ := tx.Blob(v1Layer); !ok || b.Size != 1000 {
			t.Errorf("Blob of the layer = %+v, %v", b, ok)
		}
		collect := func(d digest.Digest, repo string) []string {
			var out []string
			if err := tx.Uses(d, repo, func(u meta.Use) error {
				out = append(out, fmt.Sprintf("%s %c %s", u.Repo, u.Kind, u.Manifest))
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			return out
		}
		for _, c := range []struct {
			d    digest.Digest
			repo string
			want []string
		}{
			{v1Layer, "", []string{"app l ", "app r " + string(v1Image), "lib l ", "lib r " + string(v1Lib)}},
			{v1Layer, "lib", []string{"lib l ", "lib r " + string(v1Lib)}},
			{v1Config, "", []string{"app l ", "app r " + string(v1Image)}},
			{v1Image, "", []string{"app m "}},
			{v1SigBlob, "", []string{"app l ", "app r " + string(v1Sig)}},
		} {
			if got := collect(c.d, c.repo); !slices.Equal(got, c.want) {
				t.Errorf("Uses(%.19s, %q) = %q, want %q", c.d, c.repo, got, c.want)
			}
		}
		for _, c := range []struct {
			repo string
			d    digest.Digest
			want []string
		}{{"app", v1Image, []string{"latest", "v1"}}, {"app", v1Sig, []string{"sig"}}, {"lib", v1Lib, []string{"stable"}}} {
			if got, err := tx.TagsOf(c.repo, c.d); err != nil || !slices.Equal(got, c.want) {
				t.Errorf("TagsOf(%s, %.19s) = %q, %v; want %q", c.repo, c.d, got, err, c.want)
			}
		}
		var descs []ocispec.Descriptor
		if err := tx.Referrers("app", v1Image, func(d ocispec.Descriptor) error {
			descs = append(descs, d)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if len(descs) != 1 || descs[0].Digest != v1Sig || descs[0].ArtifactType != "application/vnd.example.sig" {
			t.Errorf("Referrers of the image = %+v", descs)
		}
		for _, c := range []struct {
			kind meta.PairKind
			k, v string
		}{{meta.Annotation, "org.opencontainers.image.title", "web"}, {meta.Label, "team", "a"}} {
			var found []string
			if err := tx.FindPair(c.kind, c.k, c.v, "", "", func(repo string, d digest.Digest) error {
				found = append(found, repo+"@"+string(d))
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if want := []string{"app@" + string(v1Image)}; !slices.Equal(found, want) {
				t.Errorf("FindPair(%c %s=%s) = %q, want %q", c.kind, c.k, c.v, found, want)
			}
		}
		var moves []meta.Move
		if err := tx.Moves("app", "latest", 0, func(m meta.Move) error {
			moves = append(moves, m)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if len(moves) != 1 || moves[0].Seq != 1 || moves[0].Digest != v1Image || moves[0].Actor.Name != "alice" || moves[0].Actor.Address != "192.0.2.1" {
			t.Errorf("Moves of app:latest = %+v", moves)
		}
		if u, ok, _ := tx.Upload("0123456789abcdef0123456789abcdef"); !ok || u.Repo != "app" || u.Owner != "" {
			t.Errorf("Upload of a schema 1 session = %+v, %v", u, ok)
		}
		if name, ok, _ := tx.RobotBySecret(robotHash); !ok || name != "ci" {
			t.Errorf("RobotBySecret = %q, %v", name, ok)
		}
		if r, ok, _ := tx.Robot("old"); !ok || r.Revoked == nil || r.Rotated == nil || r.Hash != robotHash2 {
			t.Errorf("Robot(old) = %+v, %v", r, ok)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// checkClean fails the test if Check finds anything.
func checkClean(t *testing.T, s *Store) {
	t.Helper()
	if found := check(t, s, false); len(found) > 0 {
		t.Errorf("Check finds %d problems: %+v", len(found), found)
	}
}

func check(t *testing.T, s *Store, repair bool) []meta.Finding {
	t.Helper()
	var found []meta.Finding
	if err := s.Check(context.Background(), repair, func(f meta.Finding) { found = append(found, f) }); err != nil {
		t.Fatalf("Check(repair=%v): %v", repair, err)
	}
	return found
}

func TestOpenRefusesOtherSchemas(t *testing.T) {
	for _, v := range []string{"3", "0", "2.1"} {
		path := filepath.Join(t.TempDir(), "index.db")
		writeRaw(t, path, map[string]map[string]string{"meta": {"schema": v}})
		s, err := Open(path, Options{})
		if err == nil {
			s.Close()
			t.Fatalf("Open of a schema %q store succeeded", v)
		}
		if msg := err.Error(); !strings.Contains(msg, `"`+v+`"`) || !strings.Contains(msg, `"`+SchemaVersion+`"`) {
			t.Errorf("the refusal of schema %q does not name both versions: %v", v, err)
		}
		// Refused untouched.
		db, err := bolt.Open(path, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := dump(t, db, "meta", "uses")["meta"]["schema"]; got != v {
			t.Errorf("a refused store's schema became %q", got)
		}
		_ = db.View(func(tx *bolt.Tx) error {
			if tx.Bucket(bucketUses) != nil {
				t.Error("a refused store got a uses/ bucket")
			}
			return nil
		})
		db.Close()
	}
}

func TestOpenNewStore(t *testing.T) {
	s := openTemp(t)
	defer s.Close()
	if v := dump(t, s.db, "meta")["meta"]["schema"]; v != SchemaVersion {
		t.Errorf("schema of a new store = %q, want %q", v, SchemaVersion)
	}
	_ = s.db.View(func(tx *bolt.Tx) error {
		for _, b := range topBuckets {
			if tx.Bucket(b) == nil {
				t.Errorf("a new store has no %s bucket", b)
			}
		}
		return nil
	})
}

// TestRecordBytes: records are written in the JSON of schema 1 (plus the
// new optional owner of a session), key for key.
func TestRecordBytes(t *testing.T) {
	s := openTemp(t)
	defer s.Close()
	ts, _ := time.Parse(time.RFC3339, v1Time)
	cc := time.Date(2023, 12, 31, 0, 0, 0, 0, time.UTC)
	img := meta.Manifest{MediaType: ociImage, Size: 500, Annotations: map[string]string{"org.opencontainers.image.title": "web"},
		References: []digest.Digest{v1Config, v1Layer}, Created: ts, Labels: map[string]string{"team": "a"}, ConfigCreated: &cc}
	sig := meta.Manifest{MediaType: ociImage, Size: 300, ArtifactType: "application/vnd.example.sig",
		Subject: &ocispec.Descriptor{MediaType: ociImage, Digest: v1Image, Size: 500}, References: []digest.Digest{v1SigBlob}, Created: ts}
	revoked := ts
	err := s.Update(context.Background(), func(tx meta.Tx) error {
		for _, step := range []error{
			tx.PutBlob(v1Layer, meta.Blob{Size: 1000, Created: ts}),
			tx.PutLink("app", v1Layer, meta.Link{Linked: ts}),
			tx.PutManifest("app", v1Image, img),
			tx.PutManifest("app", v1Sig, sig),
			tx.SetTag("app", "latest", v1Image),
			tx.PutUpload("0123456789abcdef0123456789abcdef", meta.Upload{Repo: "app", Algorithm: "sha256", Started: ts}),
			tx.PutUpload("owned", meta.Upload{Repo: "app", Algorithm: "sha256", Started: ts, Owner: "user:alice"}),
			tx.PutRobot(meta.Robot{Name: "old", Scopes: []string{"repository:lib:pull"}, Created: ts,
				Expires: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), Revoked: &revoked, Rotated: &revoked, Hash: robotHash2}),
		} {
			if step != nil {
				return step
			}
		}
		_, err := tx.AppendMove("app", "latest", meta.Move{Time: ts, Digest: v1Image, Action: "push",
			Actor: meta.Actor{Kind: "user", Name: "alice", Address: "192.0.2.1"}})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	want := v1Records(true)
	got := dump(t, s.db, recordBuckets...)
	for _, c := range []struct{ bucket, key string }{
		{"blobs", string(v1Layer)},
		{"repos/app/blobs", string(v1Layer)},
		{"repos/app/manifests", string(v1Image)},
		{"repos/app/manifests", string(v1Sig)},
		{"repos/app/tags", "latest"},
		{"repos/app/referrers/" + string(v1Image), string(v1Sig)},
		{"uploads", "0123456789abcdef0123456789abcdef"},
		{"robots", "old"},
		{"robotSecrets", robotHash2},
		{"history/app/latest", seq(1)},
	} {
		if g, w := got[c.bucket][c.key], want[c.bucket][c.key]; g != w {
			t.Errorf("%s %q written as\n %s\nwant\n %s", c.bucket, c.key, g, w)
		}
	}
	if g, w := got["uploads"]["owned"], `{"repo":"app","algorithm":"sha256","started":"`+v1Time+`","owner":"user:alice"}`; g != w {
		t.Errorf("a session with an owner written as %s, want %s", g, w)
	}
	search := dump(t, s.db, "search")["search"]
	if !maps.Equal(search, want["search"]) {
		t.Errorf("search/ written as %q, want %q", search, want["search"])
	}
}

func TestOpenInUse(t *testing.T) {
	path := filepath.Join(t.TempDir(), "index.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// bbolt's lock is flock(2), held per open file: a second Open in the
	// same process waits for it as another process would.
	s2, err := Open(path, Options{Timeout: 50 * time.Millisecond})
	if err == nil {
		s2.Close()
		t.Fatal("a second Open of a held index succeeded")
	}
	if !errors.Is(err, ErrInUse) {
		t.Errorf("a second Open of a held index returned %v, want ErrInUse", err)
	}
	if !strings.Contains(err.Error(), path) {
		t.Errorf("the error does not name the index: %v", err)
	}
	must(t, s.Close())
	s3, err := Open(path, Options{Timeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatalf("Open after the holder closed: %v", err)
	}
	s3.Close()
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestOpenRebuildsStaleDerivedBuckets: a store marked "1" that carries
// uses/ and tagged/ (left by a newer Berth, the version set back by hand)
// gets them built afresh, not trusted.
func TestOpenRebuildsStaleDerivedBuckets(t *testing.T) {
	path := filepath.Join(t.TempDir(), "index.db")
	recs := v1Records(true)
	recs["uses"] = map[string]string{string(useKey(v1Layer, "gone", meta.UseLink, "")): ""}
	recs["tagged"] = map[string]string{string(taggedKey("gone", v1Image, "old")): ""}
	writeRaw(t, path, recs)
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	checkV1Reads(t, s)
	checkClean(t, s)
}
