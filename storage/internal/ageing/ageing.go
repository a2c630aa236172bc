// Package ageing moves the times the index records back, below the core,
// so that tests can age content (for garbage collection's grace, for
// retention) without waiting. It is imported by tests only.
package ageing

import (
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/meta"
)

// Links moves the times of every link of repo back by d, in tx: Linked,
// and Seen if it is set.
func Links(tx meta.Tx, repo string, d time.Duration) error {
	links := map[digest.Digest]meta.Link{}
	if err := tx.Links(repo, func(dg digest.Digest, l meta.Link) error { links[dg] = l; return nil }); err != nil {
		return err
	}
	for dg, l := range links {
		l.Linked = l.Linked.Add(-d)
		if !l.Seen.IsZero() {
			l.Seen = l.Seen.Add(-d)
		}
		if err := tx.PutLink(repo, dg, l); err != nil {
			return err
		}
	}
	return nil
}
