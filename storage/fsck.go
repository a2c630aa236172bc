package storage

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// The kinds of Problem that Check reports. The orphan kinds and those marked
// harmless below are findings, not inconsistencies: a crash at any moment
// can leave them, and the store works around them.
const (
	// ProblemMissing: a blobs/ record whose file is absent or not a
	// regular file.
	ProblemMissing = "missing"
	// ProblemSize: a blob file whose size differs from its record.
	ProblemSize = "size"
	// ProblemCorrupt: a blob file whose content does not hash to its
	// digest, or cannot be read (reported only with VerifyContent).
	ProblemCorrupt = "corrupt"
	// ProblemDanglingLink: a repository blob link with no blobs/ record.
	ProblemDanglingLink = "dangling-link"
	// ProblemDanglingManifest: a repository manifest record with no blobs/
	// record.
	ProblemDanglingManifest = "dangling-manifest"
	// ProblemDanglingTag: a tag naming a digest absent from the
	// repository's manifests.
	ProblemDanglingTag = "dangling-tag"
	// ProblemDanglingReferrer: a referrers entry naming a manifest absent
	// from the repository's manifests.
	ProblemDanglingReferrer = "dangling-referrer"
	// ProblemDanglingUpload: an upload session record whose file is
	// missing. Harmless: a crash while committing an upload (after its file
	// moved into place, before the index commit) leaves one, and such a
	// session simply cannot be resumed until it expires.
	ProblemDanglingUpload = "dangling-upload"
	// ProblemRobotSecret: a robotSecrets/ entry naming no robot, or one
	// that is not that robot's current secret hash, or a robot whose hash
	// is not indexed.
	ProblemRobotSecret = "robot-secret"
	// ProblemIncompleteManifest: a manifest referencing a blob or child
	// manifest the repository no longer holds. Harmless to the index (a
	// blob deleted through the API leaves the same), and never repaired:
	// removing content people may still pull is not fsck's job.
	ProblemIncompleteManifest = "incomplete-manifest"
	// ProblemBadRecord: an index record that cannot be decoded, or a key
	// that cannot be what its bucket holds. Reported, never repaired.
	ProblemBadRecord = "bad-record"

	// OrphanBlob: a file under blobs/ with no record, left by a crash
	// between moving content into place and committing its record.
	OrphanBlob = "orphan-blob"
	// OrphanUpload: a file under uploads/ with no session record.
	OrphanUpload = "orphan-upload"
	// OrphanTemp: anything under tmp/.
	OrphanTemp = "orphan-temp"
)

// CheckOptions choose what Store.Check does beyond checking the index
// against the blob files.
type CheckOptions struct {
	// VerifyContent re-hashes every blob file, streaming it, to detect
	// corruption (bit rot) that leaves the size unchanged.
	VerifyContent bool
	// Repair fixes what can be fixed safely: corrupt and wrong-size blob
	// files go to <data>/quarantine, records of missing blobs and dangling
	// records are deleted, and orphan files are removed.
	Repair bool
}

// Problem is one finding of Check.
type Problem struct {
	// Kind is one of the Problem* or Orphan* constants.
	Kind string `json:"kind"`
	// Digest is the blob or manifest concerned, if any.
	Digest string `json:"digest,omitempty"`
	// Repo is the repository concerned, if any.
	Repo string `json:"repo,omitempty"`
	// Tag is the tag of a dangling-tag.
	Tag string `json:"tag,omitempty"`
	// Subject is the subject digest of a dangling-referrer.
	Subject string `json:"subject,omitempty"`
	// Path is the file concerned, relative to the data directory.
	Path string `json:"path,omitempty"`
	// Detail says what is wrong, for people.
	Detail string `json:"detail,omitempty"`
	// Harmless is set for findings that are not inconsistencies: orphans,
	// dangling uploads and incomplete manifests.
	Harmless bool `json:"harmless"`

	// key is the index key to repair when it is not one of the above:
	// an upload id, or a robot secret hash (kept out of reports).
	key string
	// keep marks an orphan that repair leaves in place: a file that is
	// not a regular file.
	keep bool
}

// String formats the problem on one line.
func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.Kind)
	for _, f := range []struct{ name, v string }{
		{"", p.Digest}, {"repo=", p.Repo}, {"tag=", p.Tag}, {"subject=", p.Subject}, {"path=", p.Path},
	} {
		if f.v != "" {
			b.WriteString(" " + f.name + f.v)
		}
	}
	if p.Detail != "" {
		b.WriteString(": " + p.Detail)
	}
	if p.Harmless {
		b.WriteString(" (harmless)")
	}
	return b.String()
}

// Repair is a fix Check applied to a Problem.
type Repair struct {
	Problem
	// Action says what was done.
	Action string `json:"action"`
}

// CheckReport is what Check found and, with Repair, what it fixed.
type CheckReport struct {
	// VerifyContent and Repair echo the options of the check.
	VerifyContent bool `json:"verifyContent"`
	Repair        bool `json:"repair"`

	// Blobs is the number of blobs/ records checked.
	Blobs int `json:"blobs"`
	// BytesVerified is the number of bytes re-hashed (VerifyContent).
	BytesVerified int64 `json:"bytesVerified"`
	// Repos, Links, Manifests, Tags and Referrers count the repositories
	// and their records.
	Repos     int `json:"repos"`
	Links     int `json:"links"`
	Manifests int `json:"manifests"`
	Tags      int `json:"tags"`
	Referrers int `json:"referrers"`
	// Uploads counts upload session records, Robots robot records.
	Uploads int `json:"uploads"`
	Robots  int `json:"robots"`

	// Problems are the findings about the index and the files it names,
	// in index order; those with Harmless set are not inconsistencies.
	Problems []Problem `json:"problems"`
	// Orphans are files no record names. They are harmless.
	Orphans []Problem `json:"orphans"`
	// Repaired lists the fixes applied (Repair only).
	Repaired []Repair `json:"repaired"`
	// Remaining is what a check run after the repairs still found
	// (Repair only): problems first, then orphans.
	Remaining []Problem `json:"remaining,omitempty"`
}

// Inconsistent returns the number of inconsistencies: problems that are not
// harmless. After a repair it counts those that remain.
func (r *CheckReport) Inconsistent() int {
	list := r.Problems
	if r.Repair {
		list = r.Remaining
	}
	n := 0
	for _, p := range list {
		if !p.Harmless {
			n++
		}
	}
	return n
}

// MarshalJSON encodes the report with its count of inconsistencies.
func (r *CheckReport) MarshalJSON() ([]byte, error) {
	type plain CheckReport
	return json.Marshal(struct {
		*plain
		Inconsistencies int `json:"inconsistencies"`
	}{(*plain)(r), r.Inconsistent()})
}

func (r *CheckReport) add(p Problem) {
	switch p.Kind {
	case OrphanBlob, OrphanUpload, OrphanTemp:
		p.Harmless = true
		r.Orphans = append(r.Orphans, p)
	default:
		r.Problems = append(r.Problems, p)
	}
}

// ErrInUse means another process, normally a running server, holds the
// store's index.
var ErrInUse = errors.New("store is in use by another process")

// OpenOffline opens an existing store for an offline tool such as fsck. It
// never creates a store: dir must hold an index already. A store held by
// another process fails, once opts.OpenTimeout has passed, with ErrInUse.
func OpenOffline(ctx context.Context, dir string, opts Options) (*Store, error) {
	index := filepath.Join(dir, "index.db")
	if _, err := os.Stat(index); err != nil {
		return nil, fmt.Errorf("no Berth store in %s: %w", dir, err)
	}
	s, err := Open(ctx, dir, opts)
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("%w (%w)", ErrInUse, err)
	}
	return s, err
}

// Check checks the index against the blob files and the index's own
// invariants (schema.go), and with opts.Repair fixes what it safely can.
//
// It is for a store opened by a process that is not serving it, such as
// berth fsck: the index's file lock guarantees that no server runs, and the
// check reads the index in long transactions and walks the blob tree. Each
// repair is its own transaction and checks its premise again, so an
// interrupted repair can be run again. A blob that has a record and correct
// content is never removed.
//
// The report is returned even with an error, holding what was done.
func (s *Store) Check(ctx context.Context, opts CheckOptions) (*CheckReport, error) {
	r := newReport(opts)
	if err := s.check(ctx, r, opts.VerifyContent); err != nil {
		return r, err
	}
	if !opts.Repair {
		return r, nil
	}
	if err := s.repair(ctx, r); err != nil {
		return r, err
	}
	// Content was verified (or not) above; what repair changed is the
	// index and the files, which a plain check covers.
	after := newReport(CheckOptions{})
	if err := s.check(ctx, after, false); err != nil {
		return r, fmt.Errorf("check after repair: %w", err)
	}
	r.Remaining = append(append([]Problem{}, after.Problems...), after.Orphans...)
	return r, nil
}

func newReport(opts CheckOptions) *CheckReport {
	return &CheckReport{
		VerifyContent: opts.VerifyContent,
		Repair:        opts.Repair,
		Problems:      []Problem{},
		Orphans:       []Problem{},
		Repaired:      []Repair{},
	}
}

func (s *Store) check(ctx context.Context, r *CheckReport, verify bool) error {
	err := s.db.View(func(tx *bolt.Tx) error {
		if err := s.checkBlobs(ctx, tx, r, verify); err != nil {
			return err
		}
		if err := checkRepos(ctx, tx, r); err != nil {
			return err
		}
		if err := s.checkUploads(tx, r); err != nil {
			return err
		}
		checkRobots(tx, r)
		if err := s.walkBlobs(ctx, tx, r); err != nil {
			return err
		}
		return s.walkUploadsAndTemp(tx, r)
	})
	if err != nil {
		return fmt.Errorf("check store: %w", err)
	}
	return nil
}

// rel is path relative to the data directory, with forward slashes.
func (s *Store) rel(path string) string {
	if r, err := filepath.Rel(s.root, path); err == nil {
		return filepath.ToSlash(r)
	}
	return path
}

// checkBlobs checks each blobs/ record against its file.
func (s *Store) checkBlobs(ctx context.Context, tx *bolt.Tx, r *CheckReport, verify bool) error {
	c := tx.Bucket(bucketBlobs).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if err := ctx.Err(); err != nil {
			return err
		}
		r.Blobs++
		d := digest.Digest(k)
		if err := d.Validate(); err != nil {
			r.add(Problem{Kind: ProblemBadRecord, Digest: string(k), Detail: fmt.Sprintf("blobs/ key is not a digest Berth reads: %v", err)})
			continue
		}
		var rec blobRecord
		if err := decodeRecord(v, &rec); err != nil {
			r.add(Problem{Kind: ProblemBadRecord, Digest: string(d), Detail: "blobs/ record: " + err.Error()})
			continue
		}
		path := s.blobPath(d)
		p := Problem{Digest: string(d), Path: s.rel(path)}
		fi, err := os.Lstat(path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			p.Kind, p.Detail = ProblemMissing, "the blob file is absent"
		case err != nil:
			return fmt.Errorf("stat blob %s: %w", d, err)
		case !fi.Mode().IsRegular():
			p.Kind, p.Detail = ProblemMissing, "the blob file is "+notRegular(fi.Mode().Type())
		case fi.Size() != rec.Size:
			p.Kind, p.Detail = ProblemSize, fmt.Sprintf("the file has %d bytes, the record says %d", fi.Size(), rec.Size)
		case verify:
			got, n, err := hashFile(ctx, path, d.Algorithm())
			r.BytesVerified += n
			switch {
			case ctx.Err() != nil:
				return ctx.Err()
			case errors.Is(err, fs.ErrPermission):
				return fmt.Errorf("verify blob %s: %w", d, err)
			case err != nil:
				p.Kind, p.Detail = ProblemCorrupt, fmt.Sprintf("unreadable after %d bytes: %v", n, err)
			case got != d:
				p.Kind, p.Detail = ProblemCorrupt, "the content hashes to "+string(got)
			}
		}
		if p.Kind != "" {
			r.add(p)
		}
	}
	return nil
}

// hashFile streams the file at path through alg, returning the digest and
// the number of bytes read.
func hashFile(ctx context.Context, path string, alg digest.Algorithm) (digest.Digest, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := alg.Hash()
	n, err := io.Copy(h, contextReader{ctx, f})
	if err != nil {
		return "", n, err
	}
	return digest.NewDigest(alg, h), n, nil
}

func decodeRecord(v []byte, rec any) error {
	if v == nil {
		return errors.New("a bucket where a record belongs")
	}
	if err := json.Unmarshal(v, rec); err != nil {
		return fmt.Errorf("undecodable: %w", err)
	}
	return nil
}

// checkRepos checks every repository's links, manifests, tags and
// referrers against blobs/ and each other.
func checkRepos(ctx context.Context, tx *bolt.Tx, r *CheckReport) error {
	blobs := tx.Bucket(bucketBlobs)
	c := tx.Bucket(bucketRepos).Cursor()
	for name, v := c.First(); name != nil; name, v = c.Next() {
		if err := ctx.Err(); err != nil {
			return err
		}
		repo := string(name)
		if v != nil {
			r.add(Problem{Kind: ProblemBadRecord, Repo: repo, Detail: "repos/ holds a record where a repository bucket belongs"})
			continue
		}
		r.Repos++
		rb := tx.Bucket(bucketRepos).Bucket(name)
		links, manifests := rb.Bucket(bucketLinks), rb.Bucket(bucketManifests)
		has := func(b *bolt.Bucket, k []byte) bool { return b != nil && b.Get(k) != nil }
		if links != nil {
			err := links.ForEach(func(k, _ []byte) error {
				r.Links++
				if blobs.Get(k) == nil {
					r.add(Problem{Kind: ProblemDanglingLink, Repo: repo, Digest: string(k), Detail: "linked into the repository, but the store has no such blob"})
				}
				return nil
			})
			if err != nil {
				return fmt.Errorf("scan links of %s: %w", repo, err)
			}
		}
		if manifests != nil {
			err := manifests.ForEach(func(k, v []byte) error {
				r.Manifests++
				if blobs.Get(k) == nil {
					r.add(Problem{Kind: ProblemDanglingManifest, Repo: repo, Digest: string(k), Detail: "the store has no blob of the manifest's content"})
				}
				var rec manifestRecord
				if err := decodeRecord(v, &rec); err != nil {
					r.add(Problem{Kind: ProblemBadRecord, Repo: repo, Digest: string(k), Detail: "manifests/ record: " + err.Error()})
					return nil
				}
				var absent []string
				for _, ref := range rec.References {
					key := []byte(ref)
					if (!has(links, key) && !has(manifests, key)) || blobs.Get(key) == nil {
						absent = append(absent, string(ref))
					}
				}
				if len(absent) > 0 {
					r.add(Problem{Kind: ProblemIncompleteManifest, Repo: repo, Digest: string(k), Harmless: true,
						Detail: "references content the repository does not hold: " + strings.Join(absent, ", ")})
				}
				return nil
			})
			if err != nil {
				return fmt.Errorf("scan manifests of %s: %w", repo, err)
			}
		}
		if tags := rb.Bucket(bucketTags); tags != nil {
			err := tags.ForEach(func(k, v []byte) error {
				r.Tags++
				switch {
				case v == nil:
					r.add(Problem{Kind: ProblemBadRecord, Repo: repo, Tag: string(k), Detail: "tags/ holds a bucket where a digest belongs"})
				case !has(manifests, v):
					r.add(Problem{Kind: ProblemDanglingTag, Repo: repo, Tag: string(k), Digest: string(v), Detail: "the tag names a manifest the repository does not hold"})
				}
				return nil
			})
			if err != nil {
				return fmt.Errorf("scan tags of %s: %w", repo, err)
			}
		}
		if refs := rb.Bucket(bucketReferrers); refs != nil {
			err := refs.ForEach(func(subject, v []byte) error {
				sb := refs.Bucket(subject)
				if v != nil || sb == nil {
					r.add(Problem{Kind: ProblemBadRecord, Repo: repo, Subject: string(subject), Detail: "referrers/ holds a record where a subject bucket belongs"})
					return nil
				}
				return sb.ForEach(func(k, _ []byte) error {
					r.Referrers++
					if !has(manifests, k) {
						r.add(Problem{Kind: ProblemDanglingReferrer, Repo: repo, Subject: string(subject), Digest: string(k), Detail: "the referrer is not a manifest the repository holds"})
					}
					return nil
				})
			})
			if err != nil {
				return fmt.Errorf("scan referrers of %s: %w", repo, err)
			}
		}
	}
	return nil
}

// validUploadID reports whether id can name a file directly under uploads/.
func validUploadID(id string) bool {
	return id != "" && id != "." && id != ".." && !strings.ContainsAny(id, `/\`) && filepath.Base(id) == id
}

// checkUploads checks each upload session record against its file.
func (s *Store) checkUploads(tx *bolt.Tx, r *CheckReport) error {
	return tx.Bucket(bucketUploads).ForEach(func(k, v []byte) error {
		r.Uploads++
		id := string(k)
		var rec uploadRecord
		if err := decodeRecord(v, &rec); err != nil || !validUploadID(id) {
			detail := "uploads/ key cannot name an upload file"
			if err != nil {
				detail = "uploads/ record: " + err.Error()
			}
			r.add(Problem{Kind: ProblemBadRecord, Detail: detail, key: id})
			return nil
		}
		path := s.uploadPath(id)
		_, err := os.Lstat(path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			r.add(Problem{Kind: ProblemDanglingUpload, Repo: rec.Repo, Path: s.rel(path), Harmless: true, key: id,
				Detail: "the upload session's file is absent (a crash while it was committed); the session cannot be resumed"})
		case err != nil:
			return fmt.Errorf("stat upload %s: %w", id, err)
		}
		return nil
	})
}

// checkRobots checks robotSecrets/ against robots/, both ways.
func checkRobots(tx *bolt.Tx, r *CheckReport) {
	robots, secrets := tx.Bucket(bucketRobots), tx.Bucket(bucketRobotSecrets)
	short := func(hash []byte) string {
		if len(hash) > 12 {
			return string(hash[:12]) + "…"
		}
		return string(hash)
	}
	_ = secrets.ForEach(func(k, v []byte) error {
		var rec robotRecord
		err := decodeRecord(robots.Get(v), &rec)
		switch {
		case robots.Get(v) == nil:
			r.add(Problem{Kind: ProblemRobotSecret, key: string(k),
				Detail: fmt.Sprintf("secret hash %s names robot %q, which does not exist", short(k), v)})
		case err != nil:
			// Reported below, with the robot.
		case rec.Hash != string(k):
			r.add(Problem{Kind: ProblemRobotSecret, key: string(k),
				Detail: fmt.Sprintf("secret hash %s names robot %q, whose secret has another hash", short(k), v)})
		}
		return nil
	})
	_ = robots.ForEach(func(k, v []byte) error {
		r.Robots++
		var rec robotRecord
		if err := decodeRecord(v, &rec); err != nil {
			r.add(Problem{Kind: ProblemBadRecord, Detail: fmt.Sprintf("robots/ record of %q: %v", k, err)})
			return nil
		}
		if rec.Hash == "" {
			r.add(Problem{Kind: ProblemBadRecord, Detail: fmt.Sprintf("robots/ record of %q has no secret hash", k)})
			return nil
		}
		if string(secrets.Get([]byte(rec.Hash))) != string(k) {
			r.add(Problem{Kind: ProblemRobotSecret, key: rec.Hash,
				Detail: fmt.Sprintf("robot %q: its secret hash %s is not indexed, so its secret is refused", k, short([]byte(rec.Hash)))})
		}
		return nil
	})
}

// walkBlobs finds files under blobs/ that no record names. Symbolic links
// are never followed, and files that are not regular are never opened.
func (s *Store) walkBlobs(ctx context.Context, tx *bolt.Tx, r *CheckReport) error {
	blobs := tx.Bucket(bucketBlobs)
	// The trailing separator makes WalkDir start in the directory even if
	// blobs/ itself is a symbolic link to it; below it, none is followed.
	root := filepath.Join(s.root, "blobs") + string(filepath.Separator)
	err := filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		if e.IsDir() {
			return nil
		}
		d, ok := blobFileDigest(root, path)
		if ok && blobs.Get([]byte(d)) != nil {
			return nil // checked against its record already
		}
		p := Problem{Kind: OrphanBlob, Digest: string(d), Path: s.rel(path)}
		if !e.Type().IsRegular() {
			p.Detail, p.keep = notRegular(e.Type())+"; left in place", true
			r.add(p)
			return nil
		}
		size := "?"
		if fi, err := e.Info(); err == nil {
			size = fmt.Sprint(fi.Size())
		}
		if ok {
			p.Detail = size + " bytes with no index record (an interrupted write)"
		} else {
			p.Detail = size + " bytes; not a blob file name"
		}
		r.add(p)
		return nil
	})
	if err != nil {
		return fmt.Errorf("walk blobs: %w", err)
	}
	return nil
}

// notRegular describes a file that is not a regular file. Check never opens
// one, and leaves it in place unless a blob record names its path.
func notRegular(t fs.FileMode) string {
	what := "a special file"
	switch {
	case t&fs.ModeSymlink != 0:
		what = "a symbolic link"
	case t&fs.ModeDir != 0:
		what = "a directory"
	case t&fs.ModeNamedPipe != 0:
		what = "a named pipe"
	case t&fs.ModeSocket != 0:
		what = "a socket"
	case t&fs.ModeDevice != 0:
		what = "a device"
	}
	return "not a regular file but " + what
}

// blobFileDigest returns the digest whose blob path is path, if any.
func blobFileDigest(root, path string) (digest.Digest, bool) {
	rel, err := filepath.Rel(root, path)
	if err != nil {
		return "", false
	}
	parts := strings.Split(filepath.ToSlash(rel), "/")
	if len(parts) != 3 {
		return "", false
	}
	d := digest.Digest(parts[0] + ":" + parts[2])
	if d.Validate() != nil || parts[1] != parts[2][:2] {
		return "", false
	}
	return d, true
}

// walkUploadsAndTemp finds upload files without a session record and
// anything in tmp/.
func (s *Store) walkUploadsAndTemp(tx *bolt.Tx, r *CheckReport) error {
	uploads := tx.Bucket(bucketUploads)
	for _, sub := range []string{"uploads", "tmp"} {
		dir := filepath.Join(s.root, sub)
		entries, err := os.ReadDir(dir)
		if err != nil {
			return fmt.Errorf("read %s: %w", sub, err)
		}
		for _, e := range entries {
			path := filepath.Join(dir, e.Name())
			p := Problem{Kind: OrphanTemp, Path: s.rel(path), Detail: "left by a request cut off by a crash"}
			if sub == "uploads" {
				if uploads.Get([]byte(e.Name())) != nil {
					continue
				}
				p.Kind, p.key, p.Detail = OrphanUpload, e.Name(), "no upload session record"
				if !e.Type().IsRegular() {
					p.Detail, p.keep = notRegular(e.Type())+"; left in place", true
				}
			}
			r.add(p)
		}
	}
	return nil
}

// repair fixes the problems and orphans of r, recording each fix.
func (s *Store) repair(ctx context.Context, r *CheckReport) error {
	// Content first: purging a blob also removes the records that name it,
	// which may settle dangling problems found below.
	order := []string{
		ProblemCorrupt, ProblemSize, ProblemMissing,
		ProblemDanglingManifest, ProblemDanglingLink, ProblemDanglingTag, ProblemDanglingReferrer,
		ProblemDanglingUpload, ProblemRobotSecret,
	}
	for _, kind := range order {
		for _, p := range r.Problems {
			if p.Kind != kind {
				continue
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			action, err := s.repairProblem(p)
			if err != nil {
				return fmt.Errorf("repair %s: %w", p, err)
			}
			if action != "" {
				s.log.InfoContext(ctx, "fsck repaired", "kind", p.Kind, "digest", p.Digest, "repo", p.Repo, "action", action)
				r.Repaired = append(r.Repaired, Repair{Problem: p, Action: action})
			}
		}
	}
	for _, p := range r.Orphans {
		if err := ctx.Err(); err != nil {
			return err
		}
		action, err := s.removeOrphan(p)
		if err != nil {
			return fmt.Errorf("remove %s: %w", p, err)
		}
		if action != "" {
			s.log.InfoContext(ctx, "fsck removed orphan", "kind", p.Kind, "path", p.Path)
			r.Repaired = append(r.Repaired, Repair{Problem: p, Action: action})
		}
	}
	return nil
}

// repairProblem fixes one problem, each in its own transaction that checks
// the problem's premise again. It returns what it did, or "" if nothing
// needed doing any more.
func (s *Store) repairProblem(p Problem) (string, error) {
	d := digest.Digest(p.Digest)
	switch p.Kind {
	case ProblemCorrupt, ProblemSize, ProblemMissing:
		// A corrupt or wrong-size file, or what stands where a missing
		// one belongs, is kept aside rather than deleted.
		moved, err := s.quarantine(d)
		if err != nil {
			return "", err
		}
		var n purged
		err = s.db.Update(func(tx *bolt.Tx) error {
			var err error
			n, err = purgeBlob(tx, d)
			return err
		})
		if err != nil {
			return "", fmt.Errorf("update index: %w", err)
		}
		action := fmt.Sprintf("removed the blob record, %s", n)
		if moved != "" {
			action = fmt.Sprintf("moved the file to %s; %s", s.rel(moved), action)
		}
		return action, nil
	case ProblemDanglingManifest:
		var tags, refs int
		done, err := s.update(func(tx *bolt.Tx) (bool, error) {
			rb := repoBucket(tx, p.Repo)
			if rb == nil || tx.Bucket(bucketBlobs).Get([]byte(d)) != nil || bucketGet(rb, bucketManifests, []byte(d)) == nil {
				return false, nil
			}
			var err error
			tags, refs, err = dropManifest(tx, p.Repo, rb, []byte(d))
			return err == nil, err
		})
		if !done || err != nil {
			return "", err
		}
		return fmt.Sprintf("removed the manifest record, %d tags and %d referrers entries", tags, refs), nil
	case ProblemDanglingLink:
		return s.deleteIf(func(tx *bolt.Tx) (*bolt.Bucket, []byte) {
			rb := repoBucket(tx, p.Repo)
			if rb == nil || tx.Bucket(bucketBlobs).Get([]byte(d)) != nil {
				return nil, nil
			}
			return rb.Bucket(bucketLinks), []byte(d)
		}, "removed the link")
	case ProblemDanglingTag:
		done, err := s.update(func(tx *bolt.Tx) (bool, error) {
			rb := repoBucket(tx, p.Repo)
			if rb == nil || bucketGet(rb, bucketManifests, []byte(d)) != nil || string(bucketGet(rb, bucketTags, []byte(p.Tag))) != p.Digest {
				return false, nil
			}
			if err := rb.Bucket(bucketTags).Delete([]byte(p.Tag)); err != nil {
				return false, fmt.Errorf("delete tag %s: %w", p.Tag, err)
			}
			return true, recordRepair(tx, p.Repo, p.Tag, d)
		})
		if !done || err != nil {
			return "", err
		}
		return "removed the tag", nil
	case ProblemDanglingReferrer:
		done, err := s.update(func(tx *bolt.Tx) (bool, error) {
			rb := repoBucket(tx, p.Repo)
			if rb == nil || bucketGet(rb, bucketManifests, []byte(d)) != nil {
				return false, nil
			}
			refs := rb.Bucket(bucketReferrers)
			if refs == nil {
				return false, nil
			}
			return dropReferrer(refs, []byte(p.Subject), []byte(d))
		})
		if !done || err != nil {
			return "", err
		}
		return "removed the referrers entry", nil
	case ProblemDanglingUpload:
		if _, err := os.Lstat(s.uploadPath(p.key)); !errors.Is(err, fs.ErrNotExist) {
			return "", nil
		}
		return s.deleteIf(func(tx *bolt.Tx) (*bolt.Bucket, []byte) {
			return tx.Bucket(bucketUploads), []byte(p.key)
		}, "removed the upload session record")
	case ProblemRobotSecret:
		return s.repairRobotSecret(p.key)
	}
	return "", nil
}

// update runs fn in a write transaction; fn reports whether it changed
// anything.
func (s *Store) update(fn func(*bolt.Tx) (bool, error)) (bool, error) {
	var done bool
	err := s.db.Update(func(tx *bolt.Tx) error {
		var err error
		done, err = fn(tx)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("update index: %w", err)
	}
	return done, nil
}

// deleteIf deletes the key that find returns, if find returns one that
// exists, and then returns action.
func (s *Store) deleteIf(find func(*bolt.Tx) (*bolt.Bucket, []byte), action string) (string, error) {
	done, err := s.update(func(tx *bolt.Tx) (bool, error) {
		b, k := find(tx)
		if b == nil || b.Get(k) == nil {
			return false, nil
		}
		return true, b.Delete(k)
	})
	if !done || err != nil {
		return "", err
	}
	return action, nil
}

// bucketGet reads key from rb's nested bucket name, tolerating its absence.
func bucketGet(rb *bolt.Bucket, name, key []byte) []byte {
	if b := rb.Bucket(name); b != nil {
		return b.Get(key)
	}
	return nil
}

// purged counts the records removed with a blob.
type purged struct{ links, manifests, tags, referrers int }

func (n purged) String() string {
	return fmt.Sprintf("%d links, %d manifest records, %d tags and %d referrers entries", n.links, n.manifests, n.tags, n.referrers)
}

// purgeBlob deletes the blobs/ record of d and every record that names d:
// its links and, if it is a manifest, its manifest records with their tags
// and referrers entries, in every repository. Manifests that reference d
// are left: they become incomplete.
func purgeBlob(tx *bolt.Tx, d digest.Digest) (purged, error) {
	var n purged
	key := []byte(d)
	if err := tx.Bucket(bucketBlobs).Delete(key); err != nil {
		return n, fmt.Errorf("delete blob record: %w", err)
	}
	repos := tx.Bucket(bucketRepos)
	var names [][]byte
	_ = repos.ForEach(func(k, v []byte) error {
		if v == nil {
			names = append(names, bytes.Clone(k))
		}
		return nil
	})
	for _, name := range names {
		rb := repos.Bucket(name)
		if links := rb.Bucket(bucketLinks); links != nil && links.Get(key) != nil {
			if err := links.Delete(key); err != nil {
				return n, fmt.Errorf("delete link in %s: %w", name, err)
			}
			n.links++
		}
		if bucketGet(rb, bucketManifests, key) != nil {
			tags, refs, err := dropManifest(tx, string(name), rb, key)
			if err != nil {
				return n, fmt.Errorf("delete manifest in %s: %w", name, err)
			}
			n.manifests++
			n.tags += tags
			n.referrers += refs
		}
	}
	return n, nil
}

// dropManifest deletes a manifest record from a repository with every tag
// naming it (recorded in their history as MoveRepair), its entries in referrers/, whatever their subject, and its
// entries in the search index.
func dropManifest(tx *bolt.Tx, repo string, rb *bolt.Bucket, key []byte) (tags, refs int, err error) {
	if err := dropSearchEntries(tx, repo, rb, key); err != nil {
		return 0, 0, err
	}
	if err := rb.Bucket(bucketManifests).Delete(key); err != nil {
		return 0, 0, fmt.Errorf("delete manifest record: %w", err)
	}
	if tb := rb.Bucket(bucketTags); tb != nil {
		var stale [][]byte
		_ = tb.ForEach(func(k, v []byte) error {
			if bytes.Equal(v, key) {
				stale = append(stale, bytes.Clone(k))
			}
			return nil
		})
		for _, k := range stale {
			if err := tb.Delete(k); err != nil {
				return tags, refs, fmt.Errorf("delete tag %s: %w", k, err)
			}
			if err := recordRepair(tx, repo, string(k), digest.Digest(key)); err != nil {
				return tags, refs, err
			}
			tags++
		}
	}
	if rf := rb.Bucket(bucketReferrers); rf != nil {
		var subjects [][]byte
		_ = rf.ForEach(func(k, v []byte) error {
			if sb := rf.Bucket(k); v == nil && sb != nil && sb.Get(key) != nil {
				subjects = append(subjects, bytes.Clone(k))
			}
			return nil
		})
		for _, subj := range subjects {
			if _, err := dropReferrer(rf, subj, key); err != nil {
				return tags, refs, err
			}
			refs++
		}
	}
	return tags, refs, nil
}

// dropReferrer deletes the referrers entry key of subject, and the
// subject's bucket once it is empty.
func dropReferrer(refs *bolt.Bucket, subject, key []byte) (bool, error) {
	sb := refs.Bucket(subject)
	if sb == nil || sb.Get(key) == nil {
		return false, nil
	}
	if err := sb.Delete(key); err != nil {
		return false, fmt.Errorf("delete referrer: %w", err)
	}
	if k, _ := sb.Cursor().First(); k == nil {
		if err := refs.DeleteBucket(subject); err != nil {
			return false, fmt.Errorf("delete referrers of %s: %w", subject, err)
		}
	}
	return true, nil
}

// repairRobotSecret restores the invariant of robotSecrets/ for hash: an
// entry that names no robot, or a robot with another hash, is deleted; a
// robot whose hash has no entry gets it back.
func (s *Store) repairRobotSecret(hash string) (string, error) {
	action := ""
	_, err := s.update(func(tx *bolt.Tx) (bool, error) {
		robots, secrets := tx.Bucket(bucketRobots), tx.Bucket(bucketRobotSecrets)
		key := []byte(hash)
		if name := secrets.Get(key); name != nil {
			var rec robotRecord
			if err := decodeRecord(robots.Get(name), &rec); err == nil && rec.Hash == hash {
				return false, nil // consistent now
			}
			action = "removed the stale secret entry"
			return true, secrets.Delete(key)
		}
		// No entry: find the robot whose hash it is.
		var owner []byte
		_ = robots.ForEach(func(k, v []byte) error {
			var rec robotRecord
			if decodeRecord(v, &rec) == nil && rec.Hash == hash {
				owner = bytes.Clone(k)
			}
			return nil
		})
		if owner == nil {
			return false, nil
		}
		action = fmt.Sprintf("indexed the secret hash of robot %q again", owner)
		return true, secrets.Put(key, owner)
	})
	if err != nil {
		return "", err
	}
	return action, nil
}

// quarantine moves the file of d to <data>/quarantine/<algorithm>-<hex>,
// returning its new path, or "" if there was no file to move.
func (s *Store) quarantine(d digest.Digest) (string, error) {
	src := s.blobPath(d)
	if _, err := os.Lstat(src); errors.Is(err, fs.ErrNotExist) {
		return "", nil // missing, or moved by an interrupted earlier repair
	}
	dir := filepath.Join(s.root, "quarantine")
	if err := s.fs.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create quarantine directory: %w", err)
	}
	dst := filepath.Join(dir, string(d.Algorithm())+"-"+d.Encoded())
	if err := s.fs.Rename(src, dst); err != nil {
		return "", fmt.Errorf("move blob %s to quarantine: %w", d, err)
	}
	for _, sync := range []string{dir, s.root, filepath.Dir(src)} {
		if err := s.fs.SyncDir(sync); err != nil {
			return "", fmt.Errorf("sync %s: %w", sync, err)
		}
	}
	return dst, nil
}

// removeOrphan removes an orphan file after checking, in the index, that
// it is still one. Files that are not regular are left in place.
func (s *Store) removeOrphan(p Problem) (string, error) {
	if p.keep {
		return "", nil
	}
	path := filepath.Join(s.root, filepath.FromSlash(p.Path))
	switch p.Kind {
	case OrphanBlob, OrphanUpload:
		var recorded bool
		err := s.db.View(func(tx *bolt.Tx) error {
			if p.Kind == OrphanBlob {
				recorded = p.Digest != "" && tx.Bucket(bucketBlobs).Get([]byte(p.Digest)) != nil
			} else {
				recorded = tx.Bucket(bucketUploads).Get([]byte(p.key)) != nil
			}
			return nil
		})
		if err != nil {
			return "", fmt.Errorf("read index: %w", err)
		}
		if recorded {
			return "", nil
		}
		if err := s.removeFile(path); err != nil {
			return "", err
		}
	case OrphanTemp:
		if err := os.RemoveAll(path); err != nil {
			return "", fmt.Errorf("remove %s: %w", p.Path, err)
		}
	default:
		return "", nil
	}
	return "removed the file", nil
}
