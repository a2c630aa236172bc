package storage

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/meta"
)

// Event says that the store changed. The core publishes one per change, to
// every Sink, after the transaction making it has committed; a refused or
// rolled-back write publishes nothing.
type Event struct {
	// Action is what happened: one of the Event constants.
	Action string `json:"action"`
	// Repo is the repository changed; empty for a blob removed from the
	// store as a whole.
	Repo string `json:"repository,omitempty"`
	// Tag is the tag that moved, for tag events.
	Tag string `json:"tag,omitempty"`
	// Digest is the content concerned: the manifest or blob pushed or
	// removed, or the digest a tag names after its move.
	Digest digest.Digest `json:"digest,omitempty"`
	// Previous is the digest a tag named before its move.
	Previous digest.Digest `json:"previous,omitempty"`
	// MediaType and Size describe the content, when known.
	MediaType string `json:"mediaType,omitempty"`
	Size      int64  `json:"size,omitempty"`
	// Actor is who asked for the change; Berth itself for retention and
	// garbage collection.
	Actor Actor     `json:"actor"`
	Time  time.Time `json:"time"`
}

// The actions of events.
const (
	// EventPush: a manifest was stored in a repository.
	EventPush = "push"
	// EventBlobPush: a blob was uploaded into a repository, or mounted
	// into it from another.
	EventBlobPush = "blob-push"
	// EventTag: a manifest push set or moved a tag, or the pull-through
	// cache, a replication or an import did.
	EventTag = "tag"
	// EventUntag: a client deleted a tag, or the manifest it named.
	EventUntag = "untag"
	// EventDeleteManifest: a client deleted a manifest.
	EventDeleteManifest = "delete-manifest"
	// EventDeleteBlob: a client unlinked a blob from a repository.
	EventDeleteBlob = "delete-blob"
	// EventPromote: a promotion set or moved a tag.
	EventPromote = "promote"
	// EventRollback: a rollback moved a tag.
	EventRollback = "rollback"
	// EventRetention: a retention policy deleted a tag (Tag set) or a
	// manifest.
	EventRetention = "retention"
	// EventGC: garbage collection removed a manifest (an orphan referrer,
	// with Tag set for each tag that named it), a blob link (Repo set,
	// MediaType empty) or a blob from the store (Repo empty).
	EventGC = "gc"
)

// Sink receives events. Publish is called after the change commits, from
// the goroutine that made it, so it must not block: a sink that does slow
// work (a webhook) queues the event and returns.
type Sink interface {
	Publish(ctx context.Context, e Event)
}

// SinkFunc adapts a function to Sink.
type SinkFunc func(ctx context.Context, e Event)

// Publish calls f(ctx, e).
func (f SinkFunc) Publish(ctx context.Context, e Event) { f(ctx, e) }

// Outbox routes events to the endpoints that are to be told of them, for
// delivery that survives a crash. Where a Sink hears of a change after its
// commit, and may miss it if the process dies at once, the Outbox is asked
// inside the change's transaction: for each event and each endpoint it
// names, the core appends a meta.Delivery to the index's outbox, keyed by
// the event's repository, with a fresh event identifier and the event's
// JSON as payload (DecodeEvent reads it back). The change and its
// deliveries commit together or not at all; a delivery worker (package
// notify) sends them afterwards.
type Outbox interface {
	// Endpoints returns the names of the endpoints e goes to, none if
	// none. It runs inside the transaction, perhaps more than once for
	// one event, so it must be quick, must not block and must depend on
	// e alone.
	Endpoints(e Event) []string
}

// queueDeliveries appends a delivery of each event to each endpoint the
// outbox routes it to, in the transaction that made the events.
func (s *Service) queueDeliveries(tx meta.Tx, events []Event) error {
	if s.outbox == nil {
		return nil
	}
	for _, e := range events {
		endpoints := s.outbox.Endpoints(e)
		if len(endpoints) == 0 {
			continue
		}
		payload, err := json.Marshal(e)
		if err != nil {
			return fmt.Errorf("encode event for the outbox: %w", err)
		}
		id, err := newID()
		if err != nil {
			return err
		}
		for _, ep := range endpoints {
			d := meta.Delivery{Endpoint: ep, Key: e.Repo, EventID: id, Payload: payload, Created: e.Time}
			if _, err := tx.AppendDelivery(d); err != nil {
				return fmt.Errorf("queue %s event for %s: %w", e.Action, ep, err)
			}
		}
	}
	return nil
}

// DecodeEvent reads back the event of a delivery the core queued.
func DecodeEvent(d meta.Delivery) (Event, error) {
	var e Event
	if err := json.Unmarshal(d.Payload, &e); err != nil {
		return Event{}, fmt.Errorf("decode event of delivery %d: %w", d.Seq, err)
	}
	return e, nil
}

// publish hands committed events to every sink.
func (s *Service) publish(ctx context.Context, events []Event) {
	for _, e := range events {
		for _, sink := range s.sinks {
			sink.Publish(ctx, e)
		}
	}
}

// now is the time the core stamps on records and events.
func (s *Service) now() time.Time { return time.Now().UTC() }

// moveEvent is the action of the event a tag move publishes, by the move's
// action; repair publishes none (it runs offline).
func moveEvent(action string) string {
	switch action {
	case MovePush, MoveMirror, MoveSync, MoveImport:
		return EventTag
	case MoveDelete, MoveDeleteManifest:
		return EventUntag
	case MovePromote:
		return EventPromote
	case MoveRollback:
		return EventRollback
	case MoveRetention:
		return EventRetention
	case MoveGC:
		return EventGC
	}
	return ""
}
