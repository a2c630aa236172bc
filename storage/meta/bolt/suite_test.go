package bolt

import (
	"path/filepath"
	"testing"

	"github.com/berth-registry/berth/storage/meta"
	"github.com/berth-registry/berth/storage/meta/metatest"
)

// openTemp opens a new index in a temporary directory.
func openTemp(t testing.TB) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "index.db"), Options{})
	if err != nil {
		t.Fatalf("open index: %v", err)
	}
	return s
}

func reopen(t *testing.T, s meta.Store) meta.Store {
	t.Helper()
	path := s.(*Store).Path()
	if err := s.Close(); err != nil {
		t.Fatalf("close index: %v", err)
	}
	s2, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("reopen index: %v", err)
	}
	return s2
}

func TestSuite(t *testing.T) {
	metatest.Run(t, metatest.Backend{
		Open:   func(t *testing.T) meta.Store { return openTemp(t) },
		Reopen: reopen,
	})
}

// TestSuiteSolo runs the suite with group commit off, so that a failure
// there and not in TestSuite points at the grouping.
func TestSuiteSolo(t *testing.T) {
	metatest.Run(t, metatest.Backend{
		Open: func(t *testing.T) meta.Store {
			s := openTemp(t)
			s.solo = true
			return s
		},
		Reopen: func(t *testing.T, s meta.Store) meta.Store {
			s2 := reopen(t, s).(*Store)
			s2.solo = true
			return s2
		},
	})
}
