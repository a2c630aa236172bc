package notify

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/meta"
)

// The states of a delivery, as `berth events` shows them.
const (
	StatePending = "pending"
	StateDead    = "dead"
)

// Record is a delivery as `berth events` and the admin API show it.
type Record struct {
	// Seq numbers the delivery; retry and drop name it.
	Seq      uint64 `json:"seq"`
	State    string `json:"state"`
	Endpoint string `json:"endpoint"`
	// EventID identifies the event, the same at every endpoint.
	EventID string `json:"eventId"`
	// Event is the event, as sent (an event whose payload cannot be read
	// has only its repository).
	Event    storage.Event `json:"event"`
	Created  time.Time     `json:"created"`
	Attempts int           `json:"attempts"`
	// NextAttempt is when a pending delivery may next be attempted.
	NextAttempt *time.Time `json:"nextAttempt,omitempty"`
	LastError   string     `json:"lastError,omitempty"`
	// Leased says a worker is attempting it now.
	Leased bool `json:"leased,omitempty"`
	// Died is when it became a dead letter.
	Died *time.Time `json:"died,omitempty"`
}

// Query selects deliveries to list.
type Query struct {
	// State is StatePending, StateDead, or empty for both.
	State string
	// Endpoint, when set, keeps the deliveries of that endpoint only.
	Endpoint string
	// After lists the deliveries numbered above it.
	After uint64
	// Limit bounds the records returned; zero means 100.
	Limit int
}

// Listing is one page of deliveries, in Seq order.
type Listing struct {
	Records []Record `json:"records"`
	// Next, when not zero, is the After of the next page.
	Next uint64 `json:"next,omitempty"`
}

// MaxListLimit bounds Query.Limit.
const MaxListLimit = 1000

// ErrNotFound means no pending delivery or dead letter has that number.
var ErrNotFound = errors.New("no such delivery")

// ErrInvalidQuery is wrapped by the error of a query that cannot be
// answered.
var ErrInvalidQuery = errors.New("invalid query")

// record turns a delivery into a Record.
func (n *Notifier) record(d meta.Delivery, state string, now time.Time) Record {
	r := Record{Seq: d.Seq, State: state, Endpoint: d.Endpoint, EventID: d.EventID, Created: d.Created,
		Attempts: d.Attempts, LastError: d.LastError}
	if e, err := storage.DecodeEvent(d); err == nil {
		r.Event = e
	} else {
		r.Event = storage.Event{Repo: d.Key}
	}
	if state == StatePending {
		next := d.NextAttempt
		if next.IsZero() {
			next = d.Created
		}
		r.NextAttempt = &next
		r.Leased = d.Holder != "" && d.LeaseUntil.After(now)
	} else {
		died := d.Died
		r.Died = &died
	}
	return r
}

// List returns a page of the deliveries q selects. Pending deliveries are
// read by walking the outbox (of q.Endpoint, or all of it).
func (n *Notifier) List(ctx context.Context, q Query) (Listing, error) {
	switch q.State {
	case "", StatePending, StateDead:
	default:
		return Listing{}, fmt.Errorf("%w: state %q: want pending or dead", ErrInvalidQuery, q.State)
	}
	if q.Limit < 0 || q.Limit > MaxListLimit {
		return Listing{}, fmt.Errorf("%w: limit %d: want 1 to %d", ErrInvalidQuery, q.Limit, MaxListLimit)
	}
	if q.Limit == 0 {
		q.Limit = 100
	}
	now := n.now()
	var out []Record
	err := n.index.View(ctx, func(tx meta.Tx) error {
		out = out[:0]
		if q.State != StateDead {
			err := tx.Deliveries(q.Endpoint, func(d meta.Delivery) error {
				if d.Seq > q.After {
					out = append(out, n.record(d, StatePending, now))
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		if q.State != StatePending {
			taken := 0
			err := tx.DeadLetters(q.After, func(d meta.Delivery) error {
				if q.Endpoint != "" && d.Endpoint != q.Endpoint {
					return nil
				}
				out = append(out, n.record(d, StateDead, now))
				if taken++; taken > q.Limit {
					return meta.ErrStop
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return Listing{}, fmt.Errorf("list deliveries: %w", err)
	}
	slices.SortFunc(out, func(a, b Record) int { return cmp.Compare(a.Seq, b.Seq) })
	l := Listing{Records: out}
	if len(out) > q.Limit {
		l.Records = out[:q.Limit]
		l.Next = out[q.Limit-1].Seq
	}
	if l.Records == nil {
		l.Records = []Record{}
	}
	return l, nil
}

// findPending returns the pending delivery numbered seq.
func findPending(tx meta.Tx, seq uint64) (meta.Delivery, bool, error) {
	var found meta.Delivery
	ok := false
	err := tx.Deliveries("", func(d meta.Delivery) error {
		if d.Seq == seq {
			found, ok = d, true
			return meta.ErrStop
		}
		return nil
	})
	return found, ok, err
}

// Retry puts dead letter seq back in the outbox, at the end of its
// repository's queue, with its attempts counted from zero; a pending
// delivery seq is made due at once. It returns the delivery as it now is,
// under its new number for a dead letter. A dead letter of an endpoint
// the configuration does not have is ErrUnknownEndpoint.
func (n *Notifier) Retry(ctx context.Context, seq uint64) (Record, error) {
	var rec Record
	now := n.now()
	err := n.index.Update(ctx, func(tx meta.Tx) error {
		d, ok, err := tx.DeadLetter(seq)
		if err != nil {
			return err
		}
		if ok {
			if n.eps.byName[d.Endpoint] == nil {
				return fmt.Errorf("%w: %s", ErrUnknownEndpoint, d.Endpoint)
			}
			nd, err := requeue(tx, d)
			if err != nil {
				return err
			}
			rec = n.record(nd, StatePending, now)
			return nil
		}
		d, ok, err = findPending(tx, seq)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: %d", ErrNotFound, seq)
		}
		d.NextAttempt = now
		if err := tx.PutDelivery(d); err != nil {
			return err
		}
		rec = n.record(d, StatePending, now)
		return nil
	})
	if err == nil {
		n.pokeEndpoint(rec.Endpoint)
	}
	return rec, err
}

// requeue moves dead letter d back to the outbox.
func requeue(tx meta.Tx, d meta.Delivery) (meta.Delivery, error) {
	if err := tx.DeleteDeadLetter(d.Seq); err != nil {
		return meta.Delivery{}, err
	}
	return tx.AppendDelivery(meta.Delivery{Endpoint: d.Endpoint, Key: d.Key, EventID: d.EventID,
		Payload: d.Payload, Created: d.Created})
}

// Drop removes dead letter or pending delivery seq: it will not be sent.
func (n *Notifier) Drop(ctx context.Context, seq uint64) error {
	return n.index.Update(ctx, func(tx meta.Tx) error {
		if _, ok, err := tx.DeadLetter(seq); err != nil {
			return err
		} else if ok {
			return tx.DeleteDeadLetter(seq)
		}
		d, ok, err := findPending(tx, seq)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: %d", ErrNotFound, seq)
		}
		return tx.DeleteDelivery(d.Endpoint, d.Key, d.Seq)
	})
}

// batch bounds the dead letters one transaction of RetryAll or DropAll
// changes.
const batch = 256

// RetryAll puts every dead letter (of endpoint, if set) of a configured
// endpoint back in the outbox, and returns how many.
func (n *Notifier) RetryAll(ctx context.Context, endpoint string) (int, error) {
	return n.eachDead(ctx, endpoint, func(tx meta.Tx, d meta.Delivery) (bool, error) {
		if n.eps.byName[d.Endpoint] == nil {
			return false, nil
		}
		_, err := requeue(tx, d)
		return err == nil, err
	})
}

// DropAll removes every dead letter (of endpoint, if set), and returns
// how many.
func (n *Notifier) DropAll(ctx context.Context, endpoint string) (int, error) {
	return n.eachDead(ctx, endpoint, func(tx meta.Tx, d meta.Delivery) (bool, error) {
		return true, tx.DeleteDeadLetter(d.Seq)
	})
}

// eachDead calls fn for the dead letters of endpoint (all when empty), in
// transactions of up to batch letters; fn reports whether it changed the
// letter. It returns the number changed.
func (n *Notifier) eachDead(ctx context.Context, endpoint string, fn func(tx meta.Tx, d meta.Delivery) (bool, error)) (int, error) {
	total := 0
	var after uint64
	for {
		changed, seen := 0, 0
		var last uint64
		err := n.index.Update(ctx, func(tx meta.Tx) error {
			changed, seen, last = 0, 0, after
			var letters []meta.Delivery
			err := tx.DeadLetters(after, func(d meta.Delivery) error {
				seen++
				last = d.Seq
				if endpoint == "" || d.Endpoint == endpoint {
					letters = append(letters, d)
				}
				if seen == batch {
					return meta.ErrStop
				}
				return nil
			})
			if err != nil {
				return err
			}
			for _, d := range letters {
				ok, err := fn(tx, d)
				if err != nil {
					return err
				}
				if ok {
					changed++
				}
			}
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("dead letters: %w", err)
		}
		total += changed
		if seen < batch {
			break
		}
		after = last
	}
	for _, w := range n.workers {
		if endpoint == "" || w.ep.name == endpoint {
			w.poke()
		}
	}
	return total, nil
}

// pokeEndpoint wakes the worker of endpoint.
func (n *Notifier) pokeEndpoint(endpoint string) {
	for _, w := range n.workers {
		if w.ep.name == endpoint {
			w.poke()
		}
	}
}
