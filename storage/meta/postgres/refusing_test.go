package postgres

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/meta"
)

// TestRefusingDatabaseIsUnavailable: a database that accepts no
// connections for a moment (ALLOW_CONNECTIONS false, its sessions ended,
// as an administrator does for maintenance) fails transactions with
// meta.ErrUnavailable, not an internal error, and the store serves again
// by itself once it accepts them.
func TestRefusingDatabaseIsUnavailable(t *testing.T) {
	dsn := pg.Database(t)
	s := openDSN(t, dsn)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.TrimPrefix(u.Path, "/")
	admin := func(sql string) {
		t.Helper()
		conn, err := pgx.Connect(context.Background(), pg.DSN("postgres"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(context.Background(), sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	d := digest.FromString("r")
	view := func() error {
		return s.View(context.Background(), func(tx meta.Tx) error {
			_, _, err := tx.Blob(d)
			return err
		})
	}
	if err := view(); err != nil {
		t.Fatal(err)
	}
	admin(`ALTER DATABASE ` + name + ` ALLOW_CONNECTIONS false`)
	admin(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '` + name + `'`)
	// Every idle connection of the pool fails once, then new ones are
	// refused.
	for i := range 2*defaultMaxConns + 1 {
		if err := view(); err == nil || !errors.Is(err, meta.ErrUnavailable) {
			t.Fatalf("view %d of a database refusing connections: %v, want meta.ErrUnavailable", i, err)
		}
	}
	admin(`ALTER DATABASE ` + name + ` ALLOW_CONNECTIONS true`)
	if err := view(); err != nil {
		t.Fatalf("the store does not serve again: %v", err)
	}
}
