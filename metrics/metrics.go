// Package metrics owns Berth's Prometheus metrics: their names, help,
// labels and buckets, the registry that serves them at /metrics, and the
// decorators and hooks that feed them. Every metric is listed with its
// meaning in docs/operations.md.
//
// The metrics are fed by wrapping, so that no package of the registry
// imports this one:
//   - HTTP: package registry's middleware calls Request for every request,
//     with the route template the API's router matched (never the raw
//     path), so the route label has a bounded set of values.
//   - Storage: Index decorates the meta.Store the storage core uses. Its
//     transactions count the blob, manifest and upload session records
//     they add and remove, and once a transaction has committed the
//     gauges move by what it changed; Count sets the gauges from one walk
//     of the index at start. A scrape therefore reads gauges, never the
//     store. Sink counts the core's events (retention deletions among
//     them).
//   - Jobs and subsystems: GC and RetentionRun are called by the
//     schedulers; the authenticator and the webhook worker call the
//     methods of the observer interfaces they declare (LoginFailed,
//     Delivered, ...).
//
// Label values are bounded: routes come from route tables, methods and
// status codes from short lists, endpoints from the configuration, and a
// repository name becomes a label value only when it matches one of the
// patterns of metrics.repositories (otherwise the label is empty).
package metrics

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/berth-registry/berth/registry/glob"
	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/gc"
)

// namespace prefixes every metric of Berth's own.
const namespace = "berth"

// Options tune the metrics.
type Options struct {
	// Repositories are the repositories whose names may appear as the
	// value of a repository label; nil means none.
	Repositories glob.Set
	// Version and Commit label berth_build_info.
	Version, Commit string
}

// Metrics are the metrics of one Berth server. Its methods are safe for
// concurrent use.
type Metrics struct {
	reg   *prometheus.Registry
	repos glob.Set

	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	received *prometheus.CounterVec
	sent     *prometheus.CounterVec
	inFlight prometheus.Gauge

	blobs         prometheus.Gauge
	blobBytes     prometheus.Gauge
	manifests     prometheus.Gauge
	manifestBytes prometheus.Gauge
	uploads       prometheus.Gauge
	txDuration    *prometheus.HistogramVec

	events           *prometheus.CounterVec
	retentionDeleted *prometheus.CounterVec
	retentionRuns    *prometheus.CounterVec
	gcRuns           *prometheus.CounterVec
	gcDuration       prometheus.Histogram
	gcReclaimed      prometheus.Counter
	gcRemoved        *prometheus.CounterVec
	gcLastSuccess    prometheus.Gauge

	loginFailures prometheus.Counter
	loginRefusals prometheus.Counter
	tokens        *prometheus.CounterVec

	whDelivered *prometheus.CounterVec
	whRetries   *prometheus.CounterVec
	whDead      *prometheus.CounterVec
	whDuration  *prometheus.HistogramVec
	whOldest    *prometheus.GaugeVec
}

// requestBuckets span a manifest HEAD on loopback to a large layer
// uploaded over a slow link.
var requestBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}

// New registers every metric, the Go runtime's and the process's in a
// registry of its own.
func New(opts Options) *Metrics {
	reg := prometheus.NewRegistry()
	f := factory{reg}
	m := &Metrics{reg: reg, repos: opts.Repositories}

	m.requests = f.counterVec("http_requests_total", "HTTP requests served, by route template, method, status code and repository (empty unless metrics.repositories names it).", "route", "method", "code", "repository")
	m.duration = f.histogramVec("http_request_duration_seconds", "Time from a request's arrival to the end of its response, by route template and method.", requestBuckets, "route", "method")
	m.received = f.counterVec("http_received_bytes_total", "Bytes of request bodies read, by route template, method and repository.", "route", "method", "repository")
	m.sent = f.counterVec("http_sent_bytes_total", "Bytes of response bodies written, by route template, method and repository.", "route", "method", "repository")
	m.inFlight = f.gauge("http_requests_in_flight", "Requests being served.")

	m.blobs = f.gauge("store_blobs", "Blobs in the store (layers, configs and manifest bodies), each digest once.")
	m.blobBytes = f.gauge("store_blob_bytes", "Bytes of the blobs in the store.")
	m.manifests = f.gauge("store_manifests", "Manifests held, one per repository holding each.")
	m.manifestBytes = f.gauge("store_manifest_bytes", "Bytes of the manifests held, counted once per repository holding each.")
	m.uploads = f.gauge("upload_sessions", "Upload sessions open.")
	m.txDuration = f.histogramVec("index_transaction_duration_seconds", "Time the index took to run a transaction of the storage core, commit included, by kind (view or update).",
		[]float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5}, "kind")

	m.events = f.counterVec("events_total", "Changes of the store, by event action (push, tag, untag, delete-manifest, ...).", "action")
	m.retentionDeleted = f.counterVec("retention_deleted_total", "Tags and manifests deleted by retention policies, by kind (tag or manifest).", "kind")
	m.retentionRuns = f.counterVec("retention_runs_total", "Retention runs that applied the policies, by result (success or failure).", "result")
	m.gcRuns = f.counterVec("gc_runs_total", "Garbage collections (dry runs excluded), by result (success or failure).", "result")
	m.gcDuration = f.histogram("gc_duration_seconds", "Duration of garbage collections that completed.",
		[]float64{.01, .05, .1, .5, 1, 5, 10, 30, 60, 300, 900, 3600})
	m.gcReclaimed = f.counter("gc_reclaimed_bytes_total", "Bytes of blob content garbage collection removed.")
	m.gcRemoved = f.counterVec("gc_removed_total", "What garbage collection removed, by kind (upload, manifest, link, blob, repository).", "kind")
	m.gcLastSuccess = f.gauge("gc_last_success_timestamp_seconds", "When the last garbage collection that completed ended, in seconds since the epoch; 0 if none since start.")

	m.loginFailures = f.counter("auth_login_failures_total", "Logins refused for a wrong user name, password or robot secret.")
	m.loginRefusals = f.counter("auth_login_rate_limited_total", "Logins refused unchecked, answered 429, because their user and address failed too often.")
	m.tokens = f.counterVec("auth_tokens_issued_total", "Tokens the token service issued, by type (access or refresh) and subject kind (user, robot or anonymous).", "type", "subject")

	m.whDelivered = f.counterVec("webhook_delivered_total", "Events delivered to a webhook endpoint (answered 2xx), by endpoint.", "endpoint")
	m.whRetries = f.counterVec("webhook_retries_total", "Failed webhook attempts that will be retried, by endpoint.", "endpoint")
	m.whDead = f.counterVec("webhook_dead_lettered_total", "Events moved to the dead letters after their last failed attempt, by endpoint.", "endpoint")
	m.whDuration = f.histogramVec("webhook_request_duration_seconds", "Duration of webhook requests, failed ones included, by endpoint.",
		[]float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}, "endpoint")
	m.whOldest = f.gaugeVec("webhook_oldest_pending_seconds", "Age of the oldest event waiting for delivery to an endpoint; 0 when none waits.", "endpoint")

	info := f.gaugeVec("build_info", "Always 1; its labels say which Berth runs.", "version", "commit")
	info.WithLabelValues(opts.Version, opts.Commit).Set(1)
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the metrics in the Prometheus text format (or
// OpenMetrics, when the scraper asks for it).
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{EnableOpenMetrics: true})
}

// Gatherer is the registry, for tests that read the metrics directly.
func (m *Metrics) Gatherer() prometheus.Gatherer { return m.reg }

// RepositoryLabel is the value of a repository label for repo: the name if
// metrics.repositories matches it, else empty.
func (m *Metrics) RepositoryLabel(repo string) string {
	if repo == "" || !m.repos.Match(repo) {
		return ""
	}
	return repo
}

// methods are the method label values; any other method is "other".
var methods = map[string]bool{
	http.MethodGet: true, http.MethodHead: true, http.MethodPost: true, http.MethodPut: true,
	http.MethodPatch: true, http.MethodDelete: true, http.MethodOptions: true,
}

// Request counts one request: its route template, method, status code,
// repository (as named in its path; only patterns of metrics.repositories
// give a label value), the bytes of its body read and of its response
// written, and how long it took.
func (m *Metrics) Request(route, method string, code int, repo string, received, sent int64, took time.Duration) {
	if !methods[method] {
		method = "other"
	}
	if code < 100 || code > 599 {
		code = 0
	}
	label := m.RepositoryLabel(repo)
	m.requests.WithLabelValues(route, method, strconv.Itoa(code), label).Inc()
	m.duration.WithLabelValues(route, method).Observe(took.Seconds())
	if received > 0 {
		m.received.WithLabelValues(route, method, label).Add(float64(received))
	}
	if sent > 0 {
		m.sent.WithLabelValues(route, method, label).Add(float64(sent))
	}
}

// InFlight counts a request as being served until the returned function
// is called.
func (m *Metrics) InFlight() (done func()) {
	m.inFlight.Inc()
	return m.inFlight.Dec
}

// Sink counts the core's events; it never blocks.
func (m *Metrics) Sink() storage.Sink {
	return storage.SinkFunc(func(_ context.Context, e storage.Event) {
		m.events.WithLabelValues(e.Action).Inc()
		if e.Action == storage.EventRetention {
			kind := "manifest"
			if e.Tag != "" {
				kind = "tag"
			}
			m.retentionDeleted.WithLabelValues(kind).Inc()
		}
	})
}

// GC records one garbage collection that ran (not a dry run), with its
// report if it succeeded.
func (m *Metrics) GC(rep gc.Report, err error) {
	if err != nil {
		m.gcRuns.WithLabelValues("failure").Inc()
		return
	}
	m.gcRuns.WithLabelValues("success").Inc()
	m.gcDuration.Observe(rep.Duration.Seconds())
	m.gcReclaimed.Add(float64(rep.BytesReclaimed))
	for kind, n := range map[string]int{"upload": rep.UploadsExpired, "manifest": rep.ManifestsRemoved,
		"link": rep.LinksRemoved, "blob": rep.BlobsRemoved, "repository": rep.RepositoriesRemoved} {
		m.gcRemoved.WithLabelValues(kind).Add(float64(n))
	}
	m.gcLastSuccess.Set(float64(time.Now().Unix()))
}

// RetentionRun records one application of the retention policies (not a
// dry run); the deletions it made are counted from their events.
func (m *Metrics) RetentionRun(err error) {
	if err != nil {
		m.retentionRuns.WithLabelValues("failure").Inc()
		return
	}
	m.retentionRuns.WithLabelValues("success").Inc()
}

// LoginFailed counts a login refused for its credentials.
func (m *Metrics) LoginFailed() { m.loginFailures.Inc() }

// LoginRateLimited counts a login refused by the login rate limit.
func (m *Metrics) LoginRateLimited() { m.loginRefusals.Inc() }

// TokenIssued counts a token issued to a subject of kind (user, robot or
// anonymous); refresh tells a refresh token from an access token.
func (m *Metrics) TokenIssued(kind string, refresh bool) {
	typ := "access"
	if refresh {
		typ = "refresh"
	}
	m.tokens.WithLabelValues(typ, kind).Inc()
}

// Delivered counts an event delivered to endpoint by a request that took
// took.
func (m *Metrics) Delivered(endpoint string, took time.Duration) {
	m.whDelivered.WithLabelValues(endpoint).Inc()
	m.whDuration.WithLabelValues(endpoint).Observe(took.Seconds())
}

// Failed counts a failed attempt to deliver to endpoint, which took took
// (0 when no request was sent); dead says it was the last.
func (m *Metrics) Failed(endpoint string, dead bool, took time.Duration) {
	if took > 0 {
		m.whDuration.WithLabelValues(endpoint).Observe(took.Seconds())
	}
	if dead {
		m.whDead.WithLabelValues(endpoint).Inc()
		return
	}
	m.whRetries.WithLabelValues(endpoint).Inc()
}

// Backlog says how long the oldest event waiting for endpoint has waited
// (0: none waits).
func (m *Metrics) Backlog(endpoint string, oldest time.Duration) {
	m.whOldest.WithLabelValues(endpoint).Set(oldest.Seconds())
}

// factory registers metrics in a registry under Berth's namespace.
type factory struct{ reg *prometheus.Registry }

func (f factory) counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help})
	f.reg.MustRegister(c)
	return c
}

func (f factory) counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help}, labels)
	f.reg.MustRegister(c)
	return c
}

func (f factory) gauge(name, help string) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: name, Help: help})
	f.reg.MustRegister(g)
	return g
}

func (f factory) gaugeVec(name, help string, labels ...string) *prometheus.GaugeVec {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Name: name, Help: help}, labels)
	f.reg.MustRegister(g)
	return g
}

func (f factory) histogram(name, help string, buckets []float64) prometheus.Histogram {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Name: name, Help: help, Buckets: buckets})
	f.reg.MustRegister(h)
	return h
}

func (f factory) histogramVec(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: name, Help: help, Buckets: buckets}, labels)
	f.reg.MustRegister(h)
	return h
}
