// Package replication owns Berth's sync rules: copying images between
// Berth and other registries.
//
//   - A pull rule copies into Berth, on a schedule and when asked, the tags
//     of a remote registry's repositories that its patterns select (globs,
//     a semantic version range, signed ones only), with every platform,
//     their referrers and cosign's signature tags (pull.go).
//   - A push rule delivers to a remote registry what is pushed to Berth:
//     it hears of every change as a storage.Sink, which only marks the
//     repository pending and never blocks the change; a worker then
//     delivers what differs from what it delivered before (push.go).
//
// Both copy through package transfer, which verifies every digest and
// skips what the destination holds: a second run copies nothing, and a run
// that stopped half way (a broken connection, a stopped process) resumes
// where it was. Tags set in Berth are recorded in their history as
// storage.MoveSync moves by the system actor sync:<rule>.
//
// What survives a restart is in the index (meta.SyncIndex): each rule's
// last run, whose missing end makes the rule resume it at start, and for a
// push rule the digest and fingerprint (the manifests covered: children,
// referrers, signatures) of every tag delivered. A push rule rescans at
// start every repository it covers and delivers what differs from those
// records, so that a change whose delivery a stop cut short, or that
// arrived while the remote was down, is delivered all the same, and
// nothing already delivered is asked of the remote again.
//
// # Several processes
//
// When several Berth processes share one index, each runs every rule.
// A push rule hears at once of the changes made through its own process
// and, by repeating the rescan every Options.Rescan, of those made
// through the others, or left undelivered by one that went away. Runs of
// one rule in two processes may overlap: each copies what the destination
// lacks and records what it delivered, so the overlap costs repeated work,
// never a wrong copy.
package replication

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/remote"
	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/meta"
	"github.com/berth-registry/berth/transfer"
)

// Options tune a Replicator.
type Options struct {
	// Logger receives a line per run and per failure; nil discards them.
	Logger *slog.Logger
	// UserAgent is sent to remotes.
	UserAgent string
	// Getenv reads credentials named in the configuration; nil means
	// os.Getenv.
	Getenv func(string) string
	// Reserved reports whether a repository is written by another part of
	// Berth alone (the pull-through cache's namespaces): a pull rule never
	// writes there.
	Reserved func(repo string) bool
	// MaxManifestBytes bounds a manifest copied; zero means 4 MiB.
	MaxManifestBytes int64
	// RetryMax bounds the wait before a push rule retries a failed
	// delivery (the wait doubles from a second); zero means five minutes.
	RetryMax time.Duration
	// Rescan is how often a push rule looks again at every repository it
	// covers, delivering what differs from its records: the changes made
	// through other processes sharing the index, whose events this one
	// never hears, and those a process that went away had not delivered.
	// Zero means ten minutes.
	Rescan time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Replicator runs the sync rules over the storage core. It is a
// storage.Sink: pass it in storage.Options.Sinks, then Bind the core.
type Replicator struct {
	rules  []*ruleState
	byName map[string]*ruleState
	opts   Options
	log    *slog.Logger
	push   bool // some rule pushes

	mu   sync.Mutex
	svc  *storage.Service
	life context.Context // Serve's, which requested runs end with
}

// ruleState is a rule with its remote and what it is doing.
type ruleState struct {
	*rule
	reg *remote.Registry
	// run is held by a run of the rule: one at a time.
	run sync.Mutex

	mu      sync.Mutex
	running bool
	next    time.Time       // the next scheduled run of a pull rule
	pending map[string]bool // repositories a push rule has to look at
	wake    chan struct{}   // signalled when pending grows
}

// New returns the Replicator of the rules cfg configures.
func New(cfg Config, opts Options) (*Replicator, error) {
	rules, err := compile(cfg)
	if err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.RetryMax <= 0 {
		opts.RetryMax = 5 * time.Minute
	}
	if opts.Rescan <= 0 {
		opts.Rescan = 10 * time.Minute
	}
	if opts.MaxManifestBytes <= 0 {
		opts.MaxManifestBytes = transfer.DefaultMaxManifestBytes
	}
	r := &Replicator{byName: map[string]*ruleState{}, opts: opts, log: opts.Logger, life: context.Background()}
	for _, ru := range rules {
		reg, err := remote.New(ru.Remote, remote.Options{Getenv: opts.Getenv, UserAgent: opts.UserAgent})
		if err != nil {
			return nil, fmt.Errorf("sync rule %s: %w", ru.Name, err)
		}
		rs := &ruleState{rule: ru, reg: reg, pending: map[string]bool{}, wake: make(chan struct{}, 1)}
		r.rules = append(r.rules, rs)
		r.byName[ru.Name] = rs
		r.push = r.push || ru.Direction == Push
	}
	return r, nil
}

// Bind gives the Replicator the core it replicates; call it before Serve,
// Run or Status.
func (r *Replicator) Bind(svc *storage.Service) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.svc = svc
}

// core returns the bound core and the context requested runs end with.
func (r *Replicator) core() (*storage.Service, context.Context, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.svc == nil {
		return nil, nil, errors.New("replication: no storage core bound")
	}
	return r.svc, r.life, nil
}

// Publish implements storage.Sink: a change of a repository that a push
// rule covers marks it pending for that rule. It never blocks.
func (r *Replicator) Publish(_ context.Context, e storage.Event) {
	if !r.push || e.Repo == "" {
		return
	}
	switch e.Action {
	case storage.EventPush, storage.EventTag, storage.EventPromote, storage.EventRollback:
	default:
		return
	}
	for _, rs := range r.rules {
		if rs.Direction == Push && rs.repos.Match(e.Repo) {
			rs.add(e.Repo)
		}
	}
}

// add marks repos pending and wakes the rule's worker.
func (rs *ruleState) add(repos ...string) {
	rs.mu.Lock()
	for _, repo := range repos {
		rs.pending[repo] = true
	}
	rs.mu.Unlock()
	select {
	case rs.wake <- struct{}{}:
	default:
	}
}

// take empties the pending set and returns it, sorted.
func (rs *ruleState) take() []string {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	out := make([]string, 0, len(rs.pending))
	for repo := range rs.pending {
		out = append(out, repo)
	}
	clear(rs.pending)
	slices.Sort(out)
	return out
}

// Serve runs the rules until ctx is done: pull rules on their schedule
// (an interrupted run is resumed at once), push rules as content arrives
// (after a rescan of what they cover). It returns once every run has
// stopped.
func (r *Replicator) Serve(ctx context.Context) {
	svc, _, err := r.core()
	if err != nil {
		r.log.ErrorContext(ctx, "replication not started", "error", err)
		return
	}
	r.mu.Lock()
	r.life = ctx
	r.mu.Unlock()
	var wg sync.WaitGroup
	for _, rs := range r.rules {
		if rs.Direction == Pull {
			wg.Go(func() { r.schedule(ctx, svc, rs) })
		} else {
			wg.Go(func() { r.deliver(ctx, svc, rs) })
		}
	}
	wg.Wait()
}

// Run runs rule now, waiting for a run of it in progress to end first,
// and reports what it did. The run belongs to the Replicator, not to the
// caller: a caller that goes away does not stop it; the server's shutdown
// does.
func (r *Replicator) Run(ctx context.Context, name string) (Report, error) {
	rs := r.byName[name]
	if rs == nil {
		return Report{}, fmt.Errorf("%w: %q", ErrUnknownRule, name)
	}
	svc, life, err := r.core()
	if err != nil {
		return Report{}, err
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	stop := context.AfterFunc(life, cancel)
	defer stop()
	if rs.Direction == Pull {
		return r.pull(rctx, svc, rs)
	}
	repos, err := r.covered(rctx, svc, rs)
	if err != nil {
		return Report{}, err
	}
	rep, _ := r.pushRepos(rctx, svc, rs, repos, true)
	return rep, nil
}

// Report says what a run did.
type Report struct {
	Rule      string    `json:"rule"`
	Direction string    `json:"direction"`
	Started   time.Time `json:"started"`
	Finished  time.Time `json:"finished"`
	// Tags are the tags set in Berth (pull) or delivered to the remote
	// (push); the signature tags that came with them are not listed.
	Tags []TagResult `json:"tags"`
	// Unsigned counts the tags a signedOnly rule left out.
	Unsigned int `json:"unsigned,omitempty"`
	// Failures are the repositories and tags that could not be copied;
	// the run went on with the others.
	Failures []Failure `json:"failures"`
	// Manifests, Blobs and Bytes count the content copied.
	Manifests int   `json:"manifests"`
	Blobs     int   `json:"blobs"`
	Bytes     int64 `json:"bytes"`
}

// TagResult is a tag a run set or delivered.
type TagResult struct {
	// Repository is the repository at the destination.
	Repository string        `json:"repository"`
	Tag        string        `json:"tag"`
	Digest     digest.Digest `json:"digest"`
}

// Failure is what a run could not copy.
type Failure struct {
	Repository string `json:"repository"`
	Tag        string `json:"tag,omitempty"`
	Error      string `json:"error"`
}

// newReport starts the report of a run of rs.
func (r *Replicator) newReport(rs *ruleState) Report {
	return Report{Rule: rs.Name, Direction: rs.Direction, Started: r.opts.Now().UTC(), Tags: []TagResult{}, Failures: []Failure{}}
}

// fail records a failure in the report and the log.
func (r *Replicator) fail(ctx context.Context, rep *Report, repo, tag string, err error) {
	rep.Failures = append(rep.Failures, Failure{Repository: repo, Tag: tag, Error: err.Error()})
	r.log.WarnContext(ctx, "sync failed", "rule", rep.Rule, "repository", repo, "tag", tag, "error", err)
}

// add counts what a copier transferred.
func (rep *Report) add(s transfer.Stats) {
	rep.Manifests += s.Manifests
	rep.Blobs += s.Blobs
	rep.Bytes += s.Bytes
}

// record returns the run record of a finished report.
func (rep Report) record() meta.SyncRun {
	run := meta.SyncRun{Started: rep.Started, Finished: rep.Finished, Tags: len(rep.Tags), Manifests: rep.Manifests,
		Blobs: rep.Blobs, Bytes: rep.Bytes}
	if n := len(rep.Failures); n > 0 {
		f := rep.Failures[0]
		run.Error = strings.TrimSuffix(f.Repository+":"+f.Tag, ":") + ": " + f.Error
		if n > 1 {
			run.Error += fmt.Sprintf(" (and %d more failures)", n-1)
		}
	}
	return run
}

// putRun records rule's run.
func putRun(ctx context.Context, svc *storage.Service, rule string, run meta.SyncRun) error {
	return svc.Update(ctx, func(tx *storage.Tx) error { return tx.PutSyncRun(rule, run) })
}

// actor is who the rule's writes are recorded as.
func actor(rs *ruleState) storage.Actor {
	return storage.Actor{Kind: storage.ActorSystem, Name: "sync:" + rs.Name}
}

// setRunning marks rs running or not.
func (rs *ruleState) setRunning(on bool) {
	rs.mu.Lock()
	rs.running = on
	rs.mu.Unlock()
}

// signatureTypes are the artifact types of the referrers that sign.
var signatureTypes = []string{
	"application/vnd.dev.cosign.artifact.sig.v1+json",
	"application/vnd.dev.sigstore.bundle",
	"application/vnd.cncf.notary.signature",
}

// signed reports whether manifest desc of src has a signature: a cosign
// signature tag among tags, or a referrer of a signature's type.
func signed(ctx context.Context, src transfer.Source, desc ocispec.Descriptor, tags map[string]bool) (bool, error) {
	if tags[transfer.SignatureTags(desc.Digest)[0]] {
		return true, nil
	}
	refs, err := src.Referrers(ctx, desc)
	if err != nil {
		return false, fmt.Errorf("referrers of %s: %w", desc.Digest, err)
	}
	for _, ref := range refs {
		for _, t := range signatureTypes {
			if strings.HasPrefix(ref.ArtifactType, t) {
				return true, nil
			}
		}
	}
	return false, nil
}

// tagSet makes a set of tags.
func tagSet(tags []string) map[string]bool {
	m := make(map[string]bool, len(tags))
	for _, t := range tags {
		m[t] = true
	}
	return m
}

// fingerprint identifies a set of manifests delivered to dest (the
// remote and repository): a rule given another remote or prefix delivers
// again.
func fingerprint(dest string, graph []digest.Digest) string {
	h := sha256.New()
	h.Write([]byte(dest))
	h.Write([]byte{'\n'})
	for _, d := range graph {
		h.Write([]byte(d))
		h.Write([]byte{'\n'})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// RuleStatus is what berth sync status shows of a rule.
type RuleStatus struct {
	Name         string   `json:"name"`
	Direction    string   `json:"direction"`
	Remote       string   `json:"remote"`
	Repositories []string `json:"repositories"`
	Tags         []string `json:"tags,omitempty"`
	Semver       string   `json:"semver,omitempty"`
	SignedOnly   bool     `json:"signedOnly,omitempty"`
	Prefix       string   `json:"prefix,omitempty"`
	Interval     string   `json:"interval,omitempty"`
	// Running says a run is in progress.
	Running bool `json:"running"`
	// NextRun is when a pull rule runs next by its schedule.
	NextRun *time.Time `json:"nextRun,omitempty"`
	// Pending counts the repositories a push rule is to look at;
	// Delivered the tags it has delivered.
	Pending   int `json:"pending"`
	Delivered int `json:"delivered"`
	// LastRun is the rule's last run (for a push rule, its last batch of
	// deliveries); Interrupted says it did not end (the process stopped
	// first) and is to be resumed.
	LastRun     *RunStatus `json:"lastRun,omitempty"`
	Interrupted bool       `json:"interrupted,omitempty"`
}

// RunStatus is a run as berth sync status shows it.
type RunStatus struct {
	Started   time.Time  `json:"started"`
	Finished  *time.Time `json:"finished,omitempty"`
	Error     string     `json:"error,omitempty"`
	Tags      int        `json:"tags"`
	Manifests int        `json:"manifests"`
	Blobs     int        `json:"blobs"`
	Bytes     int64      `json:"bytes"`
}

// Status returns the state of every rule, in the configuration's order.
func (r *Replicator) Status(ctx context.Context) ([]RuleStatus, error) {
	svc, _, err := r.core()
	if err != nil {
		return nil, err
	}
	out := make([]RuleStatus, 0, len(r.rules))
	for _, rs := range r.rules {
		st := RuleStatus{Name: rs.Name, Direction: rs.Direction, Remote: rs.reg.Host(), Repositories: rs.Repositories,
			Tags: rs.RuleConfig.Tags, Semver: rs.Semver, SignedOnly: rs.SignedOnly, Prefix: rs.Prefix}
		if rs.Interval > 0 {
			st.Interval = rs.Interval.String()
		}
		rs.mu.Lock()
		st.Running, st.Pending = rs.running, len(rs.pending)
		if !rs.next.IsZero() {
			next := rs.next
			st.NextRun = &next
		}
		rs.mu.Unlock()
		err := svc.View(ctx, func(tx meta.Tx) error {
			st.Delivered = 0
			run, ok, err := tx.SyncRun(rs.Name)
			if err != nil {
				return err
			}
			if ok {
				st.LastRun = &RunStatus{Started: run.Started, Error: run.Error, Tags: run.Tags, Manifests: run.Manifests,
					Blobs: run.Blobs, Bytes: run.Bytes}
				if !run.Finished.IsZero() {
					f := run.Finished
					st.LastRun.Finished = &f
				}
				st.Interrupted = run.Finished.IsZero() && !st.Running
			}
			return tx.SyncedTags(rs.Name, func(string, string, meta.SyncedTag) error {
				st.Delivered++
				return nil
			})
		})
		if err != nil {
			return nil, fmt.Errorf("sync rule %s: %w", rs.Name, err)
		}
		out = append(out, st)
	}
	return out, nil
}
