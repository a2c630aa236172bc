package storage

import (
	"context"
	"fmt"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/meta"
)

// TagRules decides which tags may not move once they exist. The core asks
// it inside the transaction that would move or delete a tag, so a refused
// move changes nothing.
type TagRules interface {
	// Immutable reports whether tag in repo, once set, must keep its
	// digest for ever.
	Immutable(repo, tag string) bool
}

// Why a tag moved, as recorded in its history.
const (
	// MovePush: a manifest push set the tag.
	MovePush = "push"
	// MoveDelete: the tag was deleted.
	MoveDelete = "delete"
	// MoveDeleteManifest: the manifest the tag named was deleted.
	MoveDeleteManifest = "delete-manifest"
	// MoveRollback: a rollback set the tag to an earlier digest.
	MoveRollback = "rollback"
	// MovePromote: a promotion set the tag.
	MovePromote = "promote"
	// MoveRetention: a retention policy deleted the tag.
	MoveRetention = "retention"
	// MoveGC: garbage collection removed the manifest the tag named (a
	// referrer whose subject is gone).
	MoveGC = "gc"
	// MoveRepair: fsck's repair removed the tag, which named a manifest
	// the repository no longer holds, or whose content was lost.
	MoveRepair = "repair"
	// MoveMirror: the pull-through cache set the tag to what its upstream's
	// tag names.
	MoveMirror = "mirror"
	// MoveSync: a replication rule set the tag to what the remote's tag
	// names.
	MoveSync = "sync"
	// MoveImport: an offline bundle's import set the tag.
	MoveImport = "import"
)

// TagMove is one entry of a tag's history.
type TagMove = meta.Move

// Immutable reports whether the tag rules make tag in repo immutable.
func (s *Service) Immutable(repo, tag string) bool {
	return s.tags != nil && s.tags.Immutable(repo, tag)
}

// MoveTag points tag in repo at to (deleting it when to is empty) and
// records the move, with the actor the transaction's context carries, in
// the tag's history; it publishes the move's event. Setting a tag to the
// digest it already names changes nothing, records nothing and returns a
// zero TagMove. Moving or deleting an existing immutable tag fails with
// ErrTagImmutable. Every change of a tag goes through it, but fsck's
// repair (see RecordRepair).
func (tx *Tx) MoveTag(repo, tag string, to digest.Digest, action string) (TagMove, error) {
	old, _, err := tx.Tag(repo, tag)
	if err != nil {
		return TagMove{}, err
	}
	if old == to {
		return TagMove{}, nil
	}
	if old != "" && tx.s.Immutable(repo, tag) {
		return TagMove{}, detailf(ErrTagImmutable, map[string]any{"tag": tag, "digest": string(old)},
			"%s in %s names %s and may not move", tag, repo, old)
	}
	if to == "" {
		err = tx.DeleteTag(repo, tag)
	} else {
		err = tx.SetTag(repo, tag, to)
	}
	if err != nil {
		return TagMove{}, fmt.Errorf("tag %s: %w", tag, err)
	}
	m, err := tx.AppendMove(repo, tag, TagMove{Time: tx.s.now(), Previous: old, Digest: to, Action: action, Actor: ActorFrom(tx.ctx)})
	if err != nil {
		return TagMove{}, fmt.Errorf("history of %s:%s: %w", repo, tag, err)
	}
	if ev := moveEvent(action); ev != "" {
		tx.Publish(Event{Action: ev, Repo: repo, Tag: tag, Digest: to, Previous: old, Actor: m.Actor, Time: m.Time})
	}
	return m, nil
}

// RecordRepair removes tag from repo, where it named d, recording the
// removal in its history as a MoveRepair by the system. fsck's repair
// uses it instead of MoveTag: it must remove even an immutable tag that
// names nothing.
func (tx *Tx) RecordRepair(repo, tag string, d digest.Digest) error {
	if err := tx.DeleteTag(repo, tag); err != nil {
		return fmt.Errorf("delete tag %s: %w", tag, err)
	}
	_, err := tx.AppendMove(repo, tag, TagMove{Time: tx.s.now(), Previous: d, Action: MoveRepair, Actor: Actor{Kind: ActorSystem}})
	return err
}

// TagHistory returns up to n moves of tag in repo, newest first, starting
// just before the move numbered before (0: the newest). more reports
// whether older moves follow. A tag that never existed is ErrManifestUnknown;
// a deleted tag keeps its history.
func (s *Service) TagHistory(ctx context.Context, repo, tag string, before uint64, n int) (moves []TagMove, more bool, err error) {
	err = s.index.View(ctx, func(tx meta.Tx) error {
		var err error
		moves, more, err = page(n, func(fn func(TagMove) error) error { return tx.Moves(repo, tag, before, fn) })
		if err != nil || len(moves) > 0 {
			return err
		}
		if ok, err := hasHistory(tx, repo, tag); err != nil || ok {
			return err
		}
		if ok, err := tx.Repository(repo); err != nil {
			return err
		} else if !ok {
			return fmt.Errorf("%w: %s", ErrNameUnknown, repo)
		}
		return fmt.Errorf("%w: tag %s in %s has no history", ErrManifestUnknown, tag, repo)
	})
	if err != nil {
		return []TagMove{}, false, err
	}
	return moves, more, nil
}

// hasHistory reports whether tag in repo ever moved.
func hasHistory(tx meta.Tx, repo, tag string) (bool, error) {
	_, ok, err := LastMove(tx, repo, tag)
	return ok, err
}

// LastMove returns the newest move of tag in repo, if it ever moved.
func LastMove(tx meta.TagIndex, repo, tag string) (TagMove, bool, error) {
	var last TagMove
	found := false
	err := tx.Moves(repo, tag, 0, func(m TagMove) error {
		last, found = m, true
		return meta.ErrStop
	})
	return last, found, err
}

// RollbackTag points tag in repo back at an earlier manifest: to, or, when
// to is empty, the digest the tag named before its last move. The rollback
// is recorded as a move of its own, so rolling back twice returns to where
// the tag started. It returns the move; if the tag named that digest
// already, nothing moves and it returns the tag's newest move, read in the
// same transaction. The tag's immutability applies.
func (s *Service) RollbackTag(ctx context.Context, repo, tag string, to digest.Digest) (TagMove, error) {
	var move TagMove
	err := s.Update(ctx, func(tx *Tx) error {
		target := to
		if ok, err := tx.Repository(repo); err != nil {
			return err
		} else if !ok {
			return fmt.Errorf("%w: %s", ErrNameUnknown, repo)
		}
		if target == "" {
			last, ok, err := LastMove(tx, repo, tag)
			if err != nil {
				return err
			}
			if !ok {
				return fmt.Errorf("%w: tag %s in %s has no history to roll back", ErrManifestUnknown, tag, repo)
			}
			if last.Previous == "" {
				return detailf(ErrManifestUnknown, map[string]any{"tag": tag},
					"tag %s in %s named nothing before its last move", tag, repo)
			}
			target = last.Previous
		} else if err := validDigest(target); err != nil {
			return err
		}
		if _, ok, err := tx.Manifest(repo, target); err != nil {
			return err
		} else if !ok {
			return detailf(ErrManifestUnknown, map[string]any{"digest": string(target)},
				"manifest %s is not in %s", target, repo)
		}
		var err error
		if move, err = tx.MoveTag(repo, tag, target, MoveRollback); err != nil || move != (TagMove{}) {
			return err
		}
		// Nothing moved: the tag's newest move is the one that set it.
		move, _, err = LastMove(tx, repo, tag)
		return err
	})
	return move, err
}
