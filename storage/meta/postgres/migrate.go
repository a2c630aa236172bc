package postgres

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"maps"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// migrationFiles are the schema's versions: migrations/NNNN_name.sql, applied
// in the order of NNNN, each once, each in its own transaction.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// migrationLock is the key of the session advisory lock that Migrate holds
// while it reads and applies migrations, so that replicas starting
// together apply each migration once: the second waits, then finds it
// applied. ("berth" in ASCII, in the high bytes; digest locks hash into the
// whole bigint range and may share it, which only makes one wait.)
const migrationLock int64 = 0x6265727468_000001

// Migration is one version of the schema.
type Migration struct {
	// Version orders the migrations; Name says what it does.
	Version int
	Name    string
	// Applied is when it was applied to the database.
	Applied time.Time
	// New says that this Migrate applied it; otherwise it was there.
	New bool
	sql string
}

// migrations reads the embedded migrations in version order.
func migrations() ([]Migration, error) {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return nil, fmt.Errorf("read embedded migrations: %w", err)
	}
	var out []Migration
	for _, e := range entries {
		base := strings.TrimSuffix(e.Name(), ".sql")
		num, name, ok := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("embedded migration %s: want NNNN_name.sql", e.Name())
		}
		sql, err := fs.ReadFile(migrationFiles, path.Join("migrations", e.Name()))
		if err != nil {
			return nil, fmt.Errorf("read embedded migration %s: %w", e.Name(), err)
		}
		out = append(out, Migration{Version: v, Name: name, sql: string(sql)})
	}
	slices.SortFunc(out, func(a, b Migration) int { return a.Version - b.Version })
	for i := 1; i < len(out); i++ {
		if out[i].Version == out[i-1].Version {
			return nil, fmt.Errorf("two embedded migrations of version %d", out[i].Version)
		}
	}
	return out, nil
}

// SchemaVersion is the latest version of the schema this package applies.
func SchemaVersion() int {
	ms, err := migrations()
	if err != nil || len(ms) == 0 {
		return 0
	}
	return ms[len(ms)-1].Version
}

// Migrate applies to the database of dsn the migrations it lacks and
// reports every migration this Berth knows: which it applied now (New) and
// which were there. It holds a session advisory lock meanwhile, so that
// processes migrating one database at once apply each migration once. A
// database at a version this Berth does not know (a newer Berth migrated
// it) is refused.
func Migrate(ctx context.Context, dsn string) ([]Migration, error) {
	cfg, err := parseConfig(dsn)
	if err != nil {
		return nil, err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg.ConnConfig)
	if err != nil {
		return nil, fmt.Errorf("connect to the index database: %w", classify(err))
	}
	defer func() { _ = conn.Close(context.Background()) }()
	return migrate(ctx, conn)
}

// migrate applies the missing migrations over conn under the migration
// lock.
func migrate(ctx context.Context, conn *pgx.Conn) ([]Migration, error) {
	ms, err := migrations()
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", migrationLock); err != nil {
		return nil, fmt.Errorf("take the migration lock: %w", classify(err))
	}
	defer func() {
		// A lost connection released the lock with its session.
		_, _ = conn.Exec(context.Background(), "SELECT pg_advisory_unlock($1)", migrationLock)
	}()
	const create = `CREATE TABLE IF NOT EXISTS schema_migrations (
		version integer PRIMARY KEY,
		name    text NOT NULL,
		applied timestamptz NOT NULL DEFAULT now())`
	if _, err := conn.Exec(ctx, create); err != nil {
		return nil, fmt.Errorf("create schema_migrations: %w", classify(err))
	}
	applied := map[int]time.Time{}
	rows, err := conn.Query(ctx, "SELECT version, applied FROM schema_migrations")
	if err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", classify(err))
	}
	var v int
	var at time.Time
	_, err = pgx.ForEachRow(rows, []any{&v, &at}, func() error {
		applied[v] = at
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", classify(err))
	}
	known := map[int]bool{}
	for _, m := range ms {
		known[m.Version] = true
	}
	for v := range applied {
		if !known[v] {
			return nil, fmt.Errorf("the index database has schema migration %d, which this Berth does not know (its latest is %d): a newer Berth migrated it", v, SchemaVersion())
		}
	}
	for i := range ms {
		m := &ms[i]
		if at, ok := applied[m.Version]; ok {
			m.Applied = at
			continue
		}
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return err
			}
			return tx.QueryRow(ctx, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2) RETURNING applied",
				m.Version, m.Name).Scan(&m.Applied)
		})
		if err != nil {
			return nil, fmt.Errorf("apply schema migration %04d_%s: %w", m.Version, m.Name, classify(err))
		}
		m.New = true
	}
	return ms, nil
}

// current reports the migrations of the database over conn, failing
// unless every migration this Berth knows is applied and no other.
func current(ctx context.Context, conn *pgx.Conn) ([]Migration, error) {
	ms, err := migrations()
	if err != nil {
		return nil, err
	}
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT to_regclass('schema_migrations') IS NOT NULL").Scan(&exists); err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", classify(err))
	}
	applied := map[int]time.Time{}
	if exists {
		rows, err := conn.Query(ctx, "SELECT version, applied FROM schema_migrations")
		if err != nil {
			return nil, fmt.Errorf("read schema_migrations: %w", classify(err))
		}
		var v int
		var at time.Time
		if _, err := pgx.ForEachRow(rows, []any{&v, &at}, func() error { applied[v] = at; return nil }); err != nil {
			return nil, fmt.Errorf("read schema_migrations: %w", classify(err))
		}
	}
	for i := range ms {
		at, ok := applied[ms[i].Version]
		if !ok {
			return nil, fmt.Errorf("the index database lacks schema migration %04d_%s: run berth migrate", ms[i].Version, ms[i].Name)
		}
		ms[i].Applied = at
		delete(applied, ms[i].Version)
	}
	if len(applied) > 0 {
		unknown := slices.Sorted(maps.Keys(applied))
		return nil, fmt.Errorf("the index database has schema migration %d, which this Berth does not know (its latest is %d): a newer Berth migrated it", unknown[0], SchemaVersion())
	}
	return ms, nil
}
