// Package health answers the liveness and readiness probes of load
// balancers and orchestrators: GET /healthz says the process is alive and
// serving HTTP, GET /readyz that it can serve requests: its probes (the
// index and the blob store answer, each checked through its seam) pass and
// it is not shutting down. It owns the probes' timeouts and the draining
// state; package registry names the probes and calls Drain when a
// shutdown begins, before it stops accepting connections.
//
// Both endpoints are fast and need no credentials. A probe that does not
// answer within the timeout fails the readiness check at the timeout; it
// is not started again while it still runs, so that a hung dependency
// never piles up goroutines.
package health

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// The paths of the probes.
const (
	LivePath  = "/healthz"
	ReadyPath = "/readyz"
)

// DefaultTimeout bounds a probe when no timeout is given.
const DefaultTimeout = 2 * time.Second

// Probe is one check of readiness: a dependency that must answer.
type Probe struct {
	// Name names the dependency in the answer of /readyz.
	Name string
	// Check returns nil when the dependency answers. It should honour
	// ctx, which ends at the timeout; one that does not is waited for no
	// longer than the timeout anyway.
	Check func(ctx context.Context) error
}

// Checker answers the probes. It is safe for concurrent use.
type Checker struct {
	probes   []*probe
	timeout  time.Duration
	draining atomic.Bool
	log      *slog.Logger
}

// probe is a Probe with its run in progress, if any.
type probe struct {
	Probe
	mu      sync.Mutex
	current *run
}

// run is one run of a probe's check; err is set before done is closed.
type run struct {
	done chan struct{}
	err  error
}

// New returns a Checker of probes, each bounded by timeout (zero:
// DefaultTimeout). Why a probe failed goes to log (nil: nowhere); the
// answer says only that it did, for callers need no credentials.
func New(timeout time.Duration, log *slog.Logger, probes ...Probe) *Checker {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Checker{timeout: timeout, log: log}
	for _, p := range probes {
		c.probes = append(c.probes, &probe{Probe: p})
	}
	return c
}

// Drain makes the server not ready from now on: a shutdown has begun.
func (c *Checker) Drain() { c.draining.Store(true) }

// Draining reports whether Drain was called.
func (c *Checker) Draining() bool { return c.draining.Load() }

// errDraining is the readiness error of a server shutting down;
// errTimeout that of a probe that did not answer in time.
var (
	errDraining = errors.New("shutting down")
	errTimeout  = errors.New("timeout")
)

// Ready runs every probe at once and reports, per probe, nil or why it
// failed; ready is true when all passed and the server is not draining.
func (c *Checker) Ready(ctx context.Context) (ready bool, results map[string]error) {
	results = make(map[string]error, len(c.probes)+1)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, p := range c.probes {
		wg.Go(func() {
			err := p.check(ctx, c.timeout)
			mu.Lock()
			results[p.Name] = err
			mu.Unlock()
		})
	}
	wg.Wait()
	ready = !c.Draining()
	if !ready {
		results["server"] = errDraining
	}
	for _, err := range results {
		if err != nil {
			ready = false
		}
	}
	return ready, results
}

// check runs the probe's check, or joins the run in progress, and waits
// for it up to timeout.
func (p *probe) check(ctx context.Context, timeout time.Duration) error {
	p.mu.Lock()
	r := p.current
	if r == nil {
		r = &run{done: make(chan struct{})}
		p.current = r
		go func() {
			cctx, cancel := context.WithTimeout(context.Background(), timeout)
			err := p.Check(cctx)
			cancel()
			r.err = err
			p.mu.Lock()
			p.current = nil
			p.mu.Unlock()
			close(r.done)
		}()
	}
	p.mu.Unlock()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-r.done:
		return r.err
	case <-t.C:
		return errTimeout
	case <-ctx.Done():
		return ctx.Err()
	}
}

// answer is the body of a probe's answer.
type answer struct {
	// Status is "ok" or "unavailable".
	Status string `json:"status"`
	// Checks says, for readiness, what each check found.
	Checks map[string]string `json:"checks,omitempty"`
}

// Live answers GET and HEAD of LivePath: 200 as long as the process serves
// HTTP at all.
func (c *Checker) Live() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !allowed(w, r) {
			return
		}
		write(w, r, http.StatusOK, answer{Status: "ok"})
	})
}

// ReadyHandler answers GET and HEAD of ReadyPath: 200 when Ready, else 503,
// with what each check found.
func (c *Checker) ReadyHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !allowed(w, r) {
			return
		}
		ready, results := c.Ready(r.Context())
		a := answer{Status: "ok", Checks: map[string]string{}}
		for name, err := range results {
			switch {
			case err == nil:
				a.Checks[name] = "ok"
			case errors.Is(err, errDraining), errors.Is(err, errTimeout):
				a.Checks[name] = err.Error()
			default:
				a.Checks[name] = "failed"
			}
			if err != nil && !errors.Is(err, errDraining) {
				c.log.WarnContext(r.Context(), "readiness probe failed", "probe", name, "error", err)
			}
		}
		status := http.StatusOK
		if !ready {
			a.Status, status = "unavailable", http.StatusServiceUnavailable
		}
		write(w, r, status, a)
	})
}

// allowed answers 405 to a method other than GET and HEAD.
func allowed(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	write(w, r, http.StatusMethodNotAllowed, answer{Status: "method not allowed"})
	return false
}

func write(w http.ResponseWriter, r *http.Request, status int, a answer) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_ = json.NewEncoder(w).Encode(a)
	}
}
