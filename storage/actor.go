package storage

import "context"

// Actor is who asked for a change: recorded with every tag move.
type Actor struct {
	// Kind is "user", "robot" or "anonymous"; Berth itself, applying a
	// retention policy, is "system".
	Kind string `json:"kind"`
	// Name is the user or robot name; empty for anonymous callers.
	Name string `json:"name,omitempty"`
	// Address is the client's IP address, without port.
	Address string `json:"address,omitempty"`
}

// The kinds of actor.
const (
	ActorUser      = "user"
	ActorRobot     = "robot"
	ActorAnonymous = "anonymous"
	ActorSystem    = "system"
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
