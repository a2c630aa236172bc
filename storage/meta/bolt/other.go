package bolt

import (
	"errors"
	"fmt"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/meta"
)

// Indexed reports whether search/ holds the pair k=v: at most 1024 bytes
// of key and value together, and no NUL byte.
func (t *tx) Indexed(key, value string) bool { return indexed(key, value) }

// FindPair walks the search/ entries of one pair from repository from.
func (t *tx) FindPair(kind meta.PairKind, key, value, from string, after digest.Digest, fn func(repo string, d digest.Digest) error) error {
	if err := t.read(); err != nil {
		return err
	}
	if kind != meta.Annotation && kind != meta.Label {
		return fmt.Errorf("search: unknown pair kind %q", byte(kind))
	}
	if !indexed(key, value) {
		return nil
	}
	prefix := searchPrefix(kind, key, value)
	seek := append(append([]byte(nil), prefix...), from...)
	exclusive := false
	if after != "" {
		seek = append(append(seek, 0), after...)
		exclusive = true
	}
	return t.walk(t.btx.Bucket(bucketSearch), seek, exclusive, prefix, func(k, _ []byte) error {
		e, ok := parseSearchKey(k)
		if !ok {
			return corrupt("search", k, errors.New("not a search key"))
		}
		return fn(e.repo, e.digest)
	})
}

// Upload returns the record of session id.
func (t *tx) Upload(id string) (meta.Upload, bool, error) {
	if err := t.read(); err != nil {
		return meta.Upload{}, false, err
	}
	var rec uploadRecord
	ok, err := getJSON(t.btx.Bucket(bucketUploads), "uploads", []byte(id), &rec)
	return rec.upload(), ok, err
}

func (r uploadRecord) upload() meta.Upload {
	return meta.Upload{Repo: r.Repo, Algorithm: r.Algorithm, Started: r.Started, Owner: r.Owner}
}

// PutUpload records session id.
func (t *tx) PutUpload(id string, u meta.Upload) error {
	if err := t.write(); err != nil {
		return err
	}
	if err := validName("upload id", id); err != nil {
		return err
	}
	rec := uploadRecord{Repo: u.Repo, Algorithm: u.Algorithm, Started: u.Started, Owner: u.Owner}
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
		var rec uploadRecord
		if err := decode(v, &rec); err != nil {
			return corrupt("uploads", k, err)
		}
		return fn(string(k), rec.upload())
	})
}

func (r robotRecord) robot(name string) meta.Robot {
	return meta.Robot{Name: name, Scopes: r.Scopes, Created: r.Created, Expires: r.Expires,
		Revoked: r.Revoked, Rotated: r.Rotated, Hash: r.Hash}
}

// Robot returns the record of robot name.
func (t *tx) Robot(name string) (meta.Robot, bool, error) {
	if err := t.read(); err != nil {
		return meta.Robot{}, false, err
	}
	var rec robotRecord
	ok, err := getJSON(t.btx.Bucket(bucketRobots), "robots", []byte(name), &rec)
	if !ok || err != nil {
		return meta.Robot{}, false, err
	}
	return rec.robot(name), true, nil
}

// RobotBySecret looks hash up in robotSecrets/, and answers only if the
// robot it names has that hash.
func (t *tx) RobotBySecret(hash string) (string, bool, error) {
	if err := t.read(); err != nil {
		return "", false, err
	}
	if hash == "" {
		return "", false, nil
	}
	name := t.btx.Bucket(bucketRobotSecrets).Get([]byte(hash))
	if name == nil {
		return "", false, nil
	}
	var rec robotRecord
	ok, err := getJSON(t.btx.Bucket(bucketRobots), "robots", name, &rec)
	if !ok || err != nil || rec.Hash != hash {
		return "", false, err
	}
	return string(name), true, nil
}

// PutRobot records r and moves its secret's entry to r.Hash.
func (t *tx) PutRobot(r meta.Robot) error {
	if err := t.write(); err != nil {
		return err
	}
	if err := validName("robot name", r.Name); err != nil {
		return err
	}
	if err := validName("robot secret hash", r.Hash); err != nil {
		return err
	}
	robots, secrets := t.btx.Bucket(bucketRobots), t.btx.Bucket(bucketRobotSecrets)
	name, hash := []byte(r.Name), []byte(r.Hash)
	if owner := secrets.Get(hash); owner != nil && string(owner) != r.Name {
		return fmt.Errorf("robot %s: its secret hash already names robot %s", r.Name, owner)
	}
	// An old record that does not decode keeps its stale entry, which
	// Check reports and repairs.
	var old robotRecord
	if ok, err := getJSON(robots, "robots", name, &old); err == nil && ok && old.Hash != r.Hash &&
		old.Hash != "" && string(secrets.Get([]byte(old.Hash))) == r.Name {
		if err := secrets.Delete([]byte(old.Hash)); err != nil {
			return fmt.Errorf("robot %s: remove old secret hash: %w", r.Name, err)
		}
	}
	rec := robotRecord{Scopes: r.Scopes, Created: r.Created, Expires: r.Expires, Revoked: r.Revoked,
		Rotated: r.Rotated, Hash: r.Hash}
	if err := putJSON(robots, name, rec); err != nil {
		return err
	}
	if err := secrets.Put(hash, name); err != nil {
		return fmt.Errorf("robot %s: index secret hash: %w", r.Name, err)
	}
	return nil
}

// Robots walks robots/ in name order.
func (t *tx) Robots(fn func(r meta.Robot) error) error {
	if err := t.read(); err != nil {
		return err
	}
	return t.walk(t.btx.Bucket(bucketRobots), nil, false, nil, func(k, v []byte) error {
		var rec robotRecord
		if err := decode(v, &rec); err != nil {
			return corrupt("robots", k, err)
		}
		return fn(rec.robot(string(k)))
	})
}
