package main

import (
	"os"
	"strings"
	"testing"

	"github.com/berth-registry/berth/internal/testserver/postgres"
)

var pg = postgres.New()

func TestMain(m *testing.M) { os.Exit(pg.Run(m)) }

// TestMigrate: berth migrate applies the schema to a new database and
// says so, then finds it there; the DSN may come from the environment.
func TestMigrate(t *testing.T) {
	dsn := pg.Database(t)
	out, stderr, err := runBerth(t, "", "migrate", "--dsn", dsn)
	if err != nil {
		t.Fatalf("migrate: %v\n%s", err, stderr)
	}
	if !strings.Contains(out, "0001 index") || !strings.Contains(out, "applied now") || strings.Contains(out, "already applied") {
		t.Fatalf("first migrate says:\n%s", out)
	}
	t.Setenv("BERTH_POSTGRES_DSN", dsn)
	root := newRootCommand()
	var b strings.Builder
	root.SetArgs([]string{"migrate"})
	root.SetOut(&b)
	if err := root.Execute(); err != nil {
		t.Fatalf("migrate with BERTH_POSTGRES_DSN: %v", err)
	}
	if !strings.Contains(b.String(), "already applied") || strings.Contains(b.String(), "applied now\n") {
		t.Fatalf("second migrate says:\n%s", b.String())
	}
}

// TestMigrateRefusesBadDSN: a DSN that cannot be parsed, or none at all,
// stops berth migrate with one clear line.
func TestMigrateRefusesBadDSN(t *testing.T) {
	_, _, err := runBerth(t, "", "migrate", "--dsn", "postgres://berth@127.0.0.1:notaport/berth")
	if err == nil || !strings.Contains(err.Error(), "postgres DSN") {
		t.Fatalf("bad DSN: %v", err)
	}
	t.Setenv("BERTH_POSTGRES_DSN", "")
	_, _, err = runBerth(t, "", "migrate")
	if err == nil || !strings.Contains(err.Error(), "no PostgreSQL index") {
		t.Fatalf("no DSN: %v", err)
	}
}
