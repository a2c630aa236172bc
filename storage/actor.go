package storage

import (
	"context"

	"github.com/berth-registry/berth/storage/meta"
)

// Actor is who asked for a change: recorded with every tag move and
// carried by every event.
type Actor = meta.Actor

// The kinds of actor.
const (
	ActorUser      = "user"
	ActorRobot     = "robot"
	ActorAnonymous = "anonymous"
	// ActorSystem is Berth itself, applying a retention policy,
	// collecting garbage or repairing the store.
	ActorSystem = "system"
)

type actorKey struct{}

// WithActor returns ctx carrying the actor of a request; the store records
// it with the tag moves the request makes.
func WithActor(ctx context.Context, a Actor) context.Context {
	return context.WithValue(ctx, actorKey{}, a)
}

// ActorFrom returns the actor ctx carries, or an anonymous one.
func ActorFrom(ctx context.Context) Actor {
	if a, ok := ctx.Value(actorKey{}).(Actor); ok {
		return a
	}
	return Actor{Kind: ActorAnonymous}
}

// owner is how an upload session records the actor that opened it.
func owner(a Actor) string { return a.Kind + ":" + a.Name }

// System is the actor of Berth's own changes: retention, garbage
// collection and repair.
func System() Actor { return Actor{Kind: ActorSystem} }
