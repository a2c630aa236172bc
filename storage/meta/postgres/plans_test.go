package postgres

import (
	"context"
	"testing"
)

// TestRandomPageCost: the index's sessions cost a random read as an SSD's
// (1.1), so that a page of a long list walks the primary key and stops at
// the page's end even on statistics from when the list was short (at
// PostgreSQL's default, 4, such a page read the rest of the list and
// sorted it: 2-3 ms at 10,000 tags against 0.7-1 ms at 1,000); a DSN that
// sets its own keeps it.
func TestRandomPageCost(t *testing.T) {
	s := openTemp(t)
	var got string
	if err := s.pool.QueryRow(context.Background(), "SHOW random_page_cost").Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != "1.1" {
		t.Errorf("random_page_cost of the index's sessions = %s, want 1.1", got)
	}
	for dsn, want := range map[string]string{
		"postgres://berth@127.0.0.1:1/berth":                      "1.1",
		"postgres://berth@127.0.0.1:1/berth?random_page_cost=2.5": "2.5",
	} {
		cfg, err := parseConfig(dsn)
		if err != nil {
			t.Fatal(err)
		}
		if got := cfg.ConnConfig.RuntimeParams["random_page_cost"]; got != want {
			t.Errorf("%s: random_page_cost %q, want %q", dsn, got, want)
		}
	}
}
