package metatest

import (
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/storage/meta"
)

// withSubject is a small manifest record with a subject.
func withSubject(subject digest.Digest, artifactType string, annotations map[string]string) meta.Manifest {
	m := meta.Manifest{MediaType: ocispec.MediaTypeImageManifest, Size: 321, ArtifactType: artifactType,
		Annotations: annotations, Created: at(1)}
	if subject != "" {
		m.Subject = &ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: subject, Size: 10}
	}
	return m
}

func testReferrers(t *testing.T, h *handle) {
	subj, other := dg("subject"), dg("other subject")
	r := sorted(dg("r1"), dg("r2"), dg("r3"))
	ms := []meta.Manifest{
		withSubject(subj, "application/sig", stringMap("k", "v")),
		withSubject(subj, "application/sbom", nil),
		withSubject(subj, "", nil),
	}
	h.update(t, func(tx meta.Tx) error {
		// Put out of digest order: Referrers sorts.
		for _, i := range []int{2, 0, 1} {
			must(t, tx.PutManifest("a", r[i], ms[i]))
		}
		must(t, tx.PutManifest("b", r[0], ms[0])) // another repository
		return tx.PutManifest("a", dg("plain"), meta.Manifest{MediaType: "m", Size: 1, Created: at(1)})
	})
	desc := func(i int) string { return normDesc(ms[i].Descriptor(r[i])) }
	h.view(t, func(tx meta.Tx) error {
		equal(t, "Referrers of the subject in a", referrers(t, tx, "a", subj), []string{desc(0), desc(1), desc(2)})
		equal(t, "Referrers of the subject in b", referrers(t, tx, "b", subj), []string{desc(0)})
		equal(t, "Referrers of another subject", referrers(t, tx, "a", other), nil)
		equal(t, "Referrers in an absent repository", referrers(t, tx, "absent", subj), nil)
		var n int
		must(t, tx.Referrers("a", subj, func(ocispec.Descriptor) error {
			n++
			return meta.ErrStop
		}))
		if n != 1 {
			t.Errorf("Referrers stopped after %d calls, want 1", n)
		}
		return nil
	})
	// Replacing: r1 loses its subject, r2 moves to another one, r3's
	// descriptor changes with its record.
	ms[1] = withSubject(other, "application/sbom", nil)
	ms[2] = withSubject(subj, "application/new", stringMap("x", "y"))
	h.update(t, func(tx meta.Tx) error {
		must(t, tx.PutManifest("a", r[0], meta.Manifest{MediaType: "m", Size: 1, Created: at(1)}))
		must(t, tx.PutManifest("a", r[1], ms[1]))
		return tx.PutManifest("a", r[2], ms[2])
	})
	h.view(t, func(tx meta.Tx) error {
		equal(t, "Referrers after replacing", referrers(t, tx, "a", subj), []string{desc(2)})
		equal(t, "Referrers of the new subject", referrers(t, tx, "a", other), []string{desc(1)})
		equal(t, "Referrers in b, untouched", referrers(t, tx, "b", subj), []string{desc(0)})
		return nil
	})
	h.update(t, func(tx meta.Tx) error {
		must(t, tx.DeleteManifest("a", r[1]))
		return tx.DeleteManifest("a", r[2])
	})
	h.view(t, func(tx meta.Tx) error {
		equal(t, "Referrers after deleting", referrers(t, tx, "a", subj), nil)
		equal(t, "Referrers of the other subject after deleting", referrers(t, tx, "a", other), nil)
		return nil
	})
}

func testUses(t *testing.T, h *handle) {
	b, c, m, m2 := dg("blob"), dg("config"), dg("manifest"), dg("manifest 2")
	h.update(t, func(tx meta.Tx) error {
		must(t, tx.PutBlob(b, meta.Blob{Size: 1}))
		for _, repo := range []string{"a", "a/b", "b"} {
			must(t, tx.PutLink(repo, b, meta.Link{Linked: at(1)}))
		}
		must(t, tx.PutLink("a", c, meta.Link{Linked: at(1)}))
		must(t, tx.PutManifest("a", m, fullManifest("", c, b, b))) // b twice: one use
		return tx.PutManifest("b", m2, fullManifest("", b))
	})
	h.view(t, func(tx meta.Tx) error {
		equal(t, "Uses of the blob", uses(t, tx, b, ""), useSet(
			meta.Use{Repo: "a", Kind: meta.UseLink},
			meta.Use{Repo: "a", Kind: meta.UseReference, Manifest: m},
			meta.Use{Repo: "a/b", Kind: meta.UseLink},
			meta.Use{Repo: "b", Kind: meta.UseLink},
			meta.Use{Repo: "b", Kind: meta.UseReference, Manifest: m2},
		))
		// "a" is a prefix of "a/b": only a's own uses.
		equal(t, "Uses of the blob in a", uses(t, tx, b, "a"), useSet(
			meta.Use{Repo: "a", Kind: meta.UseLink},
			meta.Use{Repo: "a", Kind: meta.UseReference, Manifest: m},
		))
		equal(t, "Uses of the manifest", uses(t, tx, m, ""), useSet(meta.Use{Repo: "a", Kind: meta.UseManifest}))
		equal(t, "Uses of the manifest in b", uses(t, tx, m, "b"), nil)
		equal(t, "Uses of an unused digest", uses(t, tx, dg("unused"), ""), nil)
		var n int
		must(t, tx.Uses(b, "", func(meta.Use) error {
			n++
			return meta.ErrStop
		}))
		if n != 1 {
			t.Errorf("Uses stopped after %d calls, want 1", n)
		}
		return nil
	})
	h.update(t, func(tx meta.Tx) error {
		must(t, tx.DeleteLink("a", b))
		must(t, tx.DeleteManifest("a", m))
		return tx.PutManifest("b", m2, fullManifest("", c)) // no longer references b
	})
	h.view(t, func(tx meta.Tx) error {
		equal(t, "Uses of the blob after changes", uses(t, tx, b, ""), useSet(
			meta.Use{Repo: "a/b", Kind: meta.UseLink},
			meta.Use{Repo: "b", Kind: meta.UseLink},
		))
		equal(t, "Uses of the deleted manifest", uses(t, tx, m, ""), nil)
		equal(t, "Uses of the config", uses(t, tx, c, ""), useSet(
			meta.Use{Repo: "a", Kind: meta.UseLink},
			meta.Use{Repo: "b", Kind: meta.UseReference, Manifest: m2},
		))
		return nil
	})
}

// tagList returns what Tags yields after after.
func tagList(t *testing.T, tx meta.Tx, repo, after string) []string {
	t.Helper()
	var out []string
	must(t, tx.Tags(repo, after, func(tag string, _ digest.Digest) error {
		out = append(out, tag)
		return nil
	}))
	return out
}

func testTags(t *testing.T, h *handle) {
	m1, m2 := dg("m1"), dg("m2")
	h.update(t, func(tx meta.Tx) error {
		must(t, tx.PutManifest("r", m1, meta.Manifest{MediaType: "m", Size: 1, Created: at(1)}))
		must(t, tx.PutManifest("r", m2, meta.Manifest{MediaType: "m", Size: 1, Created: at(1)}))
		for _, tag := range []string{"v2", "latest", "v1", "v1.0"} {
			must(t, tx.SetTag("r", tag, m1))
		}
		return tx.SetTag("r", "v2", m2) // moves
	})
	h.view(t, func(tx meta.Tx) error {
		for tag, want := range map[string]digest.Digest{"v1": m1, "v2": m2, "latest": m1} {
			if d, ok, err := tx.Tag("r", tag); d != want || !ok || err != nil {
				t.Errorf("Tag(%s) = %s, %v, %v; want %s", tag, d, ok, err, want)
			}
		}
		if _, ok, _ := tx.Tag("r", "absent"); ok {
			t.Error("Tag finds an absent tag")
		}
		if _, ok, _ := tx.Tag("absent", "v1"); ok {
			t.Error("Tag finds a tag in an absent repository")
		}
		all := []string{"latest", "v1", "v1.0", "v2"}
		equal(t, "Tags", tagList(t, tx, "r", ""), all)
		equal(t, "Tags after v1", tagList(t, tx, "r", "v1"), all[2:])
		equal(t, "Tags after u (not a tag)", tagList(t, tx, "r", "u"), all[1:])
		equal(t, "Tags after v2", tagList(t, tx, "r", "v2"), nil)
		equal(t, "Tags of an absent repository", tagList(t, tx, "absent", ""), nil)
		var got []string
		must(t, tx.Tags("r", "", func(tag string, d digest.Digest) error {
			got = append(got, tag)
			if tag == "v2" && d != m2 {
				t.Errorf("Tags gives v2 -> %s, want %s", d, m2)
			}
			if len(got) == 2 {
				return meta.ErrStop
			}
			return nil
		}))
		equal(t, "Tags stopped after two", got, all[:2])
		return nil
	})
	h.update(t, func(tx meta.Tx) error {
		must(t, tx.DeleteTag("r", "v1"))
		must(t, tx.DeleteTag("r", "absent"))
		return tx.DeleteTag("absent", "v1")
	})
	h.view(t, func(tx meta.Tx) error {
		equal(t, "Tags after DeleteTag", tagList(t, tx, "r", ""), []string{"latest", "v1.0", "v2"})
		return nil
	})
}

func testTagsOf(t *testing.T, h *handle) {
	m1, m2 := dg("m1"), dg("m2")
	tagsOf := func(tx meta.Tx, repo string, d digest.Digest) []string {
		tags, err := tx.TagsOf(repo, d)
		must(t, err)
		return tags
	}
	h.update(t, func(tx meta.Tx) error {
		for _, repo := range []string{"a", "a/b"} {
			must(t, tx.PutManifest(repo, m1, meta.Manifest{MediaType: "m", Size: 1, Created: at(1)}))
			must(t, tx.PutManifest(repo, m2, meta.Manifest{MediaType: "m", Size: 1, Created: at(1)}))
		}
		for _, tag := range []string{"v1", "latest", "v1.0", "v"} {
			must(t, tx.SetTag("a", tag, m1))
		}
		must(t, tx.SetTag("a", "other", m2))
		return tx.SetTag("a/b", "v9", m1)
	})
	h.view(t, func(tx meta.Tx) error {
		equal(t, "TagsOf m1 in a", tagsOf(tx, "a", m1), []string{"latest", "v", "v1", "v1.0"})
		equal(t, "TagsOf m2 in a", tagsOf(tx, "a", m2), []string{"other"})
		equal(t, "TagsOf m1 in a/b", tagsOf(tx, "a/b", m1), []string{"v9"})
		equal(t, "TagsOf m2 in a/b", tagsOf(tx, "a/b", m2), nil)
		equal(t, "TagsOf in an absent repository", tagsOf(tx, "absent", m1), nil)
		return nil
	})
	// A move, a delete and a re-set to the same digest.
	h.update(t, func(tx meta.Tx) error {
		must(t, tx.SetTag("a", "v1", m2))
		must(t, tx.DeleteTag("a", "latest"))
		return tx.SetTag("a", "v", m1)
	})
	h.view(t, func(tx meta.Tx) error {
		equal(t, "TagsOf m1 after changes", tagsOf(tx, "a", m1), []string{"v", "v1.0"})
		equal(t, "TagsOf m2 after changes", tagsOf(tx, "a", m2), []string{"other", "v1"})
		return nil
	})
}

func testMoves(t *testing.T, h *handle) { moves(t, h, false) }

// testMovesPrefetched is testMoves with the tags' records prefetched
// first, where the transaction reads ahead: the numbering is the same.
func testMovesPrefetched(t *testing.T, h *handle) { moves(t, h, true) }

func moves(t *testing.T, h *handle, prefetch bool) {
	ahead := func(tx meta.Tx) {
		if pf, ok := tx.(prefetcher); ok && prefetch {
			must(t, pf.Prefetch(meta.Prefetch{Repo: "r", Tags: []string{"t", "other"}}))
		}
	}
	actor := meta.Actor{Kind: "user", Name: "alice", Address: "192.0.2.1"}
	want := []meta.Move{
		{Time: at(1), Digest: dg("a"), Action: "push", Actor: actor},
		{Time: at(2), Previous: dg("a"), Digest: dg("b"), Action: "push", Actor: actor},
		{Time: at(3), Previous: dg("b"), Action: "delete", Actor: meta.Actor{Kind: "anonymous"}},
	}
	h.update(t, func(tx meta.Tx) error {
		ahead(tx)
		for i, m := range want {
			m.Seq = 99 // ignored
			got, err := tx.AppendMove("r", "t", m)
			must(t, err)
			if got.Seq != uint64(i+1) {
				t.Errorf("AppendMove numbered move %d as %d", i+1, got.Seq)
			}
			want[i].Seq = uint64(i + 1)
		}
		_, err := tx.AppendMove("r", "other", meta.Move{Time: at(9), Digest: dg("x"), Action: "promote"})
		return err
	})
	h.view(t, func(tx meta.Tx) error {
		var got []meta.Move
		must(t, tx.Moves("r", "t", 0, func(m meta.Move) error {
			got = append(got, m)
			return nil
		}))
		if len(got) != len(want) {
			t.Fatalf("Moves gives %d moves, want %d", len(got), len(want))
		}
		for i, m := range got {
			w := want[len(want)-1-i] // newest first
			if m.Seq != w.Seq || !m.Time.Equal(w.Time) || m.Previous != w.Previous || m.Digest != w.Digest ||
				m.Action != w.Action || m.Actor != w.Actor {
				t.Errorf("move %d = %+v, want %+v", i, m, w)
			}
		}
		must(t, tx.Moves("r", "absent", 0, func(m meta.Move) error {
			t.Errorf("Moves of a tag that never moved gives %+v", m)
			return nil
		}))
		return nil
	})
	// The numbering goes on in a later transaction.
	h.update(t, func(tx meta.Tx) error {
		ahead(tx)
		m, err := tx.AppendMove("r", "t", meta.Move{Time: at(4), Digest: dg("c"), Action: "rollback"})
		if err == nil && m.Seq != 4 {
			t.Errorf("AppendMove in a later transaction numbered %d, want 4", m.Seq)
		}
		return err
	})
	h.view(t, func(tx meta.Tx) error {
		var seqs []uint64
		must(t, tx.Moves("r", "t", 0, func(m meta.Move) error {
			seqs = append(seqs, m.Seq)
			return nil
		}))
		equal(t, "history of r:t", seqs, []uint64{4, 3, 2, 1})
		return nil
	})
}

func testMovesPaging(t *testing.T, h *handle) {
	const n = 7
	h.update(t, func(tx meta.Tx) error {
		for i := range n {
			if _, err := tx.AppendMove("r", "t", meta.Move{Time: at(i), Digest: dg(string(rune('a' + i))), Action: "push"}); err != nil {
				return err
			}
		}
		return nil
	})
	seqs := func(tx meta.Tx, before uint64, limit int) []uint64 {
		var out []uint64
		must(t, tx.Moves("r", "t", before, func(m meta.Move) error {
			out = append(out, m.Seq)
			if len(out) == limit {
				return meta.ErrStop
			}
			return nil
		}))
		return out
	}
	h.view(t, func(tx meta.Tx) error {
		equal(t, "Moves from the newest", seqs(tx, 0, -1), []uint64{7, 6, 5, 4, 3, 2, 1})
		equal(t, "Moves before 5", seqs(tx, 5, -1), []uint64{4, 3, 2, 1})
		equal(t, "Moves before 1", seqs(tx, 1, -1), nil)
		equal(t, "Moves before 100", seqs(tx, 100, -1), []uint64{7, 6, 5, 4, 3, 2, 1})
		equal(t, "Moves before 8", seqs(tx, 8, -1), []uint64{7, 6, 5, 4, 3, 2, 1})
		// Pages of three, each before the last seen.
		// Bounded: a walk that repeats its "before" must not loop for ever.
		var paged []uint64
		before := uint64(0)
		for range n + 1 {
			page := seqs(tx, before, 3)
			if len(page) == 0 {
				break
			}
			paged = append(paged, page...)
			before = page[len(page)-1]
		}
		equal(t, "Moves paged", paged, []uint64{7, 6, 5, 4, 3, 2, 1})
		return nil
	})
}

func testSearch(t *testing.T, h *handle) {
	type entry struct {
		repo string
		d    digest.Digest
	}
	var all []entry
	h.update(t, func(tx meta.Tx) error {
		for _, repo := range []string{"b", "a/b", "a", "a-b"} {
			for _, name := range []string{"x", "y"} {
				d := dg(repo + name)
				m := meta.Manifest{MediaType: "m", Size: 1, Created: at(1),
					Annotations: stringMap("k", "v", "only", repo), Labels: stringMap("k", "label")}
				must(t, tx.PutManifest(repo, d, m))
				all = append(all, entry{repo, d})
			}
		}
		// Same pair as a label only, and another value.
		must(t, tx.PutManifest("c", dg("c1"), meta.Manifest{MediaType: "m", Size: 1, Created: at(1), Labels: stringMap("k", "v")}))
		return tx.PutManifest("c", dg("c2"), meta.Manifest{MediaType: "m", Size: 1, Created: at(1), Annotations: stringMap("k", "w")})
	})
	// Results come by repository, then digest.
	order := func(es []entry) []string {
		var out []string
		for _, e := range es {
			out = append(out, e.repo+"@"+string(e.d))
		}
		slicesSortByRepoDigest(out)
		return out
	}
	want := order(all)
	h.view(t, func(tx meta.Tx) error {
		if !tx.Indexed("k", "v") {
			t.Fatal("Indexed(k, v) is false")
		}
		equal(t, "FindPair annotation k=v", pairs(t, tx, meta.Annotation, "k", "v", "", ""), want)
		equal(t, "FindPair label k=v", pairs(t, tx, meta.Label, "k", "v", "", ""), []string{"c@" + string(dg("c1"))})
		equal(t, "FindPair annotation k=w", pairs(t, tx, meta.Annotation, "k", "w", "", ""), []string{"c@" + string(dg("c2"))})
		equal(t, "FindPair annotation k=absent", pairs(t, tx, meta.Annotation, "k", "absent", "", ""), nil)
		equal(t, "FindPair annotation only=a", pairs(t, tx, meta.Annotation, "only", "a", "", ""), order(all[4:6]))
		// from: the repository to start with, whole.
		start := func(repo string) int {
			for i, w := range want {
				if strings.HasPrefix(w, repo+"@") || strings.Split(w, "@")[0] > repo {
					return i
				}
			}
			return len(want)
		}
		for _, from := range []string{"a", "a-b", "a/b", "a0", "b", "c"} {
			equal(t, "FindPair from "+from, pairs(t, tx, meta.Annotation, "k", "v", from, ""), want[start(from):])
		}
		// after: just after (from, after).
		for i, w := range want {
			repo, d, _ := strings.Cut(w, "@")
			equal(t, "FindPair after "+w, pairs(t, tx, meta.Annotation, "k", "v", repo, digest.Digest(d)), want[i+1:])
		}
		var n int
		must(t, tx.FindPair(meta.Annotation, "k", "v", "", "", func(string, digest.Digest) error {
			n++
			return meta.ErrStop
		}))
		if n != 1 {
			t.Errorf("FindPair stopped after %d calls, want 1", n)
		}
		return nil
	})
	// A long pair, if the backend indexes it, is found like any other.
	long := strings.Repeat("x", 500)
	h.update(t, func(tx meta.Tx) error {
		return tx.PutManifest("l", dg("long"), meta.Manifest{MediaType: "m", Size: 1, Created: at(1), Annotations: stringMap(long, long)})
	})
	h.view(t, func(tx meta.Tx) error {
		if tx.Indexed(long, long) {
			equal(t, "FindPair of a long pair", pairs(t, tx, meta.Annotation, long, long, "", ""), []string{"l@" + string(dg("long"))})
		}
		return nil
	})
}

// slicesSortByRepoDigest sorts "repo@digest" strings by repository, then
// digest ("a@..." before "a-b@..." before "a/b@...", as bytes compare the
// names, not the joined strings).
func slicesSortByRepoDigest(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && lessRepoDigest(s[j], s[j-1]); j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

func lessRepoDigest(a, b string) bool {
	ra, da, _ := strings.Cut(a, "@")
	rb, db, _ := strings.Cut(b, "@")
	if ra != rb {
		return ra < rb
	}
	return da < db
}

func testSearchAfterChanges(t *testing.T, h *handle) {
	d := dg("m")
	find := func(kind meta.PairKind, k, v string) []string {
		var out []string
		h.view(t, func(tx meta.Tx) error {
			out = pairs(t, tx, kind, k, v, "", "")
			return nil
		})
		return out
	}
	hit := []string{"r@" + string(d)}
	h.update(t, func(tx meta.Tx) error {
		return tx.PutManifest("r", d, meta.Manifest{MediaType: "m", Size: 1, Created: at(1),
			Annotations: stringMap("a", "1"), Labels: stringMap("l", "1")})
	})
	equal(t, "annotation after put", find(meta.Annotation, "a", "1"), hit)
	equal(t, "label after put", find(meta.Label, "l", "1"), hit)
	h.update(t, func(tx meta.Tx) error {
		return tx.PutManifest("r", d, meta.Manifest{MediaType: "m", Size: 1, Created: at(1),
			Annotations: stringMap("a", "2")})
	})
	equal(t, "old annotation after replace", find(meta.Annotation, "a", "1"), nil)
	equal(t, "new annotation after replace", find(meta.Annotation, "a", "2"), hit)
	equal(t, "dropped label after replace", find(meta.Label, "l", "1"), nil)
	h.update(t, func(tx meta.Tx) error { return tx.DeleteManifest("r", d) })
	equal(t, "annotation after delete", find(meta.Annotation, "a", "2"), nil)
	h.update(t, func(tx meta.Tx) error {
		return tx.PutManifest("r", d, meta.Manifest{MediaType: "m", Size: 1, Created: at(1), Labels: stringMap("a", "2")})
	})
	equal(t, "label after put again", find(meta.Label, "a", "2"), hit)
	equal(t, "annotation after put again as a label", find(meta.Annotation, "a", "2"), nil)
}
