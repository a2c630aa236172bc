package storage

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// TagRules decides which tags may not move once they exist. The store asks
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
)

// TagMove is one entry of a tag's history.
type TagMove struct {
	// Seq orders the moves of one tag: it grows by one with each move.
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time"`
	// Previous is the digest the tag named before; empty if it was new.
	Previous digest.Digest `json:"previous,omitempty"`
	// Digest is the digest the tag names after; empty if it was deleted.
	Digest digest.Digest `json:"digest,omitempty"`
	// Action is why it moved: one of the Move constants.
	Action string `json:"action"`
	Actor  Actor  `json:"actor"`
}

// immutable asks the store's tag rules.
func (s *Store) immutable(repo, tag string) bool {
	return s.tags != nil && s.tags.Immutable(repo, tag)
}

// moveTag points tag in the repository bucket rb at to (deleting it when
// to is empty) and records the move, with the actor ctx carries, in the
// tag's history. Setting a tag to the digest it already names changes
// nothing, records nothing and returns a zero TagMove. Moving or deleting
// an existing immutable tag fails with ErrTagImmutable.
func (s *Store) moveTag(ctx context.Context, tx *bolt.Tx, rb *bolt.Bucket, repo, tag string, to digest.Digest, action string) (TagMove, error) {
	tags := rb.Bucket(bucketTags)
	old := digest.Digest(tags.Get([]byte(tag)))
	if old == to {
		return TagMove{}, nil
	}
	if old != "" && s.immutable(repo, tag) {
		return TagMove{}, detailf(ErrTagImmutable, map[string]any{"tag": tag, "digest": string(old)},
			"%s in %s names %s and may not move", tag, repo, old)
	}
	var err error
	if to == "" {
		err = tags.Delete([]byte(tag))
	} else {
		err = tags.Put([]byte(tag), []byte(to))
	}
	if err != nil {
		return TagMove{}, fmt.Errorf("tag %s: %w", tag, err)
	}
	m := TagMove{Time: time.Now().UTC(), Previous: old, Digest: to, Action: action, Actor: ActorFrom(ctx)}
	return recordMove(tx, repo, tag, m)
}

// recordMove appends m to the history of tag in repo, numbering it.
func recordMove(tx *bolt.Tx, repo, tag string, m TagMove) (TagMove, error) {
	rh, err := tx.Bucket(bucketHistory).CreateBucketIfNotExists([]byte(repo))
	if err != nil {
		return m, fmt.Errorf("history of %s: %w", repo, err)
	}
	th, err := rh.CreateBucketIfNotExists([]byte(tag))
	if err != nil {
		return m, fmt.Errorf("history of %s:%s: %w", repo, tag, err)
	}
	seq, err := th.NextSequence()
	if err != nil {
		return m, fmt.Errorf("history of %s:%s: %w", repo, tag, err)
	}
	m.Seq = seq
	return m, putJSON(th, seqKey(seq), m)
}

// recordRepair records in the history of tag in repo that fsck's repair
// removed it while it named d. The repair bypasses moveTag: it must remove
// even an immutable tag that names nothing.
func recordRepair(tx *bolt.Tx, repo, tag string, d digest.Digest) error {
	_, err := recordMove(tx, repo, tag, TagMove{Time: time.Now().UTC(), Previous: d, Action: MoveRepair,
		Actor: Actor{Kind: ActorSystem}})
	return err
}

func seqKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(nil, seq)
}

// tagHistory returns the bucket of tag's history, or nil if it never moved.
func tagHistory(tx *bolt.Tx, repo, tag string) *bolt.Bucket {
	rh := tx.Bucket(bucketHistory).Bucket([]byte(repo))
	if rh == nil {
		return nil
	}
	return rh.Bucket([]byte(tag))
}

// TagHistory returns up to n moves of tag in repo, newest first, starting
// just before the move numbered before (0: the newest). more reports
// whether older moves follow. A tag that never existed is ErrManifestUnknown;
// a deleted tag keeps its history.
func (s *Store) TagHistory(ctx context.Context, repo, tag string, before uint64, n int) (moves []TagMove, more bool, err error) {
	moves = []TagMove{}
	err = s.db.View(func(tx *bolt.Tx) error {
		th := tagHistory(tx, repo, tag)
		if th == nil {
			if repoBucket(tx, repo) == nil {
				return fmt.Errorf("%w: %s", ErrNameUnknown, repo)
			}
			return fmt.Errorf("%w: tag %s in %s has no history", ErrManifestUnknown, tag, repo)
		}
		c := th.Cursor()
		var k, v []byte
		if before == 0 {
			k, v = c.Last()
		} else {
			k, v = c.Seek(seqKey(before))
			if k == nil {
				k, v = c.Last()
			}
			for k != nil && bytes.Compare(k, seqKey(before)) >= 0 {
				k, v = c.Prev()
			}
		}
		for ; k != nil; k, v = c.Prev() {
			if len(moves) == n {
				more = true
				return nil
			}
			var m TagMove
			if err := decodeJSON(k, v, &m); err != nil {
				return err
			}
			moves = append(moves, m)
		}
		return nil
	})
	return moves, more, err
}

// lastMove returns the newest move of tag, if it ever moved.
func lastMove(tx *bolt.Tx, repo, tag string) (TagMove, bool, error) {
	var m TagMove
	th := tagHistory(tx, repo, tag)
	if th == nil {
		return m, false, nil
	}
	k, v := th.Cursor().Last()
	if k == nil {
		return m, false, nil
	}
	return m, true, decodeJSON(k, v, &m)
}

// RollbackTag points tag in repo back at an earlier manifest: to, or, when
// to is empty, the digest the tag named before its last move. The rollback
// is recorded as a move of its own, so rolling back twice returns to where
// the tag started. It returns the move; if the tag named that digest
// already, nothing moves and it returns the tag's newest move, read in the
// same transaction. The tag's immutability applies.
func (s *Store) RollbackTag(ctx context.Context, repo, tag string, to digest.Digest) (TagMove, error) {
	var move TagMove
	err := s.db.Update(func(tx *bolt.Tx) error {
		rb := repoBucket(tx, repo)
		if rb == nil {
			return fmt.Errorf("%w: %s", ErrNameUnknown, repo)
		}
		if to == "" {
			last, ok, err := lastMove(tx, repo, tag)
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
			to = last.Previous
		} else if err := validDigest(to); err != nil {
			return err
		}
		if rb.Bucket(bucketManifests).Get([]byte(to)) == nil {
			return detailf(ErrManifestUnknown, map[string]any{"digest": string(to)},
				"manifest %s is not in %s", to, repo)
		}
		var err error
		if move, err = s.moveTag(ctx, tx, rb, repo, tag, to, MoveRollback); err != nil || move != (TagMove{}) {
			return err
		}
		// Nothing moved: the tag's newest move is the one that set it.
		move, _, err = lastMove(tx, repo, tag)
		return err
	})
	return move, err
}
