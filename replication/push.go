package replication

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/meta"
	"github.com/berth-registry/berth/transfer"
)

// deliver runs the push rule rs until ctx is done: it first marks pending
// every repository the rule covers (the rescan that makes delivery
// survive a restart), then delivers the pending repositories whenever
// there are some. Repositories whose delivery failed are pending again,
// retried after a wait that doubles from a second up to RetryMax. The
// rescan repeats every Options.Rescan: the events of this process tell
// it of changes at once, the rescan of those made through other
// processes sharing the index.
func (r *Replicator) deliver(ctx context.Context, svc *storage.Service, rs *ruleState) {
	rescan := func() {
		repos, err := r.covered(ctx, svc, rs)
		if err != nil && ctx.Err() == nil {
			r.log.ErrorContext(ctx, "sync rule: list the repositories it covers", "rule", rs.Name, "error", err)
		}
		rs.add(repos...)
	}
	rescan()
	every := time.NewTicker(r.opts.Rescan)
	defer every.Stop()
	// While a failed delivery waits for its retry, new content only joins
	// the pending set: a failing remote is not asked more often than the
	// wait allows.
	var retry <-chan time.Time
	wait := time.Duration(0)
	for {
		wake := rs.wake
		if retry != nil {
			wake = nil
		}
		select {
		case <-ctx.Done():
			return
		case <-every.C:
			rescan() // joins the pending set; delivered at the next wake
			continue
		case <-wake:
		case <-retry:
			retry = nil
		}
		repos := rs.take()
		if len(repos) == 0 {
			continue
		}
		_, failed := r.pushRepos(ctx, svc, rs, repos, false)
		if ctx.Err() != nil {
			return
		}
		if len(failed) == 0 {
			wait = 0
			continue
		}
		wait = min(max(2*wait, time.Second), r.opts.RetryMax)
		rs.add(failed...)
		retry = time.After(wait)
	}
}

// covered lists the local repositories rs covers.
func (r *Replicator) covered(ctx context.Context, svc *storage.Service, rs *ruleState) ([]string, error) {
	var out []string
	err := svc.View(ctx, func(tx meta.Tx) error {
		out = out[:0]
		return tx.Repositories("", func(repo string) error {
			if rs.repos.Match(repo) {
				out = append(out, repo)
			}
			return nil
		})
	})
	return out, err
}

// pushRepos delivers the tags rs selects in repos that differ from what it
// delivered before, and returns the report and the repositories that
// failed. The run is recorded when it delivered something or failed, or
// always when recordAlways.
func (r *Replicator) pushRepos(ctx context.Context, svc *storage.Service, rs *ruleState, repos []string, recordAlways bool) (Report, []string) {
	rs.run.Lock()
	defer rs.run.Unlock()
	rs.setRunning(true)
	defer rs.setRunning(false)
	ctx = storage.WithActor(ctx, actor(rs))
	rep := r.newReport(rs)
	var failed []string
	for _, repo := range repos {
		if ctx.Err() != nil {
			failed = append(failed, repo)
			continue
		}
		if err := r.pushRepo(ctx, svc, rs, repo, &rep); err != nil {
			failed = append(failed, repo)
		}
	}
	if ctx.Err() != nil {
		return rep, failed
	}
	rep.Finished = r.opts.Now().UTC()
	if recordAlways || len(rep.Tags) > 0 || len(rep.Failures) > 0 {
		if err := putRun(ctx, svc, rs.Name, rep.record()); err != nil {
			r.log.WarnContext(ctx, "sync rule: record the run", "rule", rs.Name, "error", err)
		}
	}
	if len(rep.Tags) > 0 || len(rep.Failures) > 0 {
		r.log.InfoContext(ctx, "sync delivery done", "rule", rs.Name, "tags", len(rep.Tags), "manifests", rep.Manifests,
			"blobs", rep.Blobs, "bytes", rep.Bytes, "failures", len(rep.Failures))
	}
	return rep, failed
}

// pushRepo delivers what differs in repo; an error means something of it
// failed (and is in the report).
func (r *Replicator) pushRepo(ctx context.Context, svc *storage.Service, rs *ruleState, repo string, rep *Report) error {
	src := transfer.Core{Svc: svc, Repo: repo}
	tags, err := src.Tags(ctx)
	if err != nil {
		r.fail(ctx, rep, repo, "", err)
		return err
	}
	set := tagSet(tags)
	dstName := rs.destination(repo)
	orepo, err := rs.reg.Repository(dstName)
	if err != nil {
		r.fail(ctx, rep, repo, "", err)
		return err
	}
	opts := transfer.Options{SourceTags: set, MaxManifestBytes: r.opts.MaxManifestBytes}
	// The graph of a tag is read locally, through a target that holds
	// everything: nothing is asked of the remote for what was delivered.
	local := transfer.New(src, holdsAll{}, opts)
	c := transfer.New(src, transfer.Remote{Repo: orepo}, opts)
	defer func() { rep.add(c.Stats()) }()
	var failure error
	for _, tag := range tags {
		if !rs.wantTag(tag) {
			continue
		}
		if err := r.pushTag(ctx, svc, rs, src, local, c, repo, dstName, tag, set, rep); err != nil {
			r.fail(ctx, rep, repo, tag, err)
			failure = err
		}
	}
	return failure
}

// pushTag delivers tag of repo unless what it names, with its children,
// referrers and signatures, is what was delivered last.
func (r *Replicator) pushTag(ctx context.Context, svc *storage.Service, rs *ruleState, src transfer.Core, local, c *transfer.Copier,
	repo, dstName, tag string, set map[string]bool, rep *Report) error {
	desc, err := src.Resolve(ctx, tag)
	if errors.Is(err, transfer.ErrNotFound) {
		return nil // deleted since the listing
	}
	if err != nil {
		return err
	}
	if rs.SignedOnly {
		ok, err := signed(ctx, src, desc, set)
		if err != nil || !ok {
			if !ok && err == nil {
				rep.Unsigned++
			}
			return err
		}
	}
	graph, err := local.Copy(ctx, desc)
	if err != nil {
		return err
	}
	fp := fingerprint(rs.reg.URL("/v2/"+dstName), graph)
	var last meta.SyncedTag
	var ok bool
	if err := svc.View(ctx, func(tx meta.Tx) error {
		last, ok, err = tx.SyncedTag(rs.Name, repo, tag)
		return err
	}); err != nil {
		return err
	}
	if ok && last.Digest == desc.Digest && last.Fingerprint == fp {
		return nil
	}
	if _, err := c.Copy(ctx, desc, tag); err != nil {
		return err
	}
	err = svc.Update(ctx, func(tx *storage.Tx) error {
		return tx.PutSyncedTag(rs.Name, repo, tag, meta.SyncedTag{Digest: desc.Digest, Fingerprint: fp, Synced: r.opts.Now().UTC()})
	})
	if err != nil {
		return fmt.Errorf("record the delivery: %w", err)
	}
	rep.Tags = append(rep.Tags, TagResult{Repository: dstName, Tag: tag, Digest: desc.Digest})
	return nil
}

// holdsAll is a Target that holds everything: a copy to it only walks the
// source's graph.
type holdsAll struct{}

func (holdsAll) HasManifest(context.Context, ocispec.Descriptor) (bool, error) { return true, nil }
func (holdsAll) HasBlob(context.Context, ocispec.Descriptor) (bool, error)     { return true, nil }
func (holdsAll) PushBlob(context.Context, ocispec.Descriptor, io.Reader) error {
	return errors.New("holdsAll takes nothing")
}
func (holdsAll) PushManifest(context.Context, ocispec.Descriptor, []byte) error {
	return errors.New("holdsAll takes nothing")
}
func (holdsAll) Resolve(context.Context, string) (ocispec.Descriptor, error) {
	return ocispec.Descriptor{}, transfer.ErrNotFound
}
func (holdsAll) Tag(context.Context, ocispec.Descriptor, string) error { return nil }
