package replication

import (
	"context"
	"slices"
	"testing"

	"github.com/berth-registry/berth/remote"
	"github.com/berth-registry/berth/storage"
)

// TestPublishQueues: the sink marks the repositories a push rule covers
// pending, once each however many events arrive, for the changes that
// bring content, and never waits (nobody takes from the queue here).
func TestPublishQueues(t *testing.T) {
	r, err := New(Config{Rules: []RuleConfig{
		{Name: "out", Direction: Push, Remote: remote.Config{URL: "http://127.0.0.1:1"}, Repositories: []string{"apps/**"}},
		{Name: "in", Direction: Pull, Remote: remote.Config{URL: "http://127.0.0.1:1"}, Repositories: []string{"**"}},
	}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range 10000 {
		r.Publish(ctx, storage.Event{Action: storage.EventTag, Repo: "apps/web", Tag: "v1"})
		if i%2 == 0 {
			r.Publish(ctx, storage.Event{Action: storage.EventPush, Repo: "apps/api"})
		}
	}
	for _, e := range []storage.Event{
		{Action: storage.EventPromote, Repo: "apps/promoted"},
		{Action: storage.EventRollback, Repo: "apps/rolled"},
		{Action: storage.EventUntag, Repo: "apps/untagged"},
		{Action: storage.EventDeleteManifest, Repo: "apps/deleted"},
		{Action: storage.EventBlobPush, Repo: "apps/blob"},
		{Action: storage.EventTag, Repo: "other/web"},
		{Action: storage.EventGC},
	} {
		r.Publish(ctx, e)
	}
	out, in := r.byName["out"], r.byName["in"]
	if got, want := out.take(), []string{"apps/api", "apps/promoted", "apps/rolled", "apps/web"}; !slices.Equal(got, want) {
		t.Errorf("pending for the push rule: %q; want %q", got, want)
	}
	if got := in.take(); len(got) != 0 {
		t.Errorf("a pull rule was given %q", got)
	}
	if got := out.take(); len(got) != 0 {
		t.Errorf("take did not empty the queue: %q", got)
	}
}
