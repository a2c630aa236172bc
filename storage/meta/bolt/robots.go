package bolt

import (
	"fmt"

	"github.com/berth-registry/berth/storage/meta"
)

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
