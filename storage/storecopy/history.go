package storecopy

import (
	"fmt"

	"github.com/berth-registry/berth/storage/meta"
)

// movesPage bounds the moves compared at a time.
const movesPage = 128

// history copies the moves of tag that the destination lacks. The
// destination's history must be the source's first moves (none, or all of
// them): they are compared, move by move, newest first. The source's
// further moves are then appended oldest first, and each must be given
// the number it has in the source, which AppendMove does on a history so
// numbered (1, 2, 3 ...), as every Berth index numbers it. It returns
// the number of the source's newest move, and false if the histories
// conflict (reported).
func (c *copier) history(stx, tx meta.Tx, repo, tag string, t *Report) (uint64, bool, error) {
	srcN, err := newest(stx, repo, tag)
	if err != nil {
		return 0, false, err
	}
	dstN, err := newest(tx, repo, tag)
	if err != nil {
		return 0, false, err
	}
	if dstN > srcN {
		return 0, false, c.conflict("history of %s:%s: the destination has %d moves, the source %d", repo, tag, dstN, srcN)
	}
	same, err := c.samePrefix(stx, tx, repo, tag, dstN)
	if err != nil || !same {
		return 0, false, err
	}
	t.Moves.Present += int(dstN)
	for seq := dstN + 1; seq <= srcN; seq++ {
		m, ok, err := moveAt(stx, repo, tag, seq)
		if err != nil {
			return 0, false, err
		}
		if !ok {
			return 0, false, fmt.Errorf("%w: the history of %s:%s has no move %d (its newest is %d): numbers with a gap cannot be reproduced", ErrSource, repo, tag, seq, srcN)
		}
		t.Moves.Copied++
		if c.check {
			continue
		}
		got, err := tx.AppendMove(repo, tag, m)
		if err != nil {
			return 0, false, fmt.Errorf("history of %s:%s: %w", repo, tag, err)
		}
		if got.Seq != seq {
			return 0, false, fmt.Errorf("history of %s:%s: the destination numbered move %d as %d", repo, tag, seq, got.Seq)
		}
	}
	return srcN, true, nil
}

// newest returns the number of the newest move of tag, 0 if none.
func newest(tx meta.Tx, repo, tag string) (uint64, error) {
	m, _, err := newestMove(tx, repo, tag)
	return m.Seq, err
}

// newestMove returns the newest move of tag, if it has any.
func newestMove(tx meta.Tx, repo, tag string) (meta.Move, bool, error) {
	var m meta.Move
	var ok bool
	err := tx.Moves(repo, tag, 0, func(x meta.Move) error {
		m, ok = x, true
		return meta.ErrStop
	})
	if err != nil {
		return m, false, fmt.Errorf("history of %s:%s: %w", repo, tag, err)
	}
	return m, ok, nil
}

// moveAt returns the move of tag numbered seq, if there is one.
func moveAt(tx meta.Tx, repo, tag string, seq uint64) (meta.Move, bool, error) {
	var m meta.Move
	var ok bool
	err := tx.Moves(repo, tag, seq+1, func(x meta.Move) error {
		m, ok = x, x.Seq == seq
		return meta.ErrStop
	})
	if err != nil {
		return m, false, fmt.Errorf("history of %s:%s: %w", repo, tag, err)
	}
	return m, ok, nil
}

// samePrefix compares the moves numbered up to n in both histories, a
// page at a time, and reports a conflict at the first that differs.
func (c *copier) samePrefix(stx, tx meta.Tx, repo, tag string, n uint64) (bool, error) {
	before := n + 1
	for before > 1 {
		src, err := page(stx, repo, tag, before)
		if err != nil {
			return false, err
		}
		dst, err := page(tx, repo, tag, before)
		if err != nil {
			return false, err
		}
		for i := range dst {
			if i >= len(src) || !sameMove(src[i], dst[i]) {
				var s meta.Move
				if i < len(src) {
					s = src[i]
				}
				return false, c.conflict("history of %s:%s diverges at move %d: the destination has %s, the source %s",
					repo, tag, dst[i].Seq, describe(dst[i]), describe(s))
			}
		}
		if len(dst) == 0 {
			if len(src) > 0 {
				return false, c.conflict("history of %s:%s: the destination lacks move %d", repo, tag, src[0].Seq)
			}
			break
		}
		before = dst[len(dst)-1].Seq
	}
	return true, nil
}

// page returns up to movesPage moves of tag before before, newest first.
func page(tx meta.Tx, repo, tag string, before uint64) ([]meta.Move, error) {
	var out []meta.Move
	err := tx.Moves(repo, tag, before, func(m meta.Move) error {
		out = append(out, m)
		if len(out) == movesPage {
			return meta.ErrStop
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("history of %s:%s: %w", repo, tag, err)
	}
	return out, nil
}

// sameMove reports whether two moves record the same change.
func sameMove(a, b meta.Move) bool {
	return a.Seq == b.Seq && a.Time.Equal(b.Time) && a.Previous == b.Previous && a.Digest == b.Digest &&
		a.Action == b.Action && a.Actor == b.Actor
}

// describe says what a move did, for a conflict.
func describe(m meta.Move) string {
	if m.Seq == 0 {
		return "none"
	}
	return fmt.Sprintf("%d %s %s→%s by %s:%s at %s", m.Seq, m.Action, orNone(string(m.Previous)), orNone(string(m.Digest)),
		m.Actor.Kind, m.Actor.Name, m.Time.UTC().Format("2006-01-02T15:04:05.999999999Z"))
}

func orNone(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
