package registry

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/berth-registry/berth/notify"
	"github.com/berth-registry/berth/proxy"
	"github.com/berth-registry/berth/registry/auth"
	"github.com/berth-registry/berth/replication"
	"github.com/berth-registry/berth/ui"
)

// Config is the whole configuration of a Berth server.
type Config struct {
	// Addr is the host:port the server listens on.
	Addr string `yaml:"addr"`
	// Data is the directory holding the blob store and its index.
	Data string `yaml:"data"`
	// Storage puts the blobs elsewhere than in Data; see
	// docs/s3.md.
	Storage StorageConfig `yaml:"storage"`
	// Log configures the server's log.
	Log LogConfig `yaml:"log"`
	// Limits bound what a client may send.
	Limits Limits `yaml:"limits"`
	// HTTP tunes the HTTP server.
	HTTP HTTPConfig `yaml:"http"`
	// TLS, when set, serves HTTPS (with HTTP/2).
	TLS TLSConfig `yaml:"tls"`
	// Auth, when auth.htpasswd is set, requires credentials and applies
	// access rules; see docs/auth.md.
	Auth auth.Config `yaml:"auth"`
	// Tags makes tags immutable by rule; see docs/lifecycle.md.
	Tags TagsConfig `yaml:"tags"`
	// Retention deletes old tags and manifests by policy; see
	// docs/retention.md.
	Retention RetentionConfig `yaml:"retention"`
	// GC schedules online garbage collection; see docs/gc.md.
	GC GCConfig `yaml:"gc"`
	// UI is the web interface at /ui/; see docs/ui.md.
	UI ui.Config `yaml:"ui"`
	// Metrics configures the Prometheus metrics at /metrics; see
	// docs/operations.md.
	Metrics MetricsConfig `yaml:"metrics"`
	// Health tunes the readiness probe /readyz.
	Health HealthConfig `yaml:"health"`
	// Notifications sends events to webhook endpoints; see
	// docs/operations.md.
	Notifications notify.Config `yaml:"notifications"`

	// Proxy makes Berth a pull-through cache of upstream registries; see
	// docs/mirror.md.
	Proxy proxy.Config `yaml:"proxy"`
	// Sync replicates images from and to other registries; see
	// docs/sync.md.
	Sync replication.Config `yaml:"sync"`

	// Build says which Berth this is, for the metrics; set by the
	// command, never read from a file.
	Build BuildInfo `yaml:"-"`
}

// BuildInfo is the version and commit of the running binary.
type BuildInfo struct {
	Version, Commit string
}

// TLSConfig names the server's certificate and key, PEM files.
type TLSConfig struct {
	Certificate string `yaml:"certificate"`
	Key         string `yaml:"key"`
}

// Enabled reports whether TLS is configured.
func (t TLSConfig) Enabled() bool { return t.Certificate != "" || t.Key != "" }

// LogConfig configures logging.
type LogConfig struct {
	// Level is debug, info, warn or error.
	Level string `yaml:"level"`
	// Format is text or json.
	Format string `yaml:"format"`
	// Access logs one line per request at info level (default true);
	// false logs only requests that failed on the server's side.
	Access bool `yaml:"access"`
}

// Limits bound request sizes.
type Limits struct {
	// MaxManifestBytes is the largest manifest accepted.
	MaxManifestBytes int64 `yaml:"maxManifestBytes"`
	// MaxPageSize is the most tags or repositories returned in one page.
	MaxPageSize int `yaml:"maxPageSize"`
	// MaxConcurrentUploads is the most blob upload requests served at
	// once; more are answered 429 with Retry-After.
	MaxConcurrentUploads int `yaml:"maxConcurrentUploads"`
	// UploadIdleTimeout is how long an upload session may receive nothing
	// before it is removed with what it received.
	UploadIdleTimeout time.Duration `yaml:"uploadIdleTimeout"`
}

// HTTPConfig holds the HTTP server's timeouts.
type HTTPConfig struct {
	// ReadHeaderTimeout bounds the time to read request headers.
	ReadHeaderTimeout time.Duration `yaml:"readHeaderTimeout"`
	// BodyReadTimeout is the longest a request body may stall between two
	// reads before the request is cut off.
	BodyReadTimeout time.Duration `yaml:"bodyReadTimeout"`
	// IdleTimeout bounds how long an idle keep-alive connection is kept.
	IdleTimeout time.Duration `yaml:"idleTimeout"`
	// ShutdownTimeout bounds how long in-flight requests may run after a
	// shutdown signal.
	ShutdownTimeout time.Duration `yaml:"shutdownTimeout"`
	// ShutdownDelay is how long the server goes on serving after a
	// shutdown signal, answering /readyz 503, before it stops accepting
	// connections: time for a load balancer to stop sending it requests.
	// Default 0.
	ShutdownDelay time.Duration `yaml:"shutdownDelay"`
	// Secret seals the opaque cursors of search pages; BERTH_HTTP_SECRET
	// overrides it. Replicas behind one load balancer must share it, or a
	// cursor opens only on the replica that issued it. Empty: a random
	// secret of the process.
	Secret string `yaml:"secret"`
}

// DefaultConfig is the configuration of `berth serve` with nothing set:
// loopback port 5000, data under ./data.
func DefaultConfig() Config {
	return Config{
		Addr: "127.0.0.1:5000",
		Data: "./data",
		Log:  LogConfig{Level: "info", Format: "text", Access: true},
		Limits: Limits{
			MaxManifestBytes:     4 << 20,
			MaxPageSize:          1000,
			MaxConcurrentUploads: 64,
			UploadIdleTimeout:    24 * time.Hour,
		},
		HTTP: HTTPConfig{
			ReadHeaderTimeout: 10 * time.Second,
			BodyReadTimeout:   60 * time.Second,
			IdleTimeout:       120 * time.Second,
			ShutdownTimeout:   30 * time.Second,
		},
		Retention: RetentionConfig{HistoryWindow: DefaultHistoryWindow},
		GC:        defaultGC(),
		UI:        ui.DefaultConfig(),
		Metrics:   MetricsConfig{Enabled: true},
		Health:    HealthConfig{Timeout: 2 * time.Second},
	}
}

// LoadConfig builds the configuration: the defaults, overlaid by the YAML
// file at path (if path is not empty), overlaid by BERTH_* variables read
// through getenv. Unknown YAML keys are an error, so typos do not pass
// silently.
func LoadConfig(path string, getenv func(string) string) (Config, error) {
	cfg := DefaultConfig()
	if path != "" {
		raw, err := os.ReadFile(path)
		if err != nil {
			return cfg, fmt.Errorf("read config: %w", err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(raw))
		dec.KnownFields(true)
		// An empty file decodes to io.EOF and means "all defaults".
		if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
			if strings.Contains(err.Error(), "time.Duration") {
				// A bare number, such as 0, is not a duration to YAML.
				return cfg, fmt.Errorf("parse config %s: %w (write durations with a unit: 0s, 90m, 24h)", path, err)
			}
			return cfg, fmt.Errorf("parse config %s: %w", path, err)
		}
	}
	if err := cfg.applyEnv(getenv); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// applyEnv overlays the BERTH_* environment variables.
func (c *Config) applyEnv(getenv func(string) string) error {
	str := map[string]*string{
		"BERTH_ADDR":        &c.Addr,
		"BERTH_DATA":        &c.Data,
		"BERTH_LOG_LEVEL":   &c.Log.Level,
		"BERTH_LOG_FORMAT":  &c.Log.Format,
		"BERTH_HTTP_SECRET": &c.HTTP.Secret,
	}
	for k, p := range str {
		if v := getenv(k); v != "" {
			*p = v
		}
	}
	c.Storage.applyEnv(getenv)
	if v := getenv("BERTH_MAX_MANIFEST_BYTES"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return fmt.Errorf("BERTH_MAX_MANIFEST_BYTES=%q: %w", v, err)
		}
		c.Limits.MaxManifestBytes = n
	}
	if v := getenv("BERTH_LOG_ACCESS"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("BERTH_LOG_ACCESS=%q: want true or false", v)
		}
		c.Log.Access = b
	}
	if v := getenv("BERTH_MAX_PAGE_SIZE"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("BERTH_MAX_PAGE_SIZE=%q: %w", v, err)
		}
		c.Limits.MaxPageSize = n
	}
	return nil
}

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return fmt.Errorf("addr %q: %w", c.Addr, err)
	}
	if strings.TrimSpace(c.Data) == "" {
		return errors.New("data: a data directory is required")
	}
	if _, err := c.Log.level(); err != nil {
		return err
	}
	if c.HTTP.Secret != "" && len(c.HTTP.Secret) < 16 {
		return errors.New("http.secret: at least 16 characters (a random string, the same on every replica)")
	}
	if (c.TLS.Certificate == "") != (c.TLS.Key == "") {
		return errors.New("tls: certificate and key go together")
	}
	if err := c.Auth.Validate(); err != nil {
		return err
	}
	if _, err := compileTagRules(c.Tags.Immutable); err != nil {
		return err
	}
	if _, err := compileRetention(c.Retention); err != nil {
		return err
	}
	if err := c.GC.validate(); err != nil {
		return err
	}
	if err := c.Storage.validate(); err != nil {
		return err
	}
	if err := c.UI.Validate(); err != nil {
		return err
	}
	if err := c.Metrics.validate(c.Auth.Enabled(), c.Addr); err != nil {
		return err
	}
	if err := c.Notifications.Validate(); err != nil {
		return err
	}
	if c.HTTP.ShutdownDelay < 0 {
		return fmt.Errorf("http.shutdownDelay %s: must not be negative", c.HTTP.ShutdownDelay)
	}
	if err := c.Proxy.Validate(); err != nil {
		return err
	}
	if err := c.Sync.Validate(); err != nil {
		return err
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		return fmt.Errorf("log.format %q: want text or json", c.Log.Format)
	}
	if c.Limits.MaxManifestBytes <= 0 {
		return fmt.Errorf("limits.maxManifestBytes %d: must be positive", c.Limits.MaxManifestBytes)
	}
	if c.Limits.MaxPageSize <= 0 {
		return fmt.Errorf("limits.maxPageSize %d: must be positive", c.Limits.MaxPageSize)
	}
	if c.Limits.MaxConcurrentUploads <= 0 {
		return fmt.Errorf("limits.maxConcurrentUploads %d: must be positive", c.Limits.MaxConcurrentUploads)
	}
	for name, d := range map[string]time.Duration{
		"limits.uploadIdleTimeout": c.Limits.UploadIdleTimeout,
		"http.readHeaderTimeout":   c.HTTP.ReadHeaderTimeout,
		"http.bodyReadTimeout":     c.HTTP.BodyReadTimeout,
		"http.idleTimeout":         c.HTTP.IdleTimeout,
		"http.shutdownTimeout":     c.HTTP.ShutdownTimeout,
		"health.timeout":           c.Health.Timeout,
	} {
		if d <= 0 {
			return fmt.Errorf("%s %s: must be positive", name, d)
		}
	}
	return nil
}

func (l LogConfig) level() (slog.Level, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(l.Level)); err != nil {
		return 0, fmt.Errorf("log.level %q: %w", l.Level, err)
	}
	return lvl, nil
}

// NewLogger returns the logger the configuration asks for, writing to w.
func (l LogConfig) NewLogger(w io.Writer) (*slog.Logger, error) {
	lvl, err := l.level()
	if err != nil {
		return nil, err
	}
	opts := &slog.HandlerOptions{Level: lvl}
	if l.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), nil
}
