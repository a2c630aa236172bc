package bolt

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/meta"
	"github.com/berth-registry/berth/storage/meta/internal/record"
)

// pullPrefix is the prefix of the pulls/ keys of repo, of d in it when d
// is set.
func pullPrefix(repo string, d digest.Digest) []byte {
	b := make([]byte, 0, len(repo)+len(d)+2)
	b = append(b, repo...)
	b = append(b, 0)
	if d != "" {
		b = append(b, d...)
		b = append(b, 0)
	}
	return b
}

// pullKey is the pulls/ key of the pulls of d in repo by kind:name.
func pullKey(repo string, d digest.Digest, kind, name string) []byte {
	b := pullPrefix(repo, d)
	b = append(b, kind...)
	b = append(b, 0)
	return append(b, name...)
}

// parsePullKey splits a pulls/ key; ok is false for a key PutPull cannot
// have made.
func parsePullKey(k []byte) (repo string, d digest.Digest, kind, name string, ok bool) {
	parts := bytes.SplitN(k, []byte{0}, 4)
	if len(parts) != 4 || len(parts[0]) == 0 || len(parts[1]) == 0 || len(parts[2]) == 0 || bytes.IndexByte(parts[3], 0) >= 0 {
		return "", "", "", "", false
	}
	return string(parts[0]), digest.Digest(parts[1]), string(parts[2]), string(parts[3]), true
}

// PutPull records p under its repository, digest and identity, unless the
// record there is later.
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
	if !keyable(p.Actor.Kind) || strings.IndexByte(p.Actor.Name, 0) >= 0 {
		return fmt.Errorf("%w: pull by %q:%q", ErrInvalidKey, p.Actor.Kind, p.Actor.Name)
	}
	b := t.btx.Bucket(bucketPulls)
	key := pullKey(p.Repo, p.Digest, p.Actor.Kind, p.Actor.Name)
	var old record.Pull
	// A record that does not decode is replaced.
	if ok, err := getJSON(b, "pulls", key, &old); err == nil && ok && old.Time.After(p.Time) {
		return nil
	}
	return putJSON(b, key, record.Pull{Time: p.Time, Address: p.Actor.Address})
}

// Pulls walks the pulls/ entries of repo, of d when it is set.
func (t *tx) Pulls(repo string, d digest.Digest, fn func(p meta.Pull) error) error {
	if err := t.read(); err != nil {
		return err
	}
	if !keyable(repo) || (d != "" && !keyable(string(d))) {
		return nil
	}
	prefix := pullPrefix(repo, d)
	return t.walk(t.btx.Bucket(bucketPulls), prefix, false, prefix, func(k, v []byte) error {
		r, dg, kind, name, ok := parsePullKey(k)
		if !ok || r != repo {
			return corrupt("pulls", k, fmt.Errorf("not a pull key"))
		}
		var rec record.Pull
		if err := decode(v, &rec); err != nil {
			return corrupt("pulls", k, err)
		}
		return fn(meta.Pull{Repo: r, Digest: dg, Actor: meta.Actor{Kind: kind, Name: name, Address: rec.Address}, Time: rec.Time})
	})
}

// HistoryTags walks the tag buckets of history/<repo>/.
func (t *tx) HistoryTags(repo, after string, fn func(tag string) error) error {
	if err := t.read(); err != nil {
		return err
	}
	if !keyable(repo) {
		return nil
	}
	rh := t.btx.Bucket(bucketHistory).Bucket([]byte(repo))
	var seek []byte
	if after != "" {
		seek = []byte(after)
	}
	return t.walk(rh, seek, true, nil, func(k, v []byte) error {
		if v != nil {
			return corrupt("history/"+repo, k, fmt.Errorf("a record where a tag's history bucket belongs"))
		}
		return fn(string(k))
	})
}
