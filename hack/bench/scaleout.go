package main

// The scale-out run (issue 11): berth with its blobs in a bucket of an
// S3-compatible server and its index in PostgreSQL (or in bbolt, see
// -scale-index), beside Distribution with its S3 driver on another bucket
// of the same server, measured with the same client in the same rounds:
// blob push and pull and manifest PUT and GET at concurrency 16, the rate
// at which 10,000 tags and 10,000 repositories are created (one manifest
// each, the same seeding code for both), and the time of one page of the
// tag list and of the catalog at the start, the middle and the end of the
// list, with a tenth of the entries and with all of them.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/berth-registry/berth/internal/testserver/postgres"
	"github.com/berth-registry/berth/internal/testserver/versitygw"
)

// The indexes berth can keep on the scale-out run (-scale-index).
const (
	indexBolt     = "bolt"
	indexPostgres = "postgres"
)

// defaultScaleIndex is berth's index on the scale-out run unless
// -scale-index says otherwise.
const defaultScaleIndex = indexPostgres

// Target of issue 11: berth's manifest PUT rate at concurrency 16 over
// Distribution's, both on the same S3-compatible server.
const scalePutTarget = 2.0

// scaleFlatMax is how much a page may slow down, at the end of the list
// over its start and with all the entries over a tenth of them, and still
// count as costing what the page costs: "time proportional to the page"
// with room for this machine's noise.
const scaleFlatMax = 1.5

// Names on the scale-out servers. The catalog lists the run's other
// repositories (bench/...) first, then scale/r00000 onwards, so that its
// end is the last seeded repository.
const (
	scaleTagRepo    = "bench/tags"
	scaleRepoPrefix = "scale/r"
	// scaleRepoTag is the one tag of each seeded repository.
	scaleRepoTag = "v1"
)

func scaleRepoName(i int) string { return fmt.Sprintf("%s%05d", scaleRepoPrefix, i) }

// scaleOutConfig is what the scale-out run measures: every rate at
// concurrency 16, and listings of 10,000 entries in pages of 100.
func scaleOutConfig(quick bool) config {
	if quick {
		return config{
			BlobSizes:    []int64{1 * mib, 8 * mib},
			BlobConc:     []int{4},
			PushBytes:    32 * mib,
			PullMinDur:   300 * time.Millisecond,
			ManifestConc: []int{4},
			ManifestDur:  time.Second,
			Tags:         500,
			Repos:        500,
			PageSize:     20,
			SetupConc:    8,
			Samples:      3,
		}
	}
	return config{
		BlobSizes:    []int64{1 * mib, 32 * mib},
		BlobConc:     []int{16},
		PushBytes:    256 * mib,
		PullMinDur:   time.Second,
		ManifestConc: []int{16},
		ManifestDur:  3 * time.Second,
		Tags:         10000,
		Repos:        10000,
		PageSize:     100,
		SetupConc:    16,
		Samples:      9,
	}
}

// checkPages says whether the listings are long enough for their pages:
// the end page of a tenth of the entries must start after the middle.
func (c config) checkPages() error {
	for _, n := range []int{c.Tags / 10, c.Repos / 10} {
		if c.PageSize < 1 || n < 2*c.PageSize {
			return fmt.Errorf("scale-out: a tenth of the listing (%d) holds fewer than two pages of %d", n, c.PageSize)
		}
	}
	return nil
}

// A page's figure is the median of at least cfg.Samples requests and of
// as many as pageMinDur allows (at most pageMaxSamples), so that pages of
// a fraction of a millisecond get a median the machine's noise moves
// little; once pageBudget has passed, three requests are enough: a page
// of a registry that walks its bucket can take seconds.
const (
	pageMinDur     = time.Second
	pageMaxSamples = 1000
	pageBudget     = 10 * time.Second
)

// ---------------------------------------------------------------------------
// The servers.

// indexChoice is where berth keeps its index on the scale-out run.
type indexChoice struct {
	Name string
	// section returns the storage.index section of berth's configuration
	// for a new, empty index, and what removes that index once berth has
	// stopped; a nil section keeps the index in the data directory.
	section func(ctx context.Context) (map[string]any, func() error, error)
	// stop stops the server the index lives on, if any.
	stop func() error
}

// newIndexChoice is the index named by -scale-index.
func newIndexChoice(name string) (indexChoice, error) {
	switch name {
	case indexBolt:
		return indexChoice{Name: name,
			section: func(context.Context) (map[string]any, func() error, error) {
				return nil, func() error { return nil }, nil
			},
			stop: func() error { return nil },
		}, nil
	case indexPostgres:
		if _, err := postgres.BinDir(); err != nil {
			return indexChoice{}, fmt.Errorf("-scale-index postgres: %w", err)
		}
		// Durable, as the bbolt index is and a production database would
		// be: every commit is flushed.
		pg := postgres.NewDurable()
		return indexChoice{Name: name,
			section: func(ctx context.Context) (map[string]any, func() error, error) {
				db, err := pg.CreateDatabase(ctx)
				if err != nil {
					return nil, nil, err
				}
				drop := func() error { return pg.DropDatabase(context.Background(), db) }
				return map[string]any{"postgres": map[string]any{"dsn": pg.DSN(db)}}, drop, nil
			},
			stop: pg.Stop,
		}, nil
	}
	return indexChoice{}, fmt.Errorf("-scale-index %q: want %s or %s", name, indexBolt, indexPostgres)
}

// berthScaleConfig is berth's configuration on the scale-out run: blobs
// in bucket on the S3-compatible server at endpoint, and the index that
// index says (nil: bbolt in the data directory).
func berthScaleConfig(endpoint, bucket string, index map[string]any) ([]byte, error) {
	storage := map[string]any{"blobs": map[string]any{"s3": map[string]any{
		"endpoint":       endpoint,
		"region":         versitygw.Region,
		"bucket":         bucket,
		"prefix":         "",
		"accessKey":      versitygw.AccessKey,
		"secretKey":      versitygw.SecretKey,
		"forcePathStyle": true,
	}}}
	if index != nil {
		storage["index"] = index
	}
	return yaml.Marshal(map[string]any{"storage": storage})
}

// berthS3Target is berth on a new bucket of gw and a new index of idx in
// each round: "berth serve --config dir/config.yaml --data dir/data".
func berthS3Target(bin string, gw *versitygw.Server, idx indexChoice) target {
	return target{Name: "berth", start: func(ctx context.Context, dir string) (*server, error) {
		bucket, err := gw.CreateBucket(ctx)
		if err != nil {
			return nil, fmt.Errorf("berth's bucket: %w", err)
		}
		section, dropIndex, err := idx.section(ctx)
		if err != nil {
			return nil, errors.Join(fmt.Errorf("berth's %s index: %w", idx.Name, err), gw.RemoveBucket(bucket))
		}
		cleanup := func() error { return errors.Join(dropIndex(), gw.RemoveBucket(bucket)) }
		conf, err := berthScaleConfig(gw.Endpoint(), bucket, section)
		if err != nil {
			return nil, errors.Join(err, cleanup())
		}
		path := filepath.Join(dir, "config.yaml")
		if err := os.WriteFile(path, conf, 0o600); err != nil {
			return nil, errors.Join(err, cleanup())
		}
		s, err := startBerth(ctx, bin, filepath.Join(dir, "data"), "--config", path)
		if err != nil {
			return nil, errors.Join(err, cleanup())
		}
		s.after = cleanup
		return s, nil
	}}
}

// s3Driver is the peer's S3 storage driver on bucket of the S3-compatible
// server at endpoint (plain HTTP, path-style, signature version 4).
func s3Driver(endpoint, bucket string) map[string]any {
	return map[string]any{"s3": map[string]any{
		"regionendpoint": endpoint,
		"bucket":         bucket,
		"region":         versitygw.Region,
		"accesskey":      versitygw.AccessKey,
		"secretkey":      versitygw.SecretKey,
		"forcepathstyle": true,
		"secure":         false,
		"v4auth":         true,
	}}
}

// peerS3Target is the peer on a new bucket of gw in each round.
func peerS3Target(bin string, gw *versitygw.Server) target {
	return target{Name: peerName, start: func(ctx context.Context, dir string) (*server, error) {
		bucket, err := gw.CreateBucket(ctx)
		if err != nil {
			return nil, fmt.Errorf("%s's bucket: %w", peerName, err)
		}
		s, err := startPeer(ctx, bin, dir, s3Driver(gw.Endpoint(), bucket))
		if err != nil {
			return nil, errors.Join(err, gw.RemoveBucket(bucket))
		}
		s.after = func() error { return gw.RemoveBucket(bucket) }
		return s, nil
	}}
}

// ---------------------------------------------------------------------------
// The run.

// scaleReport is what the scale-out run measured.
type scaleReport struct {
	Index   string   // berth's index
	Targets []string // berth first
	Rounds  int
	Config  config
	Results []roundResult
}

// scaleOutRun starts versitygw, runs the scale-out rounds on berth (with
// its index as idx says) and, when peerBin is set, on the peer, and stops
// versitygw. Results measured before an error are returned with it.
func scaleOutRun(ctx context.Context, berthBin, peerBin, scratch string, idx indexChoice, quick bool, rounds int, lim limits) (rep *scaleReport, err error) {
	if _, err := versitygw.Binary(); err != nil {
		return nil, fmt.Errorf("scale-out run: %w", err)
	}
	cfg := scaleOutConfig(quick)
	if err := cfg.checkPages(); err != nil {
		return nil, err
	}
	gw := versitygw.New()
	defer func() {
		if serr := errors.Join(gw.Stop(), idx.stop()); serr != nil {
			err = errors.Join(err, fmt.Errorf("scale-out run: %w", serr))
		}
	}()
	dataDir := filepath.Join(scratch, "scale-out", "berth")
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return nil, err
	}
	fmt.Println("bench: scale-out: computing the digests of the blobs")
	plan, err := planBlobs(ctx, cfg)
	if err != nil {
		return nil, err
	}
	targets := []target{berthS3Target(berthBin, gw, idx)}
	if peerBin != "" {
		targets = append(targets, peerS3Target(peerBin, gw))
	}
	rep = &scaleReport{Index: idx.Name, Rounds: rounds, Config: cfg}
	for _, t := range targets {
		rep.Targets = append(rep.Targets, t.Name)
	}
	s := &session{cfg: cfg, lim: lim, plan: plan, dataDir: dataDir, label: "scale-out "}
	rep.Results, err = s.rounds(ctx, targets, rounds, scaleSteps(cfg, plan, lim))
	return rep, err
}

// scaleSteps are the scale-out measurements, in order: blob push and pull,
// manifest PUT and GET, then the listings, each seeded and measured at a
// tenth of its entries and then at all of them.
func scaleSteps(cfg config, plan [][]blobRun, lim limits) []step {
	steps := blobSteps(cfg, plan, lim)
	steps = append(steps, manifestSteps(cfg)...)
	tags := []int{cfg.Tags / 10, cfg.Tags}
	repos := []int{cfg.Repos / 10, cfg.Repos}
	for k := range tags {
		steps = append(steps, seedTagsStep(cfg, tags[k], k == 0), seedReposStep(cfg, repos[k]))
		steps = append(steps, step{Name: fmt.Sprintf("listing pages at %d tags and %d repositories", tags[k], repos[k]),
			Run: func(ctx context.Context, m *running) ([]row, error) {
				rows, err := tagPages(ctx, m, cfg, tags[k])
				if err != nil {
					return rows, err
				}
				more, err := catalogPages(ctx, m, cfg, repos[k])
				return append(rows, more...), err
			}})
	}
	return steps
}

// seedManifest is the manifest of a seeded tag or repository: an image
// manifest of the empty config and no layers, made its own by an
// annotation naming it, as every image of a registry is its own.
func seedManifest(name string) []byte { return manifestBody(name) }

// seedTagsStep creates tags on scaleTagRepo, 16 (cfg.SetupConc) at a time,
// one manifest PUT each, until it holds n; with first it uploads the
// empty config first. Its figure is the rate of those PUTs.
func seedTagsStep(cfg config, n int, first bool) step {
	return step{Name: fmt.Sprintf("seed %d tags", n), Run: func(ctx context.Context, m *running) ([]row, error) {
		if first {
			if err := m.c.putBlob(ctx, scaleTagRepo, emptyConfig); err != nil {
				return nil, fmt.Errorf("seed the config: %w", err)
			}
		}
		from := m.seededTags
		start := time.Now()
		err := parallel(ctx, cfg.SetupConc, n-from, func(i int) error {
			tag := tagName(from + i)
			return m.c.putManifest(ctx, scaleTagRepo, tag, seedManifest(scaleTagRepo+":"+tag))
		})
		if err != nil {
			return nil, fmt.Errorf("seed tags %d to %d: %w", from, n, err)
		}
		m.seededTags = n
		return []row{seedRow(m.name, fmt.Sprintf("seed tags %d-%d, one manifest PUT each, c=%d", from+1, n, cfg.SetupConc), "tags/s", n-from, time.Since(start))}, nil
	}}
}

// seedReposStep creates repositories until there are n, 16 at a time, each
// with one mount of the empty config from scaleTagRepo and one manifest
// PUT: what pushing a one-image repository costs when its blobs are
// elsewhere in the registry. Its figure is the rate of repositories.
func seedReposStep(cfg config, n int) step {
	d := sha256.Sum256(emptyConfig)
	config := "sha256:" + hex.EncodeToString(d[:])
	return step{Name: fmt.Sprintf("seed %d repositories", n), Run: func(ctx context.Context, m *running) ([]row, error) {
		from := m.seededRepos
		start := time.Now()
		err := parallel(ctx, cfg.SetupConc, n-from, func(i int) error {
			repo := scaleRepoName(from + i)
			if err := m.c.mountBlob(ctx, repo, scaleTagRepo, config); err != nil {
				return err
			}
			return m.c.putManifest(ctx, repo, scaleRepoTag, seedManifest(repo+":"+scaleRepoTag))
		})
		if err != nil {
			return nil, fmt.Errorf("seed repositories %d to %d: %w", from, n, err)
		}
		m.seededRepos = n
		return []row{seedRow(m.name, fmt.Sprintf("seed repositories %d-%d, one mount and one manifest PUT each, c=%d", from+1, n, cfg.SetupConc), "repositories/s", n-from, time.Since(start))}, nil
	}}
}

func seedRow(server, name, unit string, n int, d time.Duration) row {
	v := float64(n) / d.Seconds()
	fmt.Printf("bench:   %s: %s: %.0f %s (%d in %.1fs)\n", server, name, v, unit, n, d.Seconds())
	return row{Name: name, Value: v, Unit: unit, Ratio: math.NaN(), Met: "-"}
}

// mountBlob mounts the blob dgst of repository from into repo with one
// POST ?mount=&from=, which must answer 201 Created.
func (c *client) mountBlob(ctx context.Context, repo, from, dgst string) error {
	q := url.Values{"mount": {dgst}, "from": {from}}
	_, err := c.do(ctx, http.MethodPost, c.url("/v2/"+repo+"/blobs/uploads/", q), nil, 0, nil, http.StatusCreated, false)
	return err
}

// The three positions of a page in a list.
var pagePositions = []string{"start", "middle", "end"}

// tagPages times a page of the tag list of scaleTagRepo, which holds n
// tags, at each position.
func tagPages(ctx context.Context, m *running, cfg config, n int) ([]row, error) {
	c := m.c
	pageURL := func(last string) string {
		q := url.Values{"n": {strconv.Itoa(cfg.PageSize)}}
		if last != "" {
			q.Set("last", last)
		}
		return c.url("/v2/"+scaleTagRepo+"/tags/list", q)
	}
	return listPages(ctx, m, cfg, "tag list", "tags", fmt.Sprintf("%d tags", n), n, tagName, pageURL)
}

// catalogPages times a page of the catalog, whose seeded part holds n
// repositories, at each position.
func catalogPages(ctx context.Context, m *running, cfg config, n int) ([]row, error) {
	c := m.c
	pageURL := func(last string) string {
		q := url.Values{"n": {strconv.Itoa(cfg.PageSize)}}
		if last != "" {
			q.Set("last", last)
		}
		return c.url("/v2/_catalog", q)
	}
	return listPages(ctx, m, cfg, "catalog", "repositories", fmt.Sprintf("%d repositories", n), n, scaleRepoName, pageURL)
}

// listPages times one page of a listing whose seeded entries are name(0)
// to name(n-1), at its start (no last), its middle (last=name(n/2-1)) and
// its end (the last page of the seeded entries), checking each page's
// entries: the median of cfg.Samples requests after an untimed one.
func listPages(ctx context.Context, m *running, cfg config, what, field, count string, n int, name func(int) string, pageURL func(last string) string) ([]row, error) {
	c := m.c
	var rows []row
	for _, pos := range pagePositions {
		last, first := "", -1 // first: the seeded entry the page must start with; -1: any
		switch pos {
		case "middle":
			last, first = name(n/2-1), n/2
		case "end":
			last, first = name(n-cfg.PageSize-1), n-cfg.PageSize
		}
		target := pageURL(last)
		page := func() error {
			items, _, err := c.list(ctx, target, field)
			switch {
			case err != nil:
				return err
			case len(items) != cfg.PageSize:
				return fmt.Errorf("%d entries, want %d", len(items), cfg.PageSize)
			case first >= 0 && (items[0] != name(first) || items[len(items)-1] != name(first+cfg.PageSize-1)):
				return fmt.Errorf("entries %s to %s, want %s to %s", items[0], items[len(items)-1], name(first), name(first+cfg.PageSize-1))
			}
			return nil
		}
		d, k, err := medianWithin(ctx, cfg.Samples, pageBudget, page)
		if err != nil {
			return rows, fmt.Errorf("%s page at the %s of %s: %w", what, pos, count, err)
		}
		ms := float64(d) / float64(time.Millisecond)
		r := row{Name: pageRowName(what, cfg.PageSize, pos, count), Value: ms, Unit: "ms per page", Ratio: math.NaN(), Met: "-"}
		fmt.Printf("bench:   %s: %s: %.2f ms (median of %d)\n", m.name, r.Name, ms, k)
		rows = append(rows, r)
	}
	return rows, nil
}

func pageRowName(what string, size int, pos, count string) string {
	return fmt.Sprintf("%s page (n=%d) at the %s of %s", what, size, pos, count)
}

// medianWithin runs f once untimed, then at least n times and for at
// least pageMinDur (at most pageMaxSamples times), or just three times
// once budget has passed, and returns the median and the count.
func medianWithin(ctx context.Context, n int, budget time.Duration, f func() error) (time.Duration, int, error) {
	if err := f(); err != nil {
		return 0, 0, err
	}
	began := time.Now()
	var ds []time.Duration
	for len(ds) < pageMaxSamples {
		spent := time.Since(began)
		if len(ds) >= 3 && spent >= budget || len(ds) >= n && spent >= pageMinDur {
			break
		}
		if err := ctx.Err(); err != nil {
			return 0, 0, err
		}
		start := time.Now()
		if err := f(); err != nil {
			return 0, 0, err
		}
		ds = append(ds, time.Since(start))
	}
	slices.Sort(ds)
	return ds[len(ds)/2], len(ds), nil
}

// ---------------------------------------------------------------------------
// The scale-out tables.

const scaleTitle = "scale-out: berth on an S3-compatible bucket (versitygw), beside Distribution's S3 driver on the same server, the same client"

// lowerIsBetter says whether a figure of unit is a time.
func lowerIsBetter(unit string) bool { return strings.HasPrefix(unit, "ms") }

// comparisonTable lays out every figure measured on every target: the
// median over rounds per target and, with a peer, how many times faster
// berth is (the ratio of rates, or the inverse ratio of times), against
// the one target set for it.
func (r scaleReport) comparisonTable() table {
	cmp := compare(r.Results, r.Targets)
	header := []string{"measurement", "unit"}
	header = append(header, r.Targets...)
	peer := len(r.Targets) > 1
	if peer {
		header = append(header, r.Targets[0]+" faster by", "target", "met")
	}
	put := fmt.Sprintf("manifest PUT, c=%d", r.Config.ManifestConc[0])
	var cells [][]string
	for _, c := range cmp {
		line := []string{c.Name, c.Unit}
		for _, s := range c.Of {
			line = append(line, formatValue(s.Median))
		}
		if peer {
			ahead := c.Ratio.Median
			if lowerIsBetter(c.Unit) && ahead > 0 {
				ahead = 1 / ahead
			}
			target, ok := "-", "-"
			if c.Name == put {
				target, ok = fmt.Sprintf(">= %.1fx", scalePutTarget), met(ahead >= scalePutTarget)
			}
			line = append(line, fmt.Sprintf("%.2fx", ahead), target, ok)
		}
		cells = append(cells, line)
	}
	return table{Header: header, Cells: cells}
}

// flatnessTable shows, per listing and target, the page times at all the
// entries and how they grow: at the end of the list over its start, and
// with all the entries over a tenth of them (the mean of the three
// positions). A page whose cost is the page's own stays near 1 on both.
func (r scaleReport) flatnessTable() table {
	cmp := compare(r.Results, r.Targets)
	median := func(target int, name string) float64 {
		for _, c := range cmp {
			if c.Name == name && target < len(c.Of) {
				return c.Of[target].Median
			}
		}
		return math.NaN()
	}
	t := table{Header: []string{"listing", "server", "start (ms)", "middle (ms)", "end (ms)", "end / start", "all / a tenth",
		fmt.Sprintf("both <= %.1f", scaleFlatMax)}}
	listings := []struct{ what, unit string }{{"tag list", "tags"}, {"catalog", "repositories"}}
	for _, l := range listings {
		full, tenth := r.Config.Tags, r.Config.Tags/10
		if l.what == "catalog" {
			full, tenth = r.Config.Repos, r.Config.Repos/10
		}
		for i, name := range r.Targets {
			var at, atTenth []float64
			for _, pos := range pagePositions {
				at = append(at, median(i, pageRowName(l.what, r.Config.PageSize, pos, fmt.Sprintf("%d %s", full, l.unit))))
				atTenth = append(atTenth, median(i, pageRowName(l.what, r.Config.PageSize, pos, fmt.Sprintf("%d %s", tenth, l.unit))))
			}
			endStart := at[2] / at[0]
			growth := mean(at) / mean(atTenth)
			ok := "-"
			if !math.IsNaN(endStart) && !math.IsNaN(growth) {
				ok = met(endStart <= scaleFlatMax && growth <= scaleFlatMax)
			}
			t.Cells = append(t.Cells, []string{fmt.Sprintf("%s, %d %s, n=%d", l.what, full, l.unit, r.Config.PageSize), name,
				formatValue(at[0]), formatValue(at[1]), formatValue(at[2]),
				fmt.Sprintf("%.2f", endStart), fmt.Sprintf("%.2f", growth), ok})
		}
	}
	return t
}

func mean(v []float64) float64 {
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

// title says what the tables show.
func (r scaleReport) title() string {
	t := fmt.Sprintf("%s; berth's index: %s", scaleTitle, r.Index)
	if r.Rounds > 1 {
		t += fmt.Sprintf("; median of %d rounds", r.Rounds)
	}
	return t
}

// write prints the scale-out tables with printTable or markdownTable.
func (r scaleReport) write(w io.Writer, tab func(io.Writer, table), title func(string) string) {
	fmt.Fprintf(w, "\n%s:\n\n", title(r.title()))
	tab(w, r.comparisonTable())
	fmt.Fprintf(w, "\n%s:\n\n", title("page time against the page's position and the list's length (medians)"))
	tab(w, r.flatnessTable())
	fmt.Fprintln(w)
	tab(w, roundsTable(r.Results))
}

// runScaleOut is the scale-out run of the options o, with the peer when
// o.Peer is set.
func runScaleOut(ctx context.Context, o options, berthBin, scratch string, lim limits) (*scaleReport, error) {
	idx, err := newIndexChoice(o.ScaleIndex)
	if err != nil {
		return nil, err
	}
	fmt.Printf("bench: scale-out: berth on versitygw with its index in %s", idx.Name)
	if o.Peer != "" {
		fmt.Printf(", %s on its S3 driver on the same versitygw", peerName)
	}
	fmt.Println()
	return scaleOutRun(ctx, berthBin, o.Peer, scratch, idx, o.Quick, o.Repeat, lim)
}
