// Package berthtest runs a real berth process for black-box tests.
//
// Tests obtain the binary with [Build] (or let [Start] do it), then start a
// registry on a free loopback port with [Start]. The process is stopped with
// SIGTERM when the test ends, and the test fails if it did not shut down
// cleanly.
//
// If the environment variable BERTH_BIN is set to the path of a berth binary
// (the Makefile does this), that binary is used as is. Otherwise the binary
// is built once per test binary into a temporary directory; packages that
// rely on that fallback should call [Main] from TestMain so the directory is
// removed afterwards.
package berthtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/berth-registry/berth/registry"
)

const (
	// ModulePath is the module path of the Berth repository.
	ModulePath = "github.com/berth-registry/berth"

	// EnvBin names the environment variable holding a prebuilt berth binary.
	EnvBin = "BERTH_BIN"

	// StartTimeout is the default bound on how long Start waits for the
	// listening log line; see [WithStartTimeout].
	StartTimeout = 30 * time.Second
	// StopTimeout bounds how long Stop waits after SIGTERM before SIGKILL.
	StopTimeout = 15 * time.Second
	// buildTimeout bounds the fallback "go build" of the berth binary.
	buildTimeout = 10 * time.Minute
	// killTimeout bounds how long we wait for the process to be reaped
	// after SIGKILL.
	killTimeout = 10 * time.Second

	// maxLogBytes caps the captured server log; older output is discarded.
	maxLogBytes = 16 << 20
	// failureLogLines is how many trailing log lines are shown on failure.
	failureLogLines = 200
)

// build caches the fallback build of the berth binary for the lifetime of
// the test binary. It is the only package-level state.
var build struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// Main runs the tests of a package and removes the fallback build directory
// created by [Build] afterwards. Use it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(berthtest.Main(m)) }
func Main(m *testing.M) int {
	code := m.Run()
	if build.dir != "" {
		_ = os.RemoveAll(build.dir)
	}
	return code
}

// RepoRoot returns the root directory of the Berth repository: the nearest
// directory at or above the working directory whose go.mod declares the
// module [ModulePath].
func RepoRoot(t testing.TB) string {
	t.Helper()
	root, err := findRepoRoot()
	if err != nil {
		t.Fatalf("berthtest: %v", err)
	}
	return root
}

func findRepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("get working directory: %w", err)
	}
	for {
		mod, err := modulePath(filepath.Join(dir, "go.mod"))
		if err == nil && mod == ModulePath {
			return dir, nil
		}
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return "", err
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod for module %s found above the working directory", ModulePath)
		}
		dir = parent
	}
}

// modulePath returns the module path declared in the go.mod file at path.
func modulePath(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) >= 2 && fields[0] == "module" {
			mod := fields[1]
			if unq, err := strconv.Unquote(mod); err == nil {
				mod = unq
			}
			return mod, nil
		}
	}
	return "", nil
}

// Build returns the path of a berth binary. If BERTH_BIN is set it must name
// an existing executable, which is returned. Otherwise ./cmd/berth is built
// once per test binary.
func Build(t testing.TB) string {
	t.Helper()
	if bin := os.Getenv(EnvBin); bin != "" {
		path, err := checkExecutable(bin)
		if err != nil {
			t.Fatalf("berthtest: %s: %v", EnvBin, err)
		}
		return path
	}
	root := RepoRoot(t)
	build.once.Do(func() {
		build.dir, build.err = os.MkdirTemp("", "berthtest-bin-")
		if build.err != nil {
			build.err = fmt.Errorf("create build directory: %w", build.err)
			return
		}
		build.path = filepath.Join(build.dir, "berth")
		build.err = GoBuild(root, build.path, "./cmd/berth")
	})
	if build.err != nil {
		t.Fatalf("berthtest: build berth: %v", build.err)
	}
	return build.path
}

// GoBuild runs "go build -o out pkg" in dir, bounded by a timeout. The
// combined output of the go command is included in the returned error.
func GoBuild(dir, out, pkg string, env ...string) error {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("find go command: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", out, pkg)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.WaitDelay = 10 * time.Second
	output, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build -o %s %s (in %s): %w\n%s", out, pkg, dir, err, output)
	}
	return nil
}

// checkExecutable resolves path (relative paths are taken relative to the
// repository root) and checks that it is an executable regular file.
func checkExecutable(path string) (string, error) {
	if !filepath.IsAbs(path) {
		root, err := findRepoRoot()
		if err != nil {
			return "", err
		}
		path = filepath.Join(root, path)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("stat binary: %w", err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return "", fmt.Errorf("%s is not an executable file", path)
	}
	return path, nil
}

// Option configures [Start].
type Option func(*options)

type options struct {
	dataDir      string
	args         []string
	cmdline      []string
	workDir      string
	env          []string
	startTimeout time.Duration
}

// WithDataDir makes the server use dir as its data directory instead of a
// fresh t.TempDir(). Use it to restart a server on existing data.
func WithDataDir(dir string) Option {
	return func(o *options) { o.dataDir = dir }
}

// WithArgs appends extra command line arguments after "serve".
func WithArgs(args ...string) Option {
	return func(o *options) { o.args = append(o.args, args...) }
}

// WithCommandLine replaces the whole command line ("serve --addr
// 127.0.0.1:0 --data DIR" and any WithArgs), for tests of the defaults,
// the environment and the config file. Server.DataDir is then empty.
func WithCommandLine(args ...string) Option {
	return func(o *options) { o.cmdline = args }
}

// WithWorkDir runs the server in dir instead of the test's directory.
func WithWorkDir(dir string) Option {
	return func(o *options) { o.workDir = dir }
}

// WithStartTimeout changes how long Start waits for the server to log that
// it is listening (default [StartTimeout]).
func WithStartTimeout(d time.Duration) Option {
	return func(o *options) { o.startTimeout = d }
}

// WithEnv adds KEY=VALUE pairs to the server's environment.
func WithEnv(kv ...string) Option {
	return func(o *options) { o.env = append(o.env, kv...) }
}

// Server is a running berth process.
type Server struct {
	// Addr is the host:port the server listens on.
	Addr string
	// URL is the base URL of the server, http://Addr.
	URL string
	// DataDir is the server's data directory.
	DataDir string

	t    testing.TB
	cmd  *exec.Cmd
	logs *logSink

	exited  chan struct{} // closed once the process has been reaped
	waitErr error         // result of cmd.Wait, valid after exited is closed

	ready atomic.Bool // Start returned successfully

	mu      sync.Mutex
	stopped bool // Stop or Kill has been called; later calls do nothing
}

// Start starts "berth serve --addr 127.0.0.1:0 --data DIR" and waits until it
// logs that it is listening. The server is stopped when the test ends.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	o := options{startTimeout: StartTimeout}
	for _, opt := range opts {
		opt(&o)
	}
	bin := Build(t)
	var args []string
	if o.cmdline != nil {
		args = o.cmdline
	} else {
		if o.dataDir == "" {
			o.dataDir = t.TempDir()
		}
		args = append([]string{"serve", "--addr", "127.0.0.1:0", "--data", o.dataDir}, o.args...)
	}
	s := &Server{
		DataDir: o.dataDir,
		t:       t,
		logs:    newLogSink(),
		exited:  make(chan struct{}),
	}
	s.cmd = exec.Command(bin, args...)
	s.cmd.Env = append(serverEnv(), o.env...)
	s.cmd.Dir = o.workDir
	s.cmd.Stdout = s.logs
	s.cmd.Stderr = s.logs
	s.cmd.SysProcAttr = sysProcAttr()
	// Bound Wait if a grandchild keeps the output pipes open.
	s.cmd.WaitDelay = 5 * time.Second

	if err := s.cmd.Start(); err != nil {
		t.Fatalf("berthtest: start %s: %v", bin, err)
	}
	go func() {
		s.waitErr = s.cmd.Wait()
		close(s.exited)
	}()
	// Registered after t.TempDir, so it runs before the data dir is removed.
	t.Cleanup(func() {
		s.Stop()
		// When Start itself failed, the log is already in its message.
		if t.Failed() && s.ready.Load() {
			t.Logf("berth server log (last %d lines):\n%s", failureLogLines, s.LogTail(failureLogLines))
		}
	})

	timer := time.NewTimer(o.startTimeout)
	defer timer.Stop()
	select {
	case addr := <-s.logs.listening:
		if err := checkAddr(addr); err != nil {
			s.Kill()
			t.Fatalf("berthtest: berth reported a bad listen address: %v\nlog:\n%s", err, s.Logs())
		}
		s.Addr = addr
		s.URL = "http://" + addr
	case <-s.exited:
		s.mu.Lock()
		s.stopped = true // nothing left to stop; the failure is reported here
		s.mu.Unlock()
		t.Fatalf("berthtest: berth exited before listening: %v\nlog:\n%s", exitDesc(s.waitErr), s.Logs())
	case <-timer.C:
		s.Kill()
		t.Fatalf("berthtest: berth did not log msg=listening within %s\nlog:\n%s", o.startTimeout, s.Logs())
	}
	s.ready.Store(true)
	return s
}

// serverEnv returns the test's environment without BERTH_* variables, so
// that the caller's shell (BERTH_ADDR, BERTH_LOG_FORMAT, BERTH_CONFIG, ...)
// cannot change the server under test. Use [WithEnv] to set them.
func serverEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BERTH_") {
			env = append(env, kv)
		}
	}
	return env
}

// checkAddr verifies that addr is a loopback host with a non-zero port.
func checkAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("parse %q: %w", addr, err)
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%q is not a loopback address", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
		return fmt.Errorf("%q has an invalid port", addr)
	}
	return nil
}

// Stop sends SIGTERM and waits up to [StopTimeout] for the process to exit,
// then kills it. It reports a test error if the process did not exit with
// status 0, including when it had already died before Stop was called.
// Stop is idempotent; only the first call (or a prior Kill) takes effect.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	s.stopped = true

	select {
	case <-s.exited:
		s.t.Errorf("berthtest: berth exited before it was stopped: %v", exitDesc(s.waitErr))
		return
	default:
	}
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		s.t.Errorf("berthtest: send SIGTERM to berth: %v", err)
	}
	timer := time.NewTimer(StopTimeout)
	defer timer.Stop()
	select {
	case <-s.exited:
		if s.waitErr != nil {
			s.t.Errorf("berthtest: berth did not exit cleanly after SIGTERM: %v", s.waitErr)
		}
	case <-timer.C:
		s.kill()
		s.t.Errorf("berthtest: berth did not exit within %s of SIGTERM; killed it", StopTimeout)
	}
}

// Kill kills the process with SIGKILL and waits for it to be reaped. A
// subsequent Stop (including the automatic one at the end of the test) does
// nothing.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	s.stopped = true
	s.kill()
}

func (s *Server) kill() {
	select {
	case <-s.exited:
		return
	default:
	}
	if err := s.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		s.t.Errorf("berthtest: kill berth: %v", err)
	}
	timer := time.NewTimer(killTimeout)
	defer timer.Stop()
	select {
	case <-s.exited:
	case <-timer.C:
		s.t.Errorf("berthtest: berth (pid %d) was not reaped within %s of SIGKILL", s.cmd.Process.Pid, killTimeout)
	}
}

func exitDesc(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// Pid is the server's process id, for reading its resource use from /proc.
func (s *Server) Pid() int { return s.cmd.Process.Pid }

// Logs returns everything the process has written to stdout and stderr so
// far (at most the last 16 MiB).
func (s *Server) Logs() string {
	return s.logs.String()
}

// LogTail returns the last n lines of [Server.Logs].
func (s *Server) LogTail(n int) string {
	return tailLines(s.Logs(), n)
}

func tailLines(text string, n int) string {
	text = strings.TrimRight(text, "\n")
	idx := len(text)
	for i := 0; i < n; i++ {
		j := strings.LastIndexByte(text[:idx], '\n')
		if j < 0 {
			return text
		}
		idx = j
	}
	return text[idx+1:]
}

// logSink collects process output and detects the "listening" log line.
type logSink struct {
	mu        sync.Mutex
	buf       bytes.Buffer
	partial   []byte // unterminated line, kept until the listening line is seen
	found     bool
	listening chan string // receives the listen address once
}

func newLogSink() *logSink {
	return &logSink{listening: make(chan string, 1)}
}

func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.buf.Len()+len(p) > maxLogBytes {
		// Keep the most recent half of the cap.
		keep := l.buf.Bytes()[l.buf.Len()-min(l.buf.Len(), maxLogBytes/2):]
		keep = bytes.Clone(keep)
		l.buf.Reset()
		l.buf.WriteString("[... earlier output discarded ...]\n")
		l.buf.Write(keep)
	}
	l.buf.Write(p)
	if !l.found {
		l.partial = append(l.partial, p...)
		for {
			i := bytes.IndexByte(l.partial, '\n')
			if i < 0 {
				break
			}
			line := string(l.partial[:i])
			l.partial = l.partial[i+1:]
			if addr, ok := ParseListening(line); ok {
				l.found = true
				l.partial = nil
				l.listening <- addr
				break
			}
		}
	}
	return len(p), nil
}

func (l *logSink) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// ParseListening reports whether line is berth's "listening" log record,
// and returns its address; see registry.ListeningAddr.
func ParseListening(line string) (addr string, ok bool) { return registry.ListeningAddr(line) }
