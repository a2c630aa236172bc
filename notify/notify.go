// Package notify delivers Berth's events to webhook endpoints: it owns the
// notifications configuration, the filters that route events to
// endpoints, the request formats (CloudEvents and the distribution
// envelope) and their signature, the delivery worker with its retries,
// backoff and dead letters, and the operations `berth events` and the
// admin API offer on them.
//
// # Durability
//
// Events are not queued in memory. The storage core asks Endpoints, the
// storage.Outbox of this package, which endpoints each event of a change
// goes to, and appends one meta.Delivery per endpoint to the index's
// outbox in the transaction of the change itself (see storage.Outbox): a
// change committed has its deliveries committed, a change refused or
// rolled back has none. The worker reads the outbox, sends, and removes a
// delivery only once its endpoint answered 2xx, so a delivery outlives
// any crash, SIGKILL included: it is sent after the restart. Delivery is
// at least once: a request answered after its timeout, or a process
// killed between the answer and the removal, sends an event again, under
// the same event identifier (the Berth-Event-Id header, the CloudEvents
// id), by which receivers drop duplicates.
//
// # Order and independence
//
// Each endpoint has its own worker, HTTP client and connections, so one
// slow or dead endpoint delays no other; and since pushes only append to
// the outbox, which costs one small write in their transaction, no
// endpoint ever delays a push. The deliveries of one endpoint and one
// repository are attempted one at a time in the order their changes
// committed (meta.OutboxIndex numbers them so): only the oldest of each
// repository, its head, may be attempted, and the next waits until it is
// delivered or dead-lettered. Different repositories go in parallel, up to
// the endpoint's concurrency. A failed attempt is retried after a backoff
// that doubles from the endpoint's backoff up to its maxBackoff (with
// jitter); after maxAttempts failures the delivery becomes a dead letter,
// kept in the index until `berth events retry` puts it back at the end of
// its queue or `berth events drop` removes it. At start, deliveries for an
// endpoint the configuration no longer has become dead letters.
//
// # Several processes
//
// When several Berth processes share one index (PostgreSQL, issue 11),
// each runs workers over the same outbox. A worker claims a head before it
// sends it: in one transaction it checks the delivery is still there, due
// and not leased, and records itself as its Holder with a lease of twice
// the endpoint's timeout plus five seconds (LeaseUntil). Index
// transactions are serialisable, so of two processes claiming the same
// delivery one commits and the other finds it leased; the holder alone
// sends it while the lease runs, and records the outcome only if it still
// holds it. A process that dies holding a lease delays that repository's
// deliveries until the lease expires, then another takes them over.
// Leases compare wall clocks: those of the processes must agree to well
// under the lease. A worker hears of the deliveries of its own process at
// once and of others' within notifications.pollInterval.
package notify

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/meta"
)

// Observer hears of deliveries, for metrics. Its methods must not block.
type Observer interface {
	// Delivered: an event was delivered to endpoint by a request that
	// took took.
	Delivered(endpoint string, took time.Duration)
	// Failed: an attempt to deliver to endpoint failed after took (0 if
	// no request was sent); dead says it was the last.
	Failed(endpoint string, dead bool, took time.Duration)
	// Backlog: the oldest event waiting for endpoint has waited oldest
	// (0: none waits).
	Backlog(endpoint string, oldest time.Duration)
}

type nopObserver struct{}

func (nopObserver) Delivered(string, time.Duration)    {}
func (nopObserver) Failed(string, bool, time.Duration) {}
func (nopObserver) Backlog(string, time.Duration)      {}

// Options tune a Notifier.
type Options struct {
	// Logger receives a line per failed attempt and dead letter; nil
	// discards them.
	Logger *slog.Logger
	// Observer hears of deliveries; nil: nobody.
	Observer Observer
	// Holder names this process in the leases it takes; default the host
	// name, the process id and a random suffix.
	Holder string
	// Transport sends the requests of every endpoint, for tests; nil
	// gives each endpoint a transport of its own.
	Transport http.RoundTripper
}

// Notifier delivers the outbox of an index to the configured endpoints,
// and inspects and replays it for `berth events`.
type Notifier struct {
	index   meta.Store
	eps     *Endpoints
	log     *slog.Logger
	obs     Observer
	holder  string
	workers []*worker
	// now is the clock of attempts and leases.
	now func() time.Time
}

// New returns the Notifier of the outbox of index, for eps. It sends
// nothing until Run.
func New(index meta.Store, eps *Endpoints, opts Options) *Notifier {
	n := &Notifier{index: index, eps: eps, log: opts.Logger, obs: opts.Observer, holder: opts.Holder,
		now: func() time.Time { return time.Now().UTC() }}
	if n.log == nil {
		n.log = slog.New(slog.DiscardHandler)
	}
	if n.obs == nil {
		n.obs = nopObserver{}
	}
	if n.holder == "" {
		n.holder = defaultHolder()
	}
	for _, ep := range eps.list {
		rt := opts.Transport
		if rt == nil {
			tr := http.DefaultTransport.(*http.Transport).Clone()
			tr.MaxIdleConnsPerHost = ep.concurrency
			rt = tr
		}
		client := &http.Client{Transport: rt,
			// A redirect is a failure: the signature and headers are
			// for the configured URL alone.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		n.workers = append(n.workers, &worker{n: n, ep: ep, client: client, wake: make(chan struct{}, 1),
			inflight: map[string]bool{}})
	}
	return n
}

// defaultHolder names this process: host, pid and a random suffix, so
// that a restarted process never takes its predecessor's leases for its
// own.
func defaultHolder() string {
	host, _ := os.Hostname()
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

// Sink wakes the workers after every change, so that the deliveries the
// change queued go at once rather than at the next poll. It never blocks.
func (n *Notifier) Sink() storage.Sink {
	return storage.SinkFunc(func(context.Context, storage.Event) {
		for _, w := range n.workers {
			w.poke()
		}
	})
}

// Run dead-letters the deliveries of endpoints no longer configured, then
// runs a worker per endpoint until ctx is done, and returns once every
// attempt in flight has been recorded (those cut off by the end are left
// for the next process, without counting as attempts).
func (n *Notifier) Run(ctx context.Context) {
	if err := n.buryOrphans(ctx); err != nil && ctx.Err() == nil {
		n.log.WarnContext(ctx, "webhooks: dead-letter the deliveries of removed endpoints", "error", err)
	}
	var wg sync.WaitGroup
	for _, w := range n.workers {
		wg.Go(func() { w.run(ctx) })
	}
	wg.Wait()
}

// orphanBatch bounds the deliveries one transaction dead-letters.
const orphanBatch = 256

// buryOrphans moves the deliveries of endpoints the configuration does not
// have to the dead letters.
func (n *Notifier) buryOrphans(ctx context.Context) error {
	for {
		moved := 0
		now := n.now()
		err := n.index.Update(ctx, func(tx meta.Tx) error {
			moved = 0
			var orphans []meta.Delivery
			err := tx.Deliveries("", func(d meta.Delivery) error {
				if n.eps.byName[d.Endpoint] == nil {
					orphans = append(orphans, d)
					if len(orphans) == orphanBatch {
						return meta.ErrStop
					}
				}
				return nil
			})
			if err != nil {
				return err
			}
			for _, d := range orphans {
				if err := tx.DeleteDelivery(d.Endpoint, d.Key, d.Seq); err != nil {
					return err
				}
				d.Holder, d.LeaseUntil, d.Died = "", time.Time{}, now
				d.LastError = "endpoint " + d.Endpoint + " is no longer configured"
				if err := tx.PutDeadLetter(d); err != nil {
					return err
				}
			}
			moved = len(orphans)
			return nil
		})
		if err != nil {
			return fmt.Errorf("dead-letter orphan deliveries: %w", err)
		}
		if moved > 0 {
			n.log.InfoContext(ctx, "webhooks: deliveries of endpoints no longer configured moved to the dead letters", "count", moved)
		}
		if moved < orphanBatch {
			return nil
		}
	}
}

// worker delivers the outbox of one endpoint.
type worker struct {
	n      *Notifier
	ep     *endpoint
	client *http.Client
	wake   chan struct{}

	mu sync.Mutex
	// inflight holds the keys whose head is being attempted here.
	inflight map[string]bool
	running  sync.WaitGroup
}

// poke wakes the worker, without blocking.
func (w *worker) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// run attempts due deliveries until ctx is done, then waits for the
// attempts in flight.
func (w *worker) run(ctx context.Context) {
	defer w.running.Wait()
	for {
		wait := w.cycle(ctx)
		if ctx.Err() != nil {
			return
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-w.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// cycle reads the heads of the endpoint's queues, claims those that are
// due, up to the endpoint's concurrency, and starts their attempts. It
// returns how long to wait before looking again, if nothing wakes the
// worker first.
func (w *worker) cycle(ctx context.Context) time.Duration {
	wait := w.n.eps.poll
	now := w.n.now()
	var heads []meta.Delivery
	err := w.n.index.View(ctx, func(tx meta.Tx) error {
		heads = heads[:0]
		return tx.DeliveryHeads(w.ep.name, func(d meta.Delivery) error {
			heads = append(heads, d)
			return nil
		})
	})
	if err != nil {
		if ctx.Err() == nil {
			w.n.log.WarnContext(ctx, "webhooks: read the outbox", "endpoint", w.ep.name, "error", err)
		}
		return wait
	}
	var oldest time.Duration
	var due []meta.Delivery
	w.mu.Lock()
	free := w.ep.concurrency - len(w.inflight)
	for _, d := range heads {
		oldest = max(oldest, now.Sub(d.Created))
		if w.inflight[d.Key] {
			continue
		}
		at := d.NextAttempt
		if d.Holder != "" && d.LeaseUntil.After(at) {
			at = d.LeaseUntil
		}
		if at.After(now) {
			wait = min(wait, at.Sub(now))
			continue
		}
		if len(due) < free {
			due = append(due, d)
		}
	}
	w.mu.Unlock()
	w.n.obs.Backlog(w.ep.name, oldest)
	if len(due) == 0 {
		return wait
	}
	claimed, err := w.claim(ctx, due, now)
	if err != nil {
		if ctx.Err() == nil {
			w.n.log.WarnContext(ctx, "webhooks: claim deliveries", "endpoint", w.ep.name, "error", err)
		}
		return wait
	}
	for _, d := range claimed {
		w.mu.Lock()
		w.inflight[d.Key] = true
		w.mu.Unlock()
		w.running.Go(func() {
			w.attempt(ctx, d)
			w.mu.Lock()
			delete(w.inflight, d.Key)
			w.mu.Unlock()
			w.poke() // the next of its key may be due
		})
	}
	return wait
}

// lease is how long a claim holds a delivery: its attempt ends within the
// timeout, and recording the outcome takes a moment more.
func (ep *endpoint) lease() time.Duration { return 2*ep.timeout + 5*time.Second }

// claim leases the deliveries of ds that are still in the outbox, due and
// unleased, in one transaction, and returns them as leased.
func (w *worker) claim(ctx context.Context, ds []meta.Delivery, now time.Time) ([]meta.Delivery, error) {
	var claimed []meta.Delivery
	err := w.n.index.Update(ctx, func(tx meta.Tx) error {
		claimed = claimed[:0]
		for _, want := range ds {
			d, ok, err := tx.Delivery(want.Endpoint, want.Key, want.Seq)
			if err != nil {
				return err
			}
			if !ok || d.NextAttempt.After(now) || (d.Holder != "" && d.LeaseUntil.After(now)) {
				continue
			}
			d.Holder, d.LeaseUntil = w.n.holder, now.Add(w.ep.lease())
			if err := tx.PutDelivery(d); err != nil {
				return err
			}
			claimed = append(claimed, d)
		}
		return nil
	})
	return claimed, err
}

// maxErrorBody bounds what of a failed answer's body is kept as the
// delivery's last error.
const maxErrorBody = 200

// attempt sends d once and records the outcome.
func (w *worker) attempt(ctx context.Context, d meta.Delivery) {
	e, err := storage.DecodeEvent(d)
	if err != nil {
		// An event that cannot be read will never be sent.
		w.record(ctx, d, err, 0, true)
		return
	}
	body, ctype, err := w.ep.body(d.EventID, w.n.eps.source, e)
	if err != nil {
		w.record(ctx, d, err, 0, true)
		return
	}
	start := time.Now()
	err = w.send(ctx, d, body, ctype)
	took := time.Since(start)
	if ctx.Err() != nil {
		// Shutting down: the attempt was cut off by us, not failed by
		// the endpoint. Release the lease for the next process.
		w.release(d)
		return
	}
	w.record(ctx, d, err, took, false)
}

// send POSTs body to the endpoint, within its timeout.
func (w *worker) send(ctx context.Context, d meta.Delivery, body []byte, ctype string) error {
	rctx, cancel := context.WithTimeout(ctx, w.ep.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, w.ep.url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	for k, v := range w.ep.headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("Content-Type", ctype)
	req.Header.Set("User-Agent", "Berth-Webhook/1")
	req.Header.Set(EventIDHeader, d.EventID)
	req.Header.Set(DeliveryHeader, strconv.FormatUint(d.Seq, 10))
	req.Header.Set(AttemptHeader, strconv.Itoa(d.Attempts+1))
	if len(w.ep.secret) > 0 {
		req.Header.Set(SignatureHeader, Sign(w.ep.secret, body))
	}
	resp, err := w.client.Do(req)
	if err != nil {
		var uerr interface{ Timeout() bool }
		if errors.As(err, &uerr) && uerr.Timeout() {
			return fmt.Errorf("no answer within %s", w.ep.timeout)
		}
		return fmt.Errorf("send: %w", err)
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // so the connection can be kept
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	msg := fmt.Sprintf("answered %s", resp.Status)
	if s := printableText(snippet); s != "" {
		msg += ": " + s
	}
	return errors.New(msg)
}

// printableText keeps the printable characters of b, on one line.
func printableText(b []byte) string {
	out := make([]rune, 0, len(b))
	for _, r := range string(b) {
		switch {
		case r == '\n' || r == '\r' || r == '\t':
			out = append(out, ' ')
		case r >= ' ' && r != 0x7f && r != 0xfffd:
			out = append(out, r)
		}
	}
	return string(bytes.TrimSpace([]byte(string(out))))
}

// recordTimeout bounds the transaction that records an attempt's outcome,
// which runs even while the process shuts down.
const recordTimeout = 10 * time.Second

// record writes the outcome of an attempt of d that took took: delivered
// (err nil), to be retried, or dead (its attempts ran out, or final).
func (w *worker) record(ctx context.Context, d meta.Delivery, failure error, took time.Duration, final bool) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	now := w.n.now()
	dead := false
	err := w.n.index.Update(rctx, func(tx meta.Tx) error {
		dead = false
		cur, ok, err := tx.Delivery(d.Endpoint, d.Key, d.Seq)
		if err != nil || !ok {
			return err // dropped meanwhile, or delivered by another
		}
		if failure == nil {
			return tx.DeleteDelivery(d.Endpoint, d.Key, d.Seq)
		}
		if cur.Holder != w.n.holder {
			return nil // the lease ran out and another holds it now
		}
		cur.Attempts++
		cur.LastError = failure.Error()
		cur.Holder, cur.LeaseUntil = "", time.Time{}
		if final || cur.Attempts >= w.ep.maxAttempts {
			dead = true
			cur.Died = now
			if err := tx.DeleteDelivery(d.Endpoint, d.Key, d.Seq); err != nil {
				return err
			}
			return tx.PutDeadLetter(cur)
		}
		cur.NextAttempt = now.Add(w.ep.backoffAfter(cur.Attempts))
		return tx.PutDelivery(cur)
	})
	if err != nil {
		w.n.log.WarnContext(ctx, "webhooks: record an attempt", "endpoint", w.ep.name, "delivery", d.Seq, "error", err)
		return
	}
	switch {
	case failure == nil:
		w.n.obs.Delivered(w.ep.name, took)
	case dead:
		w.n.obs.Failed(w.ep.name, true, took)
		w.n.log.WarnContext(ctx, "webhooks: delivery moved to the dead letters", "endpoint", w.ep.name,
			"delivery", d.Seq, "event", d.EventID, "repository", d.Key, "attempts", d.Attempts+1, "error", failure)
	default:
		w.n.obs.Failed(w.ep.name, false, took)
		w.n.log.InfoContext(ctx, "webhooks: attempt failed, will retry", "endpoint", w.ep.name,
			"delivery", d.Seq, "repository", d.Key, "attempt", d.Attempts+1, "error", failure)
	}
}

// release gives up the lease on d without counting an attempt.
func (w *worker) release(d meta.Delivery) {
	ctx, cancel := context.WithTimeout(context.Background(), recordTimeout)
	defer cancel()
	err := w.n.index.Update(ctx, func(tx meta.Tx) error {
		cur, ok, err := tx.Delivery(d.Endpoint, d.Key, d.Seq)
		if err != nil || !ok || cur.Holder != w.n.holder {
			return err
		}
		cur.Holder, cur.LeaseUntil = "", time.Time{}
		return tx.PutDelivery(cur)
	})
	if err != nil {
		w.n.log.Warn("webhooks: release a delivery at shutdown", "endpoint", w.ep.name, "delivery", d.Seq, "error", err)
	}
}

// backoffAfter is the wait after the attempts-th failure: backoff doubled
// for each failure before it, at most maxBackoff, then within ±20%.
func (ep *endpoint) backoffAfter(attempts int) time.Duration {
	d := ep.backoff
	for i := 1; i < attempts && d < ep.maxBackoff; i++ {
		d *= 2
	}
	d = min(d, ep.maxBackoff)
	return time.Duration(float64(d) * (0.8 + 0.4*mrand.Float64()))
}
