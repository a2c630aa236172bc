package bolt

import (
	"fmt"

	"github.com/berth-registry/berth/storage/meta"
	"github.com/berth-registry/berth/storage/meta/internal/record"
)

// Upload returns the record of session id.
func (t *tx) Upload(id string) (meta.Upload, bool, error) {
	if err := t.read(); err != nil {
		return meta.Upload{}, false, err
	}
	var rec record.Upload
	ok, err := getJSON(t.btx.Bucket(bucketUploads), "uploads", []byte(id), &rec)
	return rec.Meta(), ok, err
}

// PutUpload records session id.
func (t *tx) PutUpload(id string, u meta.Upload) error {
	if err := t.write(); err != nil {
		return err
	}
	if err := validName("upload id", id); err != nil {
		return err
	}
	rec := record.Upload{Repo: u.Repo, Algorithm: u.Algorithm, Started: u.Started, Owner: u.Owner}
	return putJSON(t.btx.Bucket(bucketUploads), []byte(id), rec)
}

// DeleteUpload removes the record of session id.
func (t *tx) DeleteUpload(id string) error {
	if err := t.write(); err != nil {
		return err
	}
	if err := t.btx.Bucket(bucketUploads).Delete([]byte(id)); err != nil {
		return fmt.Errorf("delete upload %s: %w", id, err)
	}
	return nil
}

// Uploads walks uploads/ in id order.
func (t *tx) Uploads(fn func(id string, u meta.Upload) error) error {
	if err := t.read(); err != nil {
		return err
	}
	return t.walk(t.btx.Bucket(bucketUploads), nil, false, nil, func(k, v []byte) error {
		var rec record.Upload
		if err := decode(v, &rec); err != nil {
			return corrupt("uploads", k, err)
		}
		return fn(string(k), rec.Meta())
	})
}
