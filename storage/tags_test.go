package storage

import (
	"context"
	"errors"
	"testing"

	"github.com/opencontainers/go-digest"
)

// tagRulesFunc adapts a function to TagRules.
type tagRulesFunc func(repo, tag string) bool

func (f tagRulesFunc) Immutable(repo, tag string) bool { return f(repo, tag) }

func TestTagHistoryRecordsEveryMove(t *testing.T) {
	s := openStore(t, t.TempDir())
	ctx := context.Background()
	const repo = "apps/web"
	alice := WithActor(ctx, Actor{Kind: ActorUser, Name: "alice", Address: "192.0.2.1"})
	var v [3]digest.Digest
	for i, seed := range []string{"v1", "v2", "v3"} {
		v[i] = putTestImage(t, s, repo, seed)
	}
	for i := range v {
		// Tag by pushing the same body again under the tag.
		info, body, err := s.GetManifest(ctx, repo, string(v[i]))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.PutManifest(alice, repo, info.Digest, body, mustParse(t, body), []string{"production"}); err != nil {
			t.Fatal(err)
		}
	}
	// Pushing the digest the tag names already is not a move.
	info, body, _ := s.GetManifest(ctx, repo, "production")
	if err := s.PutManifest(alice, repo, info.Digest, body, mustParse(t, body), []string{"production"}); err != nil {
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
		if m.Digest != want || m.Previous != prev || m.Action != MovePush || m.Actor.Name != "alice" ||
			m.Actor.Kind != ActorUser || m.Actor.Address != "192.0.2.1" || m.Seq != uint64(3-i) || m.Time.IsZero() {
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
	bob := WithActor(ctx, Actor{Kind: ActorRobot, Name: "deployer"})
	m, err := s.RollbackTag(bob, repo, "production", "")
	if err != nil {
		t.Fatal(err)
	}
	if m.Digest != v[1] || m.Previous != v[2] || m.Action != MoveRollback || m.Actor.Name != "deployer" || m.Seq != 4 {
		t.Fatalf("rollback move = %+v", m)
	}
	if got, _ := s.StatManifest(ctx, repo, "production"); got.Digest != v[1] {
		t.Fatalf("production names %s after rollback, want %s", got.Digest, v[1])
	}
	// An explicit target; then one the repository lacks.
	if m, err = s.RollbackTag(ctx, repo, "production", v[0]); err != nil || m.Digest != v[0] || m.Actor.Kind != ActorAnonymous {
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
	if _, err := s.RollbackTag(ctx, repo, "production", missing); !errors.Is(err, ErrManifestUnknown) {
		t.Fatalf("rollback to a missing manifest: %v", err)
	}
	if _, err := s.RollbackTag(ctx, repo, "never", ""); !errors.Is(err, ErrManifestUnknown) {
		t.Fatalf("rollback of a tag without history: %v", err)
	}

	// Deleting the tag records a move to nothing; its history stays.
	if err := s.DeleteTag(ctx, repo, "production"); err != nil {
		t.Fatal(err)
	}
	moves, _, err = s.TagHistory(ctx, repo, "production", 0, 1)
	if err != nil || len(moves) != 1 || moves[0].Action != MoveDelete || moves[0].Digest != "" || moves[0].Previous != v[0] {
		t.Fatalf("after delete: %+v, %v", moves, err)
	}
	if _, _, err := s.TagHistory(ctx, repo, "never", 0, 1); !errors.Is(err, ErrManifestUnknown) {
		t.Fatalf("history of a tag that never existed: %v", err)
	}
	if _, _, err := s.TagHistory(ctx, "no/such", "x", 0, 1); !errors.Is(err, ErrNameUnknown) {
		t.Fatalf("history in an unknown repository: %v", err)
	}
}

func TestImmutableTagsRefuseEveryMove(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(context.Background(), dir, Options{Tags: tagRulesFunc(func(repo, tag string) bool { return tag == "v1.0.0" })})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	ctx := context.Background()
	const repo = "apps/api"
	a := putTestImage(t, s, repo, "a", "v1.0.0", "latest")
	b := putTestImage(t, s, repo, "b")

	// Re-pushing the same digest under the tag is fine.
	_, body, _ := s.GetManifest(ctx, repo, string(a))
	if err := s.PutManifest(ctx, repo, a, body, mustParse(t, body), []string{"v1.0.0"}); err != nil {
		t.Fatalf("re-push of the same digest: %v", err)
	}
	_, bodyB, _ := s.GetManifest(ctx, repo, string(b))
	c := putTestImage(t, s, repo, "c")
	_, bodyC, _ := s.GetManifest(ctx, repo, string(c))
	refused := map[string]error{
		"push":            s.PutManifest(ctx, repo, b, bodyB, mustParse(t, bodyB), []string{"latest", "v1.0.0"}),
		"delete tag":      s.DeleteTag(ctx, repo, "v1.0.0"),
		"delete manifest": s.DeleteManifest(ctx, repo, a),
	}
	_, refused["rollback"] = s.RollbackTag(ctx, repo, "v1.0.0", b)
	for what, err := range refused {
		if !errors.Is(err, ErrTagImmutable) {
			t.Errorf("%s: %v, want ErrTagImmutable", what, err)
		}
	}
	// Nothing changed, not even the mutable tag in the refused push.
	for tag, want := range map[string]digest.Digest{"v1.0.0": a, "latest": a} {
		if got, err := s.StatManifest(ctx, repo, tag); err != nil || got.Digest != want {
			t.Errorf("%s names %s (%v), want %s", tag, got.Digest, err, want)
		}
	}
	moves, _, _ := s.TagHistory(ctx, repo, "latest", 0, 10)
	if len(moves) != 1 {
		t.Errorf("latest moved %d times, want once: %+v", len(moves), moves)
	}
	// A mutable tag still moves; a new immutable tag can be created.
	if err := s.PutManifest(ctx, repo, c, bodyC, mustParse(t, bodyC), []string{"latest"}); err != nil {
		t.Fatalf("moving latest: %v", err)
	}
	if err := s.PutManifest(ctx, repo, c, bodyC, mustParse(t, bodyC), []string{"v1.0.0"}); !errors.Is(err, ErrTagImmutable) {
		t.Fatalf("moving v1.0.0 to c: %v", err)
	}
}
