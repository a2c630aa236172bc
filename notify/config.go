package notify

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/berth-registry/berth/registry/glob"
	"github.com/berth-registry/berth/storage"
)

// Config is the notifications section of Berth's configuration.
type Config struct {
	// Endpoints are the receivers of webhooks.
	Endpoints []EndpointConfig `yaml:"endpoints"`
	// Source is the CloudEvents source attribute of the events sent, a
	// URI reference; default "urn:berth:<host name>".
	Source string `yaml:"source"`
	// PollInterval is how often a worker looks for deliveries queued by
	// other processes sharing the index (its own it hears of at once);
	// default 2s.
	PollInterval time.Duration `yaml:"pollInterval"`
}

// EndpointConfig is one webhook receiver.
type EndpointConfig struct {
	// Name identifies the endpoint in the outbox, the metrics, the logs
	// and `berth events`: letters, digits, '.', '_' and '-', at most 64.
	Name string `yaml:"name"`
	// URL is where events are POSTed: http or https.
	URL string `yaml:"url"`
	// Format is "cloudevents" (CloudEvents 1.0, structured JSON; the
	// default) or "distribution" (the envelope of
	// application/vnd.docker.distribution.events.v2+json).
	Format string `yaml:"format"`
	// Secret, or the contents of SecretFile, signs each request: the
	// Berth-Signature header carries "sha256=" and the hex HMAC-SHA256 of
	// the body under it. Without either, requests are not signed.
	Secret     string `yaml:"secret"`
	SecretFile string `yaml:"secretFile"`
	// Headers are added to every request (an Authorization the receiver
	// asks for, say). They are never logged.
	Headers map[string]string `yaml:"headers"`
	// Timeout bounds one request, answer included; default 10s.
	Timeout time.Duration `yaml:"timeout"`
	// Actions, Repositories and Tags filter the events sent: an event
	// goes to the endpoint if its action is one of Actions, its
	// repository matches one of Repositories and its tag one of Tags,
	// each filter passing everything when empty. Patterns are globs (see
	// registry/glob). With Repositories set, events of no repository (a
	// blob removed from the store as a whole) are not sent; with Tags
	// set, only events that name a tag are.
	Actions      []string `yaml:"actions"`
	Repositories []string `yaml:"repositories"`
	Tags         []string `yaml:"tags"`
	// MaxAttempts is how many failed attempts move an event to the dead
	// letters; default 15.
	MaxAttempts int `yaml:"maxAttempts"`
	// Backoff is the wait after the first failed attempt, doubled after
	// each further one up to MaxBackoff; defaults 1s and 5m. With the
	// defaults an event is retried for about 45 minutes.
	Backoff    time.Duration `yaml:"backoff"`
	MaxBackoff time.Duration `yaml:"maxBackoff"`
	// Concurrency bounds the requests in flight to the endpoint, each for
	// a different repository (those of one repository go one at a time,
	// in order); default 4.
	Concurrency int `yaml:"concurrency"`
}

// The formats of endpoints.
const (
	FormatCloudEvents  = "cloudevents"
	FormatDistribution = "distribution"
)

// Defaults of an endpoint's settings.
const (
	DefaultTimeout      = 10 * time.Second
	DefaultMaxAttempts  = 15
	DefaultBackoff      = time.Second
	DefaultMaxBackoff   = 5 * time.Minute
	DefaultConcurrency  = 4
	DefaultPollInterval = 2 * time.Second
)

// Actions are the event actions a filter may name.
var Actions = []string{storage.EventPush, storage.EventBlobPush, storage.EventTag, storage.EventUntag,
	storage.EventDeleteManifest, storage.EventDeleteBlob, storage.EventPromote, storage.EventRollback,
	storage.EventRetention, storage.EventGC}

var endpointName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// Enabled reports whether any endpoint is configured.
func (c Config) Enabled() bool { return len(c.Endpoints) > 0 }

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	_, err := Compile(c)
	return err
}

// Compile checks the configuration and compiles its filters and secrets.
// A secret file is read here, once.
func Compile(c Config) (*Endpoints, error) {
	if c.PollInterval < 0 {
		return nil, fmt.Errorf("notifications.pollInterval %s: must not be negative", c.PollInterval)
	}
	if c.Source != "" {
		if _, err := url.Parse(c.Source); err != nil {
			return nil, fmt.Errorf("notifications.source %q: want a URI reference: %w", c.Source, err)
		}
	}
	eps := &Endpoints{byName: map[string]*endpoint{}, source: c.Source, poll: c.PollInterval}
	if eps.source == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			host = "localhost"
		}
		eps.source = "urn:berth:" + host
	}
	if eps.poll == 0 {
		eps.poll = DefaultPollInterval
	}
	for i, ec := range c.Endpoints {
		ep, err := compileEndpoint(fmt.Sprintf("notifications.endpoints[%d]", i), ec)
		if err != nil {
			return nil, err
		}
		if eps.byName[ep.name] != nil {
			return nil, fmt.Errorf("notifications.endpoints[%d]: name %q used twice", i, ep.name)
		}
		eps.byName[ep.name] = ep
		eps.list = append(eps.list, ep)
	}
	return eps, nil
}

func compileEndpoint(at string, ec EndpointConfig) (*endpoint, error) {
	if !endpointName.MatchString(ec.Name) {
		return nil, fmt.Errorf("%s.name %q: want 1 to 64 letters, digits, '.', '_' or '-'", at, ec.Name)
	}
	at += " (" + ec.Name + ")"
	u, err := url.Parse(ec.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return nil, fmt.Errorf("%s.url %q: want an http or https URL without credentials (put them in headers)", at, ec.URL)
	}
	ep := &endpoint{name: ec.Name, url: u.String(), format: ec.Format, timeout: ec.Timeout,
		maxAttempts: ec.MaxAttempts, backoff: ec.Backoff, maxBackoff: ec.MaxBackoff, concurrency: ec.Concurrency,
		headers: map[string]string{}}
	switch ep.format {
	case "":
		ep.format = FormatCloudEvents
	case FormatCloudEvents, FormatDistribution:
	default:
		return nil, fmt.Errorf("%s.format %q: want cloudevents or distribution", at, ec.Format)
	}
	switch {
	case ec.Secret != "" && ec.SecretFile != "":
		return nil, fmt.Errorf("%s: secret and secretFile: give one", at)
	case ec.SecretFile != "":
		raw, err := os.ReadFile(ec.SecretFile)
		if err != nil {
			return nil, fmt.Errorf("%s.secretFile: %w", at, err)
		}
		if ep.secret = []byte(strings.TrimSpace(string(raw))); len(ep.secret) == 0 {
			return nil, fmt.Errorf("%s.secretFile %s: empty", at, ec.SecretFile)
		}
	case ec.Secret != "":
		ep.secret = []byte(ec.Secret)
	}
	for k, v := range ec.Headers {
		if !validHeaderName(k) || strings.ContainsAny(v, "\r\n\x00") {
			return nil, fmt.Errorf("%s.headers: %q is not a valid header", at, k)
		}
		if reservedHeader(k) {
			return nil, fmt.Errorf("%s.headers: %s is set by Berth", at, k)
		}
		ep.headers[k] = v
	}
	if ep.timeout == 0 {
		ep.timeout = DefaultTimeout
	}
	if ep.maxAttempts == 0 {
		ep.maxAttempts = DefaultMaxAttempts
	}
	if ep.backoff == 0 {
		ep.backoff = DefaultBackoff
	}
	if ep.maxBackoff == 0 {
		ep.maxBackoff = max(DefaultMaxBackoff, ep.backoff)
	}
	if ep.concurrency == 0 {
		ep.concurrency = DefaultConcurrency
	}
	switch {
	case ep.timeout < 0 || ep.timeout > 5*time.Minute:
		return nil, fmt.Errorf("%s.timeout %s: want up to 5m", at, ec.Timeout)
	case ep.maxAttempts < 1 || ep.maxAttempts > 100:
		return nil, fmt.Errorf("%s.maxAttempts %d: want 1 to 100", at, ec.MaxAttempts)
	case ep.backoff < 0 || ep.maxBackoff < ep.backoff:
		return nil, fmt.Errorf("%s: backoff %s and maxBackoff %s: want 0 < backoff <= maxBackoff", at, ep.backoff, ep.maxBackoff)
	case ep.maxBackoff > 24*time.Hour:
		return nil, fmt.Errorf("%s.maxBackoff %s: want up to 24h", at, ep.maxBackoff)
	case ep.concurrency < 1 || ep.concurrency > 64:
		return nil, fmt.Errorf("%s.concurrency %d: want 1 to 64", at, ec.Concurrency)
	}
	for _, a := range ec.Actions {
		if !contains(Actions, a) {
			return nil, fmt.Errorf("%s.actions: unknown action %q (want one of %s)", at, a, strings.Join(Actions, ", "))
		}
	}
	ep.actions = ec.Actions
	if ep.repos, err = glob.CompileSet(at+".repositories", ec.Repositories); err != nil {
		return nil, err
	}
	if ep.tags, err = glob.CompileSet(at+".tags", ec.Tags); err != nil {
		return nil, err
	}
	return ep, nil
}

// validHeaderName reports whether k is an HTTP header name (a token).
func validHeaderName(k string) bool {
	if k == "" {
		return false
	}
	for i := range len(k) {
		c := k[i]
		if c <= ' ' || c > '~' || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

// reservedHeader reports whether Berth sets header k itself.
func reservedHeader(k string) bool {
	switch strings.ToLower(k) {
	case "content-type", "content-length", "host", "user-agent", "berth-signature", "berth-event-id",
		"berth-delivery", "berth-attempt", "transfer-encoding", "connection":
		return true
	}
	return false
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// ErrUnknownEndpoint means a delivery or a request names an endpoint the
// configuration does not have.
var ErrUnknownEndpoint = errors.New("no such webhook endpoint is configured")
