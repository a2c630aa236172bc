// Package versitygw runs an S3-compatible server for Berth's tests: the
// S3 blob store's own tests (storage/blob/s3), the registry's and the
// conformance tests that run a real berth on a bucket.
//
// A test package holds one Server for all its tests, started on first use
// and stopped when the package's tests end:
//
//	var gw = versitygw.New()
//
//	func TestMain(m *testing.M) { os.Exit(gw.Run(m)) }
//
// and each test asks for a fresh, empty bucket of its own, removed when
// the test ends:
//
//	b := gw.Bucket(t)
//
// The server is versitygw, pinned in the Makefile and built through the Go
// module proxy into bin/tools ("make test-servers"; "make test" does it),
// with its posix backend on a temporary directory: every bucket is a
// directory there. It listens on a free port of 127.0.0.1 only, with one
// account, whose keys are AccessKey and SecretKey.
//
// Where versitygw is not installed, Bucket skips the test, except in CI
// (CI=true), where it fails naming what is missing.
package versitygw

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
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

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/berth-registry/berth/internal/testserver/process"
)

// The account and region of the server.
const (
	AccessKey = "berth-test"
	SecretKey = "berth-test-secret-key"
	Region    = "us-east-1"
)

// EnvBin names the environment variable that may name a versitygw binary.
const EnvBin = "BERTH_VERSITYGW"

// ErrNotInstalled means no versitygw binary was found.
var ErrNotInstalled = errors.New("versitygw is not installed: run 'make test-servers' (it builds the pinned versitygw into bin/tools), or set " + EnvBin)

const (
	// startTimeout bounds the server's start.
	startTimeout = 30 * time.Second
	// stopTimeout bounds the graceful stop before the server is killed.
	stopTimeout = 15 * time.Second
	// modulePath is the module path of the Berth repository, whose
	// bin/tools holds the pinned binary.
	modulePath = "github.com/berth-registry/berth"
)

// Server is a versitygw server for the tests of one package. It starts on
// first use; its methods are safe for concurrent use.
type Server struct {
	once sync.Once
	err  error

	dir  string // the posix backend's root: a directory per bucket
	port int
	cmd  *exec.Cmd
	log  *process.Buffer
	done chan struct{} // closed when the server process has exited

	// n numbers the buckets made.
	n atomic.Int64
}

// New returns a Server that starts on its first Bucket.
func New() *Server { return &Server{} }

// Run runs the package's tests and then stops the server if one was
// started, returning the exit code for os.Exit.
func (s *Server) Run(m *testing.M) int {
	return process.RunThenStop(m, "versitygw", s.Stop)
}

// Bucket is a bucket of the server and what a client needs to reach it.
type Bucket struct {
	// Endpoint is the server's URL, http://127.0.0.1:<port>.
	Endpoint string
	// Name is the bucket's name.
	Name string
	// Region, AccessKey and SecretKey are the server's.
	Region    string
	AccessKey string
	SecretKey string
}

// Bucket creates a fresh, empty bucket, removed with its objects when t
// ends. It skips t when versitygw is not installed, except in CI, where it
// fails t.
func (s *Server) Bucket(t testing.TB) Bucket {
	t.Helper()
	name, err := s.CreateBucket(t.Context())
	process.Need(t, "versitygw", err, ErrNotInstalled)
	t.Cleanup(func() {
		if err := s.RemoveBucket(name); err != nil {
			t.Errorf("testserver/versitygw: %v", err)
		}
	})
	return Bucket{Endpoint: s.Endpoint(), Name: name, Region: Region, AccessKey: AccessKey, SecretKey: SecretKey}
}

// CreateBucket starts the server if it is not running and creates a
// fresh bucket, returning its name. Callers remove it with RemoveBucket.
func (s *Server) CreateBucket(ctx context.Context) (string, error) {
	s.once.Do(func() { s.err = s.start() })
	if s.err != nil {
		return "", s.err
	}
	name := fmt.Sprintf("berth-test-%d", s.n.Add(1))
	if _, err := s.Client().CreateBucket(ctx, &awss3.CreateBucketInput{Bucket: &name}); err != nil {
		return "", fmt.Errorf("create bucket %s: %w", name, err)
	}
	return name, nil
}

// RemoveBucket removes the bucket name and everything in it, directly in
// the backend's directory (a bucket there is a directory), so that large
// test content goes at once.
func (s *Server) RemoveBucket(name string) error {
	if name == "" || strings.ContainsAny(name, "/\\") || name == "." || name == ".." {
		return fmt.Errorf("remove bucket %q: not a bucket name", name)
	}
	if err := os.RemoveAll(filepath.Join(s.dir, name)); err != nil {
		return fmt.Errorf("remove bucket %s: %w", name, err)
	}
	return nil
}

// Endpoint is the server's URL.
func (s *Server) Endpoint() string {
	return "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
}

// Dir is the posix backend's root directory: a directory per bucket.
func (s *Server) Dir() string { return s.dir }

// Client returns an S3 client of the server's account.
func (s *Server) Client() *awss3.Client {
	return awss3.New(awss3.Options{
		Region:       Region,
		BaseEndpoint: aws.String(s.Endpoint()),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(AccessKey, SecretKey, ""),
	})
}

// Stop stops the server, if it was started, and removes its directory.
func (s *Server) Stop() error {
	if s.cmd == nil {
		return nil
	}
	defer func() { _ = os.RemoveAll(s.dir) }()
	return process.Stop("versitygw", s.cmd, s.done, syscall.SIGTERM, stopTimeout, s.log)
}

// Binary finds the versitygw binary: $BERTH_VERSITYGW, then the
// repository's bin/tools, then PATH.
func Binary() (string, error) {
	if p := os.Getenv(EnvBin); p != "" {
		fi, err := os.Stat(p)
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			return "", fmt.Errorf("%s=%s is not an executable file", EnvBin, p)
		}
		return p, nil
	}
	if root, err := repoRoot(); err == nil {
		p := filepath.Join(root, "bin", "tools", "versitygw")
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	return "", ErrNotInstalled
}

// repoRoot is the nearest directory at or above the working directory
// whose go.mod declares Berth's module.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if data, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil {
			for line := range strings.SplitSeq(string(data), "\n") {
				if f := strings.Fields(line); len(f) >= 2 && f[0] == "module" && strings.Trim(f[1], `"`) == modulePath {
					return dir, nil
				}
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod of %s above the working directory", modulePath)
		}
		dir = parent
	}
}

// start starts the server in a new temporary directory on a free
// loopback port.
func (s *Server) start() error {
	bin, err := Binary()
	if err != nil {
		return err
	}
	s.dir, err = os.MkdirTemp("", "berth-versitygw-")
	if err != nil {
		return fmt.Errorf("create versitygw directory: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	// A free port can be taken by someone else before the server binds
	// it: try a few.
	for attempt := 0; ; attempt++ {
		err = s.run(ctx, bin)
		if err == nil {
			return nil
		}
		if attempt == 4 || ctx.Err() != nil || !strings.Contains(s.log.String(), "address already in use") {
			_ = os.RemoveAll(s.dir)
			s.cmd = nil
			return err
		}
	}
}

// run starts the server on a free port and waits until it answers.
func (s *Server) run(ctx context.Context, bin string) error {
	port, err := process.FreePort()
	if err != nil {
		return err
	}
	s.port = port
	s.log = &process.Buffer{}
	s.done = make(chan struct{})
	// Global options first, then the backend and its directory. Keep-alive
	// is off by default, which would make every request a new connection.
	s.cmd = exec.Command(bin,
		"--port", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		"--access", AccessKey,
		"--secret", SecretKey,
		"--region", Region,
		"--keep-alive",
		"--quiet",
		"posix", s.dir)
	// The keys are on the command line; the environment must not add an
	// IAM service or another listener.
	s.cmd.Env = cleanEnv()
	s.cmd.Dir = s.dir
	s.cmd.Stdout = s.log
	s.cmd.Stderr = s.log
	s.cmd.SysProcAttr = sysProcAttr()
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("start versitygw (%s): %w", bin, err)
	}
	done := s.done
	go func() {
		_ = s.cmd.Wait()
		close(done)
	}()
	client := &http.Client{Timeout: 2 * time.Second}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		// Any HTTP answer (403 to an unsigned request) means it serves.
		resp, err := client.Get(s.Endpoint() + "/")
		if err == nil {
			_ = resp.Body.Close()
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("versitygw exited at start: %s", s.log.Tail())
		case <-ctx.Done():
			_ = s.cmd.Process.Kill()
			<-done
			return fmt.Errorf("versitygw did not answer within %s: %w; output: %s", startTimeout, err, s.log.Tail())
		case <-tick.C:
		}
	}
}

// cleanEnv is the environment without the variables versitygw reads.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "VGW_") || strings.HasPrefix(k, "ROOT_") || k == "LOGFILE" || k == "WEBHOOK" {
			continue
		}
		env = append(env, kv)
	}
	return env
}
