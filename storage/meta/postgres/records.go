package postgres

import (
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/meta"
	"github.com/berth-registry/berth/storage/meta/internal/record"
)

// Upload returns the record of session id.
func (t *tx) Upload(id string) (meta.Upload, bool, error) {
	if err := t.read(); err != nil || !storable(id) {
		return meta.Upload{}, false, err
	}
	var raw []byte
	ok, err := t.get("read upload "+id, "SELECT rec FROM uploads WHERE id = $1", []any{id}, &raw)
	if !ok || err != nil {
		return meta.Upload{}, false, err
	}
	var rec record.Upload
	if err := json.Unmarshal(raw, &rec); err != nil {
		return meta.Upload{}, false, corrupt("uploads", id, err)
	}
	return rec.Meta(), true, nil
}

// PutUpload records session id.
func (t *tx) PutUpload(id string, u meta.Upload) error {
	if err := t.write(); err != nil {
		return err
	}
	if err := validName("upload id", id); err != nil {
		return err
	}
	rec, err := encode(record.Upload{Repo: u.Repo, Algorithm: u.Algorithm, Started: u.Started, Owner: u.Owner})
	if err != nil {
		return err
	}
	_, err = t.exec("record upload "+id,
		"INSERT INTO uploads (id, rec) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET rec = EXCLUDED.rec", id, rec)
	return err
}

// DeleteUpload removes the record of session id.
func (t *tx) DeleteUpload(id string) error {
	if err := t.write(); err != nil || !storable(id) {
		return err
	}
	_, err := t.exec("delete upload "+id, "DELETE FROM uploads WHERE id = $1", id)
	return err
}

// Uploads walks the sessions in id order.
func (t *tx) Uploads(fn func(id string, u meta.Upload) error) error {
	return walk(t, "walk uploads", func(last *keyRec) (string, []any) {
		after := ""
		if last != nil {
			after = last.key
		}
		return "SELECT id, rec FROM uploads WHERE id > $1 ORDER BY id", []any{after}
	}, scanKeyRec, func(r keyRec) error {
		var rec record.Upload
		if err := json.Unmarshal(r.rec, &rec); err != nil {
			return corrupt("uploads", r.key, err)
		}
		return fn(r.key, rec.Meta())
	})
}

func (r robotRecord) robot(name, hash string) meta.Robot {
	return meta.Robot{Name: name, Scopes: r.Scopes, Created: r.Created, Expires: r.Expires,
		Revoked: r.Revoked, Rotated: r.Rotated, Hash: hash}
}

// Robot returns the record of robot name.
func (t *tx) Robot(name string) (meta.Robot, bool, error) {
	if err := t.read(); err != nil || !storable(name) {
		return meta.Robot{}, false, err
	}
	var raw []byte
	var hash string
	ok, err := t.get("read robot "+name, "SELECT rec, hash FROM robots WHERE name = $1", []any{name}, &raw, &hash)
	if !ok || err != nil {
		return meta.Robot{}, false, err
	}
	var rec robotRecord
	if err := json.Unmarshal(raw, &rec); err != nil {
		return meta.Robot{}, false, corrupt("robots", name, err)
	}
	return rec.robot(name, hash), true, nil
}

// RobotBySecret finds the robot by its unique hash column.
func (t *tx) RobotBySecret(hash string) (string, bool, error) {
	if err := t.read(); err != nil || !keyable(hash) {
		return "", false, err
	}
	var name string
	ok, err := t.get("find robot by secret", "SELECT name FROM robots WHERE hash = $1", []any{hash}, &name)
	return name, ok, err
}

// PutRobot records r, replacing the record of that name and its hash.
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
	var owner string
	ok, err := t.get("find robot by secret", "SELECT name FROM robots WHERE hash = $1 AND name <> $2", []any{r.Hash, r.Name}, &owner)
	if err != nil {
		return err
	}
	if ok {
		return fmt.Errorf("robot %s: its secret hash already names robot %s", r.Name, owner)
	}
	rec, err := encode(robotRecord{Scopes: r.Scopes, Created: r.Created, Expires: r.Expires, Revoked: r.Revoked,
		Rotated: r.Rotated})
	if err != nil {
		return err
	}
	_, err = t.exec("record robot "+r.Name, `INSERT INTO robots (name, rec, hash) VALUES ($1, $2, $3)
		ON CONFLICT (name) DO UPDATE SET rec = EXCLUDED.rec, hash = EXCLUDED.hash`, r.Name, rec, r.Hash)
	return err
}

// robotRow is a robot's row.
type robotRow struct {
	name, hash string
	rec        []byte
}

// Robots walks the robots in name order.
func (t *tx) Robots(fn func(r meta.Robot) error) error {
	return walk(t, "walk robots", func(last *robotRow) (string, []any) {
		after := ""
		if last != nil {
			after = last.name
		}
		return "SELECT name, hash, rec FROM robots WHERE name > $1 ORDER BY name", []any{after}
	}, func(r pgx.CollectableRow) (robotRow, error) {
		var x robotRow
		err := r.Scan(&x.name, &x.hash, &x.rec)
		return x, err
	}, func(r robotRow) error {
		var rec robotRecord
		if err := json.Unmarshal(r.rec, &rec); err != nil {
			return corrupt("robots", r.name, err)
		}
		return fn(rec.robot(r.name, r.hash))
	})
}

// PutPull records p, unless the identity's record of the digest is later.
func (t *tx) PutPull(p meta.Pull) error {
	if err := t.write(); err != nil {
		return err
	}
	if err := validRepo(p.Repo); err != nil {
		return err
	}
	if err := validDigest(p.Digest); err != nil {
		return err
	}
	if !keyable(p.Actor.Kind) || !storable(p.Actor.Name) {
		return fmt.Errorf("%w: pull by %q:%q", ErrInvalidKey, p.Actor.Kind, p.Actor.Name)
	}
	key := []any{p.Repo, p.Digest, p.Actor.Kind, p.Actor.Name}
	var raw []byte
	ok, err := t.get("read pull record", `SELECT rec FROM pulls
		WHERE repo = $1 AND digest = $2 AND actor_kind = $3 AND actor_name = $4`, key, &raw)
	if err != nil {
		return err
	}
	var old record.Pull
	// A record that does not decode is replaced.
	if ok && json.Unmarshal(raw, &old) == nil && old.Time.After(p.Time) {
		return nil
	}
	rec, err := encode(record.Pull{Time: p.Time, Address: p.Actor.Address})
	if err != nil {
		return err
	}
	_, err = t.exec("record pull", `INSERT INTO pulls (repo, digest, actor_kind, actor_name, rec) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (repo, digest, actor_kind, actor_name) DO UPDATE SET rec = EXCLUDED.rec`, append(key, rec)...)
	return err
}

// pullRow is a pull record with its key.
type pullRow struct {
	digest, kind, name string
	rec                []byte
}

// Pulls walks the pull records of repo, of d when it is set.
func (t *tx) Pulls(repo string, d digest.Digest, fn func(p meta.Pull) error) error {
	if !keyable(repo) || !storable(string(d)) {
		return t.read()
	}
	return walk(t, "walk pulls of "+repo, func(last *pullRow) (string, []any) {
		const cols = "SELECT digest, actor_kind, actor_name, rec FROM pulls WHERE repo = $1 AND ($2 = '' OR digest = $2)"
		const order = " ORDER BY digest, actor_kind, actor_name"
		if last == nil {
			return cols + order, []any{repo, d}
		}
		return cols + " AND (digest, actor_kind, actor_name) > ($3, $4, $5)" + order,
			[]any{repo, d, last.digest, last.kind, last.name}
	}, func(r pgx.CollectableRow) (pullRow, error) {
		var x pullRow
		err := r.Scan(&x.digest, &x.kind, &x.name, &x.rec)
		return x, err
	}, func(r pullRow) error {
		var rec record.Pull
		if err := json.Unmarshal(r.rec, &rec); err != nil {
			return corrupt("pulls", repo+"@"+r.digest+" "+r.kind+":"+r.name, err)
		}
		return fn(meta.Pull{Repo: repo, Digest: digest.Digest(r.digest),
			Actor: meta.Actor{Kind: r.kind, Name: r.name, Address: rec.Address}, Time: rec.Time})
	})
}

// Cached returns the cache record of manifest d in repo.
func (t *tx) Cached(repo string, d digest.Digest) (meta.Cached, bool, error) {
	if err := t.read(); err != nil || !storable(repo, string(d)) {
		return meta.Cached{}, false, err
	}
	var raw []byte
	ok, err := t.get("read cache record", "SELECT rec FROM cached_manifests WHERE repo = $1 AND digest = $2", []any{repo, d}, &raw)
	if !ok || err != nil {
		return meta.Cached{}, false, err
	}
	var rec record.Cached
	if err := json.Unmarshal(raw, &rec); err != nil {
		return meta.Cached{}, false, corrupt("cached_manifests", repo+"@"+string(d), err)
	}
	return meta.Cached(rec), true, nil
}

// PutCached records c for manifest d in repo.
func (t *tx) PutCached(repo string, d digest.Digest, c meta.Cached) error {
	if err := t.write(); err != nil {
		return err
	}
	if err := validRepo(repo); err != nil {
		return err
	}
	if err := validDigest(d); err != nil {
		return err
	}
	rec, err := encode(record.Cached(c))
	if err != nil {
		return err
	}
	_, err = t.exec("record cache record", `INSERT INTO cached_manifests (repo, digest, rec) VALUES ($1, $2, $3)
		ON CONFLICT (repo, digest) DO UPDATE SET rec = EXCLUDED.rec`, repo, d, rec)
	return err
}

// DeleteCached removes the cache record of manifest d in repo.
func (t *tx) DeleteCached(repo string, d digest.Digest) error {
	if err := t.write(); err != nil || !storable(repo, string(d)) {
		return err
	}
	_, err := t.exec(fmt.Sprintf("delete cache record of %s in %s", d, repo),
		"DELETE FROM cached_manifests WHERE repo = $1 AND digest = $2", repo, d)
	return err
}

// CachedManifests walks the cache records of repo in digest order.
func (t *tx) CachedManifests(repo string, fn func(d digest.Digest, c meta.Cached) error) error {
	return walkRecords(t, "cached_manifests", repo, "", func(d digest.Digest, rec record.Cached) error {
		return fn(d, meta.Cached(rec))
	})
}

// TagCheck returns the last check of tag in repo.
func (t *tx) TagCheck(repo, tag string) (meta.TagCheck, bool, error) {
	if err := t.read(); err != nil || !storable(repo, tag) {
		return meta.TagCheck{}, false, err
	}
	var raw []byte
	ok, err := t.get("read tag check", "SELECT rec FROM tag_checks WHERE repo = $1 AND tag = $2", []any{repo, tag}, &raw)
	if !ok || err != nil {
		return meta.TagCheck{}, false, err
	}
	var rec record.TagCheck
	if err := json.Unmarshal(raw, &rec); err != nil {
		return meta.TagCheck{}, false, corrupt("tag_checks", repo+":"+tag, err)
	}
	return meta.TagCheck(rec), true, nil
}

// PutTagCheck records c as the last check of tag in repo.
func (t *tx) PutTagCheck(repo, tag string, c meta.TagCheck) error {
	if err := t.write(); err != nil {
		return err
	}
	if err := validRepo(repo); err != nil {
		return err
	}
	if err := validName("tag", tag); err != nil {
		return err
	}
	rec, err := encode(record.TagCheck(c))
	if err != nil {
		return err
	}
	_, err = t.exec("record tag check", `INSERT INTO tag_checks (repo, tag, rec) VALUES ($1, $2, $3)
		ON CONFLICT (repo, tag) DO UPDATE SET rec = EXCLUDED.rec`, repo, tag, rec)
	return err
}

// DeleteTagCheck removes the check of tag in repo.
func (t *tx) DeleteTagCheck(repo, tag string) error {
	if err := t.write(); err != nil || !storable(repo, tag) {
		return err
	}
	_, err := t.exec(fmt.Sprintf("delete tag check of %s in %s", tag, repo),
		"DELETE FROM tag_checks WHERE repo = $1 AND tag = $2", repo, tag)
	return err
}

// validRule checks a rule name.
func validRule(rule string) error {
	if !keyable(rule) {
		return fmt.Errorf("%w: rule name %q", ErrInvalidKey, rule)
	}
	return nil
}

// SyncedTag returns what rule last delivered of tag in repo.
func (t *tx) SyncedTag(rule, repo, tag string) (meta.SyncedTag, bool, error) {
	if err := t.read(); err != nil || !storable(rule, repo, tag) {
		return meta.SyncedTag{}, false, err
	}
	var raw []byte
	ok, err := t.get("read synced tag", "SELECT rec FROM synced_tags WHERE rule = $1 AND repo = $2 AND tag = $3",
		[]any{rule, repo, tag}, &raw)
	if !ok || err != nil {
		return meta.SyncedTag{}, false, err
	}
	var rec record.SyncedTag
	if err := json.Unmarshal(raw, &rec); err != nil {
		return meta.SyncedTag{}, false, corrupt("synced_tags", rule+" "+repo+":"+tag, err)
	}
	return meta.SyncedTag(rec), true, nil
}

// PutSyncedTag records what rule delivered of tag in repo.
func (t *tx) PutSyncedTag(rule, repo, tag string, s meta.SyncedTag) error {
	if err := t.write(); err != nil {
		return err
	}
	if err := validRule(rule); err != nil {
		return err
	}
	if err := validRepo(repo); err != nil {
		return err
	}
	if err := validName("tag", tag); err != nil {
		return err
	}
	if err := validDigest(s.Digest); err != nil {
		return err
	}
	rec, err := encode(record.SyncedTag(s))
	if err != nil {
		return err
	}
	_, err = t.exec("record synced tag", `INSERT INTO synced_tags (rule, repo, tag, rec) VALUES ($1, $2, $3, $4)
		ON CONFLICT (rule, repo, tag) DO UPDATE SET rec = EXCLUDED.rec`, rule, repo, tag, rec)
	return err
}

// syncedRow is a synced tag record with its key.
type syncedRow struct {
	repo, tag string
	rec       []byte
}

// SyncedTags walks the tag records of rule by repository and tag.
func (t *tx) SyncedTags(rule string, fn func(repo, tag string, s meta.SyncedTag) error) error {
	if !storable(rule) {
		return t.read()
	}
	return walk(t, "walk synced tags of "+rule, func(last *syncedRow) (string, []any) {
		if last == nil {
			return "SELECT repo, tag, rec FROM synced_tags WHERE rule = $1 ORDER BY repo, tag", []any{rule}
		}
		return "SELECT repo, tag, rec FROM synced_tags WHERE rule = $1 AND (repo, tag) > ($2, $3) ORDER BY repo, tag",
			[]any{rule, last.repo, last.tag}
	}, func(r pgx.CollectableRow) (syncedRow, error) {
		var x syncedRow
		err := r.Scan(&x.repo, &x.tag, &x.rec)
		return x, err
	}, func(r syncedRow) error {
		var rec record.SyncedTag
		if err := json.Unmarshal(r.rec, &rec); err != nil {
			return corrupt("synced_tags", rule+" "+r.repo+":"+r.tag, err)
		}
		return fn(r.repo, r.tag, meta.SyncedTag(rec))
	})
}

// SyncRun returns the record of rule's last run.
func (t *tx) SyncRun(rule string) (meta.SyncRun, bool, error) {
	if err := t.read(); err != nil || !storable(rule) {
		return meta.SyncRun{}, false, err
	}
	var raw []byte
	ok, err := t.get("read sync run", "SELECT rec FROM sync_runs WHERE rule = $1", []any{rule}, &raw)
	if !ok || err != nil {
		return meta.SyncRun{}, false, err
	}
	var rec record.SyncRun
	if err := json.Unmarshal(raw, &rec); err != nil {
		return meta.SyncRun{}, false, corrupt("sync_runs", rule, err)
	}
	return meta.SyncRun(rec), true, nil
}

// PutSyncRun records rule's last run.
func (t *tx) PutSyncRun(rule string, r meta.SyncRun) error {
	if err := t.write(); err != nil {
		return err
	}
	if err := validRule(rule); err != nil {
		return err
	}
	rec, err := encode(record.SyncRun(r))
	if err != nil {
		return err
	}
	_, err = t.exec("record sync run of "+rule,
		"INSERT INTO sync_runs (rule, rec) VALUES ($1, $2) ON CONFLICT (rule) DO UPDATE SET rec = EXCLUDED.rec", rule, rec)
	return err
}
