package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// The webhook measurement: manifest PUT latency of a berth without any
// webhook endpoint, with an endpoint that accepts connections and never
// answers (every attempt runs into the endpoint's timeout, and deliveries
// pile up in the outbox), and with a receiver that answers at once. A push
// only appends its deliveries to the outbox in its own transaction, so the
// dead endpoint must not slow it; the healthy receiver shows what the
// deliveries themselves cost the two cores.

// webhookVariant is one configuration measured.
type webhookVariant struct {
	name   string
	config func(dead, live string) string
}

var webhookVariants = []webhookVariant{
	{"no endpoint", func(string, string) string { return "" }},
	{"dead endpoint", func(dead, _ string) string {
		return fmt.Sprintf("notifications:\n  endpoints:\n    - name: dead\n      url: http://%s/hook\n      secret: bench\n      timeout: 5s\n", dead)
	}},
	{"healthy receiver", func(_, live string) string {
		return fmt.Sprintf("notifications:\n  endpoints:\n    - name: live\n      url: http://%s/hook\n      secret: bench\n", live)
	}},
}

// webhookResult is what one variant measured.
type webhookResult struct {
	Variant  string
	P50, P99 time.Duration // of sequential PUTs
	Rate     float64       // PUTs per second at concurrency 16
	Pending  int           // deliveries in the outbox after the runs
	Received int64         // requests the receivers got
}

// blackHole accepts connections and never answers them, until closed.
type blackHole struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func newBlackHole() (*blackHole, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	b := &blackHole{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			b.conns = append(b.conns, c)
			b.mu.Unlock()
			go func() { _, _ = io.Copy(io.Discard, c) }()
		}
	}()
	return b, nil
}

func (b *blackHole) Close() {
	_ = b.ln.Close()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.conns {
		_ = c.Close()
	}
}

// webhookRuns measures each variant, each on a new berth over a new
// directory under scratch. The servers run side by side and the
// measurements take turns in rounds, alternating the order, so that each
// variant meets the same load of the machine; the healthy receiver's
// server, which keeps delivering in the background, is measured in the
// same rounds as the others but its deliveries run while they are
// measured too, so its ratio is an upper bound of what delivering costs.
func webhookRuns(ctx context.Context, bin, scratch string, cfg config) (results []webhookResult, err error) {
	dead, err := newBlackHole()
	if err != nil {
		return nil, err
	}
	defer dead.Close()
	var received atomic.Int64
	live := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		received.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}), ReadHeaderTimeout: 5 * time.Second}
	liveLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	go func() { _ = live.Serve(liveLn) }()
	defer live.Close()

	rounds, batch, dur := 8, 50, time.Second
	if cfg.ManifestDur < 2*time.Second {
		rounds, batch, dur = 4, 30, 500*time.Millisecond
	}
	type measured struct {
		srv  *server
		c    *client
		put  func() error
		lat  []time.Duration
		ops  int64
		took time.Duration
	}
	var ms []*measured
	defer func() {
		for _, m := range ms {
			m.c.http.CloseIdleConnections()
			if serr := m.srv.stop(); serr != nil {
				err = errors.Join(err, serr)
			}
		}
	}()
	for i, v := range webhookVariants {
		dir := filepath.Join(scratch, fmt.Sprintf("webhooks-%d", i))
		if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
			return nil, err
		}
		config := filepath.Join(dir, "berth.yaml")
		if err := os.WriteFile(config, []byte(v.config(dead.ln.Addr().String(), liveLn.Addr().String())), 0o600); err != nil {
			return nil, err
		}
		srv, err := startBerth(ctx, bin, filepath.Join(dir, "data"), "--config", config)
		if err != nil {
			return nil, fmt.Errorf("webhooks, %s: %w", v.name, err)
		}
		m := &measured{srv: srv, c: newClient(srv.url)}
		ms = append(ms, m)
		const repo = "bench/webhooks"
		if err := m.c.putBlob(ctx, repo, emptyConfig); err != nil {
			return nil, err
		}
		var seq atomic.Int64
		m.put = func() error {
			n := seq.Add(1)
			return m.c.putManifest(ctx, repo, fmt.Sprintf("w-%d", n), manifestBody(fmt.Sprint("webhook ", n)))
		}
		for range 20 { // warm up
			if err := m.put(); err != nil {
				return nil, err
			}
		}
	}
	for r := range rounds {
		order := slices.Clone(ms)
		if r%2 == 1 {
			slices.Reverse(order)
		}
		for _, m := range order {
			for range batch {
				start := time.Now()
				if err := m.put(); err != nil {
					return nil, err
				}
				m.lat = append(m.lat, time.Since(start))
			}
			rate, err := opsRun(ctx, 16, dur, m.put)
			if err != nil {
				return nil, err
			}
			m.ops += int64(rate * dur.Seconds())
			m.took += dur
		}
	}
	for i, m := range ms {
		slices.Sort(m.lat)
		res := webhookResult{Variant: webhookVariants[i].name, P50: m.lat[len(m.lat)/2], P99: m.lat[len(m.lat)*99/100],
			Rate: float64(m.ops) / m.took.Seconds()}
		if res.Pending, err = pendingDeliveries(ctx, m.c); err != nil {
			return nil, err
		}
		if i == 2 {
			res.Received = received.Load()
		}
		fmt.Printf("bench:   webhooks, %s: manifest PUT p50 %s, p99 %s, %.0f/s at c=16; %d deliveries pending, %d received\n",
			res.Variant, res.P50, res.P99, res.Rate, res.Pending, res.Received)
		results = append(results, res)
	}
	return results, nil
}

// pendingDeliveries counts the deliveries in a server's outbox.
func pendingDeliveries(ctx context.Context, c *client) (int, error) {
	n, after := 0, ""
	for {
		var page struct {
			Records []json.RawMessage `json:"records"`
			Next    uint64            `json:"next"`
		}
		q := map[string][]string{"state": {"pending"}, "n": {"1000"}}
		if after != "" {
			q["after"] = []string{after}
		}
		resp, err := c.do(ctx, http.MethodGet, c.url("/_berth/admin/events", q), nil, 0, nil, http.StatusOK, true)
		if err != nil {
			return n, err
		}
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if err != nil {
			return n, err
		}
		n += len(page.Records)
		if page.Next == 0 {
			return n, nil
		}
		after = fmt.Sprint(page.Next)
	}
}

// webhookTitle heads the webhook table.
const webhookTitle = "berth's manifest PUT without a webhook endpoint, with one that never answers, and with a receiver that answers at once"

// webhookTable lays out the webhook results, each against the run without
// an endpoint.
func webhookTable(results []webhookResult) table {
	t := table{Header: []string{"manifest PUT", "p50", "p99", "ratio p50", "c=16 ops/s", "ratio c=16", "pending at end", "received"}}
	if len(results) == 0 {
		return t
	}
	base := results[0]
	for _, r := range results {
		t.Cells = append(t.Cells, []string{r.Variant, fmtDuration(r.P50), fmtDuration(r.P99),
			fmt.Sprintf("%.2f", float64(r.P50)/float64(base.P50)), fmt.Sprintf("%.0f", r.Rate),
			fmt.Sprintf("%.2f", r.Rate/base.Rate), fmt.Sprint(r.Pending), fmt.Sprint(r.Received)})
	}
	return t
}

func fmtDuration(d time.Duration) string {
	return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
}
