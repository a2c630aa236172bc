package bolt

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"time"

	"github.com/berth-registry/berth/storage/meta"
	"github.com/berth-registry/berth/storage/meta/internal/record"
)

// outboxPrefix is the prefix of the outbox keys of endpoint, and of key
// when withKey.
func outboxPrefix(endpoint, key string, withKey bool) []byte {
	b := make([]byte, 0, len(endpoint)+len(key)+2)
	b = append(b, endpoint...)
	b = append(b, 0)
	if withKey {
		b = append(b, key...)
		b = append(b, 0)
	}
	return b
}

// outboxKey is the outbox key of delivery seq of endpoint and key.
func outboxKey(endpoint, key string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(outboxPrefix(endpoint, key, true), seq)
}

// parseOutboxKey splits an outbox key: the endpoint runs to the first NUL
// byte, the Seq is the last eight bytes, and the key lies between, ended
// by a NUL byte.
func parseOutboxKey(k []byte) (endpoint, key string, seq uint64, ok bool) {
	i := bytes.IndexByte(k, 0)
	if i <= 0 || len(k) < i+1+1+8 || k[len(k)-9] != 0 {
		return "", "", 0, false
	}
	key = string(k[i+1 : len(k)-9])
	if strings.IndexByte(key, 0) >= 0 {
		return "", "", 0, false
	}
	return string(k[:i]), key, binary.BigEndian.Uint64(k[len(k)-8:]), true
}

// validDelivery checks the endpoint and key of d can be a key.
func validDelivery(endpoint, key string) error {
	if !keyable(endpoint) {
		return fmt.Errorf("%w: endpoint %q", ErrInvalidKey, endpoint)
	}
	if strings.IndexByte(key, 0) >= 0 {
		return fmt.Errorf("%w: delivery key %q", ErrInvalidKey, key)
	}
	return nil
}

// AppendDelivery records d under the outbox bucket's next sequence number.
func (t *tx) AppendDelivery(d meta.Delivery) (meta.Delivery, error) {
	if err := t.write(); err != nil {
		return d, err
	}
	if err := validDelivery(d.Endpoint, d.Key); err != nil {
		return d, err
	}
	b := t.btx.Bucket(bucketOutbox)
	seq, err := b.NextSequence()
	if err != nil {
		return d, fmt.Errorf("number delivery: %w", err)
	}
	d.Seq, d.Died = seq, time.Time{}
	return d, putJSON(b, outboxKey(d.Endpoint, d.Key, seq), record.FromDelivery(d, false))
}

// Delivery returns one delivery of the outbox.
func (t *tx) Delivery(endpoint, key string, seq uint64) (meta.Delivery, bool, error) {
	if err := t.read(); err != nil {
		return meta.Delivery{}, false, err
	}
	if validDelivery(endpoint, key) != nil {
		return meta.Delivery{}, false, nil
	}
	var rec record.Delivery
	ok, err := getJSON(t.btx.Bucket(bucketOutbox), "outbox", outboxKey(endpoint, key, seq), &rec)
	if !ok || err != nil {
		return meta.Delivery{}, false, err
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
	if d.Seq == 0 {
		return fmt.Errorf("%w: delivery without a sequence number", ErrInvalidKey)
	}
	d.Died = time.Time{}
	return putJSON(t.btx.Bucket(bucketOutbox), outboxKey(d.Endpoint, d.Key, d.Seq), record.FromDelivery(d, false))
}

// DeleteDelivery removes a delivery from the outbox.
func (t *tx) DeleteDelivery(endpoint, key string, seq uint64) error {
	if err := t.write(); err != nil {
		return err
	}
	if validDelivery(endpoint, key) != nil {
		return nil
	}
	if err := t.btx.Bucket(bucketOutbox).Delete(outboxKey(endpoint, key, seq)); err != nil {
		return fmt.Errorf("delete delivery %d: %w", seq, err)
	}
	return nil
}

// decodeDelivery decodes the outbox entry k, v.
func decodeDelivery(k, v []byte) (meta.Delivery, error) {
	endpoint, key, seq, ok := parseOutboxKey(k)
	if !ok {
		return meta.Delivery{}, corrupt("outbox", k, fmt.Errorf("not an outbox key"))
	}
	var rec record.Delivery
	if err := decode(v, &rec); err != nil {
		return meta.Delivery{}, corrupt("outbox", k, err)
	}
	return rec.Meta(endpoint, key, seq), nil
}

// Deliveries walks the outbox, or the part of it of one endpoint.
func (t *tx) Deliveries(endpoint string, fn func(d meta.Delivery) error) error {
	if err := t.read(); err != nil {
		return err
	}
	var prefix []byte
	if endpoint != "" {
		if validDelivery(endpoint, "") != nil {
			return nil
		}
		prefix = outboxPrefix(endpoint, "", false)
	}
	return t.walk(t.btx.Bucket(bucketOutbox), prefix, false, prefix, func(k, v []byte) error {
		d, err := decodeDelivery(k, v)
		if err != nil {
			return err
		}
		return fn(d)
	})
}

// DeliveryHeads walks the first delivery of each key of endpoint: from
// each, it seeks past the highest Seq its key can have.
func (t *tx) DeliveryHeads(endpoint string, fn func(d meta.Delivery) error) error {
	if err := t.read(); err != nil {
		return err
	}
	if validDelivery(endpoint, "") != nil {
		return nil
	}
	prefix := outboxPrefix(endpoint, "", false)
	c := t.btx.Bucket(bucketOutbox).Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); {
		d, err := decodeDelivery(k, v)
		if err != nil {
			return err
		}
		if err := fn(d); err != nil {
			return stop(err)
		}
		if t.done {
			return errFinished
		}
		past := outboxKey(endpoint, d.Key, ^uint64(0))
		if k, v = c.Seek(past); k != nil && bytes.Equal(k, past) {
			k, v = c.Next()
		}
	}
	return nil
}

// deadKey is the key of dead letter seq.
func deadKey(seq uint64) []byte { return seqKey(seq) }

// PutDeadLetter records a dead letter.
func (t *tx) PutDeadLetter(d meta.Delivery) error {
	if err := t.write(); err != nil {
		return err
	}
	if err := validDelivery(d.Endpoint, d.Key); err != nil {
		return err
	}
	if d.Seq == 0 {
		return fmt.Errorf("%w: dead letter without a sequence number", ErrInvalidKey)
	}
	return putJSON(t.btx.Bucket(bucketDeadLetters), deadKey(d.Seq), record.FromDelivery(d, true))
}

// decodeDeadLetter decodes the dead letter k, v.
func decodeDeadLetter(k, v []byte) (meta.Delivery, error) {
	var rec record.Delivery
	if len(k) != 8 {
		return meta.Delivery{}, corrupt("deadLetters", k, fmt.Errorf("not a sequence number"))
	}
	if err := decode(v, &rec); err != nil {
		return meta.Delivery{}, corrupt("deadLetters", k, err)
	}
	return rec.Meta(rec.Endpoint, rec.Key, binary.BigEndian.Uint64(k)), nil
}

// DeadLetter returns one dead letter.
func (t *tx) DeadLetter(seq uint64) (meta.Delivery, bool, error) {
	if err := t.read(); err != nil {
		return meta.Delivery{}, false, err
	}
	k := deadKey(seq)
	v := t.btx.Bucket(bucketDeadLetters).Get(k)
	if v == nil {
		return meta.Delivery{}, false, nil
	}
	d, err := decodeDeadLetter(k, v)
	return d, err == nil, err
}

// DeleteDeadLetter removes a dead letter.
func (t *tx) DeleteDeadLetter(seq uint64) error {
	if err := t.write(); err != nil {
		return err
	}
	if err := t.btx.Bucket(bucketDeadLetters).Delete(deadKey(seq)); err != nil {
		return fmt.Errorf("delete dead letter %d: %w", seq, err)
	}
	return nil
}

// DeadLetters walks the dead letters after after.
func (t *tx) DeadLetters(after uint64, fn func(d meta.Delivery) error) error {
	if err := t.read(); err != nil {
		return err
	}
	var seek []byte
	if after > 0 {
		seek = deadKey(after)
	}
	return t.walk(t.btx.Bucket(bucketDeadLetters), seek, true, nil, func(k, v []byte) error {
		d, err := decodeDeadLetter(k, v)
		if err != nil {
			return err
		}
		return fn(d)
	})
}
