package meta

import "time"

// Delivery is an event waiting in the outbox to be delivered to one
// endpoint or, once its attempts ran out, a dead letter.
//
// The storage core appends deliveries in the transaction of the change
// that made their event, so that a change and the promise to tell the
// endpoints about it commit together; the delivery worker (package notify)
// reads, leases, updates and removes them in transactions of its own. The
// index keeps no rule about them beyond what OutboxIndex says: attempts,
// leases and backoff are the worker's.
type Delivery struct {
	// Seq numbers the delivery, unique in the index; AppendDelivery sets
	// it. A dead letter keeps the Seq it had in the outbox.
	Seq uint64
	// Endpoint names the endpoint the delivery is for.
	Endpoint string
	// Key orders deliveries: those of one endpoint and key are attempted
	// in Seq order, one at a time (the worker uses the repository).
	Key string
	// EventID identifies the event, the same for every endpoint and every
	// attempt, so that a receiver can drop a duplicate.
	EventID string
	// Payload is the event as the core encoded it: a JSON value, which
	// the index keeps with its meaning (it may drop insignificant
	// whitespace).
	Payload []byte
	// Created is when the change that made the event was committed.
	Created time.Time
	// Attempts counts the failed attempts so far; LastError says why the
	// last one failed; NextAttempt is when the next may start (zero: at
	// once).
	Attempts    int
	NextAttempt time.Time
	LastError   string
	// Holder, with LeaseUntil, is the worker attempting the delivery:
	// until LeaseUntil no other worker may attempt it. Empty: nobody.
	Holder     string
	LeaseUntil time.Time
	// Died is when the delivery became a dead letter; zero in the outbox.
	Died time.Time
}

// OutboxIndex holds the outbox of events waiting for delivery and the
// dead letters, the deliveries that failed too often.
//
// Seq is unique across the outbox and the dead letters. Deliveries of one
// endpoint and key are numbered in the order their transactions commit: a
// delivery appended by a transaction that commits after another's has the
// greater Seq. (An embedded index that commits one transaction at a time
// gets this from a counter; a database shared by several processes must
// serialise the appends of one endpoint and key, for example with a lock
// on a row of theirs.) This is what keeps the events of one repository in
// order for each endpoint.
type OutboxIndex interface {
	// AppendDelivery records d in the outbox, numbering it (d.Seq is
	// ignored), and returns it as recorded. d.Endpoint must not be empty;
	// neither it nor d.Key may contain a NUL byte.
	AppendDelivery(d Delivery) (Delivery, error)
	// Delivery returns the delivery of endpoint and key numbered seq, if
	// the outbox holds it.
	Delivery(endpoint, key string, seq uint64) (Delivery, bool, error)
	// PutDelivery replaces the record of the delivery d.Endpoint, d.Key,
	// d.Seq (attempts, lease, next attempt), which AppendDelivery
	// numbered. Its EventID, Payload and Created are kept as given.
	PutDelivery(d Delivery) error
	// DeleteDelivery removes a delivery from the outbox; an absent one is
	// fine.
	DeleteDelivery(endpoint, key string, seq uint64) error
	// Deliveries calls fn for every delivery of endpoint in the outbox, or
	// of every endpoint when endpoint is empty, ordered by endpoint, then
	// key, then Seq.
	Deliveries(endpoint string, fn func(d Delivery) error) error
	// DeliveryHeads calls fn, for each key of endpoint, with the delivery
	// of that key with the lowest Seq: the only one of its key that may
	// be attempted. Keys come in byte order. Its cost is proportional to
	// the number of keys, not of deliveries.
	DeliveryHeads(endpoint string, fn func(d Delivery) error) error

	// PutDeadLetter records d as a dead letter under d.Seq, replacing the
	// one there may be. The caller removes it from the outbox in the same
	// transaction.
	PutDeadLetter(d Delivery) error
	// DeadLetter returns the dead letter numbered seq, if there is one.
	DeadLetter(seq uint64) (Delivery, bool, error)
	// DeleteDeadLetter removes a dead letter; an absent one is fine.
	DeleteDeadLetter(seq uint64) error
	// DeadLetters calls fn for every dead letter with a Seq above after,
	// in Seq order.
	DeadLetters(after uint64, fn func(d Delivery) error) error
}
