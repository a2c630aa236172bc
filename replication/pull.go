package replication

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/meta"
	"github.com/berth-registry/berth/transfer"
)

// schedule runs the pull rule rs on its schedule until ctx is done. A run
// that the last process did not finish is resumed at once; otherwise the
// first run is due an interval after the last one started (at once when
// there was none).
func (r *Replicator) schedule(ctx context.Context, svc *storage.Service, rs *ruleState) {
	var last meta.SyncRun
	var ok bool
	err := svc.View(ctx, func(tx meta.Tx) error {
		var err error
		last, ok, err = tx.SyncRun(rs.Name)
		return err
	})
	if err != nil {
		r.log.ErrorContext(ctx, "sync rule not scheduled: read its last run", "rule", rs.Name, "error", err)
		return
	}
	now := r.opts.Now()
	var due time.Time
	switch {
	case ok && last.Finished.IsZero():
		r.log.InfoContext(ctx, "resuming an interrupted sync run", "rule", rs.Name, "started", last.Started)
		due = now
	case rs.Interval <= 0:
		return // run when asked only
	case ok:
		due = last.Started.Add(rs.Interval)
	default:
		due = now
	}
	for {
		rs.mu.Lock()
		rs.next = due
		rs.mu.Unlock()
		t := time.NewTimer(max(due.Sub(r.opts.Now()), 0))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		start := r.opts.Now()
		if _, err := r.pull(ctx, svc, rs); err != nil && ctx.Err() == nil {
			r.log.WarnContext(ctx, "sync run failed", "rule", rs.Name, "error", err)
		}
		if rs.Interval <= 0 {
			rs.mu.Lock()
			rs.next = time.Time{}
			rs.mu.Unlock()
			return
		}
		due = start.Add(rs.Interval)
	}
}

// pull runs the pull rule rs once: for every repository it selects on the
// remote, every tag it selects is copied into Berth under the rule's
// prefix, with what it references and refers to, and set there. A
// repository or tag that fails is reported and the run goes on. The run
// is recorded when it starts and when it ends; a run whose end is not
// recorded is resumed by the next process.
func (r *Replicator) pull(ctx context.Context, svc *storage.Service, rs *ruleState) (Report, error) {
	rs.run.Lock()
	defer rs.run.Unlock()
	rs.setRunning(true)
	defer rs.setRunning(false)
	ctx = storage.WithActor(ctx, actor(rs))
	rep := r.newReport(rs)
	if err := putRun(ctx, svc, rs.Name, meta.SyncRun{Started: rep.Started}); err != nil {
		return rep, fmt.Errorf("record the run: %w", err)
	}
	repos, err := r.remoteRepos(ctx, rs)
	if err != nil {
		r.fail(ctx, &rep, "", "", err)
	}
	for _, repo := range repos {
		if ctx.Err() != nil {
			break
		}
		r.pullRepo(ctx, svc, rs, repo, &rep)
	}
	if err := ctx.Err(); err != nil {
		// Stopped: the run stays unfinished, to be resumed.
		return rep, err
	}
	rep.Finished = r.opts.Now().UTC()
	if err := putRun(ctx, svc, rs.Name, rep.record()); err != nil {
		return rep, fmt.Errorf("record the run: %w", err)
	}
	r.log.InfoContext(ctx, "sync run done", "rule", rs.Name, "tags", len(rep.Tags), "manifests", rep.Manifests,
		"blobs", rep.Blobs, "bytes", rep.Bytes, "failures", len(rep.Failures), "duration", rep.Finished.Sub(rep.Started))
	return rep, nil
}

// remoteRepos returns the remote's repositories rs selects: its literal
// names, and with a wildcard pattern the matching names of the catalog.
func (r *Replicator) remoteRepos(ctx context.Context, rs *ruleState) ([]string, error) {
	out := slices.Clone(rs.literal)
	if rs.wild {
		reg, err := rs.reg.Registry()
		if err != nil {
			return out, err
		}
		err = reg.Repositories(ctx, "", func(page []string) error {
			for _, name := range page {
				if rs.repos.Match(name) {
					out = append(out, name)
				}
			}
			return nil
		})
		if err != nil {
			return out, fmt.Errorf("list the repositories of %s: %w", rs.reg.Host(), err)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// pullRepo copies the tags rs selects of the remote's repo.
func (r *Replicator) pullRepo(ctx context.Context, svc *storage.Service, rs *ruleState, repo string, rep *Report) {
	dst := rs.destination(repo)
	if r.opts.Reserved != nil && r.opts.Reserved(dst) {
		r.fail(ctx, rep, dst, "", fmt.Errorf("%s is in a namespace of the pull-through cache, which alone writes there", dst))
		return
	}
	orepo, err := rs.reg.Repository(repo)
	if err != nil {
		r.fail(ctx, rep, dst, "", err)
		return
	}
	src := transfer.Remote{Repo: orepo}
	tags, err := src.Tags(ctx)
	if err != nil {
		r.fail(ctx, rep, dst, "", fmt.Errorf("list the tags of %s on %s: %w", repo, rs.reg.Host(), err))
		return
	}
	set := tagSet(tags)
	to := transfer.Core{Svc: svc, Repo: dst, Action: storage.MoveSync}
	c := transfer.New(src, to, transfer.Options{SourceTags: set, MaxManifestBytes: r.opts.MaxManifestBytes})
	defer func() { rep.add(c.Stats()) }()
	slices.Sort(tags)
	for _, tag := range tags {
		if ctx.Err() != nil {
			return
		}
		if !rs.wantTag(tag) {
			continue
		}
		desc, err := src.Resolve(ctx, tag)
		if errors.Is(err, transfer.ErrNotFound) {
			continue // deleted since the listing
		}
		if err != nil {
			r.fail(ctx, rep, dst, tag, err)
			continue
		}
		if rs.SignedOnly {
			ok, err := signed(ctx, src, desc, set)
			if err != nil {
				r.fail(ctx, rep, dst, tag, err)
				continue
			}
			if !ok {
				rep.Unsigned++
				continue
			}
		}
		cur, cerr := to.Resolve(ctx, tag)
		if _, err := c.Copy(ctx, desc, tag); err != nil {
			r.fail(ctx, rep, dst, tag, err)
			continue
		}
		if cerr != nil || cur.Digest != desc.Digest {
			rep.Tags = append(rep.Tags, TagResult{Repository: dst, Tag: tag, Digest: desc.Digest})
		}
	}
}
