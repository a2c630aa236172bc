package postgres

import (
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

var pg = New()

func TestMain(m *testing.M) { os.Exit(pg.Run(m)) }

// TestDatabasesAreFreshAndSeparate: each test's database is empty and its
// own, and the server answers on loopback only.
func TestDatabasesAreFreshAndSeparate(t *testing.T) {
	a, b := pg.Database(t), pg.Database(t)
	if a == b {
		t.Fatalf("two databases share the DSN %s", a)
	}
	if !strings.HasPrefix(a, "postgres://"+User+"@127.0.0.1:") {
		t.Fatalf("DSN %s is not on loopback", a)
	}
	ca, err := pgx.Connect(t.Context(), a)
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close(t.Context())
	if _, err := ca.Exec(t.Context(), "CREATE TABLE x (v int)"); err != nil {
		t.Fatal(err)
	}
	cb, err := pgx.Connect(t.Context(), b)
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close(t.Context())
	var n int
	if err := cb.QueryRow(t.Context(), "SELECT count(*) FROM pg_tables WHERE tablename = 'x'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatal("a fresh database holds another test's table")
	}
	var listen string
	if err := ca.QueryRow(t.Context(), "SHOW listen_addresses").Scan(&listen); err != nil {
		t.Fatal(err)
	}
	if listen != "127.0.0.1" {
		t.Fatalf("listen_addresses = %q, want loopback only", listen)
	}
}

// TestDurable: the tests' server runs without fsync, a NewDurable one
// with PostgreSQL's durability settings.
func TestDurable(t *testing.T) {
	durable := NewDurable()
	t.Cleanup(func() {
		if err := durable.Stop(); err != nil {
			t.Error(err)
		}
	})
	for _, tc := range []struct {
		name string
		s    *Server
		want string
	}{{"New", pg, "off"}, {"NewDurable", durable, "on"}} {
		conn, err := pgx.Connect(t.Context(), tc.s.Database(t))
		if err != nil {
			t.Fatal(err)
		}
		for _, setting := range []string{"fsync", "synchronous_commit", "full_page_writes"} {
			var v string
			if err := conn.QueryRow(t.Context(), "SHOW "+setting).Scan(&v); err != nil {
				t.Fatal(err)
			}
			if v != tc.want {
				t.Errorf("%s: %s = %s, want %s", tc.name, setting, v, tc.want)
			}
		}
		_ = conn.Close(t.Context())
	}
}
