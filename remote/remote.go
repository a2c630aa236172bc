// Package remote owns Berth's connections to other registries: the
// pull-through cache's upstreams and replication's remotes. It turns their
// configuration (URL, credentials given or read from the environment, TLS
// settings) into a client that authenticates as registries ask, with HTTP
// Basic or the Bearer token flow (the challenge, the token service, tokens
// cached per scope), through oras-go's auth client.
package remote

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"oras.land/oras-go/v2/registry"
	orasremote "oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
)

// Config is how to reach another registry.
type Config struct {
	// URL is the registry's base URL, http or https, without a path.
	URL string `yaml:"url"`
	// Username and Password are the credentials, if it needs any.
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// UsernameEnv and PasswordEnv name environment variables to read the
	// credentials from instead, so that the configuration file holds no
	// secret.
	UsernameEnv string `yaml:"usernameEnv"`
	PasswordEnv string `yaml:"passwordEnv"`
	// TLS tunes HTTPS.
	TLS TLSConfig `yaml:"tls"`
}

// TLSConfig tunes the HTTPS connections to a registry.
type TLSConfig struct {
	// CA is a PEM file of certificate authorities to trust besides the
	// system's.
	CA string `yaml:"ca"`
	// Certificate and Key are a PEM client certificate and its key, for a
	// registry that asks for one.
	Certificate string `yaml:"certificate"`
	Key         string `yaml:"key"`
	// InsecureSkipVerify accepts any certificate. For tests only.
	InsecureSkipVerify bool `yaml:"insecureSkipVerify"`
}

// Validate reports the first setting that cannot work; what names the
// configuration entry in the message.
func (c Config) Validate(what string) error {
	u, err := url.Parse(c.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return fmt.Errorf("%s: url %q: want http(s)://host[:port], no path, no credentials", what, c.URL)
	}
	if c.Username != "" && c.UsernameEnv != "" {
		return fmt.Errorf("%s: username and usernameEnv are exclusive", what)
	}
	if c.Password != "" && c.PasswordEnv != "" {
		return fmt.Errorf("%s: password and passwordEnv are exclusive", what)
	}
	if (c.TLS.Certificate == "") != (c.TLS.Key == "") {
		return fmt.Errorf("%s: tls.certificate and tls.key go together", what)
	}
	return nil
}

// Registry is a client of one registry. It is safe for concurrent use.
type Registry struct {
	base   *url.URL
	client *auth.Client
}

// Options tune New.
type Options struct {
	// Getenv reads the environment for UsernameEnv and PasswordEnv; nil
	// means os.Getenv.
	Getenv func(string) string
	// UserAgent is sent with every request.
	UserAgent string
	// Timeout bounds connecting and waiting for response headers; zero
	// means 30 seconds. Bodies are bounded by the caller's context only:
	// a large blob takes as long as it takes.
	Timeout time.Duration
}

// New returns a client of the registry cfg describes.
func New(cfg Config, opts Options) (*Registry, error) {
	if err := cfg.Validate("remote"); err != nil {
		return nil, err
	}
	getenv := opts.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	base, _ := url.Parse(cfg.URL)
	base.Path = ""
	user, pass := cfg.Username, cfg.Password
	if cfg.UsernameEnv != "" {
		user = getenv(cfg.UsernameEnv)
	}
	if cfg.PasswordEnv != "" {
		pass = getenv(cfg.PasswordEnv)
		if pass == "" {
			return nil, fmt.Errorf("remote %s: the environment variable %s is empty", base.Host, cfg.PasswordEnv)
		}
	}
	tr, err := transport(cfg.TLS, opts.Timeout)
	if err != nil {
		return nil, fmt.Errorf("remote %s: %w", base.Host, err)
	}
	hdr := http.Header{}
	if opts.UserAgent != "" {
		hdr.Set("User-Agent", opts.UserAgent)
	}
	c := &auth.Client{
		Client: &http.Client{Transport: tr},
		Header: hdr,
		Cache:  auth.NewCache(),
		// The realm a configured registry names is as trusted as the
		// registry; only addresses of its own kind are allowed besides
		// the usual ones (a registry on loopback has its token service
		// there too).
		BlockedRealmPrefixes: realmDenylist(base.Hostname()),
	}
	if user != "" || pass != "" {
		c.Credential = auth.StaticCredential(base.Host, auth.Credential{Username: user, Password: pass})
	}
	return &Registry{base: base, client: c}, nil
}

// transport is the HTTP transport of a registry's client.
func transport(c TLSConfig, timeout time.Duration) (*http.Transport, error) {
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DialContext = (&net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}).DialContext
	tr.ResponseHeaderTimeout = timeout
	tr.TLSHandshakeTimeout = timeout
	tr.MaxIdleConnsPerHost = 32
	tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: c.InsecureSkipVerify} //nolint:gosec // configured for tests
	if c.CA != "" {
		pem, err := os.ReadFile(c.CA)
		if err != nil {
			return nil, fmt.Errorf("tls.ca: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.ca %s: no PEM certificate in it", c.CA)
		}
		tc.RootCAs = pool
	}
	if c.Certificate != "" {
		cert, err := tls.LoadX509KeyPair(c.Certificate, c.Key)
		if err != nil {
			return nil, fmt.Errorf("tls client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	tr.TLSClientConfig = tc
	return tr, nil
}

// realmDenylist is the default list of addresses a token realm may not
// be, less the prefixes that hold the registry's own address.
func realmDenylist(host string) []netip.Prefix {
	list := auth.DefaultBlockedRealmPrefixes()
	addr, err := netip.ParseAddr(host)
	if host == "localhost" {
		addr, err = netip.MustParseAddr("127.0.0.1"), nil
	}
	if err != nil {
		return list
	}
	return slices.DeleteFunc(list, func(p netip.Prefix) bool {
		return p.Contains(addr) || (addr.IsLoopback() && p.Addr().IsLoopback())
	})
}

// Host is the registry's host[:port].
func (r *Registry) Host() string { return r.base.Host }

// URL is the URL of path (which starts with /v2/) on the registry.
func (r *Registry) URL(path string) string {
	u := *r.base
	u.Path = path
	return u.String()
}

// Do sends req, authenticating for the repository scope repo with
// actions (pull when none), as the registry asks. The response is the
// caller's to close.
func (r *Registry) Do(req *http.Request, repo string, actions ...string) (*http.Response, error) {
	if len(actions) == 0 {
		actions = []string{auth.ActionPull}
	}
	ctx := req.Context()
	if repo != "" {
		ctx = auth.AppendRepositoryScope(ctx, registry.Reference{Registry: r.base.Host, Repository: repo}, actions...)
	}
	resp, err := r.client.Do(req.WithContext(ctx))
	if err != nil {
		return nil, &UnreachableError{Host: r.base.Host, Err: err}
	}
	return resp, nil
}

// Repository returns an oras-go client of repository name on the
// registry, sharing this client's connections, credentials and tokens.
func (r *Registry) Repository(name string) (*orasremote.Repository, error) {
	repo, err := orasremote.NewRepository(r.base.Host + "/" + name)
	if err != nil {
		return nil, fmt.Errorf("repository %s: %w", name, err)
	}
	repo.Client = r.client
	repo.PlainHTTP = r.base.Scheme == "http"
	return repo, nil
}

// Registry returns an oras-go client of the registry as a whole (its
// catalog), sharing this client's connections and credentials.
func (r *Registry) Registry() (*orasremote.Registry, error) {
	reg, err := orasremote.NewRegistry(r.base.Host)
	if err != nil {
		return nil, fmt.Errorf("registry %s: %w", r.base.Host, err)
	}
	reg.Client = r.client
	reg.PlainHTTP = r.base.Scheme == "http"
	return reg, nil
}

// UnreachableError is the error of a request that got no answer: the
// registry is down, or the network between.
type UnreachableError struct {
	Host string
	Err  error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("registry %s unreachable: %v", e.Host, e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// Unreachable reports whether err is a request that got no answer (and not
// the caller's own cancellation).
func Unreachable(ctx context.Context, err error) bool {
	var u *UnreachableError
	return errors.As(err, &u) && ctx.Err() == nil
}

// ScopeRepository is the repository scope of repo with actions, as a
// token service understands it.
func ScopeRepository(repo string, actions ...string) string {
	return auth.ScopeRepository(repo, actions...)
}

// TrimSlash returns a namespace without its slashes at either end.
func TrimSlash(ns string) string { return strings.Trim(ns, "/") }
