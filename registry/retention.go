package registry

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/berth-registry/berth/metrics"
	"github.com/berth-registry/berth/registry/glob"
	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/retention"
)

// RetentionConfig configures the retention policies; see docs/retention.md.
type RetentionConfig struct {
	// Interval is how often the server applies the policies; zero (the
	// default) never, leaving it to `berth retention`.
	Interval time.Duration `yaml:"interval"`
	// HistoryWindow is how far back the history of a kept tag protects
	// the digests it named, so that rollback targets survive; zero
	// protects none.
	HistoryWindow time.Duration `yaml:"historyWindow"`
	// Policies are tried in order: the first whose repositories match a
	// repository applies to it; a repository none matches is untouched.
	// A policy with no rule set exempts its repositories from later ones.
	Policies []RetentionPolicy `yaml:"policies"`
}

// RetentionPolicy is one retention policy of the configuration. Patterns
// are globs (see registry/glob). Zero values mean "no such rule".
type RetentionPolicy struct {
	Repositories []string `yaml:"repositories"`
	// KeepLast keeps the newest KeepLast tags.
	KeepLast int `yaml:"keepLast"`
	// KeepTags are always kept.
	KeepTags []string `yaml:"keepTags"`
	// DeleteTagsOlderThan deletes tags that last moved longer ago.
	DeleteTagsOlderThan time.Duration `yaml:"deleteTagsOlderThan"`
	// DeleteUntaggedAfter deletes manifests nothing keeps once they were
	// pushed longer ago.
	DeleteUntaggedAfter time.Duration `yaml:"deleteUntaggedAfter"`
	// KeepPulledWithin keeps the manifests pulled within it, by the pull
	// record, and the tags naming them.
	KeepPulledWithin time.Duration `yaml:"keepPulledWithin"`
	// EvictUnpulledAfter evicts the pull-through cache's manifests that no
	// client pulled for longer, with their tags.
	EvictUnpulledAfter time.Duration `yaml:"evictUnpulledAfter"`
}

// DefaultHistoryWindow is retention.historyWindow when not set.
const DefaultHistoryWindow = 720 * time.Hour

// compileRetention checks and compiles the retention policies.
func compileRetention(c RetentionConfig) ([]retention.Policy, error) {
	if c.Interval < 0 {
		return nil, fmt.Errorf("retention.interval %s: must not be negative", c.Interval)
	}
	if c.HistoryWindow < 0 {
		return nil, fmt.Errorf("retention.historyWindow %s: must not be negative", c.HistoryWindow)
	}
	out := make([]retention.Policy, 0, len(c.Policies))
	for i, p := range c.Policies {
		at := fmt.Sprintf("retention.policies[%d]", i)
		if len(p.Repositories) == 0 {
			return nil, fmt.Errorf("%s: no repositories", at)
		}
		if p.KeepLast < 0 {
			return nil, fmt.Errorf("%s.keepLast %d: must not be negative", at, p.KeepLast)
		}
		if p.DeleteTagsOlderThan < 0 {
			return nil, fmt.Errorf("%s.deleteTagsOlderThan %s: must not be negative", at, p.DeleteTagsOlderThan)
		}
		if p.DeleteUntaggedAfter < 0 {
			return nil, fmt.Errorf("%s.deleteUntaggedAfter %s: must not be negative", at, p.DeleteUntaggedAfter)
		}
		if p.KeepPulledWithin < 0 {
			return nil, fmt.Errorf("%s.keepPulledWithin %s: must not be negative", at, p.KeepPulledWithin)
		}
		if p.EvictUnpulledAfter < 0 {
			return nil, fmt.Errorf("%s.evictUnpulledAfter %s: must not be negative", at, p.EvictUnpulledAfter)
		}
		repos, err := glob.CompileSet(at+".repositories", p.Repositories)
		if err != nil {
			return nil, err
		}
		keep, err := glob.CompileSet(at+".keepTags", p.KeepTags)
		if err != nil {
			return nil, err
		}
		out = append(out, retention.Policy{
			Repositories: repos, KeepLast: p.KeepLast, KeepTags: keep,
			DeleteTagsOlderThan: p.DeleteTagsOlderThan, DeleteUntaggedAfter: p.DeleteUntaggedAfter,
			KeepPulledWithin:   p.KeepPulledWithin,
			EvictUnpulledAfter: p.EvictUnpulledAfter,
		})
	}
	return out, nil
}

// retentionRunner applies the configured policies to a store.
type retentionRunner struct {
	svc      *storage.Service
	policies []retention.Policy
	window   time.Duration
	log      *slog.Logger
	// metrics, if set, counts the runs.
	metrics *metrics.Metrics
}

// run applies the policies once as the system actor "retention" and logs
// what went.
func (r *retentionRunner) run(ctx context.Context, dryRun bool) (retention.Report, error) {
	ctx = storage.WithActor(ctx, storage.Actor{Kind: storage.ActorSystem, Name: "retention"})
	rep, err := retention.Apply(ctx, r.svc, r.policies, retention.Options{DryRun: dryRun, HistoryWindow: r.window})
	if !dryRun && r.metrics != nil {
		r.metrics.RetentionRun(err)
	}
	if err != nil {
		return rep, err
	}
	if !dryRun && len(rep.Tags)+len(rep.Manifests) > 0 {
		r.log.InfoContext(ctx, "retention applied", "repositories", rep.Repositories,
			"tags", len(rep.Tags), "manifests", len(rep.Manifests))
	}
	return rep, nil
}

// schedule applies the policies every interval until ctx is done.
func (r *retentionRunner) schedule(ctx context.Context, every time.Duration) {
	repeat(ctx, every, func(ctx context.Context, _ time.Time) {
		if _, err := r.run(ctx, false); err != nil && ctx.Err() == nil {
			r.log.WarnContext(ctx, "retention", "error", err)
		}
	})
}
