package bolt

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	bolt "go.etcd.io/bbolt"

	"github.com/berth-registry/berth/storage/meta"
)

var (
	ckConfig = digest.FromString("ck config")
	ckImage  = digest.FromString("ck image")
	ckSig    = digest.FromString("ck signature")
	ckHash   = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
)

// healthyStore is a store with one of every kind of record, which Check
// finds nothing wrong with.
func healthyStore(t *testing.T) *Store {
	t.Helper()
	s := openTemp(t)
	t.Cleanup(func() { s.Close() })
	err := s.Update(context.Background(), func(tx meta.Tx) error {
		for _, err := range []error{
			tx.PutBlob(ckConfig, meta.Blob{Size: 10}),
			tx.PutBlob(ckImage, meta.Blob{Size: 20}),
			tx.PutBlob(ckSig, meta.Blob{Size: 30}),
			tx.PutLink("app", ckConfig, meta.Link{}),
			tx.PutManifest("app", ckImage, meta.Manifest{MediaType: ociImage, Size: 20, References: []digest.Digest{ckConfig},
				Annotations: map[string]string{"k": "v"}, Labels: map[string]string{"team": "a"}}),
			tx.PutManifest("app", ckSig, meta.Manifest{MediaType: ociImage, Size: 30, ArtifactType: "application/sig",
				Subject: &ocispec.Descriptor{MediaType: ociImage, Digest: ckImage, Size: 20}}),
			tx.SetTag("app", "latest", ckImage),
			tx.PutUpload("u1", meta.Upload{Repo: "app", Algorithm: "sha256"}),
			tx.PutRobot(meta.Robot{Name: "ci", Scopes: []string{"s"}, Hash: ckHash}),
			tx.PutPull(meta.Pull{Repo: "app", Digest: ckImage, Actor: meta.Actor{Kind: "robot", Name: "ci"}}),
		} {
			if err != nil {
				return err
			}
		}
		_, err := tx.AppendMove("app", "latest", meta.Move{Digest: ckImage, Action: "push"})
		return err
	})
	must(t, err)
	checkClean(t, s)
	return s
}

// raw changes the file behind the index's back.
func raw(t *testing.T, s *Store, fn func(tx *bolt.Tx) error) {
	t.Helper()
	if err := s.db.Update(fn); err != nil {
		t.Fatal(err)
	}
}

func bucket(tx *bolt.Tx, path ...string) *bolt.Bucket {
	b := tx.Bucket([]byte(path[0]))
	for _, n := range path[1:] {
		b = b.Bucket([]byte(n))
	}
	return b
}

func TestCheckFindsAndRepairs(t *testing.T) {
	sigDesc := func(artifactType string) []byte {
		return []byte(`{"mediaType":"` + ociImage + `","digest":"` + string(ckSig) + `","size":30,"artifactType":"` + artifactType + `"}`)
	}
	cases := []struct {
		name    string
		corrupt func(tx *bolt.Tx) error
		kinds   []string // what Check finds, in order
		// remains is what a check after the repair still finds.
		remains []string
	}{
		{"undecodable blob record", func(tx *bolt.Tx) error {
			return bucket(tx, "blobs").Put([]byte(ckConfig), []byte("{not json"))
		}, []string{FindingBadRecord}, []string{FindingBadRecord}},
		{"blob key not a digest", func(tx *bolt.Tx) error {
			return bucket(tx, "blobs").Put([]byte("sha256:nothex"), []byte(`{"size":1}`))
		}, []string{FindingBadRecord}, []string{FindingBadRecord}},
		{"undecodable manifest record", func(tx *bolt.Tx) error {
			return bucket(tx, "repos", "app", "manifests").Put([]byte(ckImage), []byte("["))
		}, []string{FindingBadRecord}, []string{FindingBadRecord}},
		{"bucket for a tag", func(tx *bolt.Tx) error {
			_, err := bucket(tx, "repos", "app", "tags").CreateBucket([]byte("weird"))
			return err
		}, []string{FindingBadRecord}, []string{FindingBadRecord}},
		{"undecodable history record", func(tx *bolt.Tx) error {
			return bucket(tx, "history", "app", "latest").Put(seqKey(1), []byte("x"))
		}, []string{FindingBadRecord}, []string{FindingBadRecord}},
		{"undecodable pull record", func(tx *bolt.Tx) error {
			return bucket(tx, "pulls").Put(pullKey("app", ckImage, "robot", "ci"), []byte("{"))
		}, []string{FindingBadRecord}, []string{FindingBadRecord}},
		{"pull key naming no identity", func(tx *bolt.Tx) error {
			return bucket(tx, "pulls").Put([]byte("app\x00"+string(ckImage)), []byte(`{}`))
		}, []string{FindingBadRecord}, []string{FindingBadRecord}},
		{"upload id that cannot name a session", func(tx *bolt.Tx) error {
			return bucket(tx, "uploads").Put([]byte("../x"), []byte(`{"repo":"app"}`))
		}, []string{FindingBadRecord}, []string{FindingBadRecord}},
		{"stale robot secret", func(tx *bolt.Tx) error {
			return bucket(tx, "robotSecrets").Put([]byte("deadbeef"), []byte("ci"))
		}, []string{FindingRobotSecret}, nil},
		{"robot secret naming no robot", func(tx *bolt.Tx) error {
			return bucket(tx, "robotSecrets").Put([]byte("deadbeef"), []byte("ghost"))
		}, []string{FindingRobotSecret}, nil},
		{"robot secret not indexed", func(tx *bolt.Tx) error {
			return bucket(tx, "robotSecrets").Delete([]byte(ckHash))
		}, []string{FindingRobotSecret}, nil},
		{"referrer naming no manifest", func(tx *bolt.Tx) error {
			sb, err := bucket(tx, "repos", "app", "referrers").CreateBucketIfNotExists([]byte(ckConfig))
			if err != nil {
				return err
			}
			return sb.Put([]byte(ckSig), sigDesc("application/sig"))
		}, []string{FindingDanglingReferrer}, nil},
		{"referrer missing", func(tx *bolt.Tx) error {
			return bucket(tx, "repos", "app", "referrers").DeleteBucket([]byte(ckImage))
		}, []string{FindingDanglingReferrer}, nil},
		{"referrer stale", func(tx *bolt.Tx) error {
			return bucket(tx, "repos", "app", "referrers", string(ckImage)).Put([]byte(ckSig), sigDesc("application/other"))
		}, []string{FindingDanglingReferrer}, nil},
		{"search entry missing", func(tx *bolt.Tx) error {
			return bucket(tx, "search").Delete(searchKey(meta.Label, "team", "a", "app", ckImage))
		}, []string{FindingSearchIndex}, nil},
		{"search entry stale", func(tx *bolt.Tx) error {
			return bucket(tx, "search").Put(searchKey(meta.Annotation, "k", "other", "app", ckImage), nil)
		}, []string{FindingSearchIndex}, nil},
		{"search key malformed", func(tx *bolt.Tx) error {
			return bucket(tx, "search").Put([]byte("zzz"), nil)
		}, []string{FindingSearchIndex}, nil},
		{"use missing", func(tx *bolt.Tx) error {
			return bucket(tx, "uses").Delete(useKey(ckConfig, "app", meta.UseLink, ""))
		}, []string{FindingUseIndex}, nil},
		{"reference use missing", func(tx *bolt.Tx) error {
			return bucket(tx, "uses").Delete(useKey(ckConfig, "app", meta.UseReference, ckImage))
		}, []string{FindingUseIndex}, nil},
		{"use stale", func(tx *bolt.Tx) error {
			return bucket(tx, "uses").Put(useKey(ckImage, "other", meta.UseLink, ""), nil)
		}, []string{FindingUseIndex}, nil},
		{"use key malformed", func(tx *bolt.Tx) error {
			return bucket(tx, "uses").Put([]byte(string(ckImage)+"\x00app\x00q"), nil)
		}, []string{FindingUseIndex}, nil},
		{"tag entry missing", func(tx *bolt.Tx) error {
			return bucket(tx, "tagged").Delete(taggedKey("app", ckImage, "latest"))
		}, []string{FindingTagIndex}, nil},
		{"tag entry stale", func(tx *bolt.Tx) error {
			return bucket(tx, "tagged").Put(taggedKey("app", ckSig, "latest"), nil)
		}, []string{FindingTagIndex}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := healthyStore(t)
			raw(t, s, c.corrupt)
			found := check(t, s, false)
			if got := kinds(found); !slices.Equal(got, c.kinds) {
				t.Fatalf("Check finds %q, want %q: %+v", got, c.kinds, found)
			}
			for _, f := range found {
				if f.Repaired != "" || f.Detail == "" {
					t.Errorf("a check without repair reports %+v", f)
				}
			}
			repaired := check(t, s, true)
			for _, f := range repaired {
				if want := f.Kind != FindingBadRecord; (f.Repaired != "") != want {
					t.Errorf("repair of %s: %q", f.Kind, f.Repaired)
				}
			}
			if got := kinds(check(t, s, false)); !slices.Equal(got, c.remains) {
				t.Errorf("after repair Check finds %q, want %q", got, c.remains)
			}
		})
	}
}

func kinds(fs []meta.Finding) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.Kind)
	}
	return out
}

// TestRepairRestoresReads: what the repaired indexes answer is what the
// records say.
func TestRepairRestoresReads(t *testing.T) {
	s := healthyStore(t)
	raw(t, s, func(tx *bolt.Tx) error {
		for _, b := range []string{"uses", "tagged", "search"} {
			if err := tx.DeleteBucket([]byte(b)); err != nil {
				return err
			}
			if _, err := tx.CreateBucket([]byte(b)); err != nil {
				return err
			}
		}
		return bucket(tx, "repos", "app", "referrers").DeleteBucket([]byte(ckImage))
	})
	if n := len(check(t, s, true)); n != 8 {
		t.Errorf("repair of emptied indexes made %d repairs, want 8 (3 uses, 1 tag, 2 search, 1 referrer, 1 use of the signature)", n)
	}
	checkClean(t, s)
	err := s.View(context.Background(), func(tx meta.Tx) error {
		var us []meta.Use
		must(t, tx.Uses(ckConfig, "", func(u meta.Use) error { us = append(us, u); return nil }))
		if len(us) != 2 {
			t.Errorf("Uses of the config after repair = %+v", us)
		}
		tags, err := tx.TagsOf("app", ckImage)
		must(t, err)
		if !slices.Equal(tags, []string{"latest"}) {
			t.Errorf("TagsOf after repair = %q", tags)
		}
		var refs int
		must(t, tx.Referrers("app", ckImage, func(ocispec.Descriptor) error { refs++; return nil }))
		var hits int
		must(t, tx.FindPair(meta.Label, "team", "a", "", "", func(string, digest.Digest) error { hits++; return nil }))
		if refs != 1 || hits != 1 {
			t.Errorf("after repair: %d referrers, %d search hits; want 1 and 1", refs, hits)
		}
		return nil
	})
	must(t, err)
}

// TestCorruptReads: reading a record that does not decode fails with
// meta.ErrCorrupt, naming the bucket and key.
func TestCorruptReads(t *testing.T) {
	s := healthyStore(t)
	raw(t, s, func(tx *bolt.Tx) error {
		must(t, bucket(tx, "repos", "app", "manifests").Put([]byte(ckImage), []byte("[")))
		must(t, bucket(tx, "blobs").Put([]byte(ckConfig), []byte("{")))
		_, err := bucket(tx, "repos", "app", "tags").CreateBucket([]byte("weird"))
		return err
	})
	err := s.View(context.Background(), func(tx meta.Tx) error {
		for name, read := range map[string]struct {
			err  error
			want string
		}{
			"Manifest":  {second(tx.Manifest("app", ckImage)), "repos/app/manifests"},
			"Manifests": {tx.Manifests("app", "", func(digest.Digest, meta.Manifest) error { return nil }), "repos/app/manifests"},
			"Blob":      {second(tx.Blob(ckConfig)), "blobs"},
			"Blobs":     {tx.Blobs(func(digest.Digest, meta.Blob) error { return nil }), "blobs"},
			"Tag":       {second(tx.Tag("app", "weird")), "repos/app/tags"},
			"Tags":      {tx.Tags("app", "", func(string, digest.Digest) error { return nil }), "repos/app/tags"},
		} {
			if !errors.Is(read.err, meta.ErrCorrupt) || !strings.Contains(read.err.Error(), read.want) {
				t.Errorf("%s of a corrupt record: %v; want ErrCorrupt naming %s", name, read.err, read.want)
			}
		}
		return nil
	})
	must(t, err)
	// A corrupt manifest can still be deleted, with its derived entries.
	err = s.Update(context.Background(), func(tx meta.Tx) error { return tx.DeleteManifest("app", ckImage) })
	must(t, err)
	err = s.View(context.Background(), func(tx meta.Tx) error {
		var hits int
		must(t, tx.FindPair(meta.Annotation, "k", "v", "", "", func(string, digest.Digest) error { hits++; return nil }))
		var us int
		must(t, tx.Uses(ckConfig, "app", func(u meta.Use) error {
			if u.Kind == meta.UseReference {
				us++
			}
			return nil
		}))
		if hits != 0 || us != 0 {
			t.Errorf("deleting an undecodable manifest left %d search entries and %d reference uses", hits, us)
		}
		return nil
	})
	must(t, err)
}

// second returns the error of a three-valued read.
func second[A any, B any](_ A, _ B, err error) error { return err }
