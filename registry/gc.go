package registry

import (
	"context"
	"fmt"
	"time"

	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/gc"
)

// GCConfig schedules online garbage collection; see docs/gc.md.
type GCConfig struct {
	// Interval is the time between two scheduled collections; 0 turns the
	// schedule off (`berth gc` and the admin API still collect).
	Interval time.Duration `yaml:"interval"`
	// Grace is the age below which nothing is collected: it must exceed
	// the longest push (from the first blob upload, or the first check of
	// a blob already there, to the manifest push).
	Grace time.Duration `yaml:"grace"`
	// SeenRefresh is how often a blob lookup records in the index that it
	// found a link (the link's Seen time), which collections on every
	// replica respect; a collection needs a grace of at least
	// gc.MinGraceRefreshes of it. Every replica sharing an index must
	// use the same.
	SeenRefresh time.Duration `yaml:"seenRefresh"`
}

// minScheduledGrace is the shortest grace a scheduled collection accepts:
// anything shorter could fail pushes in progress. It is also
// gc.MinGraceRefreshes times storage.DefaultSeenRefresh, the shortest
// grace gc.Collect accepts, other than 0, with the default gc.seenRefresh. `berth gc --grace`
// accepts less, for an operator who knows the registry is idle.
const minScheduledGrace = time.Minute

// defaultGC collects hourly with an hour's grace. A collection reads the
// index only (never the blob tree) and removes in small transactions, so
// running it hourly is cheap, and it keeps the disk from filling with the
// layers of CI images deleted by retention; an hour is far longer than a
// push takes.
func defaultGC() GCConfig {
	return GCConfig{Interval: time.Hour, Grace: time.Hour, SeenRefresh: storage.DefaultSeenRefresh}
}

// validate reports a setting that cannot work.
func (g GCConfig) validate() error {
	if g.Interval < 0 {
		return fmt.Errorf("gc.interval %s: must not be negative (0 turns the schedule off)", g.Interval)
	}
	if g.Interval > 0 && g.Interval < time.Minute {
		return fmt.Errorf("gc.interval %s: at least 1m, or 0 to turn the schedule off", g.Interval)
	}
	if g.Grace < 0 {
		return fmt.Errorf("gc.grace %s: must not be negative", g.Grace)
	}
	if g.Interval > 0 && g.Grace < minScheduledGrace {
		return fmt.Errorf("gc.grace %s: a scheduled collection needs at least %s, or pushes in progress could fail", g.Grace, minScheduledGrace)
	}
	if g.SeenRefresh <= 0 {
		return fmt.Errorf("gc.seenRefresh %s: must be positive", g.SeenRefresh)
	}
	if least := gc.MinGraceRefreshes * g.SeenRefresh; g.Interval > 0 && g.Grace < least {
		return fmt.Errorf("gc.grace %s: a collection needs at least %d times gc.seenRefresh (%s)", g.Grace, gc.MinGraceRefreshes, least)
	}
	return nil
}

// collect runs one garbage collection of the server's store.
func (s *Server) collect(ctx context.Context, grace time.Duration, dryRun bool) (gc.Report, error) {
	rep, err := gc.Collect(ctx, s.store.Service, gc.Options{
		Grace: grace, UploadIdle: s.cfg.Limits.UploadIdleTimeout, DryRun: dryRun, Logger: s.log,
	})
	if !dryRun && s.metrics != nil {
		s.metrics.GC(rep, err)
	}
	return rep, err
}

// collectGarbage runs a collection every gc.interval until ctx is done.
func (s *Server) collectGarbage(ctx context.Context) {
	repeat(ctx, s.cfg.GC.Interval, func(ctx context.Context, _ time.Time) {
		if _, err := s.collect(ctx, s.cfg.GC.Grace, false); err != nil && ctx.Err() == nil {
			s.log.WarnContext(ctx, "scheduled garbage collection", "error", err)
		}
	})
}
