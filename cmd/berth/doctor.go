package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spf13/cobra"

	"github.com/berth-registry/berth/distribution"
)

// berth doctor checks, from a deploy target, everything between it and a
// registry, in the order a pull needs it: the proxy the environment names,
// name resolution, the TCP connection, TLS, the API and its challenge, a
// token, the reference, a ranged read of its first blob, and the clocks.
// Each step says how long it took and, when it fails, the likely cause and
// the fix; a step that needs a failed one is skipped.

// The statuses of a step.
const (
	stepOK   = "ok"
	stepWarn = "warn"
	stepFail = "fail"
	stepSkip = "skip"
)

// step is one check of berth doctor.
type step struct {
	Name   string `json:"step"`
	Status string `json:"status"`
	// Duration is how long the step took.
	Duration time.Duration `json:"-"`
	// DurationMS is Duration in milliseconds, for --json.
	DurationMS float64 `json:"durationMs"`
	Detail     string  `json:"detail,omitempty"`
	Cause      string  `json:"cause,omitempty"`
	Fix        string  `json:"fix,omitempty"`
}

// doctorReport is what berth doctor found.
type doctorReport struct {
	Target string `json:"target"`
	OK     bool   `json:"ok"`
	Steps  []step `json:"steps"`
}

// doctor is one run of berth doctor.
type doctor struct {
	scheme, host, port string
	repo, ref          string
	username, password string
	roots              *x509.CertPool
	timeout            time.Duration
	now                func() time.Time

	// Found along the way.
	proxy     *url.URL
	dialAddr  string
	client    *http.Client
	challenge string
	token     string
	serverNow time.Time
	localNow  time.Time
	blob      digest.Digest
	report    doctorReport
}

// newDoctorCommand returns "berth doctor".
func newDoctorCommand() *cobra.Command {
	var (
		plainHTTP     bool
		caFile        string
		username      string
		passwordStdin bool
		asJSON        bool
		timeout       time.Duration
	)
	cmd := &cobra.Command{
		Use:   "doctor REGISTRY[/REPOSITORY[:TAG|@DIGEST]]",
		Short: "Check that this machine can reach a registry and pull from it",
		Long: `Check, from a deploy target, each thing a pull from REGISTRY needs, in order:
the proxy the environment names (HTTPS_PROXY, HTTP_PROXY, NO_PROXY), name
resolution, the TCP connection, TLS (chain, expiry, name), the API at /v2/
and its authentication challenge, a token with the given credentials, and,
when a repository is named, resolving its tag (latest by default) and a
ranged read of its first blob; last, this machine's clock against the
server's. One line per step with its duration; a failed step says its
likely cause and the fix. The exit status is 0 when nothing failed (warnings
allowed), 1 otherwise.

REGISTRY is host[:port], https:// by default (--plain-http for http://), or a
URL with its scheme. Credentials, optional, are --username (or
BERTH_USERNAME) and a password (a robot secret works too) read with
--password-stdin, else from BERTH_PASSWORD.

  berth doctor registry.example.com/apps/web:1.4.0
  berth doctor http://10.0.0.5:5000 --json
  echo "$ROBOT_SECRET" | berth doctor registry.example.com/apps/web -u deployer --password-stdin`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := parseDoctorTarget(args[0], plainHTTP)
			if err != nil {
				return err
			}
			d.timeout, d.now = timeout, time.Now
			if d.timeout <= 0 {
				return fmt.Errorf("--timeout %s: must be positive", timeout)
			}
			d.username = username
			if d.username == "" {
				d.username = os.Getenv("BERTH_USERNAME")
			}
			switch {
			case passwordStdin && d.username == "":
				return errors.New("--password-stdin needs a user name: use --username or set BERTH_USERNAME")
			case passwordStdin:
				if d.password, err = readPasswordLine(cmd.InOrStdin()); err != nil {
					return err
				}
			case d.username != "":
				if d.password = os.Getenv("BERTH_PASSWORD"); d.password == "" {
					return errors.New("no password: pass --password-stdin and write it to standard input, or set BERTH_PASSWORD")
				}
			}
			if d.roots, err = trustedRoots(caFile); err != nil {
				return err
			}
			rep := d.run(cmd.Context())
			if asJSON {
				if err := printJSON(cmd.OutOrStdout(), rep); err != nil {
					return err
				}
			} else if err := printDoctor(cmd.OutOrStdout(), rep); err != nil {
				return err
			}
			if !rep.OK {
				return errDoctorFailed
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&plainHTTP, "plain-http", false, "reach the registry over http:// when REGISTRY has no scheme")
	f.StringVar(&caFile, "ca-file", "", "PEM file of CA certificates to trust besides the system's")
	f.StringVarP(&username, "username", "u", "", "user name (default $BERTH_USERNAME; none: anonymous)")
	f.BoolVar(&passwordStdin, "password-stdin", false, "read the password from standard input (default $BERTH_PASSWORD)")
	f.BoolVar(&asJSON, "json", false, "print the steps as JSON")
	f.DurationVar(&timeout, "timeout", 10*time.Second, "bound on each step")
	return cmd
}

// errDoctorFailed makes berth exit 1 once the report is printed.
var errDoctorFailed = &silentError{msg: "a check failed"}

// silentError is an error whose message main does not print: the command
// has said all there is already.
type silentError struct{ msg string }

func (e *silentError) Error() string { return e.msg }

// parseDoctorTarget reads REGISTRY[/REPOSITORY[:TAG|@DIGEST]].
func parseDoctorTarget(arg string, plainHTTP bool) (*doctor, error) {
	d := &doctor{scheme: "https"}
	if plainHTTP {
		d.scheme = "http"
	}
	rest := arg
	if scheme, after, ok := strings.Cut(arg, "://"); ok {
		if scheme != "http" && scheme != "https" {
			return nil, fmt.Errorf("%q: the scheme must be http or https", arg)
		}
		d.scheme, rest = scheme, after
	}
	hostport, path, _ := strings.Cut(rest, "/")
	if hostport == "" || strings.ContainsAny(hostport, "@?#") {
		return nil, fmt.Errorf("%q: want REGISTRY[/REPOSITORY[:TAG]], REGISTRY being host[:port]", arg)
	}
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		host, port = strings.Trim(hostport, "[]"), map[string]string{"http": "80", "https": "443"}[d.scheme]
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil || host == "" {
		return nil, fmt.Errorf("%q: bad host or port", hostport)
	}
	d.host, d.port = host, port
	d.report.Target = d.scheme + "://" + net.JoinHostPort(host, port)
	if path = strings.Trim(path, "/"); path != "" {
		repo, ref := path, "latest"
		if i := strings.Index(path, "@"); i >= 0 {
			repo, ref = path[:i], path[i+1:]
			if _, err := digest.Parse(ref); err != nil {
				return nil, fmt.Errorf("%q: bad digest: %w", ref, err)
			}
		} else if i := strings.LastIndex(path, ":"); i > strings.LastIndex(path, "/") {
			repo, ref = path[:i], path[i+1:]
			if !distribution.ValidTag(ref) {
				return nil, fmt.Errorf("%q is not a valid tag", ref)
			}
		}
		if !distribution.ValidName(repo) {
			return nil, fmt.Errorf("%q is not a repository name", repo)
		}
		d.repo, d.ref = repo, ref
		d.report.Target += "/" + repo + refSeparator(ref) + ref
	}
	return d, nil
}

func refSeparator(ref string) string {
	if strings.Contains(ref, ":") {
		return "@"
	}
	return ":"
}

// trustedRoots is the system's trust store, plus the certificates of
// caFile when set.
func trustedRoots(caFile string) (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if caFile == "" {
		return pool, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("--ca-file: %w", err)
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--ca-file %s: no PEM certificate in it", caFile)
	}
	return pool, nil
}

// run runs the steps, each bounded by the timeout, and reports them.
func (d *doctor) run(ctx context.Context) doctorReport {
	steps := []struct {
		name string
		fn   func(ctx context.Context, s *step)
		// needed says which earlier steps must have passed.
		needs []string
	}{
		{"proxy", d.checkProxy, nil},
		{"resolve", d.checkResolve, nil},
		{"connect", d.checkConnect, []string{"resolve"}},
		{"tls", d.checkTLS, []string{"connect"}},
		{"api", d.checkAPI, []string{"connect", "tls"}},
		{"credentials", d.checkCredentials, []string{"api"}},
		{"reference", d.checkReference, []string{"api", "credentials"}},
		{"blob", d.checkBlob, []string{"reference"}},
		{"clock", d.checkClock, []string{"api"}},
	}
	d.report.OK = true
	failed := map[string]bool{}
	for _, st := range steps {
		s := step{Name: st.name}
		if i := slices.IndexFunc(st.needs, func(n string) bool { return failed[n] }); i >= 0 {
			s.Status, s.Detail = stepSkip, "skipped: the "+st.needs[i]+" step failed"
			failed[st.name] = true
		} else {
			sctx, cancel := context.WithTimeout(ctx, d.timeout)
			start := time.Now()
			st.fn(sctx, &s)
			s.Duration = time.Since(start)
			cancel()
			if s.Status == "" {
				s.Status = stepOK
			}
			if s.Status == stepFail {
				failed[st.name] = true
				d.report.OK = false
			}
		}
		s.DurationMS = float64(s.Duration.Microseconds()) / 1000
		d.report.Steps = append(d.report.Steps, s)
	}
	if d.client != nil {
		d.client.CloseIdleConnections()
	}
	return d.report
}

// fail marks s failed with its cause and fix.
func (s *step) fail(detail, cause, fix string) {
	s.Status, s.Detail, s.Cause, s.Fix = stepFail, detail, cause, fix
}

// targetURL is the URL of path on the registry.
func (d *doctor) targetURL(path string) string {
	return d.scheme + "://" + net.JoinHostPort(d.host, d.port) + path
}

// checkProxy reads the proxy the environment names for the registry.
func (d *doctor) checkProxy(_ context.Context, s *step) {
	req, _ := http.NewRequest(http.MethodGet, d.targetURL("/v2/"), nil)
	p, err := http.ProxyFromEnvironment(req)
	if err != nil {
		s.fail("", "the proxy setting of the environment does not parse: "+err.Error(),
			"fix HTTPS_PROXY / HTTP_PROXY (a URL such as http://proxy.example:3128), or unset them")
		return
	}
	vars := "HTTP_PROXY"
	if d.scheme == "https" {
		vars = "HTTPS_PROXY"
	}
	if p == nil {
		s.Detail = "direct: no proxy for " + d.host
		if v := envAny(vars); v != "" {
			s.Detail += " (" + vars + " is set, but NO_PROXY excludes it)"
		}
		return
	}
	d.proxy = p
	s.Detail = "through " + p.Redacted() + " (from " + vars + ")"
}

// envAny reads an environment variable in upper or lower case.
func envAny(name string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return os.Getenv(strings.ToLower(name))
}

// dialTarget is the host and port the TCP connection goes to: the proxy's
// when there is one.
func (d *doctor) dialTarget() (host, port string) {
	if d.proxy == nil {
		return d.host, d.port
	}
	port = d.proxy.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[d.proxy.Scheme]
	}
	return d.proxy.Hostname(), port
}

// checkResolve resolves the host the connection goes to.
func (d *doctor) checkResolve(ctx context.Context, s *step) {
	host, _ := d.dialTarget()
	if ip := net.ParseIP(host); ip != nil {
		s.Detail = host + " is an address: nothing to resolve"
		return
	}
	addrs, err := net.DefaultResolver.LookupHost(ctx, host)
	if err != nil {
		var dnsErr *net.DNSError
		cause := "the name " + host + " does not resolve: " + err.Error()
		if errors.As(err, &dnsErr) && dnsErr.IsTimeout {
			cause = "no DNS server answered for " + host + " in time"
		}
		s.fail("", cause, "check the name; then /etc/hosts and the DNS servers of /etc/resolv.conf (in a container, its own DNS settings); "+
			"an internal name may need the VPN or the internal DNS")
		return
	}
	s.Detail = host + " → " + strings.Join(addrs, ", ")
}

// checkConnect opens a TCP connection to the registry (or the proxy).
func (d *doctor) checkConnect(ctx context.Context, s *step) {
	host, port := d.dialTarget()
	addr := net.JoinHostPort(host, port)
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		what := "the registry"
		if d.proxy != nil {
			what = "the proxy"
		}
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			s.fail(err.Error(), "nothing listens on "+addr+" (connection refused)",
				"check that "+what+" runs and listens on port "+port+" of that host (a server listening on 127.0.0.1 takes local clients only), and the port in the URL")
		case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
			s.fail(err.Error(), "no answer from "+addr+" within "+d.timeout.String()+": a firewall drops the packets, or the host is down",
				"open TCP port "+port+" from this machine to "+host+" (firewall, security group), and check that the host is up")
		case errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH):
			s.fail(err.Error(), "no route from this machine to "+host,
				"check this machine's routes, and the VPN if the registry is on a private network")
		default:
			s.fail(err.Error(), "the connection to "+addr+" failed", "check the host and port, and the network between them")
		}
		return
	}
	d.dialAddr = conn.RemoteAddr().String()
	_ = conn.Close()
	s.Detail = "connected to " + d.dialAddr
	if d.proxy != nil {
		s.Detail += " (the proxy)"
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// tlsConfig is the TLS configuration of every step: the trusted roots
// and the registry's name.
func (d *doctor) tlsConfig() *tls.Config {
	return &tls.Config{RootCAs: d.roots, ServerName: d.host, MinVersion: tls.VersionTLS12}
}

// checkTLS does a TLS handshake and reads the certificate.
func (d *doctor) checkTLS(ctx context.Context, s *step) {
	if d.scheme != "https" {
		s.Status, s.Detail = stepSkip, "plain HTTP: no TLS to check"
		if d.username != "" && !isLoopback(d.host) {
			s.Status = stepWarn
			s.Detail = "plain HTTP: the password of " + d.username + " crosses the network in clear text"
			s.Fix = "serve the registry over TLS (tls.certificate and tls.key) and use https://"
		}
		return
	}
	conn, err := d.dialTLS(ctx)
	if err != nil {
		cause, fix := explainTLS(err, d.host)
		s.fail(err.Error(), cause, fix)
		return
	}
	defer conn.Close()
	cs := conn.ConnectionState()
	leaf := cs.PeerCertificates[0]
	left := leaf.NotAfter.Sub(d.now())
	s.Detail = fmt.Sprintf("%s, certificate for %s issued by %s, valid until %s (%d days)", tls.VersionName(cs.Version),
		certNames(leaf), leaf.Issuer.CommonName, leaf.NotAfter.UTC().Format(time.RFC3339), int(left.Hours()/24))
	if left < 14*24*time.Hour {
		s.Status = stepWarn
		s.Cause = "the certificate expires in less than 14 days"
		s.Fix = "renew the registry's certificate before " + leaf.NotAfter.UTC().Format(time.DateOnly)
	}
}

// dialTLS connects and does the handshake, through the proxy's CONNECT
// when there is one.
func (d *doctor) dialTLS(ctx context.Context) (*tls.Conn, error) {
	host, port := d.dialTarget()
	raw, err := (&net.Dialer{}).DialContext(ctx, "tcp", net.JoinHostPort(host, port))
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = raw.SetDeadline(dl)
	}
	if d.proxy != nil {
		target := net.JoinHostPort(d.host, d.port)
		fmt.Fprintf(raw, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
		resp, err := http.ReadResponse(bufio.NewReader(raw), nil)
		if err != nil {
			_ = raw.Close()
			return nil, fmt.Errorf("proxy CONNECT: %w", err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			_ = raw.Close()
			return nil, fmt.Errorf("the proxy refused CONNECT %s: %s", target, resp.Status)
		}
	}
	conn := tls.Client(raw, d.tlsConfig())
	if err := conn.HandshakeContext(ctx); err != nil {
		_ = raw.Close()
		return nil, err
	}
	return conn, nil
}

// certNames lists the names a certificate is for.
func certNames(c *x509.Certificate) string {
	names := slices.Clone(c.DNSNames)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 {
		names = append(names, c.Subject.CommonName)
	}
	return strings.Join(names, ", ")
}

// explainTLS names the likely cause of a failed handshake, and the fix.
func explainTLS(err error, host string) (cause, fix string) {
	var unknown x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invalid x509.CertificateInvalidError
	var record tls.RecordHeaderError
	switch {
	case errors.As(err, &unknown):
		issuer := "an authority"
		if unknown.Cert != nil {
			issuer = "“" + unknown.Cert.Issuer.CommonName + "”"
		}
		return "the registry's certificate is signed by " + issuer + ", which this machine does not trust (a private CA, or a self-signed certificate)",
			"install the CA certificate in the system's trust store (Debian, Ubuntu: copy it to /usr/local/share/ca-certificates/NAME.crt and run update-ca-certificates; " +
				"RHEL: /etc/pki/ca-trust/source/anchors and update-ca-trust), or pass --ca-file; Docker and containerd read /etc/docker/certs.d and /etc/containerd/certs.d as well"
	case errors.As(err, &hostErr):
		return "the certificate is for " + certNames(hostErr.Certificate) + ", not " + host,
			"reach the registry by a name the certificate lists, or have the certificate reissued with " + host + " among its names"
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return "the certificate is outside its validity period: " + invalid.Detail + " (expired, or this machine's clock is wrong)",
			"renew the registry's certificate; if it is valid, set this machine's clock (timedatectl set-ntp true)"
	case errors.As(err, &record):
		return "the server does not speak TLS on this port: it answers plain HTTP",
			"use http:// (or --plain-http), or serve the registry over TLS (tls.certificate and tls.key)"
	case isTimeout(err):
		return "the TLS handshake got no answer in time", "check that the port serves TLS, and any proxy or load balancer in front of it"
	}
	return "the TLS handshake failed: " + err.Error(), "check the registry's TLS configuration and the network in between"
}

// httpClient is the client of the API steps: the environment's proxy, the
// trusted roots, no redirects followed silently.
func (d *doctor) httpClient() *http.Client {
	if d.client == nil {
		d.client = &http.Client{Transport: &http.Transport{
			Proxy:             http.ProxyFromEnvironment,
			TLSClientConfig:   d.tlsConfig(),
			ForceAttemptHTTP2: true,
		}}
	}
	return d.client
}

// get sends method to path with the credentials the steps found: the
// token, else Basic credentials when the registry asked for them.
func (d *doctor) get(ctx context.Context, method, path string, hdr ...string) (*http.Response, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, d.targetURL(path), nil)
	if err != nil {
		return nil, nil, err
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	switch {
	case d.token != "":
		req.Header.Set("Authorization", "Bearer "+d.token)
	case d.username != "" && strings.HasPrefix(d.challenge, "Basic"):
		req.SetBasicAuth(d.username, d.password)
	}
	resp, err := d.httpClient().Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return resp, body, err
}

// checkAPI asks GET /v2/ and reads the challenge.
func (d *doctor) checkAPI(ctx context.Context, s *step) {
	resp, body, err := d.get(ctx, http.MethodGet, "/v2/")
	if err != nil {
		s.fail(err.Error(), "GET /v2/ failed", "check the proxy settings and the registry's address")
		return
	}
	if t, err := http.ParseTime(resp.Header.Get("Date")); err == nil {
		d.serverNow, d.localNow = t, d.now()
	}
	api := resp.Header.Get("Docker-Distribution-API-Version")
	switch resp.StatusCode {
	case http.StatusOK:
		s.Detail = "the API answers, and asks for no credentials"
	case http.StatusUnauthorized:
		d.challenge = resp.Header.Get("WWW-Authenticate")
		switch {
		case strings.HasPrefix(d.challenge, "Bearer "):
			p := challengeParams(d.challenge)
			s.Detail = "the API asks for a token from " + p["realm"] + " (service " + p["service"] + ")"
		case strings.HasPrefix(d.challenge, "Basic"):
			s.Detail = "the API asks for Basic credentials"
		default:
			s.fail(fmt.Sprintf("401 with challenge %q", d.challenge), "GET /v2/ answers 401 without a challenge a registry client can answer",
				"check that this URL is the registry's and not a proxy's or a load balancer's login page")
			return
		}
	case http.StatusNotFound:
		s.fail("404", "no registry API at "+d.targetURL("/v2/"), "check the host and port: the registry answers at the root of its URL")
		return
	default:
		s.fail(fmt.Sprintf("%d: %s", resp.StatusCode, snippet(body)), "GET /v2/ answered "+resp.Status,
			"check the registry's log; a proxy in between may answer instead of it")
		return
	}
	if api != "" {
		s.Detail += " (" + api + ")"
	}
}

// challengeParams reads the parameters of a challenge.
func challengeParams(c string) map[string]string {
	params := map[string]string{}
	for _, m := range challengeParam.FindAllStringSubmatch(c, -1) {
		params[m[1]] = m[2]
	}
	return params
}

// snippet is the start of a body, for a message.
func snippet(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 120 {
		s = s[:120] + "..."
	}
	return s
}

// checkCredentials gets a token (with the credentials, or anonymous) when
// the registry asks for one, or checks the Basic credentials.
func (d *doctor) checkCredentials(ctx context.Context, s *step) {
	who := "anonymous"
	if d.username != "" {
		who = d.username
	}
	switch {
	case d.challenge == "":
		s.Status, s.Detail = stepSkip, "the registry asks for no credentials"
		return
	case strings.HasPrefix(d.challenge, "Basic"):
		if d.username == "" {
			s.fail("", "the registry asks for credentials, and none were given", "pass --username and --password-stdin (a robot secret is a password)")
			return
		}
		resp, _, err := d.get(ctx, http.MethodGet, "/v2/")
		if err != nil {
			s.fail(err.Error(), "GET /v2/ with credentials failed", "check the network")
			return
		}
		if resp.StatusCode != http.StatusOK {
			s.fail(resp.Status, "the registry refused the user name and password of "+who, credentialsFix)
			return
		}
		s.Detail = "Basic credentials of " + who + " accepted"
		return
	}
	p := challengeParams(d.challenge)
	realm, err := url.Parse(p["realm"])
	if err != nil || (realm.Scheme != "http" && realm.Scheme != "https") {
		s.fail(p["realm"], "the challenge names no usable token service", "check the registry's auth.token.realm")
		return
	}
	q := url.Values{"service": {p["service"]}}
	if d.repo != "" {
		q.Set("scope", "repository:"+d.repo+":pull")
	}
	realm.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, realm.String(), nil)
	if err != nil {
		s.fail(err.Error(), "bad token service URL", "check the registry's auth.token.realm")
		return
	}
	if d.username != "" {
		req.SetBasicAuth(d.username, d.password)
	}
	resp, err := d.httpClient().Do(req)
	if err != nil {
		s.fail(err.Error(), "the token service at "+realm.Host+" cannot be reached", "check that this machine reaches "+realm.Host+" too (the realm of the challenge)")
		return
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusUnauthorized:
		s.fail(resp.Status+": "+snippet(body), "the registry refused the user name and password of "+who, credentialsFix)
		return
	case http.StatusTooManyRequests:
		s.fail(resp.Status, "too many failed logins from this address: the registry refuses logins for a while",
			"wait a minute (Retry-After: "+resp.Header.Get("Retry-After")+"s), then retry with the right credentials")
		return
	default:
		s.fail(resp.Status+": "+snippet(body), "the token service answered "+resp.Status, "check the registry's log")
		return
	}
	var tok struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
	}
	if json.Unmarshal(body, &tok) != nil || (tok.Token == "" && tok.AccessToken == "") {
		s.fail(snippet(body), "the token service answered no token", "check the registry's log")
		return
	}
	d.token = tok.Token
	if d.token == "" {
		d.token = tok.AccessToken
	}
	s.Detail = "a token for " + who
	if d.repo == "" {
		return
	}
	granted := grantedActions(d.token, d.repo)
	if !slices.Contains(granted, "pull") && !slices.Contains(granted, "*") {
		s.fail("a token for "+who+" that grants nothing on "+d.repo, who+" may not pull "+d.repo+" (or it does not exist, and the registry does not say which)",
			"pull with credentials that may (a robot scoped to "+d.repo+"), or ask an administrator for pull on it")
		return
	}
	s.Detail += " granting " + strings.Join(granted, ",") + " on " + d.repo
}

// credentialsFix is the fix of refused credentials.
const credentialsFix = "check the user name and password; a robot secret (berth_...) goes as the password, and berth token list shows whether the robot is revoked or expired"

// grantedActions reads the actions a token grants on repo from its
// (unverified) claims.
func grantedActions(token, repo string) []string {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil
	}
	var claims struct {
		Access []struct {
			Type    string   `json:"type"`
			Name    string   `json:"name"`
			Actions []string `json:"actions"`
		} `json:"access"`
	}
	if json.Unmarshal(raw, &claims) != nil {
		return nil
	}
	for _, a := range claims.Access {
		if a.Type == "repository" && a.Name == repo {
			return a.Actions
		}
	}
	return nil
}

// manifestAccept lists the manifest types a pull accepts.
var manifestAccept = strings.Join([]string{ocispec.MediaTypeImageIndex, ocispec.MediaTypeImageManifest,
	"application/vnd.docker.distribution.manifest.list.v2+json", "application/vnd.docker.distribution.manifest.v2+json"}, ", ")

// checkReference resolves the reference and finds its first blob.
func (d *doctor) checkReference(ctx context.Context, s *step) {
	if d.repo == "" {
		s.Status, s.Detail = stepSkip, "no repository named"
		return
	}
	ref := d.ref
	for range 3 {
		resp, body, err := d.get(ctx, http.MethodGet, "/v2/"+d.repo+"/manifests/"+ref, "Accept", manifestAccept)
		if err != nil {
			s.fail(err.Error(), "the manifest request failed", "check the network")
			return
		}
		switch resp.StatusCode {
		case http.StatusOK:
		case http.StatusNotFound:
			s.fail(resp.Status+": "+snippet(body), d.repo+":"+d.ref+" does not exist", "check the repository and tag (berth find --repository "+d.repo+")")
			return
		case http.StatusUnauthorized, http.StatusForbidden:
			s.fail(resp.Status+": "+snippet(body), "the credentials may not pull "+d.repo, "pull with credentials that may, or ask for pull on "+d.repo)
			return
		default:
			s.fail(resp.Status+": "+snippet(body), "the manifest request answered "+resp.Status, "check the registry's log")
			return
		}
		var m struct {
			MediaType string               `json:"mediaType"`
			Config    *ocispec.Descriptor  `json:"config"`
			Layers    []ocispec.Descriptor `json:"layers"`
			Manifests []ocispec.Descriptor `json:"manifests"`
		}
		if err := json.Unmarshal(body, &m); err != nil {
			s.fail(err.Error(), "the manifest does not parse", "check the artifact: push it again")
			return
		}
		if ref == d.ref {
			s.Detail = d.repo + refSeparator(d.ref) + d.ref + " is " + resp.Header.Get("Docker-Content-Digest")
		}
		switch {
		case len(m.Layers) > 0:
			d.blob = m.Layers[0].Digest
		case m.Config != nil:
			d.blob = m.Config.Digest
		case len(m.Manifests) > 0:
			ref = string(m.Manifests[0].Digest) // an index: its first manifest
			continue
		}
		if d.blob == "" {
			s.Status = stepWarn
			s.Detail += ", which references no blob"
		}
		return
	}
	s.Status = stepWarn
	s.Detail += ", an index nested too deep to follow"
}

// checkBlob reads the first KiB of the first blob.
func (d *doctor) checkBlob(ctx context.Context, s *step) {
	if d.blob == "" {
		s.Status, s.Detail = stepSkip, "no blob to read"
		return
	}
	resp, body, err := d.get(ctx, http.MethodGet, "/v2/"+d.repo+"/blobs/"+string(d.blob), "Range", "bytes=0-1023")
	if err != nil {
		s.fail(err.Error(), "the blob request failed", "check the network, and any proxy's size or time limits")
		return
	}
	switch resp.StatusCode {
	case http.StatusPartialContent:
		s.Detail = fmt.Sprintf("read %d bytes of %s (%s)", len(body), short(d.blob), resp.Header.Get("Content-Range"))
	case http.StatusOK:
		s.Status = stepWarn
		s.Detail = fmt.Sprintf("read %s whole (%d bytes): the server ignored the range", short(d.blob), len(body))
		s.Fix = "a proxy in between may strip Range headers: resumed downloads will start over"
	default:
		s.fail(resp.Status+": "+snippet(body), "the blob "+short(d.blob)+" cannot be read", "check the registry's log (berth fsck checks the store)")
	}
}

// checkClock compares this machine's clock with the server's Date.
func (d *doctor) checkClock(_ context.Context, s *step) {
	if d.serverNow.IsZero() {
		s.Status, s.Detail = stepSkip, "the server sent no Date"
		return
	}
	skew := d.localNow.Sub(d.serverNow).Round(time.Second)
	abs := max(skew, -skew)
	switch {
	case abs <= 2*time.Second:
		s.Detail = "in step with the server's (within the second a Date header gives)"
	case abs < time.Minute:
		s.Detail = fmt.Sprintf("%s from the server's", skew)
	case abs < time.Hour:
		s.Status = stepWarn
		s.Detail = fmt.Sprintf("%s from the server's", skew)
		s.Cause = "the clocks differ: logs and times shown by this machine disagree with the registry's"
		s.Fix = "synchronise the clock (timedatectl set-ntp true, chrony)"
	default:
		s.fail(fmt.Sprintf("%s from the server's", skew), "this machine's clock is off by more than an hour: certificates are checked against it",
			"synchronise the clock (timedatectl set-ntp true, chrony)")
	}
}

// printDoctor writes one line per step, with the cause and fix of a
// failure below it.
func printDoctor(w io.Writer, rep doctorReport) error {
	fmt.Fprintf(w, "berth doctor %s\n", rep.Target)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, s := range rep.Steps {
		dur := ""
		if s.Status != stepSkip || s.Duration > 0 {
			dur = s.Duration.Round(100 * time.Microsecond).String()
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", strings.ToUpper(s.Status), s.Name, dur, s.Detail)
		if s.Cause != "" {
			fmt.Fprintf(tw, "  \t\t\tcause: %s\n", s.Cause)
		}
		if s.Fix != "" {
			fmt.Fprintf(tw, "  \t\t\tfix:   %s\n", s.Fix)
		}
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	if rep.OK {
		fmt.Fprintln(w, "all checks passed")
	} else {
		fmt.Fprintln(w, "a check failed: see its cause and fix above")
	}
	return nil
}
