package postgres

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/meta"
)

// TestMigrateTogether: processes migrating one new database at once apply
// each migration once; every one of them reports every migration, and one
// reports it new. Migrating again applies nothing.
func TestMigrateTogether(t *testing.T) {
	dsn := pg.Database(t)
	const n = 6
	results := make([][]Migration, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { results[i], errs[i] = Migrate(context.Background(), dsn) })
	}
	wg.Wait()
	want := SchemaVersion()
	if want < 1 {
		t.Fatalf("SchemaVersion = %d", want)
	}
	applied := map[int]int{}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("migrate %d: %v", i, errs[i])
		}
		if len(results[i]) != want || results[i][len(results[i])-1].Version != want {
			t.Fatalf("migrate %d reports %+v, want versions up to %d", i, results[i], want)
		}
		for _, m := range results[i] {
			if m.Applied.IsZero() {
				t.Errorf("migration %d has no time of application", m.Version)
			}
			if m.New {
				applied[m.Version]++
			}
		}
	}
	for v := 1; v <= want; v++ {
		if applied[v] != 1 {
			t.Errorf("migration %d reported new by %d processes, want 1", v, applied[v])
		}
	}
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var rows int
	if err := conn.QueryRow(context.Background(), "SELECT count(*) FROM schema_migrations").Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != want {
		t.Errorf("schema_migrations has %d rows, want %d", rows, want)
	}
	again, err := Migrate(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range again {
		if m.New {
			t.Errorf("migrating again applied %d", m.Version)
		}
	}
}

// TestOpenRefusesNewerSchema: a database a newer Berth migrated is refused
// with a clear error, and left alone.
func TestOpenRefusesNewerSchema(t *testing.T) {
	dsn := pg.Database(t)
	if _, err := Migrate(context.Background(), dsn); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), "INSERT INTO schema_migrations (version, name) VALUES (9999, 'future')"); err != nil {
		t.Fatal(err)
	}
	_, err = Open(context.Background(), dsn, Options{})
	if err == nil || !strings.Contains(err.Error(), "newer Berth") {
		t.Fatalf("Open of a newer schema: %v", err)
	}
}

// TestUnreachableIsUnavailable: a database nobody listens for fails Open
// with meta.ErrUnavailable.
func TestUnreachableIsUnavailable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	_, err = Open(context.Background(), "postgres://berth@"+addr+"/berth?sslmode=disable&connect_timeout=2", Options{})
	if !errors.Is(err, meta.ErrUnavailable) {
		t.Fatalf("Open of a closed port: %v, want meta.ErrUnavailable", err)
	}
}

// TestLostConnectionsAreUnavailable: when the server ends every session of
// the store (as a restart does), a transaction fails with
// meta.ErrUnavailable or succeeds on a new connection, and the store
// serves again by itself.
func TestLostConnectionsAreUnavailable(t *testing.T) {
	dsn := pg.Database(t)
	s := openDSN(t, dsn)
	d := digest.FromString("b")
	if err := s.Update(context.Background(), func(tx meta.Tx) error { return tx.PutBlob(d, meta.Blob{Size: 1}) }); err != nil {
		t.Fatal(err)
	}
	unlock, err := s.LockDigests(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	unlock()
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var ended int
	err = conn.QueryRow(context.Background(), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid()`).Scan(&ended)
	if err != nil || ended == 0 {
		t.Fatalf("terminate the store's sessions: %d, %v", ended, err)
	}
	view := func() error {
		return s.View(context.Background(), func(tx meta.Tx) error {
			_, _, err := tx.Blob(d)
			return err
		})
	}
	// Each idle connection of the pool fails once, at most.
	for i := range 2 * defaultMaxConns {
		if err := view(); err != nil && !errors.Is(err, meta.ErrUnavailable) {
			t.Fatalf("view %d after the sessions ended: %v, want success or meta.ErrUnavailable", i, err)
		}
	}
	if err := view(); err != nil {
		t.Fatalf("the store does not serve again: %v", err)
	}
	unlock, err = s.LockDigests(context.Background(), d)
	if err != nil && !errors.Is(err, meta.ErrUnavailable) {
		t.Fatalf("lock after the sessions ended: %v", err)
	}
	if err == nil {
		unlock()
	}
}
