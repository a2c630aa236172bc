package postgres

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/berth-registry/berth/storage/meta"
	"github.com/berth-registry/berth/storage/meta/internal/record"
)

// validDelivery checks the endpoint and key of a delivery can be a key.
func validDelivery(endpoint, key string) error {
	if !keyable(endpoint) {
		return fmt.Errorf("%w: endpoint %q", ErrInvalidKey, endpoint)
	}
	if !storable(key) {
		return fmt.Errorf("%w: delivery key %q", ErrInvalidKey, key)
	}
	return nil
}

// encodeDelivery is the record of d; an invalid payload is refused.
func encodeDelivery(d meta.Delivery, dead bool) (string, error) {
	if len(d.Payload) > 0 && !json.Valid(d.Payload) {
		return "", fmt.Errorf("delivery %s: payload is not JSON", d.EventID)
	}
	return encode(record.FromDelivery(d, dead))
}

// AppendDelivery locks the row of d's endpoint and key in outbox_keys
// (creating it), then numbers d from delivery_seq and records it, in one
// statement: appends of one endpoint and key take their numbers in the
// order they take the lock, which they hold until they commit.
func (t *tx) AppendDelivery(d meta.Delivery) (meta.Delivery, error) {
	if err := t.write(); err != nil {
		return d, err
	}
	if err := validDelivery(d.Endpoint, d.Key); err != nil {
		return d, err
	}
	d.Seq, d.Died = 0, time.Time{}
	rec, err := encodeDelivery(d, false)
	if err != nil {
		return d, err
	}
	var seq int64
	_, err = t.get("append delivery to "+d.Endpoint,
		`WITH k AS (INSERT INTO outbox_keys (endpoint, key) VALUES ($1, $2)
			ON CONFLICT (endpoint, key) DO UPDATE SET appended = outbox_keys.appended + 1
			RETURNING 1)
		INSERT INTO deliveries (endpoint, key, seq, rec) SELECT $1, $2, nextval('delivery_seq'), $3 FROM k RETURNING seq`,
		[]any{d.Endpoint, d.Key, rec}, &seq)
	if err != nil {
		return d, err
	}
	d.Seq = uint64(seq)
	return d, nil
}

// Delivery returns one delivery of the outbox.
func (t *tx) Delivery(endpoint, key string, seq uint64) (meta.Delivery, bool, error) {
	if err := t.read(); err != nil || validDelivery(endpoint, key) != nil || seq > 1<<63-1 {
		return meta.Delivery{}, false, err
	}
	var raw []byte
	ok, err := t.get("read delivery", "SELECT rec FROM deliveries WHERE endpoint = $1 AND key = $2 AND seq = $3",
		[]any{endpoint, key, int64(seq)}, &raw)
	if !ok || err != nil {
		return meta.Delivery{}, false, err
	}
	var rec record.Delivery
	if err := json.Unmarshal(raw, &rec); err != nil {
		return meta.Delivery{}, false, corrupt("deliveries", strconv.FormatUint(seq, 10), err)
	}
	return rec.Meta(endpoint, key, seq), true, nil
}

// PutDelivery replaces the record of a delivery of the outbox.
func (t *tx) PutDelivery(d meta.Delivery) error {
	if err := t.write(); err != nil {
		return err
	}
	if err := validDelivery(d.Endpoint, d.Key); err != nil {
		return err
	}
	if d.Seq == 0 || d.Seq > 1<<63-1 {
		return fmt.Errorf("%w: delivery sequence number %d", ErrInvalidKey, d.Seq)
	}
	d.Died = time.Time{}
	rec, err := encodeDelivery(d, false)
	if err != nil {
		return err
	}
	_, err = t.exec("record delivery "+strconv.FormatUint(d.Seq, 10),
		`WITH k AS (INSERT INTO outbox_keys (endpoint, key) VALUES ($1, $2) ON CONFLICT (endpoint, key) DO NOTHING)
		INSERT INTO deliveries (endpoint, key, seq, rec) VALUES ($1, $2, $3, $4)
		ON CONFLICT (endpoint, key, seq) DO UPDATE SET rec = EXCLUDED.rec`, d.Endpoint, d.Key, int64(d.Seq), rec)
	return err
}

// DeleteDelivery removes a delivery from the outbox, and the row of its
// endpoint and key when it was their last, so that DeliveryHeads reads
// only keys with deliveries.
func (t *tx) DeleteDelivery(endpoint, key string, seq uint64) error {
	if err := t.write(); err != nil || validDelivery(endpoint, key) != nil || seq > 1<<63-1 {
		return err
	}
	b := &pgx.Batch{}
	b.Queue("DELETE FROM deliveries WHERE endpoint = $1 AND key = $2 AND seq = $3", endpoint, key, int64(seq))
	b.Queue(`DELETE FROM outbox_keys WHERE endpoint = $1 AND key = $2
		AND NOT EXISTS (SELECT 1 FROM deliveries WHERE endpoint = $1 AND key = $2)`, endpoint, key)
	return t.batch("delete delivery "+strconv.FormatUint(seq, 10), b)
}

// deliveryRow is an outbox row.
type deliveryRow struct {
	endpoint, key string
	seq           int64
	rec           []byte
}

func scanDelivery(r pgx.CollectableRow) (deliveryRow, error) {
	var x deliveryRow
	err := r.Scan(&x.endpoint, &x.key, &x.seq, &x.rec)
	return x, err
}

func (r deliveryRow) decode() (meta.Delivery, error) {
	var rec record.Delivery
	if err := json.Unmarshal(r.rec, &rec); err != nil {
		return meta.Delivery{}, corrupt("deliveries", strconv.FormatInt(r.seq, 10), err)
	}
	return rec.Meta(r.endpoint, r.key, uint64(r.seq)), nil
}

// Deliveries walks the outbox, or the part of it of one endpoint.
func (t *tx) Deliveries(endpoint string, fn func(d meta.Delivery) error) error {
	if endpoint != "" && validDelivery(endpoint, "") != nil {
		return t.read()
	}
	return walk(t, "walk the outbox", func(last *deliveryRow) (string, []any) {
		const cols = "SELECT endpoint, key, seq, rec FROM deliveries WHERE ($1 = '' OR endpoint = $1)"
		const order = " ORDER BY endpoint, key, seq"
		if last == nil {
			return cols + order, []any{endpoint}
		}
		return cols + " AND (endpoint, key, seq) > ($2, $3, $4)" + order, []any{endpoint, last.endpoint, last.key, last.seq}
	}, scanDelivery, func(r deliveryRow) error {
		d, err := r.decode()
		if err != nil {
			return err
		}
		return fn(d)
	})
}

// DeliveryHeads walks the keys of endpoint in outbox_keys, each with its
// delivery of the lowest Seq: one index probe per key.
func (t *tx) DeliveryHeads(endpoint string, fn func(d meta.Delivery) error) error {
	if validDelivery(endpoint, "") != nil {
		return t.read()
	}
	return walk(t, "walk the outbox heads of "+endpoint, func(last *deliveryRow) (string, []any) {
		after, first := "", true
		if last != nil {
			after, first = last.key, false
		}
		return `SELECT k.endpoint, k.key, d.seq, d.rec FROM outbox_keys k
			CROSS JOIN LATERAL (SELECT seq, rec FROM deliveries
				WHERE endpoint = k.endpoint AND key = k.key ORDER BY seq LIMIT 1) d
			WHERE k.endpoint = $1 AND ($3 OR k.key > $2) ORDER BY k.key`, []any{endpoint, after, first}
	}, scanDelivery, func(r deliveryRow) error {
		d, err := r.decode()
		if err != nil {
			return err
		}
		return fn(d)
	})
}

// PutDeadLetter records a dead letter.
func (t *tx) PutDeadLetter(d meta.Delivery) error {
	if err := t.write(); err != nil {
		return err
	}
	if err := validDelivery(d.Endpoint, d.Key); err != nil {
		return err
	}
	if d.Seq == 0 || d.Seq > 1<<63-1 {
		return fmt.Errorf("%w: dead letter sequence number %d", ErrInvalidKey, d.Seq)
	}
	rec, err := encodeDelivery(d, true)
	if err != nil {
		return err
	}
	_, err = t.exec("record dead letter "+strconv.FormatUint(d.Seq, 10),
		"INSERT INTO dead_letters (seq, rec) VALUES ($1, $2) ON CONFLICT (seq) DO UPDATE SET rec = EXCLUDED.rec", int64(d.Seq), rec)
	return err
}

// seqRec is a dead letter row.
type seqRec struct {
	seq int64
	rec []byte
}

func (r seqRec) decode() (meta.Delivery, error) {
	var rec record.Delivery
	if err := json.Unmarshal(r.rec, &rec); err != nil {
		return meta.Delivery{}, corrupt("dead_letters", strconv.FormatInt(r.seq, 10), err)
	}
	return rec.Meta(rec.Endpoint, rec.Key, uint64(r.seq)), nil
}

// DeadLetter returns one dead letter.
func (t *tx) DeadLetter(seq uint64) (meta.Delivery, bool, error) {
	if err := t.read(); err != nil || seq > 1<<63-1 {
		return meta.Delivery{}, false, err
	}
	r := seqRec{seq: int64(seq)}
	ok, err := t.get("read dead letter", "SELECT rec FROM dead_letters WHERE seq = $1", []any{r.seq}, &r.rec)
	if !ok || err != nil {
		return meta.Delivery{}, false, err
	}
	d, err := r.decode()
	return d, err == nil, err
}

// DeleteDeadLetter removes a dead letter.
func (t *tx) DeleteDeadLetter(seq uint64) error {
	if err := t.write(); err != nil || seq > 1<<63-1 {
		return err
	}
	_, err := t.exec("delete dead letter "+strconv.FormatUint(seq, 10), "DELETE FROM dead_letters WHERE seq = $1", int64(seq))
	return err
}

// DeadLetters walks the dead letters after after.
func (t *tx) DeadLetters(after uint64, fn func(d meta.Delivery) error) error {
	if after > 1<<63-1 {
		return t.read()
	}
	return walk(t, "walk dead letters", func(last *seqRec) (string, []any) {
		from := int64(after)
		if last != nil {
			from = last.seq
		}
		return "SELECT seq, rec FROM dead_letters WHERE seq > $1 ORDER BY seq", []any{from}
	}, func(r pgx.CollectableRow) (seqRec, error) {
		var x seqRec
		err := r.Scan(&x.seq, &x.rec)
		return x, err
	}, func(r seqRec) error {
		d, err := r.decode()
		if err != nil {
			return err
		}
		return fn(d)
	})
}
