package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/meta"
	"github.com/berth-registry/berth/storage/meta/internal/record"
)

// The kinds of meta.Finding that Check reports. What the database
// enforces (tags by digest, an index; robot secrets, a unique column)
// cannot be found wrong, and is not checked.
const (
	// FindingDanglingReferrer: a manifest whose subject column differs
	// from its record's subject, so that it is listed among the referrers
	// of a manifest it does not refer to, or missing from those of the
	// one it does.
	FindingDanglingReferrer = "dangling-referrer"
	// FindingBadRecord: a record that does not decode, or a key that
	// cannot be what its column holds (a digest that is not one). Never
	// repaired.
	FindingBadRecord = "bad-record"
	// FindingSearchIndex: a search_pairs row missing for, or not made
	// from, its manifest's record.
	FindingSearchIndex = "search-index"
	// FindingUseIndex: a manifest_refs row missing for, or not made from,
	// its manifest's record.
	FindingUseIndex = "use-index"
)

// checkPage is the number of rows Check reads per fetch.
const checkPage = 256

// repairBatch bounds the manifests rebuilt in one transaction.
const repairBatch = 256

// Check checks what the database cannot enforce: that every record
// decodes and every digest key is a digest, and that the derived rows of
// each manifest (search_pairs, manifest_refs) are exactly those its record
// makes. It reads one snapshot (REPEATABLE READ, READ ONLY) through
// cursors, a page at a time. With repair it rebuilds the derived rows of
// each manifest found wrong from its record, a batch of manifests per
// transaction, each reading the record again; records that do not decode
// are only reported. report is called once per finding, after any repair.
func (s *Store) Check(ctx context.Context, repair bool, report func(meta.Finding)) error {
	var found []meta.Finding
	err := s.View(ctx, func(mt meta.Tx) error {
		c := &checker{t: mt.(*tx), add: func(f meta.Finding) { found = append(found, f) }}
		return c.run()
	})
	if err != nil {
		err = fmt.Errorf("check index: %w", err)
	}
	if err == nil && repair {
		err = s.repair(ctx, found)
	}
	for _, f := range found {
		report(f)
	}
	return err
}

// checker reads one snapshot of the index.
type checker struct {
	t   *tx
	add func(meta.Finding)
	n   int // cursors declared
}

func (c *checker) run() error {
	if err := c.records(); err != nil {
		return err
	}
	return c.derived()
}

// cursor runs sql as a cursor of the snapshot and calls fn for each page
// of rows, scanned by scan.
func cursor[T any](c *checker, sql string, scan func(pgx.CollectableRow) (T, error), fn func([]T) error) error {
	c.n++
	name := fmt.Sprintf("berth_check_%d", c.n)
	if _, err := c.t.execAlone("check: open cursor", "DECLARE "+name+" NO SCROLL CURSOR FOR "+sql); err != nil {
		return err
	}
	for {
		rows, err := c.t.conn.query(c.t.ctx, fmt.Sprintf("FETCH %d FROM %s", checkPage, name))
		if err != nil {
			return fmt.Errorf("check: %w", c.t.fail(err))
		}
		page, err := pgx.CollectRows(rows, scan)
		if err != nil {
			return fmt.Errorf("check: %w", c.t.fail(err))
		}
		if len(page) > 0 {
			if err := fn(page); err != nil {
				return err
			}
		}
		if len(page) < checkPage {
			_, err := c.t.execAlone("check: close cursor", "CLOSE "+name)
			return err
		}
	}
}

// table is a table of records, for the check of their encoding.
type table struct {
	name string
	// key is the SQL of the row's key, for people; digest, if set, the
	// column that must hold a digest; repo, the repository column.
	key, digest, repo string
	// rec is the record type the rec column decodes into.
	rec func() any
}

var recordTables = []table{
	{"blobs", "digest", "digest", "", func() any { return &record.Blob{} }},
	{"links", "repo || '@' || digest", "digest", "repo", func() any { return &record.Link{} }},
	{"manifests", "repo || '@' || digest", "digest", "repo", func() any { return &record.Manifest{} }},
	{"tag_moves", "repo || ':' || tag || '#' || seq", "", "repo", func() any { return &meta.Move{} }},
	{"uploads", "id", "", "", func() any { return &record.Upload{} }},
	{"robots", "name", "", "", func() any { return &robotRecord{} }},
	{"pulls", "repo || '@' || digest || ' ' || actor_kind || ':' || actor_name", "digest", "repo", func() any { return &record.Pull{} }},
	{"cached_manifests", "repo || '@' || digest", "digest", "repo", func() any { return &record.Cached{} }},
	{"tag_checks", "repo || ':' || tag", "", "repo", func() any { return &record.TagCheck{} }},
	{"synced_tags", "rule || ' ' || repo || ':' || tag", "", "repo", func() any { return &record.SyncedTag{} }},
	{"sync_runs", "rule", "", "", func() any { return &record.SyncRun{} }},
	{"deliveries", "endpoint || ' ' || key || ' #' || seq", "", "", func() any { return &record.Delivery{} }},
	{"dead_letters", "seq::text", "", "", func() any { return &record.Delivery{} }},
}

// recordRow is a row of a record table, as the check reads it.
type recordRow struct {
	key, repo, digest string
	rec               []byte
}

// records reports every record that does not decode and every digest key
// that is not a digest, and every tag naming no digest.
func (c *checker) records() error {
	for _, tb := range recordTables {
		repo, dg := "''", "''"
		if tb.repo != "" {
			repo = tb.repo
		}
		if tb.digest != "" {
			dg = tb.digest
		}
		sql := fmt.Sprintf("SELECT %s, %s, %s, rec::text FROM %s", tb.key, repo, dg, tb.name)
		err := cursor(c, sql, func(r pgx.CollectableRow) (recordRow, error) {
			var x recordRow
			err := r.Scan(&x.key, &x.repo, &x.digest, &x.rec)
			return x, err
		}, func(page []recordRow) error {
			for _, r := range page {
				if tb.digest != "" {
					if err := digest.Digest(r.digest).Validate(); err != nil {
						c.add(meta.Finding{Kind: FindingBadRecord, Repo: r.repo, Digest: r.digest,
							Detail: fmt.Sprintf("%s %q: not a digest: %v", tb.name, r.key, err)})
						continue
					}
				}
				if err := json.Unmarshal(r.rec, tb.rec()); err != nil {
					c.add(meta.Finding{Kind: FindingBadRecord, Repo: r.repo, Digest: r.digest,
						Detail: fmt.Sprintf("%s %q: record does not decode: %v", tb.name, r.key, err)})
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return cursor(c, "SELECT repo, tag, digest FROM tags", func(r pgx.CollectableRow) ([3]string, error) {
		var x [3]string
		err := r.Scan(&x[0], &x[1], &x[2])
		return x, err
	}, func(page [][3]string) error {
		for _, r := range page {
			if err := digest.Digest(r[2]).Validate(); err != nil {
				c.add(meta.Finding{Kind: FindingBadRecord, Repo: r[0], Tag: r[1], Digest: r[2],
					Detail: fmt.Sprintf("tag names %q, not a digest: %v", r[2], err)})
			}
		}
		return nil
	})
}

// manifestRow is a manifest as the check of derived rows reads it.
type manifestRow struct {
	repo, digest string
	subject      *string
	rec          []byte
}

// derived compares the derived rows of each manifest with those its record
// makes, a page of manifests at a time: their derived rows are one range
// of each derived table's index by manifest.
func (c *checker) derived() error {
	return cursor(c, "SELECT repo, digest, subject, rec::text FROM manifests ORDER BY repo, digest",
		func(r pgx.CollectableRow) (manifestRow, error) {
			var x manifestRow
			err := r.Scan(&x.repo, &x.digest, &x.subject, &x.rec)
			return x, err
		}, c.derivedPage)
}

// manifestKey names a manifest of a repository.
type manifestKey struct{ repo, digest string }

func (c *checker) derivedPage(page []manifestRow) error {
	first, last := page[0], page[len(page)-1]
	pairs := map[manifestKey]map[string]bool{}
	refs := map[manifestKey]map[string]bool{}
	read := func(what, sql string, into map[manifestKey]map[string]bool) error {
		rows, err := c.t.conn.query(c.t.ctx, sql, first.repo, first.digest, last.repo, last.digest)
		if err != nil {
			return fmt.Errorf("check: read %s: %w", what, c.t.fail(err))
		}
		var k manifestKey
		var a, b, v string
		_, err = pgx.ForEachRow(rows, []any{&k.repo, &k.digest, &a, &b, &v}, func() error {
			if into[k] == nil {
				into[k] = map[string]bool{}
			}
			// Text holds no NUL byte: it joins the parts unambiguously.
			into[k][a+"\x00"+b+"\x00"+v] = true
			return nil
		})
		if err != nil {
			return fmt.Errorf("check: read %s: %w", what, c.t.fail(err))
		}
		return nil
	}
	const inRange = " WHERE (repo, %[1]s) >= ($1, $2) AND (repo, %[1]s) <= ($3, $4)"
	if err := read("search pairs", "SELECT repo, digest, kind, key, value FROM search_pairs"+
		fmt.Sprintf(inRange, "digest"), pairs); err != nil {
		return err
	}
	if err := read("manifest references", "SELECT repo, manifest, ref, '', '' FROM manifest_refs"+
		fmt.Sprintf(inRange, "manifest"), refs); err != nil {
		return err
	}
	for _, m := range page {
		var rec record.Manifest
		if err := json.Unmarshal(m.rec, &rec); err != nil {
			continue // reported as a bad record; its rows cannot be judged
		}
		k := manifestKey{m.repo, m.digest}
		if want, got := subjectOf(&rec), m.subject; (want == nil) != (got == nil) || (want != nil && *want != *got) {
			f := meta.Finding{Kind: FindingDanglingReferrer, Repo: m.repo, Digest: m.digest}
			switch {
			case got == nil:
				f.Subject, f.Detail = *want, "the manifest is missing from the referrers of its subject"
			case want == nil:
				f.Subject, f.Detail = *got, "the manifest is listed as a referrer of "+*got+", but its record has no subject"
			default:
				f.Subject, f.Detail = *got, "the manifest is listed as a referrer of "+*got+", but its record's subject is "+*want
			}
			c.add(f)
		}
		want := map[string]bool{}
		kinds, keys, values := pairsOf(&rec)
		for i := range kinds {
			want[kinds[i]+"\x00"+keys[i]+"\x00"+values[i]] = true
		}
		c.compare(FindingSearchIndex, k, want, pairs[k], func(e string) string {
			kind, kv, _ := strings.Cut(e, "\x00")
			key, value, _ := strings.Cut(kv, "\x00")
			what := "annotation"
			if kind == string(rune(meta.Label)) {
				what = "label"
			}
			return fmt.Sprintf("search entry for %s %s=%s", what, key, value)
		})
		want = map[string]bool{}
		for _, r := range refsOf(&rec) {
			want[r+"\x00\x00"] = true
		}
		c.compare(FindingUseIndex, k, want, refs[k], func(e string) string {
			return "use entry for the reference to " + strings.TrimSuffix(e, "\x00\x00")
		})
	}
	return nil
}

// compare reports the entries of want missing from got, and those of got
// not in want, in byte order.
func (c *checker) compare(kind string, k manifestKey, want, got map[string]bool, describe func(string) string) {
	for _, e := range slices.Sorted(maps.Keys(want)) {
		if !got[e] {
			c.add(meta.Finding{Kind: kind, Repo: k.repo, Digest: k.digest,
				Detail: describe(e) + " is missing: the manifest's record has it"})
		}
	}
	for _, e := range slices.Sorted(maps.Keys(got)) {
		if !want[e] {
			c.add(meta.Finding{Kind: kind, Repo: k.repo, Digest: k.digest,
				Detail: describe(e) + " is stale: the manifest's record does not make it"})
		}
	}
}

// repair rebuilds the derived rows of every manifest found wrong from its
// current record, and says so in the findings.
func (s *Store) repair(ctx context.Context, found []meta.Finding) error {
	var todo []manifestKey
	seen := map[manifestKey]bool{}
	for _, f := range found {
		k := manifestKey{f.Repo, f.Digest}
		if derivedKind(f.Kind) && !seen[k] {
			seen[k] = true
			todo = append(todo, k)
		}
	}
	done := map[manifestKey]string{}
	for len(todo) > 0 {
		batch := todo[:min(repairBatch, len(todo))]
		todo = todo[len(batch):]
		actions := map[manifestKey]string{}
		err := s.Update(ctx, func(mt meta.Tx) error {
			t := mt.(*tx)
			clear(actions)
			for _, k := range batch {
				a, err := t.rebuild(k)
				if err != nil {
					return fmt.Errorf("repair derived rows of %s@%s: %w", k.repo, k.digest, err)
				}
				actions[k] = a
			}
			return nil
		})
		if err != nil {
			return err
		}
		for k, a := range actions {
			done[k] = a
			if a != "" {
				s.log.InfoContext(ctx, "index repaired", "repo", k.repo, "digest", k.digest, "action", a)
			}
		}
	}
	for i := range found {
		if a, ok := done[manifestKey{found[i].Repo, found[i].Digest}]; ok && derivedKind(found[i].Kind) {
			found[i].Repaired = a
		}
	}
	return nil
}

// derivedKind reports whether findings of kind are about what rebuild
// makes again.
func derivedKind(kind string) bool {
	return kind == FindingSearchIndex || kind == FindingUseIndex || kind == FindingDanglingReferrer
}

// rebuild replaces the derived rows of manifest k with those its record
// makes, and says what it did: nothing if the manifest is gone or its
// record does not decode.
func (t *tx) rebuild(k manifestKey) (string, error) {
	var raw []byte
	ok, err := t.get("read manifest record", "SELECT rec::text FROM manifests WHERE repo = $1 AND digest = $2",
		[]any{k.repo, k.digest}, &raw)
	if !ok || err != nil {
		return "", err
	}
	var rec record.Manifest
	if json.Unmarshal(raw, &rec) != nil {
		return "", nil
	}
	b := &pgx.Batch{}
	b.Queue("UPDATE manifests SET subject = $3 WHERE repo = $1 AND digest = $2", k.repo, k.digest, subjectOf(&rec))
	b.Queue("DELETE FROM search_pairs WHERE repo = $1 AND digest = $2", k.repo, k.digest)
	b.Queue("DELETE FROM manifest_refs WHERE repo = $1 AND manifest = $2", k.repo, k.digest)
	queueDerived(b, k.repo, digest.Digest(k.digest), &rec)
	if err := t.batch("rebuild derived rows", b); err != nil {
		return "", err
	}
	return "rebuilt the manifest's subject, search and use entries from its record", nil
}
