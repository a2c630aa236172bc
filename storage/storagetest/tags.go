package storagetest

import (
	"context"
	"errors"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/meta"
)

// Every move of a tag is recorded, newest first, with who moved it, why
// and from where to where; history pages, outlives the tag, and rollback
// walks it.
func testTagHistoryRecordsEveryMove(t *testing.T, b Backends) {
	s := open(t, b)
	ctx := context.Background()
	const repo = "apps/web"
	alice := storage.WithActor(ctx, storage.Actor{Kind: storage.ActorUser, Name: "alice", Address: "192.0.2.1"})
	var v [3]digest.Digest
	for i, seed := range []string{"v1", "v2", "v3"} {
		v[i] = putImage(t, s, repo, seed)
	}
	for i := range v {
		// Tag by pushing the same body again under the tag.
		info, body, err := s.GetManifest(ctx, repo, string(v[i]))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.PutManifest(alice, repo, info.Digest, body, mustParse(t, body), []string{"production"}); err != nil {
			t.Fatal(err)
		}
	}
	// Pushing the digest the tag names already is not a move.
	info, body, _ := s.GetManifest(ctx, repo, "production")
	if _, err := s.PutManifest(alice, repo, info.Digest, body, mustParse(t, body), []string{"production"}); err != nil {
		t.Fatal(err)
	}
	moves, more, err := s.TagHistory(ctx, repo, "production", 0, 10)
	if err != nil || more {
		t.Fatalf("history: %v, more %v", err, more)
	}
	if len(moves) != 3 {
		t.Fatalf("history has %d moves, want 3: %+v", len(moves), moves)
	}
	for i, m := range moves { // newest first
		want := v[2-i]
		var prev digest.Digest
		if i < 2 {
			prev = v[1-i]
		}
		if m.Digest != want || m.Previous != prev || m.Action != storage.MovePush || m.Actor.Name != "alice" ||
			m.Actor.Kind != storage.ActorUser || m.Actor.Address != "192.0.2.1" || m.Seq != uint64(3-i) || m.Time.IsZero() {
			t.Errorf("move %d = %+v, want %s -> %s by alice", i, m, prev, want)
		}
	}

	// Pages: two, then one, starting before the last one seen.
	page, more, err := s.TagHistory(ctx, repo, "production", 0, 2)
	if err != nil || !more || len(page) != 2 {
		t.Fatalf("first page: %d moves, more %v, %v", len(page), more, err)
	}
	page, more, err = s.TagHistory(ctx, repo, "production", page[1].Seq, 2)
	if err != nil || more || len(page) != 1 || page[0].Seq != 1 {
		t.Fatalf("second page: %+v, more %v, %v", page, more, err)
	}

	// Rollback goes to the previous digest and is a move of its own.
	bob := storage.WithActor(ctx, storage.Actor{Kind: storage.ActorRobot, Name: "deployer"})
	m, err := s.RollbackTag(bob, repo, "production", "")
	if err != nil {
		t.Fatal(err)
	}
	if m.Digest != v[1] || m.Previous != v[2] || m.Action != storage.MoveRollback || m.Actor.Name != "deployer" || m.Seq != 4 {
		t.Fatalf("rollback move = %+v", m)
	}
	if got, _ := s.StatManifest(ctx, repo, "production"); got.Digest != v[1] {
		t.Fatalf("production names %s after rollback, want %s", got.Digest, v[1])
	}
	// An explicit target; then one the repository lacks.
	if m, err = s.RollbackTag(ctx, repo, "production", v[0]); err != nil || m.Digest != v[0] || m.Actor.Kind != storage.ActorAnonymous {
		t.Fatalf("rollback --to v1: %+v, %v", m, err)
	}
	// Rolling back to where the tag stands moves nothing and answers the
	// move that put it there.
	if again, err := s.RollbackTag(ctx, repo, "production", v[0]); err != nil || again != m {
		t.Fatalf("rollback to the current digest: %+v, %v; want %+v", again, err, m)
	}
	if all, _, _ := s.TagHistory(ctx, repo, "production", 0, 100); len(all) != 5 {
		t.Fatalf("history has %d moves after a rollback that moved nothing, want 5", len(all))
	}
	missing := digest.FromString("not here")
	if _, err := s.RollbackTag(ctx, repo, "production", missing); !errors.Is(err, storage.ErrManifestUnknown) {
		t.Fatalf("rollback to a missing manifest: %v", err)
	}
	if _, err := s.RollbackTag(ctx, repo, "never", ""); !errors.Is(err, storage.ErrManifestUnknown) {
		t.Fatalf("rollback of a tag without history: %v", err)
	}

	// Deleting the tag records a move to nothing; its history stays.
	if err := s.DeleteTag(ctx, repo, "production"); err != nil {
		t.Fatal(err)
	}
	moves, _, err = s.TagHistory(ctx, repo, "production", 0, 1)
	if err != nil || len(moves) != 1 || moves[0].Action != storage.MoveDelete || moves[0].Digest != "" || moves[0].Previous != v[0] {
		t.Fatalf("after delete: %+v, %v", moves, err)
	}
	if _, _, err := s.TagHistory(ctx, repo, "never", 0, 1); !errors.Is(err, storage.ErrManifestUnknown) {
		t.Fatalf("history of a tag that never existed: %v", err)
	}
	if _, _, err := s.TagHistory(ctx, "no/such", "x", 0, 1); !errors.Is(err, storage.ErrNameUnknown) {
		t.Fatalf("history in an unknown repository: %v", err)
	}
}

// An immutable tag refuses every move, by push, deletion of the tag or of
// its manifest, and rollback; a refused change changes nothing at all.
func testImmutableTagsRefuseEveryMove(t *testing.T, be Backends) {
	s := open(t, be, withOptions(storage.Options{Tags: tagRulesFunc(func(repo, tag string) bool { return tag == "v1.0.0" })}))
	ctx := context.Background()
	const repo = "apps/api"
	a := putImage(t, s, repo, "a", "v1.0.0", "latest")
	b := putImage(t, s, repo, "b")
	if !s.Immutable(repo, "v1.0.0") || s.Immutable(repo, "latest") {
		t.Fatal("Immutable does not follow the tag rules")
	}

	// Re-pushing the same digest under the tag is fine.
	_, body, _ := s.GetManifest(ctx, repo, string(a))
	if _, err := s.PutManifest(ctx, repo, a, body, mustParse(t, body), []string{"v1.0.0"}); err != nil {
		t.Fatalf("re-push of the same digest: %v", err)
	}
	_, bodyB, _ := s.GetManifest(ctx, repo, string(b))
	c := putImage(t, s, repo, "c")
	_, bodyC, _ := s.GetManifest(ctx, repo, string(c))
	refused := map[string]error{
		"delete tag":      s.DeleteTag(ctx, repo, "v1.0.0"),
		"delete manifest": s.DeleteManifest(ctx, repo, a),
	}
	_, refused["push"] = s.PutManifest(ctx, repo, b, bodyB, mustParse(t, bodyB), []string{"latest", "v1.0.0"})
	_, refused["rollback"] = s.RollbackTag(ctx, repo, "v1.0.0", b)
	for what, err := range refused {
		if !errors.Is(err, storage.ErrTagImmutable) {
			t.Errorf("%s: %v, want ErrTagImmutable", what, err)
		}
	}
	// Nothing changed, not even the mutable tag in the refused push.
	for tag, want := range map[string]digest.Digest{"v1.0.0": a, "latest": a} {
		if got, err := s.StatManifest(ctx, repo, tag); err != nil || got.Digest != want {
			t.Errorf("%s names %s (%v), want %s", tag, got.Digest, err, want)
		}
	}
	if _, err := s.StatManifest(ctx, repo, string(a)); err != nil {
		t.Errorf("manifest of a refused deletion: %v", err)
	}
	moves, _, _ := s.TagHistory(ctx, repo, "latest", 0, 10)
	if len(moves) != 1 {
		t.Errorf("latest moved %d times, want once: %+v", len(moves), moves)
	}
	// A mutable tag still moves; a new immutable tag can be created.
	if _, err := s.PutManifest(ctx, repo, c, bodyC, mustParse(t, bodyC), []string{"latest"}); err != nil {
		t.Fatalf("moving latest: %v", err)
	}
	if _, err := s.PutManifest(ctx, repo, c, bodyC, mustParse(t, bodyC), []string{"v1.0.0"}); !errors.Is(err, storage.ErrTagImmutable) {
		t.Fatalf("moving v1.0.0 to c: %v", err)
	}
	if _, err := s.PutManifest(ctx, repo, c, bodyC, mustParse(t, bodyC), []string{"v1.0.0-rc"}); err != nil {
		t.Fatalf("a mutable tag of a similar name: %v", err)
	}
	checkIndex(t, s)
}

// A Service.Update whose function fails keeps nothing of what the
// function did, tag moves and their history included.
func testFailedUpdateChangesNothing(t *testing.T, b Backends) {
	s := open(t, b)
	const repo = "apps/web"
	a := putImage(t, s, repo, "a", "v1")
	c := putImage(t, s, repo, "c")
	failure := errors.New("the function fails")
	err := s.Update(ctx(), func(tx *storage.Tx) error {
		if _, err := tx.MoveTag(repo, "v1", c, storage.MovePush); err != nil {
			return err
		}
		if _, err := tx.MoveTag(repo, "new", c, storage.MovePush); err != nil {
			return err
		}
		if err := tx.RemoveManifest(repo, a, storage.MoveDeleteManifest); err != nil {
			return err
		}
		return failure
	})
	if !errors.Is(err, failure) {
		t.Fatalf("Update: %v, want the function's error", err)
	}
	if got, err := s.StatManifest(ctx(), repo, "v1"); err != nil || got.Digest != a {
		t.Fatalf("v1 names %s, %v; want %s", got.Digest, err, a)
	}
	if _, err := s.StatManifest(ctx(), repo, "new"); !errors.Is(err, storage.ErrManifestUnknown) {
		t.Fatalf("tag of a failed update: %v", err)
	}
	if _, _, err := s.TagHistory(ctx(), repo, "new", 0, 10); !errors.Is(err, storage.ErrManifestUnknown) {
		t.Fatalf("history of a tag of a failed update: %v", err)
	}
	if moves, _, err := s.TagHistory(ctx(), repo, "v1", 0, 10); err != nil || len(moves) != 1 {
		t.Fatalf("history of v1: %+v, %v; want its first move only", moves, err)
	}
	view(t, s, func(tx meta.Tx) error {
		if tags, err := tx.TagsOf(repo, a); err != nil || len(tags) != 1 {
			t.Errorf("tags of %s: %v, %v", a, tags, err)
		}
		return nil
	})
	checkIndex(t, s)
}
