// Package postgres is the index backend of Berth on PostgreSQL: a
// meta.Store that several Berth processes can share, which is what makes
// several replicas of one registry possible. It owns the index's tables,
// their versioned migrations (embedded, applied at Open under an advisory
// lock, recorded in schema_migrations), the derived rows it keeps in step
// with the records (manifest references, search pairs), their check and
// repair, the group commit and retry of transactions, and the digest locks
// that exclude other processes (advisory locks). See schema.go for the
// tables and the invariants the database enforces.
//
// Update runs SERIALIZABLE, one transaction at a time per process, which
// carries the functions of the Updates that arrived while the previous one
// was in flight (a group commit, group.go), and runs a transaction that
// failed to serialise or deadlocked again, a bounded number of times; View
// runs in a REPEATABLE READ, READ ONLY transaction: one snapshot. An index the
// database cannot reach now (down, refusing, restarting, too slow) gives
// errors that wrap meta.ErrUnavailable.
package postgres

import (
	"context"
	_ "crypto/sha256" // digests of these algorithms must validate
	_ "crypto/sha512"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/berth-registry/berth/storage/meta"
)

const (
	// maxAttempts bounds the runs of one Update's function when its
	// transactions keep failing to serialise or deadlocking.
	maxAttempts = 12
	// retryBase and retryMax bound the randomised wait before a retry.
	retryBase = 2 * time.Millisecond
	retryMax  = 250 * time.Millisecond
	// defaultConnectTimeout bounds a connection attempt when the DSN
	// does not (connect_timeout): a database out of reach must fail a
	// request quickly, with ErrUnavailable.
	defaultConnectTimeout = 5 * time.Second
	// defaultMaxConns is the size of each of the two pools (queries,
	// digest locks) when the DSN does not set pool_max_conns.
	defaultMaxConns = 16
)

// Options tune a Store.
type Options struct {
	// Logger receives the store's diagnostics; nil discards them.
	Logger *slog.Logger
	// NoMigrate opens the index without migrating it, for tools that
	// must not change a database (fsck): a schema that lacks a migration
	// is refused.
	NoMigrate bool
}

// Store is the PostgreSQL index. It implements meta.Store and
// meta.Checker and is safe for concurrent use.
type Store struct {
	pool *pgxpool.Pool
	// locks holds the sessions of digest locks, apart from pool, so that
	// holders of locks waiting for a query connection cannot starve the
	// queries of connections.
	locks *pgxpool.Pool
	log   *slog.Logger
	// Migrations is what Open found and applied.
	migrations []Migration
	// group queues the Updates waiting for the transaction in flight
	// (group.go).
	group group
	// retries counts the functions run again after their transaction
	// conflicted or lost its connection.
	retries atomic.Uint64
	// commits counts the transactions Update committed.
	commits atomic.Uint64
}

var (
	_ meta.Store   = (*Store)(nil)
	_ meta.Checker = (*Store)(nil)
)

// ValidateDSN reports whether dsn is a PostgreSQL connection string or URL
// this package can use, without connecting.
func ValidateDSN(dsn string) error {
	_, err := parseConfig(dsn)
	return err
}

// parseConfig parses dsn into a pool configuration, with the defaults
// this package wants where the DSN says nothing.
func parseConfig(dsn string) (*pgxpool.Config, error) {
	if dsn == "" {
		return nil, errors.New("postgres DSN is empty")
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx masks the password where it quotes the DSN.
		return nil, fmt.Errorf("postgres DSN: %w", err)
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = defaultConnectTimeout
	}
	if !hasParam(dsn, "pool_max_conns") {
		cfg.MaxConns = defaultMaxConns
	}
	if !hasParam(dsn, "random_page_cost") {
		// The index's queries are point reads and keyset walks of a
		// primary key over pages mostly in memory. At PostgreSQL's
		// default cost of a random read (4, a spinning disk's), a page
		// of a long list planned on statistics from when it was short
		// reads the whole rest of the list and sorts it; at an SSD's
		// it walks the index and stops at the page's end.
		if cfg.ConnConfig.RuntimeParams == nil {
			cfg.ConnConfig.RuntimeParams = map[string]string{}
		}
		cfg.ConnConfig.RuntimeParams["random_page_cost"] = "1.1"
	}
	return cfg, nil
}

// Open connects to the database of dsn, applies the migrations it lacks
// (see Migrate; with opts.NoMigrate it refuses a database that lacks one)
// and returns the index. A database out of reach fails with
// an error wrapping meta.ErrUnavailable.
func Open(ctx context.Context, dsn string, opts Options) (*Store, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg, err := parseConfig(dsn)
	if err != nil {
		return nil, err
	}
	lockCfg := cfg.Copy()
	// A wait for a digest lock that its context ends is cancelled on the
	// server, and the session goes on: the locks it holds are released
	// by the unlock, not by a broken connection.
	lockCfg.ConnConfig.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: c, DeadlineDelay: 5 * time.Second}
	}
	// LockRecorded reads a record after the lock in one implicit
	// transaction: only READ COMMITTED gives its second statement a
	// snapshot of its own.
	lockCfg.ConnConfig.RuntimeParams = maps.Clone(lockCfg.ConnConfig.RuntimeParams)
	if lockCfg.ConnConfig.RuntimeParams == nil {
		lockCfg.ConnConfig.RuntimeParams = map[string]string{}
	}
	lockCfg.ConnConfig.RuntimeParams["default_transaction_isolation"] = "read committed"
	conn, err := pgx.ConnectConfig(ctx, cfg.ConnConfig)
	if err != nil {
		return nil, fmt.Errorf("connect to the index database: %w", classify(err))
	}
	var ms []Migration
	if opts.NoMigrate {
		ms, err = current(ctx, conn)
	} else {
		ms, err = migrate(ctx, conn)
	}
	_ = conn.Close(context.Background())
	if err != nil {
		return nil, err
	}
	for _, m := range ms {
		if m.New {
			log.Info("index schema migrated", "version", m.Version, "name", m.Name)
		}
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open the index database: %w", classify(err))
	}
	locks, err := pgxpool.NewWithConfig(ctx, lockCfg)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("open the index database for locks: %w", classify(err))
	}
	return &Store{pool: pool, locks: locks, log: log, migrations: ms}, nil
}

// Migrations reports the migrations Open found and applied.
func (s *Store) Migrations() []Migration { return s.migrations }

// Close closes the connections. Callers must have stopped using the store;
// closing it twice is fine.
func (s *Store) Close() error {
	s.locks.Close()
	s.pool.Close()
	return nil
}

// View runs fn in a REPEATABLE READ, READ ONLY transaction: one snapshot,
// beside every other View and Update.
func (s *Store) View(ctx context.Context, fn func(meta.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	conn, err := beginSession(ctx, s.pool, beginRead)
	if err != nil {
		return fmt.Errorf("begin read transaction: %w", classify(err))
	}
	defer conn.release()
	t := &tx{ctx: ctx, conn: conn, fetched: &fetchedSet{}}
	err = fn(t)
	t.done = true
	if err != nil {
		return err
	}
	// The snapshot is what was read; commit ends it.
	if err := conn.commit(ctx); err != nil {
		return fmt.Errorf("end read transaction: %w", classify(err))
	}
	return nil
}

// The statements that begin transactions: Views, and Updates.
const (
	beginRead  = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
	beginWrite = "BEGIN ISOLATION LEVEL SERIALIZABLE"
)

// SQLSTATE codes this package acts on.
const (
	codeSerializationFailure = "40001"
	codeDeadlockDetected     = "40P01"
	codeUniqueViolation      = "23505"
	codeQueryCanceled        = "57014"
)

// retryable reports whether err is a conflict that running the
// transaction again resolves.
func retryable(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == codeSerializationFailure || pe.Code == codeDeadlockDetected
	}
	return false
}

// classify wraps err with meta.ErrUnavailable when it says the database
// cannot be reached or cannot serve now: a connection refused, lost or
// timed out, a server shutting down or starting, out of connections.
func classify(err error) error {
	if err == nil || errors.Is(err, meta.ErrUnavailable) {
		return err
	}
	if unavailable(err) {
		return fmt.Errorf("%w: %w", meta.ErrUnavailable, err)
	}
	return err
}

func unavailable(err error) bool {
	if errors.Is(err, context.Canceled) {
		return false
	}
	var ce *pgconn.ConnectError
	connecting := errors.As(err, &ce)
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case len(pe.Code) == 5 && pe.Code[:2] == "08": // connection exception
			return true
		case pe.Code == "57P01", pe.Code == "57P02", pe.Code == "57P03": // shutdown, crash, starting
			return true
		case pe.Code == "53300": // too many connections
			return true
		case pe.Code == "55000" && connecting: // the database accepts no connections now (ALLOW_CONNECTIONS false)
			return true
		}
		return false
	}
	if connecting {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	if errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err) {
		return true
	}
	// A connection that broke under a statement.
	return pgconn.SafeToRetry(err) || isClosed(err)
}

// isClosed reports an error of a connection the server or the network
// closed.
func isClosed(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return false
	}
	msg := err.Error()
	for _, s := range []string{"conn closed", "unexpected EOF", "connection reset", "broken pipe", "closed pool"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// hasParam reports whether the DSN (URL or key=value form) sets param.
func hasParam(dsn, param string) bool {
	return strings.Contains(dsn, param+"=") || strings.Contains(dsn, param+" =")
}
