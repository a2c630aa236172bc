package gc_test

import (
	"context"
	"sync"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/meta"
)

// watchedIndex is a meta.Store that counts what the transactions of its
// callers do, apart for read-only and read-write transactions, and can
// call a hook before each method of a read-write transaction: to pause
// it, or to fail it.
type watchedIndex struct {
	meta.Store
	mu sync.Mutex
	// calls counts method calls, and reads the records they read (one
	// per point lookup, one per record a walk visits), by phase.
	calls map[phase]map[string]int
	reads map[phase]int
	// hook, when set, runs before each method of a read-write
	// transaction, without the lock; an error it returns is the method's.
	hook func(method, repo string, d digest.Digest) error
	// onLock, when set, runs before LockDigests.
	onLock func(ds []digest.Digest)
}

type phase bool

const (
	inView   phase = false
	inUpdate phase = true
)

func watch(s meta.Store) *watchedIndex {
	return &watchedIndex{Store: s, calls: map[phase]map[string]int{inView: {}, inUpdate: {}}, reads: map[phase]int{}}
}

// reset forgets the counts.
func (w *watchedIndex) reset() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.calls = map[phase]map[string]int{inView: {}, inUpdate: {}}
	w.reads = map[phase]int{}
}

// count returns the calls of method in phase p.
func (w *watchedIndex) count(p phase, method string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.calls[p][method]
}

func (w *watchedIndex) setHook(fn func(method, repo string, d digest.Digest) error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.hook = fn
}

func (w *watchedIndex) setOnLock(fn func(ds []digest.Digest)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.onLock = fn
}

func (w *watchedIndex) View(ctx context.Context, fn func(meta.Tx) error) error {
	return w.Store.View(ctx, func(tx meta.Tx) error { return fn(&watchedTx{Tx: tx, w: w, p: inView}) })
}

func (w *watchedIndex) Update(ctx context.Context, fn func(meta.Tx) error) error {
	return w.Store.Update(ctx, func(tx meta.Tx) error { return fn(&watchedTx{Tx: tx, w: w, p: inUpdate}) })
}

func (w *watchedIndex) LockDigests(ctx context.Context, ds ...digest.Digest) (func(), error) {
	w.mu.Lock()
	on := w.onLock
	w.mu.Unlock()
	if on != nil {
		on(ds)
	}
	return w.Store.LockDigests(ctx, ds...)
}

// watchedTx counts the calls of one transaction.
type watchedTx struct {
	meta.Tx
	w *watchedIndex
	p phase
}

// note counts a call of method that reads one record (a point lookup or
// a change) and runs the hook.
func (t *watchedTx) note(method, repo string, d digest.Digest) error {
	t.w.mu.Lock()
	t.w.calls[t.p][method]++
	t.w.reads[t.p]++
	hook := t.w.hook
	t.w.mu.Unlock()
	if hook != nil && t.p == inUpdate {
		return hook(method, repo, d)
	}
	return nil
}

// visit counts one record a walk visits.
func (t *watchedTx) visit() {
	t.w.mu.Lock()
	t.w.reads[t.p]++
	t.w.mu.Unlock()
}

func (t *watchedTx) Blob(d digest.Digest) (meta.Blob, bool, error) {
	if err := t.note("Blob", "", d); err != nil {
		return meta.Blob{}, false, err
	}
	return t.Tx.Blob(d)
}

func (t *watchedTx) PutBlob(d digest.Digest, b meta.Blob) error {
	if err := t.note("PutBlob", "", d); err != nil {
		return err
	}
	return t.Tx.PutBlob(d, b)
}

func (t *watchedTx) DeleteBlob(d digest.Digest) error {
	if err := t.note("DeleteBlob", "", d); err != nil {
		return err
	}
	return t.Tx.DeleteBlob(d)
}

func (t *watchedTx) Blobs(fn func(digest.Digest, meta.Blob) error) error {
	if err := t.note("Blobs", "", ""); err != nil {
		return err
	}
	return t.Tx.Blobs(func(d digest.Digest, b meta.Blob) error { t.visit(); return fn(d, b) })
}

func (t *watchedTx) Uses(d digest.Digest, repo string, fn func(meta.Use) error) error {
	if err := t.note("Uses", repo, d); err != nil {
		return err
	}
	return t.Tx.Uses(d, repo, func(u meta.Use) error { t.visit(); return fn(u) })
}

func (t *watchedTx) Repository(repo string) (bool, error) {
	if err := t.note("Repository", repo, ""); err != nil {
		return false, err
	}
	return t.Tx.Repository(repo)
}

func (t *watchedTx) Repositories(after string, fn func(string) error) error {
	if err := t.note("Repositories", "", ""); err != nil {
		return err
	}
	return t.Tx.Repositories(after, func(r string) error { t.visit(); return fn(r) })
}

func (t *watchedTx) DeleteRepository(repo string) (bool, error) {
	if err := t.note("DeleteRepository", repo, ""); err != nil {
		return false, err
	}
	return t.Tx.DeleteRepository(repo)
}

func (t *watchedTx) Link(repo string, d digest.Digest) (meta.Link, bool, error) {
	if err := t.note("Link", repo, d); err != nil {
		return meta.Link{}, false, err
	}
	return t.Tx.Link(repo, d)
}

func (t *watchedTx) PutLink(repo string, d digest.Digest, l meta.Link) error {
	if err := t.note("PutLink", repo, d); err != nil {
		return err
	}
	return t.Tx.PutLink(repo, d, l)
}

func (t *watchedTx) DeleteLink(repo string, d digest.Digest) error {
	if err := t.note("DeleteLink", repo, d); err != nil {
		return err
	}
	return t.Tx.DeleteLink(repo, d)
}

func (t *watchedTx) Links(repo string, fn func(digest.Digest, meta.Link) error) error {
	if err := t.note("Links", repo, ""); err != nil {
		return err
	}
	return t.Tx.Links(repo, func(d digest.Digest, l meta.Link) error { t.visit(); return fn(d, l) })
}

func (t *watchedTx) Manifest(repo string, d digest.Digest) (meta.Manifest, bool, error) {
	if err := t.note("Manifest", repo, d); err != nil {
		return meta.Manifest{}, false, err
	}
	return t.Tx.Manifest(repo, d)
}

func (t *watchedTx) PutManifest(repo string, d digest.Digest, m meta.Manifest) error {
	if err := t.note("PutManifest", repo, d); err != nil {
		return err
	}
	return t.Tx.PutManifest(repo, d, m)
}

func (t *watchedTx) DeleteManifest(repo string, d digest.Digest) error {
	if err := t.note("DeleteManifest", repo, d); err != nil {
		return err
	}
	return t.Tx.DeleteManifest(repo, d)
}

func (t *watchedTx) Manifests(repo string, after digest.Digest, fn func(digest.Digest, meta.Manifest) error) error {
	if err := t.note("Manifests", repo, ""); err != nil {
		return err
	}
	return t.Tx.Manifests(repo, after, func(d digest.Digest, m meta.Manifest) error { t.visit(); return fn(d, m) })
}

func (t *watchedTx) Referrers(repo string, subject digest.Digest, fn func(ocispec.Descriptor) error) error {
	if err := t.note("Referrers", repo, subject); err != nil {
		return err
	}
	return t.Tx.Referrers(repo, subject, func(desc ocispec.Descriptor) error { t.visit(); return fn(desc) })
}

func (t *watchedTx) Tag(repo, tag string) (digest.Digest, bool, error) {
	if err := t.note("Tag", repo, ""); err != nil {
		return "", false, err
	}
	return t.Tx.Tag(repo, tag)
}

func (t *watchedTx) SetTag(repo, tag string, d digest.Digest) error {
	if err := t.note("SetTag", repo, d); err != nil {
		return err
	}
	return t.Tx.SetTag(repo, tag, d)
}

func (t *watchedTx) DeleteTag(repo, tag string) error {
	if err := t.note("DeleteTag", repo, ""); err != nil {
		return err
	}
	return t.Tx.DeleteTag(repo, tag)
}

func (t *watchedTx) Tags(repo, after string, fn func(string, digest.Digest) error) error {
	if err := t.note("Tags", repo, ""); err != nil {
		return err
	}
	return t.Tx.Tags(repo, after, func(tag string, d digest.Digest) error { t.visit(); return fn(tag, d) })
}

func (t *watchedTx) TagsOf(repo string, d digest.Digest) ([]string, error) {
	if err := t.note("TagsOf", repo, d); err != nil {
		return nil, err
	}
	tags, err := t.Tx.TagsOf(repo, d)
	for range tags {
		t.visit()
	}
	return tags, err
}

func (t *watchedTx) AppendMove(repo, tag string, m meta.Move) (meta.Move, error) {
	if err := t.note("AppendMove", repo, m.Digest); err != nil {
		return meta.Move{}, err
	}
	return t.Tx.AppendMove(repo, tag, m)
}

func (t *watchedTx) Moves(repo, tag string, before uint64, fn func(meta.Move) error) error {
	if err := t.note("Moves", repo, ""); err != nil {
		return err
	}
	return t.Tx.Moves(repo, tag, before, func(m meta.Move) error { t.visit(); return fn(m) })
}

func (t *watchedTx) FindPair(kind meta.PairKind, key, value, from string, after digest.Digest, fn func(string, digest.Digest) error) error {
	if err := t.note("FindPair", from, after); err != nil {
		return err
	}
	return t.Tx.FindPair(kind, key, value, from, after, func(r string, d digest.Digest) error { t.visit(); return fn(r, d) })
}

func (t *watchedTx) Upload(id string) (meta.Upload, bool, error) {
	if err := t.note("Upload", "", ""); err != nil {
		return meta.Upload{}, false, err
	}
	return t.Tx.Upload(id)
}

func (t *watchedTx) PutUpload(id string, u meta.Upload) error {
	if err := t.note("PutUpload", u.Repo, ""); err != nil {
		return err
	}
	return t.Tx.PutUpload(id, u)
}

func (t *watchedTx) DeleteUpload(id string) error {
	if err := t.note("DeleteUpload", "", ""); err != nil {
		return err
	}
	return t.Tx.DeleteUpload(id)
}

func (t *watchedTx) Uploads(fn func(string, meta.Upload) error) error {
	if err := t.note("Uploads", "", ""); err != nil {
		return err
	}
	return t.Tx.Uploads(func(id string, u meta.Upload) error { t.visit(); return fn(id, u) })
}

func (t *watchedTx) Robot(name string) (meta.Robot, bool, error) {
	if err := t.note("Robot", "", ""); err != nil {
		return meta.Robot{}, false, err
	}
	return t.Tx.Robot(name)
}

func (t *watchedTx) RobotBySecret(hash string) (string, bool, error) {
	if err := t.note("RobotBySecret", "", ""); err != nil {
		return "", false, err
	}
	return t.Tx.RobotBySecret(hash)
}

func (t *watchedTx) PutRobot(r meta.Robot) error {
	if err := t.note("PutRobot", "", ""); err != nil {
		return err
	}
	return t.Tx.PutRobot(r)
}

func (t *watchedTx) Robots(fn func(meta.Robot) error) error {
	if err := t.note("Robots", "", ""); err != nil {
		return err
	}
	return t.Tx.Robots(func(r meta.Robot) error { t.visit(); return fn(r) })
}

// walks are the methods that read more than a bounded number of records.
func walks() []string {
	return []string{"Blobs", "Repositories", "Links", "Manifests", "Tags", "Uploads", "Robots", "FindPair", "Referrers", "Moves"}
}

// recorder is a storage.Sink that keeps the events it receives.
type recorder struct {
	mu     sync.Mutex
	events []storage.Event
}

func (r *recorder) Publish(_ context.Context, e storage.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

// take returns the events received since the last take.
func (r *recorder) take() []storage.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.events
	r.events = nil
	return out
}
