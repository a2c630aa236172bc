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
	"sync/atomic"
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
	label    string      // names the rounds in messages: "" or "scale-out "
}

// roundResult is what one target measured in one round.
type roundResult struct {
	Target string
	Round  int           // from 1
	Load   string        // load average when the round started
	Took   time.Duration // spent in its measurements
	Rows   []row
}

// step is one measurement, or an untimed setup, that every server of a
// round runs in the same order; it returns the figures it measured.
type step struct {
	Name string
	Full bool // only in the full round (the first target's first)
	Run  func(ctx context.Context, m *running) ([]row, error)
}

// running is a server being measured in a round, and what its steps share.
type running struct {
	name string
	srv  *server
	c    *client
	dir  string
	keep bool // dir is the kept -data directory
	full bool // this round runs every step on it
	pid  int  // positive: watch this process's peak RSS

	seq  atomic.Int64       // manifest PUT tags
	base map[string]float64 // manifest rate at the first concurrency, per operation
	rss  []row              // peak RSS, recorded by the push that measured it
	rows []row
	took time.Duration // time spent in its steps

	// seededTags and seededRepos are how many tags and repositories the
	// scale-out steps have created so far.
	seededTags, seededRepos int
}

// steps are the measurements of a round, in order: blob push and pull and
// manifest PUT and GET on every server; peak RSS, tag list and catalog in
// the full round only.
func (s *session) steps() []step {
	steps := blobSteps(s.cfg, s.plan, s.lim)
	steps = append(steps, manifestSteps(s.cfg)...)
	return append(steps, step{Name: "tag list and catalog", Full: true, Run: func(ctx context.Context, m *running) ([]row, error) {
		return listRuns(ctx, m.c, s.cfg)
	}})
}

// rounds measures the targets n times with steps. In each round every target runs as
// a new server on an empty directory, and each step runs on one target
// after the other, so that the two values of a figure are measured
// moments apart and the machine's load changes little between them; the targets take turns in the order of targets in odd rounds and
// in reverse order in even ones, so that none always follows the same one.
// The first round of the first target runs every step; the others run
// the steps the targets are compared on (blob push and pull, manifest PUT
// and GET). Results are returned even after an error.
func (s *session) rounds(ctx context.Context, targets []target, n int, steps []step) ([]roundResult, error) {
	var results []roundResult
	for r := 1; r <= n; r++ {
		order := slices.Clone(targets)
		if r%2 == 0 {
			slices.Reverse(order)
		}
		res, err := s.round(ctx, order, r, targets[0].Name, steps)
		results = append(results, res...)
		if err != nil {
			return results, fmt.Errorf("round %d: %w", r, err)
		}
	}
	return results, nil
}

// round starts the targets, runs the steps on each in turn, and stops
// them. The full target (in round 1) uses the session's data directory,
// every other one a new directory beside it; each is removed afterwards,
// except a kept -data one.
func (s *session) round(ctx context.Context, order []target, r int, fullTarget string, steps []step) (results []roundResult, err error) {
	load := loadAverage()
	fmt.Printf("bench: %sround %d, load average %s\n", s.label, r, load)
	var ms []*running
	defer func() {
		for _, m := range ms {
			m.c.http.CloseIdleConnections()
			if serr := m.srv.stop(); serr != nil {
				err = errors.Join(err, serr)
				fmt.Fprintf(os.Stderr, "bench: %s log (last lines):\n%s\n", m.name, m.srv.logTail())
			}
			if !m.keep {
				if rerr := os.RemoveAll(m.dir); rerr != nil {
					err = errors.Join(err, rerr)
				}
			}
			if len(m.rows) > 0 {
				results = append(results, roundResult{Target: m.name, Round: r, Load: load, Took: m.took, Rows: m.rows})
			}
		}
	}()
	for _, t := range order {
		m, err := s.start(ctx, t, r == 1 && t.Name == fullTarget)
		if err != nil {
			return nil, err
		}
		ms = append(ms, m)
	}
	for _, st := range steps {
		for _, m := range ms {
			if st.Full && !m.full {
				continue
			}
			// What the previous step left in the page cache unwritten
			// must not be written back while this one is measured.
			syscall.Sync()
			began := time.Now()
			rows, err := st.Run(ctx, m)
			m.took += time.Since(began)
			m.rows = append(m.rows, rows...)
			if err != nil {
				fmt.Fprintf(os.Stderr, "bench: %s log (last lines):\n%s\n", m.name, m.srv.logTail())
				return nil, fmt.Errorf("%s: %s: %w", m.name, st.Name, err)
			}
		}
	}
	return nil, nil
}

// start starts t on its directory: the session's data directory if full,
// otherwise a new one beside it.
func (s *session) start(ctx context.Context, t target, full bool) (*running, error) {
	m := &running{name: t.Name, dir: s.dataDir, keep: full && s.keepData, full: full, base: map[string]float64{}}
	if !full {
		dir, err := os.MkdirTemp(filepath.Dir(s.dataDir), "berth-bench-"+t.Name+"-")
		if err != nil {
			return nil, err
		}
		m.dir = dir
	}
	srv, err := t.start(ctx, m.dir)
	if err != nil {
		if !m.keep {
			err = errors.Join(err, os.RemoveAll(m.dir))
		}
		return nil, err
	}
	m.srv, m.c = srv, newClient(srv.url)
	if full {
		m.pid = srv.pid()
	}
	fmt.Printf("bench: %s (pid %d) listening on %s, data %s\n", t.Name, srv.pid(), srv.addr, m.dir)
	return m, nil
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
