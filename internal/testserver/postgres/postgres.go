// Package postgres runs a PostgreSQL server for Berth's tests: the
// PostgreSQL index's own tests (storage/meta/postgres), and the registry's
// and conformance tests that run a real berth on a database.
//
// A test package holds one Server for all its tests, started on first use
// and stopped when the package's tests end:
//
//	var pg = postgres.New()
//
//	func TestMain(m *testing.M) { os.Exit(pg.Run(m)) }
//
// and each test asks for a fresh, empty database of its own, dropped when
// the test ends, as a DSN:
//
//	dsn := pg.Database(t)
//
// The server is Debian's PostgreSQL 15 ("make test" installs the
// postgresql package when it is missing), initialised with initdb into a
// temporary directory, listening on a free port of 127.0.0.1 only, its
// unix socket in that directory, with fsync off (a test's database needs
// no durability against power loss; NewDurable keeps it on, for
// benchmarks). PostgreSQL refuses to run as root: when the tests run as
// root, initdb and the server run as the user nobody, who owns the
// directory.
//
// Where PostgreSQL is not installed, Database skips the test, except in CI
// (CI=true), where it fails naming what is missing.
package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/berth-registry/berth/internal/testserver/process"
)

// EnvBinDir names the environment variable that may name the directory
// of PostgreSQL's programs (initdb, postgres).
const EnvBinDir = "BERTH_POSTGRES_BIN"

// DefaultBinDir is where Debian's postgresql-15 package puts them.
const DefaultBinDir = "/usr/lib/postgresql/15/bin"

// User is the database superuser the server is initialised with; every
// connection uses it, with trust authentication on loopback.
const User = "berth"

// ErrNotInstalled means PostgreSQL's programs were not found.
var ErrNotInstalled = errors.New("PostgreSQL 15 is not installed: run 'make test' (it installs Debian's postgresql package), or set " + EnvBinDir + " to the directory holding initdb and postgres")

const (
	// startTimeout bounds initdb and the server's start.
	startTimeout = 60 * time.Second
	// stopTimeout bounds the fast shutdown before the server is killed.
	stopTimeout = 15 * time.Second
)

// Server is a PostgreSQL server for the tests of one package. It starts on
// first use; its methods are safe for concurrent use.
type Server struct {
	once sync.Once
	err  error

	dir  string // the temporary directory: data/ and the socket
	port int
	cmd  *exec.Cmd
	log  *process.Buffer
	done chan struct{} // closed when the server process has exited

	// n numbers the databases made.
	n atomic.Int64
	// durable keeps PostgreSQL's durability settings (NewDurable).
	durable bool
}

// New returns a Server that starts on its first Database.
func New() *Server { return &Server{} }

// NewDurable returns a Server like New's but with PostgreSQL's default
// durability settings (fsync, synchronous commit, full-page writes) kept,
// as a production server has them: for benchmarks, whose figures must
// include what a durable commit costs.
func NewDurable() *Server { return &Server{durable: true} }

// Run runs the package's tests and then stops the server if one was
// started, returning the exit code for os.Exit.
func (s *Server) Run(m *testing.M) int {
	return process.RunThenStop(m, "postgres", s.Stop)
}

// Database creates a fresh, empty database, dropped when t ends, and
// returns its DSN. It skips t when PostgreSQL is not installed, except in
// CI, where it fails t.
func (s *Server) Database(t testing.TB) string {
	t.Helper()
	name, err := s.CreateDatabase(t.Context())
	process.Need(t, "postgres", err, ErrNotInstalled)
	t.Cleanup(func() {
		if err := s.DropDatabase(context.Background(), name); err != nil {
			t.Errorf("testserver/postgres: %v", err)
		}
	})
	return s.DSN(name)
}

// CreateDatabase starts the server if it is not running and creates a
// fresh database, returning its name. Callers drop it with DropDatabase.
func (s *Server) CreateDatabase(ctx context.Context) (string, error) {
	s.once.Do(func() { s.err = s.start() })
	if s.err != nil {
		return "", s.err
	}
	name := fmt.Sprintf("berth_test_%d", s.n.Add(1))
	if err := s.admin(ctx, "CREATE DATABASE "+name+" TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	return name, nil
}

// DropDatabase drops the database name, ending the connections still open
// to it.
func (s *Server) DropDatabase(ctx context.Context, name string) error {
	if !validName(name) {
		return fmt.Errorf("drop database %q: not a database name", name)
	}
	if err := s.admin(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	return nil
}

// admin runs one statement in the postgres database.
func (s *Server) admin(ctx context.Context, sql string) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.DSN("postgres"))
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close(context.Background()) }()
	_, err = conn.Exec(ctx, sql)
	return err
}

// validName reports whether name is a database name this package made.
func validName(name string) bool {
	if !strings.HasPrefix(name, "berth_test_") {
		return false
	}
	_, err := strconv.Atoi(strings.TrimPrefix(name, "berth_test_"))
	return err == nil
}

// DSN is the URL of database name on the server.
func (s *Server) DSN(name string) string {
	return fmt.Sprintf("postgres://%s@%s/%s?sslmode=disable", User, net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)), name)
}

// Addr is the server's loopback address, host:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Stop stops the server, if it was started, and removes its directory.
func (s *Server) Stop() error {
	if s.cmd == nil {
		return nil
	}
	defer func() { _ = os.RemoveAll(s.dir) }()
	// SIGINT is PostgreSQL's fast shutdown: it ends the sessions.
	return process.Stop("postgres", s.cmd, s.done, syscall.SIGINT, stopTimeout, s.log)
}

// BinDir finds the directory of PostgreSQL's programs: $BERTH_POSTGRES_BIN,
// then Debian's /usr/lib/postgresql/15/bin.
func BinDir() (string, error) {
	dir := DefaultBinDir
	if p := os.Getenv(EnvBinDir); p != "" {
		dir = p
	}
	for _, prog := range []string{"initdb", "postgres"} {
		fi, err := os.Stat(filepath.Join(dir, prog))
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			if os.Getenv(EnvBinDir) != "" {
				return "", fmt.Errorf("%s=%s holds no executable %s", EnvBinDir, dir, prog)
			}
			return "", ErrNotInstalled
		}
	}
	return dir, nil
}

// runAs is the user the server runs as: nobody when the tests run as
// root, the tests' own user otherwise (asUser false).
func runAs() (asUser bool, uid, gid uint32, err error) {
	if os.Geteuid() != 0 {
		return false, 0, 0, nil
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		return false, 0, 0, fmt.Errorf("the tests run as root, which PostgreSQL refuses, and there is no user nobody to run it as: %w", err)
	}
	id, err1 := strconv.ParseUint(u.Uid, 10, 32)
	g, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return false, 0, 0, fmt.Errorf("user nobody has uid %q, gid %q", u.Uid, u.Gid)
	}
	return true, uint32(id), uint32(g), nil
}

// start initialises a cluster in a new temporary directory and starts the
// server on a free loopback port.
func (s *Server) start() error {
	bin, err := BinDir()
	if err != nil {
		return err
	}
	asUser, uid, gid, err := runAs()
	if err != nil {
		return err
	}
	s.dir, err = os.MkdirTemp("", "berth-postgres-")
	if err != nil {
		return fmt.Errorf("create postgres directory: %w", err)
	}
	if asUser {
		if err := os.Chown(s.dir, int(uid), int(gid)); err != nil {
			_ = os.RemoveAll(s.dir)
			return fmt.Errorf("give the postgres directory to nobody: %w", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	initdb := exec.CommandContext(ctx, filepath.Join(bin, "initdb"),
		"--pgdata", filepath.Join(s.dir, "data"), "--username", User, "--auth", "trust",
		"--encoding", "UTF8", "--locale", "C", "--no-sync")
	initdb.Dir = s.dir
	initdb.SysProcAttr = sysProcAttr(asUser, uid, gid)
	if out, err := initdb.CombinedOutput(); err != nil {
		_ = os.RemoveAll(s.dir)
		return fmt.Errorf("initdb: %w: %s", err, bytes.TrimSpace(out))
	}
	// A free port can be taken by someone else before the server binds
	// it: try a few.
	for attempt := 0; ; attempt++ {
		err = s.run(ctx, bin, asUser, uid, gid)
		if err == nil {
			return nil
		}
		if attempt == 4 || ctx.Err() != nil || !strings.Contains(s.log.String(), "could not bind") {
			_ = os.RemoveAll(s.dir)
			s.cmd = nil
			return err
		}
	}
}

// run starts the server on a free port and waits until it answers.
func (s *Server) run(ctx context.Context, bin string, asUser bool, uid, gid uint32) error {
	port, err := process.FreePort()
	if err != nil {
		return err
	}
	s.port = port
	s.log = &process.Buffer{}
	s.done = make(chan struct{})
	args := []string{
		"-D", filepath.Join(s.dir, "data"),
		"-c", "listen_addresses=127.0.0.1",
		"-c", "port=" + strconv.Itoa(port),
		"-c", "unix_socket_directories=" + s.dir,
		"-c", "max_connections=300",
		"-c", "shared_buffers=32MB",
		"-c", "log_min_messages=warning",
		"-c", "logging_collector=off",
	}
	if !s.durable {
		args = append(args, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	}
	s.cmd = exec.Command(filepath.Join(bin, "postgres"), args...)
	s.cmd.Dir = s.dir
	s.cmd.Stdout = s.log
	s.cmd.Stderr = s.log
	s.cmd.SysProcAttr = sysProcAttr(asUser, uid, gid)
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("start postgres (%s): %w", bin, err)
	}
	done := s.done
	go func() {
		_ = s.cmd.Wait()
		close(done)
	}()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgx.Connect(pctx, s.DSN("postgres"))
		cancel()
		if err == nil {
			_ = conn.Close(context.Background())
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("postgres exited at start: %s", s.log.Tail())
		case <-ctx.Done():
			_ = s.cmd.Process.Kill()
			<-done
			return fmt.Errorf("postgres did not answer within %s: %w; output: %s", startTimeout, err, s.log.Tail())
		case <-tick.C:
		}
	}
}
