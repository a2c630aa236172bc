package storage

import (
	"context"
	"time"

	"github.com/opencontainers/go-digest"
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
