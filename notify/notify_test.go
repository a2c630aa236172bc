package notify_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/notify"
	"github.com/berth-registry/berth/storage"
	blobfs "github.com/berth-registry/berth/storage/blob/fs"
	"github.com/berth-registry/berth/storage/meta"
	"github.com/berth-registry/berth/storage/meta/bolt"
)

// receiver is a webhook endpoint on loopback: it verifies signatures,
// records what it accepts, and answers as told.
type receiver struct {
	t      *testing.T
	secret []byte
	srv    *httptest.Server

	mu       sync.Mutex
	got      []notify.CloudEvent
	attempts map[string]int // by event id
	badSigs  int
	// answer, when set, decides the status of a request; nil answers 204.
	answer func(e notify.CloudEvent) int
	// inFlight counts requests being handled per repository, to catch
	// two at once.
	inFlight map[string]int
	overlap  int
}

func newReceiver(t *testing.T, secret string) *receiver {
	r := &receiver{t: t, secret: []byte(secret), attempts: map[string]int{}, inFlight: map[string]int{}}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	var e notify.CloudEvent
	if err := json.Unmarshal(body, &e); err != nil {
		r.t.Errorf("receiver: undecodable body %q: %v", body, err)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	if !notify.Verify(r.secret, body, req.Header.Get(notify.SignatureHeader)) {
		r.badSigs++
		r.mu.Unlock()
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if req.Header.Get(notify.EventIDHeader) != e.ID || req.Header.Get("Content-Type") != notify.CloudEventsContentType {
		r.t.Errorf("receiver: headers %v for event %s", req.Header, e.ID)
	}
	r.attempts[e.ID]++
	repo := e.Data.Repo
	r.inFlight[repo]++
	if r.inFlight[repo] > 1 {
		r.overlap++
	}
	answer := r.answer
	r.mu.Unlock()
	status := http.StatusNoContent
	if answer != nil {
		status = answer(e)
	}
	r.mu.Lock()
	r.inFlight[repo]--
	if status/100 == 2 {
		r.got = append(r.got, e)
	}
	r.mu.Unlock()
	w.WriteHeader(status)
}

// setAnswer changes how the receiver answers.
func (r *receiver) setAnswer(f func(e notify.CloudEvent) int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.answer = f
}

// accepted returns the events accepted so far.
func (r *receiver) accepted() []notify.CloudEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

// waitFor waits up to 20s for cond.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// env is a store whose core queues deliveries for eps, and a notifier.
type env struct {
	index meta.Store
	svc   *storage.Service
	eps   *notify.Endpoints

	mu        sync.Mutex
	notifiers []*notify.Notifier
}

func newEnv(t *testing.T, cfg notify.Config) *env {
	t.Helper()
	dir := t.TempDir()
	index, err := bolt.Open(filepath.Join(dir, "index.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = index.Close() })
	blobs, err := blobfs.Open(context.Background(), dir, blobfs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	eps, err := notify.Compile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{index: index, eps: eps}
	// Changes wake the notifiers, as the server's sink does.
	wake := storage.SinkFunc(func(ctx context.Context, ev storage.Event) {
		e.mu.Lock()
		defer e.mu.Unlock()
		for _, n := range e.notifiers {
			n.Sink().Publish(ctx, ev)
		}
	})
	e.svc = storage.New(index, blobs, storage.Options{Outbox: eps, Sinks: []storage.Sink{wake}})
	return e
}

// publish commits a change made of events, as the core's clients do.
func (e *env) publish(t *testing.T, events ...storage.Event) {
	t.Helper()
	err := e.svc.Update(context.Background(), func(tx *storage.Tx) error {
		for _, ev := range events {
			tx.Publish(ev)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// run starts a notifier; it stops at the end of the test, or with the
// returned stop.
func (e *env) run(t *testing.T, opts notify.Options) (*notify.Notifier, func()) {
	n := notify.New(e.index, e.eps, opts)
	e.mu.Lock()
	e.notifiers = append(e.notifiers, n)
	e.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		n.Run(ctx)
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				t.Error("notifier did not stop within 20s")
			}
		})
	}
	t.Cleanup(stop)
	return n, stop
}

func tagEvent(repo, tag string, i int) storage.Event {
	return storage.Event{Action: storage.EventTag, Repo: repo, Tag: tag, Digest: digest.FromString(fmt.Sprint(repo, i)),
		Actor: storage.Actor{Kind: storage.ActorUser, Name: "alice"}}
}

// seqOf is the position a test gave an event: its digest is that of
// repo and i.
func sequence(events []notify.CloudEvent, repo string, n int) []int {
	var out []int
	for _, e := range events {
		if e.Data.Repo != repo {
			continue
		}
		for i := range n {
			if e.Data.Digest == digest.FromString(fmt.Sprint(repo, i)) {
				out = append(out, i)
			}
		}
	}
	return out
}

func endpointConfig(name, url string) notify.EndpointConfig {
	return notify.EndpointConfig{Name: name, URL: url, Secret: "s3cret", Timeout: 2 * time.Second,
		Backoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, MaxAttempts: 100}
}

// Deliveries reach the endpoint signed, each event once, in order per
// repository, and leave the outbox.
func TestDeliversInOrderPerRepository(t *testing.T) {
	rcv := newReceiver(t, "s3cret")
	e := newEnv(t, notify.Config{Endpoints: []notify.EndpointConfig{endpointConfig("hooks", rcv.srv.URL)}})
	const perRepo = 30
	repos := []string{"a", "b", "c", "d/e"}
	// Slow answers make the worker attempt several repositories at once.
	rcv.setAnswer(func(notify.CloudEvent) int { time.Sleep(2 * time.Millisecond); return http.StatusOK })
	_, _ = e.run(t, notify.Options{})
	for i := range perRepo {
		for _, r := range repos {
			e.publish(t, tagEvent(r, "latest", i))
		}
	}
	waitFor(t, "every event", func() bool { return len(rcv.accepted()) == perRepo*len(repos) })
	got := rcv.accepted()
	for _, r := range repos {
		seq := sequence(got, r, perRepo)
		want := make([]int, perRepo)
		for i := range want {
			want[i] = i
		}
		if !slices.Equal(seq, want) {
			t.Errorf("repository %s: events arrived in the order %v", r, seq)
		}
	}
	rcv.mu.Lock()
	if rcv.overlap != 0 || rcv.badSigs != 0 {
		t.Errorf("%d requests overlapped another of their repository, %d bad signatures", rcv.overlap, rcv.badSigs)
	}
	rcv.mu.Unlock()
	for _, ce := range got {
		if ce.SpecVersion != "1.0" || ce.Type != notify.CloudEventTypePrefix+"tag" || ce.Subject != ce.Data.Repo+":latest" ||
			ce.Source == "" || ce.DataContentType != "application/json" || ce.Data.Actor.Name != "alice" {
			t.Fatalf("cloud event %+v", ce)
		}
		if _, err := time.Parse(time.RFC3339Nano, ce.Time); err != nil {
			t.Fatalf("cloud event time %q: %v", ce.Time, err)
		}
	}
	waitFor(t, "an empty outbox", func() bool { return outboxLen(t, e.index) == 0 })
}

func outboxLen(t *testing.T, index meta.Store) int {
	t.Helper()
	n := 0
	err := index.View(context.Background(), func(tx meta.Tx) error {
		return tx.Deliveries("", func(meta.Delivery) error { n++; return nil })
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// An endpoint that fails for a while gets everything once it answers, in
// order, and an endpoint that never answers slows no other.
func TestDownEndpointCatchesUpAndDelaysNoOther(t *testing.T) {
	flaky, healthy := newReceiver(t, "s3cret"), newReceiver(t, "s3cret")
	var down atomic.Bool
	down.Store(true)
	flaky.setAnswer(func(notify.CloudEvent) int {
		if down.Load() {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	// An endpoint that accepts connections and never answers.
	hang := make(chan struct{})
	stuck := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-hang }))
	t.Cleanup(func() { close(hang); stuck.Close() })
	stuckCfg := endpointConfig("stuck", stuck.URL)
	stuckCfg.Timeout = 30 * time.Second
	e := newEnv(t, notify.Config{Endpoints: []notify.EndpointConfig{
		endpointConfig("flaky", flaky.srv.URL), stuckCfg, endpointConfig("healthy", healthy.srv.URL)}})
	var obs recordingObserver
	_, _ = e.run(t, notify.Options{Observer: &obs})
	const n = 20
	for i := range n {
		e.publish(t, tagEvent("r", "t", i), tagEvent("s", "t", i))
	}
	waitFor(t, "the healthy endpoint", func() bool { return len(healthy.accepted()) == 2*n })
	waitFor(t, "failed attempts at the flaky endpoint", func() bool { return obs.retries.Load() >= 10 })
	if got := len(flaky.accepted()); got != 0 {
		t.Fatalf("the flaky endpoint accepted %d events while down", got)
	}
	down.Store(false)
	waitFor(t, "the flaky endpoint to catch up", func() bool { return len(flaky.accepted()) == 2*n })
	for _, r := range []string{"r", "s"} {
		if seq := sequence(flaky.accepted(), r, n); !slices.IsSorted(seq) || len(seq) != n {
			t.Errorf("after the outage, repository %s arrived in the order %v", r, seq)
		}
	}
	// The observer hears of a delivery once its outcome is recorded, just
	// after the receiver answered.
	waitFor(t, "the observer to hear of every delivery", func() bool { return obs.delivered.Load() >= 4*n })
}

type recordingObserver struct {
	delivered, retries, dead atomic.Int64
}

func (o *recordingObserver) Delivered(string, time.Duration) { o.delivered.Add(1) }
func (o *recordingObserver) Failed(_ string, dead bool, _ time.Duration) {
	if dead {
		o.dead.Add(1)
	} else {
		o.retries.Add(1)
	}
}
func (o *recordingObserver) Backlog(string, time.Duration) {}

// After maxAttempts failures a delivery is a dead letter, the next of its
// repository goes on, and retry and drop act on the dead letters.
func TestDeadLettersRetryAndDrop(t *testing.T) {
	rcv := newReceiver(t, "s3cret")
	var refuse atomic.Bool
	refuse.Store(true)
	rcv.setAnswer(func(e notify.CloudEvent) int {
		if refuse.Load() && e.Data.Tag == "bad" {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	cfg := endpointConfig("hooks", rcv.srv.URL)
	cfg.MaxAttempts = 3
	e := newEnv(t, notify.Config{Endpoints: []notify.EndpointConfig{cfg}})
	n, _ := e.run(t, notify.Options{})
	e.publish(t, tagEvent("r", "bad", 0))
	e.publish(t, tagEvent("r", "good", 1))
	e.publish(t, tagEvent("x", "bad", 2))
	waitFor(t, "the good event after the dead one", func() bool { return len(rcv.accepted()) == 1 })
	ctx := context.Background()
	var dead notify.Listing
	waitFor(t, "two dead letters and nothing pending", func() bool {
		var err error
		dead, err = n.List(ctx, notify.Query{State: notify.StateDead})
		return err == nil && len(dead.Records) == 2 && outboxLen(t, e.index) == 0
	})
	for _, r := range dead.Records {
		if r.Attempts != 3 || r.State != notify.StateDead || r.Died == nil || r.Event.Tag != "bad" ||
			r.LastError == "" || r.Endpoint != "hooks" {
			t.Errorf("dead letter %+v", r)
		}
	}
	rcv.mu.Lock()
	if n := rcv.attempts[dead.Records[0].EventID]; n != 3 {
		t.Errorf("the dead event was attempted %d times, want 3", n)
	}
	rcv.mu.Unlock()
	// Paging.
	page, err := n.List(ctx, notify.Query{Limit: 1})
	if err != nil || len(page.Records) != 1 || page.Next != page.Records[0].Seq {
		t.Fatalf("first page %+v, %v", page, err)
	}
	rest, err := n.List(ctx, notify.Query{After: page.Next})
	if err != nil || len(rest.Records) != 1 || rest.Next != 0 || rest.Records[0].Seq <= page.Next {
		t.Fatalf("second page %+v, %v", rest, err)
	}
	// Drop one, retry the other once the endpoint takes it.
	if err := n.Drop(ctx, dead.Records[1].Seq); err != nil {
		t.Fatal(err)
	}
	if err := n.Drop(ctx, dead.Records[1].Seq); err == nil {
		t.Error("dropping a dropped delivery succeeded")
	}
	refuse.Store(false)
	rec, err := n.Retry(ctx, dead.Records[0].Seq)
	if err != nil || rec.Seq <= dead.Records[0].Seq || rec.State != notify.StatePending || rec.Attempts != 0 || rec.EventID != dead.Records[0].EventID {
		t.Fatalf("retry: %+v, %v", rec, err)
	}
	waitFor(t, "the retried event", func() bool { return len(rcv.accepted()) == 2 })
	if got := rcv.accepted()[1]; got.ID != dead.Records[0].EventID {
		t.Errorf("retried event arrived as %s, want %s", got.ID, dead.Records[0].EventID)
	}
	if _, err := n.Retry(ctx, 999999); err == nil {
		t.Error("retry of an unknown delivery succeeded")
	}
	waitFor(t, "nothing pending and no dead letter", func() bool {
		l, err := n.List(ctx, notify.Query{})
		return err == nil && len(l.Records) == 0
	})
}

// Two notifiers sharing an index, as replicas sharing a database would,
// never attempt one delivery at once: each event arrives once, in order.
func TestTwoNotifiersShareTheOutbox(t *testing.T) {
	rcv := newReceiver(t, "s3cret")
	rcv.setAnswer(func(notify.CloudEvent) int { time.Sleep(time.Millisecond); return http.StatusOK })
	e := newEnv(t, notify.Config{PollInterval: 20 * time.Millisecond,
		Endpoints: []notify.EndpointConfig{endpointConfig("hooks", rcv.srv.URL)}})
	_, _ = e.run(t, notify.Options{Holder: "one"})
	_, _ = e.run(t, notify.Options{Holder: "two"})
	const n = 40
	for i := range n {
		e.publish(t, tagEvent("r", "t", i), tagEvent("q", "t", i))
	}
	waitFor(t, "every event", func() bool { return len(rcv.accepted()) >= 2*n })
	time.Sleep(100 * time.Millisecond)
	got := rcv.accepted()
	rcv.mu.Lock()
	if len(got) != 2*n || rcv.overlap != 0 {
		t.Errorf("%d events accepted for %d sent, %d overlapping attempts", len(got), 2*n, rcv.overlap)
	}
	rcv.mu.Unlock()
	for _, r := range []string{"r", "q"} {
		if seq := sequence(got, r, n); !slices.IsSorted(seq) {
			t.Errorf("repository %s arrived in the order %v", r, seq)
		}
	}
}

// A notifier stopped while a request hangs leaves the delivery to the
// next process without counting an attempt, and that one sends it.
func TestRestartResumes(t *testing.T) {
	hang := make(chan struct{})
	var hung atomic.Int64
	rcv := newReceiver(t, "s3cret")
	rcv.setAnswer(func(notify.CloudEvent) int {
		select {
		case <-hang:
			return http.StatusOK
		default:
		}
		hung.Add(1)
		<-hang
		return http.StatusOK
	})
	cfg := endpointConfig("hooks", rcv.srv.URL)
	cfg.Timeout = 30 * time.Second
	e := newEnv(t, notify.Config{Endpoints: []notify.EndpointConfig{cfg}})
	_, stop := e.run(t, notify.Options{Holder: "first"})
	e.publish(t, tagEvent("r", "t", 0))
	waitFor(t, "the hanging attempt", func() bool { return hung.Load() == 1 })
	stop()
	err := e.index.View(context.Background(), func(tx meta.Tx) error {
		return tx.Deliveries("", func(d meta.Delivery) error {
			if d.Attempts != 0 || d.Holder != "" {
				t.Errorf("after a stop, delivery %+v: want no attempt counted, no holder", d)
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	close(hang)
	_, _ = e.run(t, notify.Options{Holder: "second"})
	// The receiver saw the cut-off request too, whose answer nobody read.
	waitFor(t, "the event after the restart", func() bool { return outboxLen(t, e.index) == 0 })
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	for id, n := range rcv.attempts {
		if n != 2 {
			t.Errorf("event %s received %d times, want 2: the cut-off request and the one after the restart", id, n)
		}
	}
}

// Deliveries of an endpoint no longer configured become dead letters at
// start.
func TestRemovedEndpointDeadLetters(t *testing.T) {
	rcv := newReceiver(t, "s3cret")
	e := newEnv(t, notify.Config{Endpoints: []notify.EndpointConfig{endpointConfig("gone", "http://127.0.0.1:1/")}})
	e.publish(t, tagEvent("r", "t", 0), tagEvent("r", "t", 1))
	eps, err := notify.Compile(notify.Config{Endpoints: []notify.EndpointConfig{endpointConfig("hooks", rcv.srv.URL)}})
	if err != nil {
		t.Fatal(err)
	}
	e.eps = eps
	n, _ := e.run(t, notify.Options{})
	var l notify.Listing
	waitFor(t, "dead letters", func() bool {
		l, err = n.List(context.Background(), notify.Query{State: notify.StateDead, Endpoint: "gone"})
		return err == nil && len(l.Records) == 2
	})
	if _, err := n.Retry(context.Background(), l.Records[0].Seq); err == nil {
		t.Error("retry of a dead letter of an unconfigured endpoint succeeded")
	}
	if c, err := n.RetryAll(context.Background(), ""); err != nil || c != 0 {
		t.Errorf("RetryAll = %d, %v; want nothing retried", c, err)
	}
	if c, err := n.DropAll(context.Background(), "gone"); err != nil || c != 2 {
		t.Errorf("DropAll = %d, %v", c, err)
	}
}

// The filters of an endpoint pick its events.
func TestFilters(t *testing.T) {
	eps, err := notify.Compile(notify.Config{Endpoints: []notify.EndpointConfig{
		{Name: "all", URL: "http://127.0.0.1:9/"},
		{Name: "releases", URL: "http://127.0.0.1:9/", Actions: []string{"tag", "promote"}, Repositories: []string{"apps/**"}, Tags: []string{"v*"}},
		{Name: "deletes", URL: "http://127.0.0.1:9/", Actions: []string{"untag", "delete-manifest", "gc"}, Repositories: []string{"apps/*"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		e    storage.Event
		want []string
	}{
		{storage.Event{Action: "tag", Repo: "apps/web", Tag: "v1.2"}, []string{"all", "releases"}},
		{storage.Event{Action: "tag", Repo: "apps/web/api", Tag: "v1"}, []string{"all", "releases"}},
		{storage.Event{Action: "tag", Repo: "apps/web", Tag: "latest"}, []string{"all"}},
		{storage.Event{Action: "push", Repo: "apps/web"}, []string{"all"}},
		{storage.Event{Action: "promote", Repo: "other", Tag: "v1"}, []string{"all"}},
		{storage.Event{Action: "untag", Repo: "apps/web", Tag: "v1"}, []string{"all", "deletes"}},
		{storage.Event{Action: "gc", Digest: "sha256:00"}, []string{"all"}},
		{storage.Event{Action: "gc", Repo: "apps/x", Digest: "sha256:00"}, []string{"all", "deletes"}},
	}
	for _, c := range cases {
		if got := eps.Endpoints(c.e); !slices.Equal(got, c.want) {
			t.Errorf("Endpoints(%+v) = %v, want %v", c.e, got, c.want)
		}
	}
}

// A bad configuration names its mistake.
func TestConfigErrors(t *testing.T) {
	ok := notify.EndpointConfig{Name: "x", URL: "https://example.invalid/hook"}
	bad := map[string]func(c *notify.EndpointConfig){
		"name":            func(c *notify.EndpointConfig) { c.Name = "a b" },
		"url":             func(c *notify.EndpointConfig) { c.URL = "ftp://x/" },
		"url credentials": func(c *notify.EndpointConfig) { c.URL = "https://u:p@x/" },
		"format":          func(c *notify.EndpointConfig) { c.Format = "xml" },
		"action":          func(c *notify.EndpointConfig) { c.Actions = []string{"pull"} },
		"pattern":         func(c *notify.EndpointConfig) { c.Tags = []string{""} },
		"header":          func(c *notify.EndpointConfig) { c.Headers = map[string]string{"Bad Name": "v"} },
		"reserved header": func(c *notify.EndpointConfig) { c.Headers = map[string]string{"Berth-Signature": "v"} },
		"secrets":         func(c *notify.EndpointConfig) { c.Secret, c.SecretFile = "a", "/b" },
		"secret file":     func(c *notify.EndpointConfig) { c.SecretFile = "/nonexistent/secret" },
		"timeout":         func(c *notify.EndpointConfig) { c.Timeout = time.Hour },
		"attempts":        func(c *notify.EndpointConfig) { c.MaxAttempts = -1 },
		"backoff":         func(c *notify.EndpointConfig) { c.Backoff, c.MaxBackoff = time.Minute, time.Second },
	}
	for name, mutate := range bad {
		c := ok
		mutate(&c)
		if _, err := notify.Compile(notify.Config{Endpoints: []notify.EndpointConfig{c}}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := notify.Compile(notify.Config{Endpoints: []notify.EndpointConfig{ok, ok}}); err == nil {
		t.Error("two endpoints of one name accepted")
	}
	if _, err := notify.Compile(notify.Config{Endpoints: []notify.EndpointConfig{ok}}); err != nil {
		t.Errorf("good endpoint: %v", err)
	}
}

// The signature is the HMAC-SHA256 of the body, and Verify checks it.
func TestSignature(t *testing.T) {
	body := []byte(`{"id":"1"}`)
	// echo -n '{"id":"1"}' | openssl dgst -sha256 -hmac key
	const want = "sha256=77cb8fd154ecfa2865657b2915c997c624ee47fe122e8a8bb91b10a09b47fb3c"
	got := notify.Sign([]byte("key"), body)
	if !notify.Verify([]byte("key"), body, got) {
		t.Fatalf("Verify refuses Sign's %s", got)
	}
	if got != want {
		t.Errorf("Sign = %s", got)
	}
	for _, bad := range []string{"", got[:len(got)-1] + "0", "sha1=" + got[7:], "sha256=zz"} {
		if notify.Verify([]byte("key"), body, bad) {
			t.Errorf("Verify accepts %q", bad)
		}
	}
	if notify.Verify([]byte("other"), body, got) || notify.Verify([]byte("key"), []byte(`{"id":"2"}`), got) {
		t.Error("Verify accepts another key or body")
	}
}
