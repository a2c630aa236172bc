package postgres

import (
	"context"
	"os"
	"testing"

	"github.com/berth-registry/berth/internal/testserver/postgres"
	"github.com/berth-registry/berth/storage/meta"
	"github.com/berth-registry/berth/storage/meta/metatest"
)

var pg = postgres.New()

func TestMain(m *testing.M) { os.Exit(pg.Run(m)) }

// openDSN opens the index of dsn, closed when t ends.
func openDSN(t testing.TB, dsn string) *Store {
	t.Helper()
	s, err := Open(context.Background(), dsn, Options{})
	if err != nil {
		t.Fatalf("open index: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// openTemp opens the index of a fresh database.
func openTemp(t testing.TB) *Store { return openDSN(t, pg.Database(t)) }

func TestSuite(t *testing.T) {
	dsns := map[meta.Store]string{}
	metatest.Run(t, metatest.Backend{
		Open: func(t *testing.T) meta.Store {
			dsn := pg.Database(t)
			s := openDSN(t, dsn)
			dsns[s] = dsn
			return s
		},
		Reopen: func(t *testing.T, s meta.Store) meta.Store {
			dsn := dsns[s]
			if err := s.Close(); err != nil {
				t.Fatalf("close index: %v", err)
			}
			s2 := openDSN(t, dsn)
			dsns[s2] = dsn
			return s2
		},
	})
}
