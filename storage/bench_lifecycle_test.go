package storage_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/gc"
	"github.com/berth-registry/berth/storage/retention"
)

// The scale of the lifecycle benchmarks' registry.
const (
	benchRepos   = 20
	benchPerRepo = 100 // manifests per repository, each tagged t<i>
)

// benchRegistry fills a store with benchRepos repositories of benchPerRepo
// tagged manifests, each annotated with a revision of its own, and returns
// it with the digest of the config they share.
func benchRegistry(b *testing.B) (*storage.Service, digest.Digest) {
	b.Helper()
	ctx := context.Background()
	s, cd := benchStore(b)
	for r := range benchRepos {
		repo := fmt.Sprintf("apps/r%02d", r)
		if _, err := s.MountBlob(ctx, repo, "bench", cd); err != nil {
			b.Fatal(err)
		}
		for i := range benchPerRepo {
			n := int64(r*benchPerRepo + i)
			body, m, err := benchManifest(cd, n)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := s.PutManifest(ctx, repo, digest.FromBytes(body), body, m, []string{fmt.Sprintf("t%d", i)}); err != nil {
				b.Fatal(err)
			}
		}
	}
	return s, cd
}

// BenchmarkSearch measures metadata queries over 2,000 manifests: an
// annotation (through the index) and a repository and tag (a scan of one
// repository).
func BenchmarkSearch(b *testing.B) {
	ctx := context.Background()
	s, _ := benchRegistry(b)
	b.Run("annotation", func(b *testing.B) {
		for i := range b.N {
			q := storage.Query{Annotations: map[string]string{"n": fmt.Sprint(i % (benchRepos * benchPerRepo))}, N: 10}
			res, _, err := s.Search(ctx, q)
			if err != nil || len(res) != 1 {
				b.Fatalf("search: %d results, %v", len(res), err)
			}
		}
	})
	b.Run("repository+tag", func(b *testing.B) {
		for i := range b.N {
			q := storage.Query{Repository: fmt.Sprintf("apps/r%02d", i%benchRepos), Tag: fmt.Sprintf("t%d", i%benchPerRepo), N: 10}
			res, _, err := s.Search(ctx, q)
			if err != nil || len(res) != 1 {
				b.Fatalf("search: %d results, %v", len(res), err)
			}
		}
	})
}

// BenchmarkTagHistory measures reading a page of 100 moves of a tag that
// moved 1,000 times, from the newest and from the middle.
func BenchmarkTagHistory(b *testing.B) {
	ctx := context.Background()
	s, cd := benchStore(b)
	for i := range 1000 {
		body, m, err := benchManifest(cd, int64(i))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.PutManifest(ctx, "bench", digest.FromBytes(body), body, m, []string{"production"}); err != nil {
			b.Fatal(err)
		}
	}
	for _, before := range []uint64{0, 500} {
		b.Run(fmt.Sprintf("before=%d", before), func(b *testing.B) {
			for range b.N {
				moves, _, err := s.TagHistory(ctx, "bench", "production", before, 100)
				if err != nil || len(moves) != 100 {
					b.Fatalf("history: %d moves, %v", len(moves), err)
				}
			}
		})
	}
}

// BenchmarkPromote measures a promotion of a tagged manifest into another
// repository, which links its config and records it there.
func BenchmarkPromote(b *testing.B) {
	ctx := context.Background()
	s, _ := benchRegistry(b)
	b.ResetTimer()
	for i := range b.N {
		src := fmt.Sprintf("apps/r%02d", i%benchRepos)
		if _, _, err := s.Promote(ctx, src, fmt.Sprintf("t%d", i%benchPerRepo), "prod/web", "production"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCollectGarbage measures a collection that finds nothing to
// remove in 2,000 manifests: the steady-state cost of the schedule.
func BenchmarkCollectGarbage(b *testing.B) {
	ctx := context.Background()
	s, _ := benchRegistry(b)
	b.ResetTimer()
	for range b.N {
		rep, err := gc.Collect(ctx, s, gc.Options{Grace: time.Hour})
		if err != nil || rep.LinksRemoved+rep.BlobsRemoved+rep.ManifestsRemoved != 0 {
			b.Fatalf("gc: %+v, %v", rep, err)
		}
	}
}

// matchAll is a Matcher for every name.
type matchAll struct{}

func (matchAll) Match(string) bool { return true }

// BenchmarkRetentionDryRun measures planning a keep-the-newest-10 policy
// over 20 repositories of 100 tags.
func BenchmarkRetentionDryRun(b *testing.B) {
	ctx := context.Background()
	s, _ := benchRegistry(b)
	policies := []retention.Policy{{Repositories: matchAll{}, KeepLast: 10, DeleteUntaggedAfter: time.Hour}}
	b.ResetTimer()
	for range b.N {
		rep, err := retention.Apply(ctx, s, policies, retention.Options{DryRun: true, HistoryWindow: time.Hour})
		if err != nil || len(rep.Tags) != benchRepos*(benchPerRepo-10) {
			b.Fatalf("retention: %d tags, %v", len(rep.Tags), err)
		}
	}
}
