package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"
)

// target is a registry the harness measures, and how to start it on an
// empty directory.
type target struct {
	Name  string // as in the tables
	start func(ctx context.Context, dir string) (*server, error)
}

func berthTarget(bin string) target {
	return target{Name: "berth", start: func(ctx context.Context, dir string) (*server, error) {
		return startBerth(ctx, bin, dir)
	}}
}

// session is what every round of a bench run shares.
type session struct {
	cfg      config
	lim      limits
	plan     [][]blobRun // the blobs every round pushes and pulls
	dataDir  string      // the directory of the first target's first round
	keepData bool        // dataDir was given with -data and is kept
}

// roundResult is what one target measured in one round.
type roundResult struct {
	Target string
	Round  int    // from 1
	Load   string // load average when the round started
	Took   time.Duration
	Rows   []row
}

// rounds measures each target n times, each time with a new server on an
// empty directory: in the order of targets in odd rounds and in reverse
// order in even rounds, so that no target always follows the same one.
// The first round of the first target measures everything; every other
// round measures the figures the targets are compared on (blob push and
// pull, manifest PUT and GET). Results are returned even after an error.
func (s *session) rounds(ctx context.Context, targets []target, n int) ([]roundResult, error) {
	var results []roundResult
	for r := 1; r <= n; r++ {
		order := slices.Clone(targets)
		if r%2 == 0 {
			slices.Reverse(order)
		}
		for _, t := range order {
			full := r == 1 && t.Name == targets[0].Name
			res, err := s.round(ctx, t, r, full)
			if len(res.Rows) > 0 {
				results = append(results, res)
			}
			if err != nil {
				return results, fmt.Errorf("%s, round %d: %w", t.Name, r, err)
			}
		}
	}
	return results, nil
}

// round starts t, measures it and stops it. The first target's first round
// (full) uses the session's data directory, every other round a new
// directory beside it; each is removed afterwards, except a kept -data one.
func (s *session) round(ctx context.Context, t target, r int, full bool) (res roundResult, err error) {
	res = roundResult{Target: t.Name, Round: r}
	dir := s.dataDir
	if !full {
		if dir, err = os.MkdirTemp(filepath.Dir(s.dataDir), "berth-bench-"+t.Name+"-"); err != nil {
			return res, err
		}
	}
	if !full || !s.keepData {
		defer func() {
			if rerr := os.RemoveAll(dir); rerr != nil && err == nil {
				err = rerr
			}
		}()
	}

	// What the previous server left in the page cache unwritten must not
	// be written back while this one is measured.
	synced := time.Now()
	syscall.Sync()
	res.Load = loadAverage()
	fmt.Printf("bench: %s, round %d: sync took %.1fs, load average %s\n", t.Name, r, time.Since(synced).Seconds(), res.Load)

	began := time.Now()
	srv, err := t.start(ctx, dir)
	if err != nil {
		return res, err
	}
	fmt.Printf("bench: %s (pid %d) listening on %s, data %s\n", t.Name, srv.pid(), srv.addr, dir)
	pid := 0
	if full {
		pid = srv.pid()
	}
	c := newClient(srv.url)
	res.Rows, err = s.measure(ctx, c, pid, full)
	c.http.CloseIdleConnections()
	stopping := time.Now()
	serr := srv.stop()
	fmt.Printf("bench: %s stopped in %.1fs\n", t.Name, time.Since(stopping).Seconds())
	if serr != nil {
		err = errors.Join(err, serr)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %s log (last lines):\n%s\n", t.Name, srv.logTail())
	}
	res.Took = time.Since(began)
	fmt.Printf("bench: %s, round %d took %.1fs\n", t.Name, r, res.Took.Seconds())
	return res, err
}

// measure runs the measurements against a running server: blob push and
// pull and manifest PUT and GET; with full also tag list and catalog
// latency, and, if pid is positive, that process's peak RSS.
func (s *session) measure(ctx context.Context, c *client, pid int, full bool) ([]row, error) {
	var rows []row
	step := func(name string, f func() ([]row, error)) error {
		fmt.Printf("bench: %s\n", name)
		t := time.Now()
		r, err := f()
		rows = append(rows, r...)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		fmt.Printf("bench: %s took %.1fs\n", name, time.Since(t).Seconds())
		return nil
	}
	if err := step("blob push and pull", func() ([]row, error) { return blobRuns(ctx, c, pid, s.cfg, s.plan, s.lim) }); err != nil {
		return rows, err
	}
	if err := step("manifest PUT and GET", func() ([]row, error) { return manifestRuns(ctx, c, s.cfg) }); err != nil {
		return rows, err
	}
	if !full {
		return rows, nil
	}
	if err := step("tag list and catalog", func() ([]row, error) { return listRuns(ctx, c, s.cfg) }); err != nil {
		return rows, err
	}
	return rows, nil
}

// ---------------------------------------------------------------------------
// Comparison over targets and rounds.

// spread is a figure over rounds: its median and its range.
type spread struct{ Median, Min, Max float64 }

// spreadOf summarises values; the median of an even count is the mean of
// the middle two.
func spreadOf(values []float64) spread {
	v := slices.Sorted(slices.Values(values))
	n := len(v)
	if n == 0 {
		return spread{}
	}
	med := v[n/2]
	if n%2 == 0 {
		med = (v[n/2-1] + v[n/2]) / 2
	}
	return spread{Median: med, Min: v[0], Max: v[n-1]}
}

// relative is the range over the median: the run-to-run noise of a figure.
func (s spread) relative() float64 { return (s.Max - s.Min) / s.Median }

// comparison is one figure measured on each target in each round.
type comparison struct {
	Name, Unit string
	Of         []spread // per target, in the order of targets
	Ratio      spread   // first target over second, round by round; zero with one target
	Rounds     int      // rounds of the first target
}

// compare summarises the figures that every result has, in the order of
// the first result's rows.
func compare(results []roundResult, targets []string) []comparison {
	if len(results) == 0 {
		return nil
	}
	var cmp []comparison
	for _, first := range results[0].Rows {
		c := comparison{Name: first.Name, Unit: first.Unit}
		byRound := make([]map[int]float64, len(targets)) // per target: round -> value
		for i := range byRound {
			byRound[i] = map[int]float64{}
		}
		everywhere := true
		for _, res := range results {
			i := slices.Index(targets, res.Target)
			j := slices.IndexFunc(res.Rows, func(r row) bool { return r.Name == first.Name })
			if i < 0 || j < 0 {
				everywhere = false
				break
			}
			byRound[i][res.Round] = res.Rows[j].Value
		}
		if !everywhere {
			continue
		}
		for _, vals := range byRound {
			c.Of = append(c.Of, spreadOf(slices.Collect(maps.Values(vals))))
		}
		c.Rounds = len(byRound[0])
		if len(targets) > 1 {
			var ratios []float64
			for r, v := range byRound[0] {
				if w, ok := byRound[1][r]; ok && w > 0 {
					ratios = append(ratios, v/w)
				}
			}
			c.Ratio = spreadOf(ratios)
		}
		cmp = append(cmp, c)
	}
	return cmp
}

// comparisonTable lays out cmp: each target's figure (the median over
// rounds) and, with more than one round, its spread; with two targets the
// ratio of the first to the second (the median of the rounds' ratios) and
// its range.
func comparisonTable(cmp []comparison, targets []string, rounds int) table {
	header := []string{"measurement", "unit"}
	for _, t := range targets {
		header = append(header, t)
		if rounds > 1 {
			header = append(header, t+" spread")
		}
	}
	if len(targets) > 1 {
		header = append(header, targets[0]+"/"+targets[1])
		if rounds > 1 {
			header = append(header, "ratio range")
		}
	}
	var cells [][]string
	for _, c := range cmp {
		line := []string{c.Name, c.Unit}
		for _, s := range c.Of {
			line = append(line, formatValue(s.Median))
			if rounds > 1 {
				line = append(line, fmt.Sprintf("%.0f%%", 100*s.relative()))
			}
		}
		if len(targets) > 1 {
			line = append(line, fmt.Sprintf("%.2f", c.Ratio.Median))
			if rounds > 1 {
				line = append(line, fmt.Sprintf("%.2f-%.2f", c.Ratio.Min, c.Ratio.Max))
			}
		}
		cells = append(cells, line)
	}
	return table{Header: header, Cells: cells}
}

// roundsTable lists the rounds in the order they ran.
func roundsTable(results []roundResult) table {
	t := table{Header: []string{"round", "server", "load average at start", "took"}}
	for _, r := range results {
		t.Cells = append(t.Cells, []string{strconv.Itoa(r.Round), r.Target, r.Load, fmt.Sprintf("%.0f s", r.Took.Seconds())})
	}
	return t
}
