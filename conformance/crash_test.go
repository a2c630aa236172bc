package conformance_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-registry/berth/conformance/internal/berthtest"
)

// The crash test (issue 6, item 1): berth is killed with SIGKILL at random
// moments while pushes run, and restarted on the same data each time. After
// every restart `berth fsck` must find no inconsistency, and everything a
// push was acknowledged for must read back intact.
const (
	crashRounds  = 20 // SIGKILLs per run
	crashWorkers = 6  // concurrent pushers per round
	crashRepos   = 4

	crashMinBlob = 1 << 10
	crashMaxBlob = 2 << 20

	// How long the pushers run before the kill, drawn uniformly.
	crashMinRun = 50 * time.Millisecond
	crashMaxRun = 400 * time.Millisecond

	// Blobs verified after a restart: every blob acknowledged since the
	// previous check, and older ones sampled up to this many (all of them
	// after the last round).
	crashSampleBlobs = 200
	// fsck re-hashes all content on every crashVerifyEvery-th round.
	crashVerifyEvery = 5
	crashVerifiers   = 4

	crashRequestTimeout = 30 * time.Second
	crashWorkersTimeout = 60 * time.Second
	crashFsckTimeout    = 2 * time.Minute

	// crashSeedEnv reproduces a run: BERTH_CRASH_SEED=<seed logged>.
	crashSeedEnv = "BERTH_CRASH_SEED"

	crashManifestType = "application/vnd.oci.image.manifest.v1+json"
)

// crashTagNames are the tags of every repository: manifests are pushed
// under them and they are moved between acknowledged manifests.
var crashTagNames = []string{"latest", "stable", "edge", "v1", "v2", "v3"}

// crashBlob is an acknowledged blob.
type crashBlob struct {
	size  int64
	round int    // acknowledged while round was running
	how   string // which upload, for failure messages
}

// crashTag is what is known about one tag. Pushes to a tag are serialised
// by lock (held for the whole request), so the order in which they were
// acknowledged is the order in which they were committed, and at most the
// pushes that never got an answer can have changed the tag since the last
// acknowledgement.
type crashTag struct {
	lock     sync.Mutex
	last     string          // digest last acknowledged, or observed after a restart; "" if none
	ever     map[string]bool // every digest the tag was acknowledged or observed at
	inflight map[string]bool // pushes to the tag that got no answer (the kill)
}

type crashRepo struct {
	name      string
	blobs     map[string]crashBlob
	blobList  []string // keys of blobs, in acknowledgement order
	manifests map[string][]byte
	mfList    []string          // keys of manifests, in acknowledgement order
	pending   map[string][]byte // manifests pushed and not (yet) acknowledged
	tags      map[string]*crashTag
}

// crashLedger records every acknowledged push. mu guards everything in it
// but the tag locks.
type crashLedger struct {
	mu    sync.Mutex
	repos []*crashRepo

	blobBytes    int64
	blobsAcked   int
	chunkedAcked int
	mfAcked      int
	tagMoves     int
	inflightOps  int // operations cut off by a kill
	promoted     int // in-flight manifests found committed after a restart
	orphans      int // orphan files reported by the last fsck (they accumulate)
	verifiedBlob int // blob reads over all verifications
}

func newCrashLedger() *crashLedger {
	l := &crashLedger{}
	for i := range crashRepos {
		r := &crashRepo{
			name:      fmt.Sprintf("crash/repo%d", i),
			blobs:     map[string]crashBlob{},
			manifests: map[string][]byte{},
			pending:   map[string][]byte{},
			tags:      map[string]*crashTag{},
		}
		for _, tag := range crashTagNames {
			r.tags[tag] = &crashTag{ever: map[string]bool{}, inflight: map[string]bool{}}
		}
		l.repos = append(l.repos, r)
	}
	return l
}

func TestCrashSafety(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv(crashSeedEnv); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: %v", crashSeedEnv, s, err)
		}
		seed = v
	}
	t.Logf("crash test seed %d (reproduce the choices with %s=%d)", seed, crashSeedEnv, seed)
	rng := rand.New(rand.NewPCG(seed, 0x6372617368))

	bin := berthtest.Build(t)
	dir := t.TempDir()
	ledger := newCrashLedger()
	start := time.Now()

	for round := 1; round <= crashRounds; round++ {
		srv := berthtest.Start(t, berthtest.WithDataDir(dir))
		// What the previous kill may have broken (and, through sampling,
		// what earlier kills may have) must read back as acknowledged.
		crashVerify(t, srv.URL, ledger, rng, seed, round, false)
		if t.Failed() {
			t.FailNow()
		}

		run := crashMinRun + time.Duration(rng.Int64N(int64(crashMaxRun-crashMinRun)))
		before := ledger.snapshot()
		inflight := crashPush(t, srv, ledger, seed, round, run)
		if t.Failed() {
			t.FailNow()
		}

		verifyContent := round%crashVerifyEvery == 0
		fsck := crashFsck(t, bin, dir, ledger, seed, round, verifyContent)
		ledger.mu.Lock()
		newOrphans := len(fsck.Orphans) - ledger.orphans
		ledger.orphans = len(fsck.Orphans)
		ledger.mu.Unlock()
		after := ledger.snapshot()
		checked := fmt.Sprintf("%d blob records", fsck.Blobs)
		if verifyContent {
			checked += fmt.Sprintf(", %.1f MiB re-hashed", float64(fsck.BytesVerified)/(1<<20))
		}
		kinds := map[string]int{}
		for _, p := range fsck.Problems {
			kinds[p.Kind]++
		}
		t.Logf("round %d: killed after %s; acknowledged %d blobs, %d manifests, %d tag moves; %d operations cut off; fsck: clean (%s), %d orphan files (%+d), harmless findings %v",
			round, run.Round(time.Millisecond), after.blobsAcked-before.blobsAcked, after.mfAcked-before.mfAcked,
			after.tagMoves-before.tagMoves, inflight, checked, len(fsck.Orphans), newOrphans, kinds)
		if t.Failed() {
			t.FailNow()
		}
	}

	// The last restart: everything, not a sample.
	srv := berthtest.Start(t, berthtest.WithDataDir(dir))
	crashVerify(t, srv.URL, ledger, rng, seed, crashRounds+1, true)
	srv.Stop()

	s := ledger.snapshot()
	t.Logf("crash test: %d SIGKILLs in %s; acknowledged %d blobs (%d chunked, %.1f MiB), %d manifests, %d tag moves; %d operations cut off by the kills (%d cut-off manifest pushes found committed); %d orphan files left by the kills; %d blob reads verified",
		crashRounds, time.Since(start).Round(time.Millisecond), s.blobsAcked, s.chunkedAcked, float64(s.blobBytes)/(1<<20),
		s.mfAcked, s.tagMoves, s.inflightOps, s.promoted, s.orphans, s.verifiedBlob)
	if s.blobsAcked == 0 || s.mfAcked == 0 {
		t.Errorf("no push was acknowledged in %d rounds (%d blobs, %d manifests): the test tested nothing", crashRounds, s.blobsAcked, s.mfAcked)
	}
}

type crashStats struct {
	blobsAcked, chunkedAcked, mfAcked, tagMoves, inflightOps, promoted, orphans, verifiedBlob int
	blobBytes                                                                                 int64
}

func (l *crashLedger) snapshot() crashStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return crashStats{blobsAcked: l.blobsAcked, chunkedAcked: l.chunkedAcked, mfAcked: l.mfAcked, tagMoves: l.tagMoves,
		inflightOps: l.inflightOps, promoted: l.promoted, orphans: l.orphans, verifiedBlob: l.verifiedBlob, blobBytes: l.blobBytes}
}

// crashClient returns a client of its own, with a bound on every request.
func crashClient() (*http.Client, *http.Transport) {
	tr := &http.Transport{MaxIdleConnsPerHost: crashWorkers + crashVerifiers, DisableCompression: true}
	return &http.Client{Transport: tr, Timeout: crashRequestTimeout}, tr
}

// crashPush runs the pushers against srv for about run, kills srv with
// SIGKILL and returns once every pusher has stopped, with the number of
// operations the kill cut off.
func crashPush(t *testing.T, srv *berthtest.Server, l *crashLedger, seed uint64, round int, run time.Duration) int {
	hc, tr := crashClient()
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	abort := make(chan struct{}) // a pusher failed: kill at once
	var abortOnce sync.Once
	var killed atomic.Bool
	var inflight atomic.Int64
	var wg sync.WaitGroup
	for i := range crashWorkers {
		w := &crashWorker{
			t: t, l: l, hc: hc, ctx: ctx, base: srv.URL, seed: seed, round: round, id: i,
			rng:      rand.New(rand.NewPCG(seed, uint64(round)<<8|uint64(i))),
			done:     done,
			abort:    func() { abortOnce.Do(func() { close(abort) }) },
			killed:   &killed,
			inflight: &inflight,
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.run()
		}()
	}
	timer := time.NewTimer(run)
	select {
	case <-timer.C:
	case <-abort:
	}
	timer.Stop()
	killed.Store(true)
	close(done)
	srv.Kill()
	// Nothing can answer any more: abort what is still waiting.
	cancel()

	finished := make(chan struct{})
	go func() {
		wg.Wait()
		close(finished)
	}()
	select {
	case <-finished:
	case <-time.After(crashWorkersTimeout):
		t.Fatalf("seed %d round %d: pushers still running %s after the kill", seed, round, crashWorkersTimeout)
	}
	n := int(inflight.Load())
	l.mu.Lock()
	l.inflightOps += n
	l.mu.Unlock()
	return n
}

// crashWorker pushes to random repositories until the round ends.
type crashWorker struct {
	t        *testing.T
	l        *crashLedger
	hc       *http.Client
	ctx      context.Context
	base     string
	seed     uint64
	round    int
	id       int
	rng      *rand.Rand
	done     <-chan struct{}
	abort    func()
	killed   *atomic.Bool
	inflight *atomic.Int64
	n        int
}

// crashStatusError is an answer the server gave that is not the expected
// one: always a failure, whether or not the server was killed after.
type crashStatusError struct {
	what   string
	status int
	body   []byte
}

func (e *crashStatusError) Error() string {
	return fmt.Sprintf("%s: status %d: %s", e.what, e.status, bytes.TrimSpace(e.body))
}

func (w *crashWorker) stopped() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

func (w *crashWorker) run() {
	for !w.stopped() {
		w.n++
		repo := w.l.repos[w.rng.IntN(len(w.l.repos))]
		var op string
		var err error
		switch p := w.rng.IntN(100); {
		case p < 35:
			op, err = "monolithic blob upload", w.pushBlob(repo, false)
		case p < 60:
			op, err = "chunked blob upload", w.pushBlob(repo, true)
		case p < 85:
			op, err = "manifest push", w.pushManifest(repo)
		default:
			op, err = "tag move", w.moveTag(repo)
		}
		if err == nil {
			continue
		}
		var se *crashStatusError
		if !errors.As(err, &se) && w.killed.Load() {
			// Cut off by the kill: expected.
			w.inflight.Add(1)
			return
		}
		when := "before the kill"
		if se != nil {
			when = "answered wrongly" // before or after the kill, an answer must be right
		}
		w.t.Errorf("seed %d round %d worker %d op %d (%s in %s) %s: %v", w.seed, w.round, w.id, w.n, op, repo.name, when, err)
		w.abort()
		return
	}
}

// do sends one request and reads the whole answer.
func (w *crashWorker) do(method, rawURL string, body []byte, header ...string) (*http.Response, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(w.ctx, method, rawURL, rd)
	if err != nil {
		return nil, nil, err
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := w.hc.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, err
	}
	return resp, b, nil
}

func expectStatus(what string, resp *http.Response, body []byte, want int) error {
	if resp.StatusCode != want {
		return &crashStatusError{what: what, status: resp.StatusCode, body: body}
	}
	return nil
}

// randomBlob returns 1 KiB to 2 MiB of random bytes, sizes spread
// log-uniformly so that most blobs are small and a few are large.
func (w *crashWorker) randomBlob() []byte {
	lo, hi := math.Log(crashMinBlob), math.Log(crashMaxBlob)
	n := min(int(math.Exp(lo+w.rng.Float64()*(hi-lo))), crashMaxBlob)
	var key [32]byte
	for i := 0; i < len(key); i += 8 {
		v := w.rng.Uint64()
		for j := range 8 {
			key[i+j] = byte(v >> (8 * j))
		}
	}
	data := make([]byte, n)
	_, _ = rand.NewChaCha8(key).Read(data)
	return data
}

func crashDigest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// pushBlob uploads a new random blob to repo, in one POST or in chunks.
func (w *crashWorker) pushBlob(repo *crashRepo, chunked bool) error {
	data := w.randomBlob()
	d := crashDigest(data)
	base := w.base + "/v2/" + repo.name + "/blobs/uploads/"
	var resp *http.Response
	var body []byte
	var err error
	if !chunked {
		resp, body, err = w.do(http.MethodPost, base+"?digest="+d, data, "Content-Type", "application/octet-stream")
		if err != nil {
			return err
		}
	} else {
		resp, body, err = w.do(http.MethodPost, base, nil)
		if err != nil {
			return err
		}
		if err := expectStatus("POST upload session", resp, body, http.StatusAccepted); err != nil {
			return err
		}
		loc, err := w.resolve(resp, body)
		if err != nil {
			return err
		}
		// Two to four chunks, cut at random points.
		cuts := []int{0, len(data)}
		for range 1 + w.rng.IntN(3) {
			cuts = append(cuts, 1+w.rng.IntN(len(data)-1))
		}
		slices.Sort(cuts)
		cuts = slices.Compact(cuts)
		for i := 0; i+1 < len(cuts); i++ {
			chunk := data[cuts[i]:cuts[i+1]]
			resp, body, err = w.do(http.MethodPatch, loc.String(), chunk,
				"Content-Type", "application/octet-stream",
				"Content-Range", fmt.Sprintf("%d-%d", cuts[i], cuts[i+1]-1))
			if err != nil {
				return err
			}
			if err := expectStatus(fmt.Sprintf("PATCH chunk %d-%d of %d bytes", cuts[i], cuts[i+1]-1, len(data)), resp, body, http.StatusAccepted); err != nil {
				return err
			}
			if got, want := resp.Header.Get("Range"), fmt.Sprintf("0-%d", cuts[i+1]-1); got != want {
				return &crashStatusError{what: fmt.Sprintf("PATCH chunk: Range %q, want %q", got, want), status: resp.StatusCode, body: body}
			}
			if loc, err = w.resolve(resp, body); err != nil {
				return err
			}
		}
		q := loc.Query()
		q.Set("digest", d)
		loc.RawQuery = q.Encode()
		resp, body, err = w.do(http.MethodPut, loc.String(), nil)
		if err != nil {
			return err
		}
	}
	if err := expectStatus("blob upload of "+d, resp, body, http.StatusCreated); err != nil {
		return err
	}
	if got := resp.Header.Get("Docker-Content-Digest"); got != d {
		return &crashStatusError{what: fmt.Sprintf("blob upload: Docker-Content-Digest %q, want %s", got, d), status: resp.StatusCode, body: body}
	}
	w.l.mu.Lock()
	defer w.l.mu.Unlock()
	if _, ok := repo.blobs[d]; !ok {
		how := "monolithic upload"
		if chunked {
			how = "chunked upload"
		}
		repo.blobs[d] = crashBlob{size: int64(len(data)), round: w.round, how: fmt.Sprintf("%s by worker %d op %d", how, w.id, w.n)}
		repo.blobList = append(repo.blobList, d)
		w.l.blobsAcked++
		w.l.blobBytes += int64(len(data))
		if chunked {
			w.l.chunkedAcked++
		}
	}
	return nil
}

// resolve returns the upload Location of an answer as an absolute URL.
func (w *crashWorker) resolve(resp *http.Response, body []byte) (*url.URL, error) {
	base, err := url.Parse(w.base)
	if err != nil {
		return nil, err
	}
	loc := resp.Header.Get("Location")
	ref, err := url.Parse(loc)
	if loc == "" || err != nil {
		return nil, &crashStatusError{what: fmt.Sprintf("upload Location %q", loc), status: resp.StatusCode, body: body}
	}
	return base.ResolveReference(ref), nil
}

// putTagged pushes body under tag, holding the tag's lock, and records the
// outcome: acknowledged, or in flight when the answer never came.
func (w *crashWorker) putTagged(repo *crashRepo, tagName, d string, body []byte, move bool) error {
	tag := repo.tags[tagName]
	tag.lock.Lock()
	defer tag.lock.Unlock()
	if w.stopped() {
		return nil
	}
	w.l.mu.Lock()
	tag.inflight[d] = true
	if !move {
		repo.pending[d] = body
	}
	w.l.mu.Unlock()

	resp, rb, err := w.do(http.MethodPut, w.base+"/v2/"+repo.name+"/manifests/"+tagName, body, "Content-Type", crashManifestType)
	if err != nil {
		return err // stays in flight
	}
	what := "manifest push of " + d + " as " + tagName
	if move {
		what = "tag move of " + tagName + " to " + d
	}
	if err := expectStatus(what, resp, rb, http.StatusCreated); err != nil {
		return err
	}
	if got := resp.Header.Get("Docker-Content-Digest"); got != d {
		return &crashStatusError{what: fmt.Sprintf("%s: Docker-Content-Digest %q", what, got), status: resp.StatusCode, body: rb}
	}
	w.l.mu.Lock()
	defer w.l.mu.Unlock()
	delete(tag.inflight, d)
	tag.last = d
	tag.ever[d] = true
	if move {
		w.l.tagMoves++
		return nil
	}
	delete(repo.pending, d)
	if _, ok := repo.manifests[d]; !ok {
		repo.manifests[d] = body
		repo.mfList = append(repo.mfList, d)
		w.l.mfAcked++
	}
	return nil
}

// pushManifest pushes a new image manifest, whose config and layers are
// blobs acknowledged in repo, under one of the tags.
func (w *crashWorker) pushManifest(repo *crashRepo) error {
	w.l.mu.Lock()
	if len(repo.blobList) < 2 {
		w.l.mu.Unlock()
		return w.pushBlob(repo, false)
	}
	pick := func() string { return repo.blobList[w.rng.IntN(len(repo.blobList))] }
	config := pick()
	configSize := repo.blobs[config].size
	type layer struct {
		d    string
		size int64
	}
	var layers []layer
	for range 1 + w.rng.IntN(3) {
		d := pick()
		layers = append(layers, layer{d, repo.blobs[d].size})
	}
	w.l.mu.Unlock()

	var ls []string
	for _, l := range layers {
		ls = append(ls, fmt.Sprintf(`{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%d}`, l.d, l.size))
	}
	body := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"%s",`+
		`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},`+
		`"layers":[%s],"annotations":{"berth.crash":"round %d worker %d op %d"}}`,
		crashManifestType, config, configSize, strings.Join(ls, ","), w.round, w.id, w.n))
	tag := crashTagNames[w.rng.IntN(len(crashTagNames))]
	return w.putTagged(repo, tag, crashDigest(body), body, false)
}

// moveTag points a tag that exists at another acknowledged manifest.
func (w *crashWorker) moveTag(repo *crashRepo) error {
	w.l.mu.Lock()
	var tags []string
	for _, name := range crashTagNames {
		if repo.tags[name].last != "" {
			tags = append(tags, name)
		}
	}
	if len(tags) == 0 || len(repo.mfList) < 2 {
		w.l.mu.Unlock()
		return w.pushManifest(repo)
	}
	tag := tags[w.rng.IntN(len(tags))]
	d := repo.mfList[w.rng.IntN(len(repo.mfList))]
	body := repo.manifests[d]
	w.l.mu.Unlock()
	return w.putTagged(repo, tag, d, body, true)
}

// crashFsckReport is the part of the report of `berth fsck --json` the
// crash test reads.
type crashFsckReport struct {
	Blobs         int   `json:"blobs"`
	BytesVerified int64 `json:"bytesVerified"`
	Problems      []struct {
		Kind     string `json:"kind"`
		Harmless bool   `json:"harmless"`
	} `json:"problems"`
	Orphans []json.RawMessage `json:"orphans"`
}

// crashFsck runs berth fsck on the stopped server's data. It fails the test
// unless fsck exits 0 (no inconsistency; orphans and harmless findings are
// allowed), its report agrees, and the index holds at least the blobs and
// manifests acknowledged so far.
func crashFsck(t *testing.T, bin, dir string, l *crashLedger, seed uint64, round int, verifyContent bool) crashFsckReport {
	t.Helper()
	args := []string{"fsck", "--data", dir, "--json"}
	if verifyContent {
		args = append(args, "--verify-content")
	}
	ctx, cancel := context.WithTimeout(context.Background(), crashFsckTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ctx.Err() != nil {
			t.Fatalf("seed %d round %d: berth %s: %v\nstderr: %s", seed, round, strings.Join(args, " "), err, stderr.Bytes())
		}
		code = ee.ExitCode()
	}
	var report crashFsckReport
	switch code {
	case 0:
	case 1:
		t.Fatalf("seed %d round %d: berth fsck found inconsistencies after the kill:\n%s\nstderr: %s", seed, round, stdout.Bytes(), stderr.Bytes())
	default:
		t.Fatalf("seed %d round %d: berth %s: exit status %d\nstdout: %s\nstderr: %s", seed, round, strings.Join(args, " "), code, stdout.Bytes(), stderr.Bytes())
	}
	if err := json.Unmarshal(stdout.Bytes(), &report); err != nil {
		t.Fatalf("seed %d round %d: berth fsck --json: %v\noutput: %s", seed, round, err, stdout.Bytes())
	}
	for _, p := range report.Problems {
		// Nothing is ever deleted here, so a manifest missing a blob it
		// references means the blob's link or the manifest record is
		// wrong, even though fsck counts it as harmless in general.
		if !p.Harmless || p.Kind == "incomplete-manifest" {
			t.Errorf("seed %d round %d: berth fsck reports a %s (harmless %v) after the kill:\n%s", seed, round, p.Kind, p.Harmless, stdout.Bytes())
			break
		}
	}
	l.mu.Lock()
	known := 0
	for _, r := range l.repos {
		known += len(r.blobs) + len(r.manifests)
	}
	l.mu.Unlock()
	if report.Blobs < known {
		t.Errorf("seed %d round %d: berth fsck checked %d blob records, but %d blobs and manifests were acknowledged", seed, round, report.Blobs, known)
	}
	if verifyContent && known > 0 && report.BytesVerified == 0 {
		t.Errorf("seed %d round %d: berth fsck --verify-content re-hashed nothing", seed, round)
	}
	return report
}

// crashVerify checks, over HTTP, that the restarted server holds everything
// the ledger says was acknowledged. Tags are brought up to date: a tag whose
// last push was cut off by the kill resolves to the digest last
// acknowledged or to one of the pushes in flight, and from then on is known
// to point there.
func crashVerify(t *testing.T, base string, l *crashLedger, rng *rand.Rand, seed uint64, round int, all bool) {
	t.Helper()
	hc, tr := crashClient()
	defer tr.CloseIdleConnections()
	began := time.Now()
	// A lost round can mean hundreds of lost blobs: report the first few.
	const maxReported = 20
	var failures atomic.Int64
	fail := func(format string, args ...any) {
		if failures.Add(1) <= maxReported {
			t.Errorf("seed %d, verification after restart %d (after the kill of round %d): %s", seed, round, round-1, fmt.Sprintf(format, args...))
		}
	}
	defer func() {
		if n := failures.Load(); n > maxReported {
			t.Errorf("seed %d, verification after restart %d: %d more failures not shown", seed, round, n-maxReported)
		}
	}()

	// The jobs are built under the lock; the requests run without it.
	type blobJob struct {
		repo, d string
		b       crashBlob
	}
	type mfJob struct {
		repo, d string
		body    []byte
	}
	var blobs []blobJob
	var mfs []mfJob
	l.mu.Lock()
	var older []blobJob
	for _, r := range l.repos {
		for _, d := range r.blobList {
			j := blobJob{r.name, d, r.blobs[d]}
			if all || j.b.round >= round-1 {
				blobs = append(blobs, j)
			} else {
				older = append(older, j)
			}
		}
		for _, d := range r.mfList {
			mfs = append(mfs, mfJob{r.name, d, r.manifests[d]})
		}
	}
	l.mu.Unlock()
	if room := crashSampleBlobs - len(blobs); room > 0 {
		rng.Shuffle(len(older), func(i, j int) { older[i], older[j] = older[j], older[i] })
		blobs = append(blobs, older[:min(room, len(older))]...)
	}

	get := func(path string, header ...string) (*http.Response, []byte, error) {
		req, err := http.NewRequest(http.MethodGet, base+path, nil)
		if err != nil {
			return nil, nil, err
		}
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := hc.Do(req)
		if err != nil {
			return nil, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp, b, err
	}

	// Blobs and manifests, by a few readers at once.
	jobs := make(chan func())
	var wg sync.WaitGroup
	for range crashVerifiers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for job := range jobs {
				job()
			}
		}()
	}
	for _, j := range blobs {
		jobs <- func() {
			req, err := http.NewRequest(http.MethodGet, base+"/v2/"+j.repo+"/blobs/"+j.d, nil)
			if err != nil {
				fail("%v", err)
				return
			}
			resp, err := hc.Do(req)
			if err != nil {
				fail("GET blob %s in %s (%s, round %d): %v", j.d, j.repo, j.b.how, j.b.round, err)
				return
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b, _ := io.ReadAll(resp.Body)
				fail("acknowledged blob %s (%d bytes, %s, round %d) in %s is lost: GET status %d: %s", j.d, j.b.size, j.b.how, j.b.round, j.repo, resp.StatusCode, bytes.TrimSpace(b))
				return
			}
			h := sha256.New()
			n, err := io.Copy(h, resp.Body)
			if err != nil {
				fail("GET blob %s in %s: reading the body: %v", j.d, j.repo, err)
				return
			}
			if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != j.d || n != j.b.size {
				fail("acknowledged blob %s (%d bytes, %s, round %d) in %s is corrupt: read %d bytes hashing to %s", j.d, j.b.size, j.b.how, j.b.round, j.repo, n, got)
			}
		}
	}
	for _, j := range mfs {
		jobs <- func() {
			resp, b, err := get("/v2/"+j.repo+"/manifests/"+j.d, "Accept", crashManifestType)
			switch {
			case err != nil:
				fail("GET manifest %s in %s: %v", j.d, j.repo, err)
			case resp.StatusCode != http.StatusOK:
				fail("acknowledged manifest %s in %s is lost: GET status %d: %s; it was %s", j.d, j.repo, resp.StatusCode, bytes.TrimSpace(b), j.body)
			case !bytes.Equal(b, j.body):
				fail("acknowledged manifest %s in %s reads back different: %q, pushed %q", j.d, j.repo, b, j.body)
			case resp.Header.Get("Docker-Content-Digest") != j.d:
				fail("manifest %s in %s: Docker-Content-Digest %q", j.d, j.repo, resp.Header.Get("Docker-Content-Digest"))
			}
		}
	}
	close(jobs)
	wg.Wait()

	// Tags, one repository at a time: each resolves to an allowed digest,
	// and the listing names exactly the tags that resolve.
	for _, r := range l.repos {
		var present []string
		for _, name := range crashTagNames {
			tag := r.tags[name]
			l.mu.Lock()
			last := tag.last
			inflight := make(map[string]bool, len(tag.inflight))
			for d := range tag.inflight {
				inflight[d] = true
			}
			l.mu.Unlock()
			if last == "" && len(inflight) == 0 {
				continue
			}
			resp, b, err := get("/v2/"+r.name+"/manifests/"+name, "Accept", crashManifestType)
			if err != nil {
				fail("GET %s:%s: %v", r.name, name, err)
				continue
			}
			if resp.StatusCode == http.StatusNotFound && last == "" {
				// Only pushes the kill cut off ever named it: none landed.
				l.mu.Lock()
				clear(tag.inflight)
				l.mu.Unlock()
				continue
			}
			if resp.StatusCode != http.StatusOK {
				fail("tag %s:%s (acknowledged at %s) is lost: GET status %d: %s", r.name, name, last, resp.StatusCode, bytes.TrimSpace(b))
				continue
			}
			got := resp.Header.Get("Docker-Content-Digest")
			if got != last && !inflight[got] {
				l.mu.Lock()
				earlier := tag.ever[got]
				l.mu.Unlock()
				why := "a digest it never had"
				if earlier {
					why = "an earlier value: the acknowledged move was undone"
				}
				fail("tag %s:%s resolves to %s, %s; it was last acknowledged at %q, and pushes of %v were in flight at the kill",
					r.name, name, got, why, last, slices.Sorted(maps.Keys(inflight)))
				continue
			}
			if crashDigest(b) != got {
				fail("tag %s:%s: body hashes to %s, Docker-Content-Digest is %s", r.name, name, crashDigest(b), got)
				continue
			}
			present = append(present, name)
			l.mu.Lock()
			tag.last = got
			tag.ever[got] = true
			clear(tag.inflight)
			if _, known := r.manifests[got]; !known {
				// A manifest push the kill cut off had committed.
				if want, ok := r.pending[got]; !ok || !bytes.Equal(want, b) {
					fail("tag %s:%s resolves to %s, a manifest never pushed: %q", r.name, name, got, b)
				} else {
					r.manifests[got] = b
					r.mfList = append(r.mfList, got)
					l.promoted++
				}
			}
			l.mu.Unlock()
		}
		resp, b, err := get("/v2/" + r.name + "/tags/list")
		if err != nil {
			fail("GET tags of %s: %v", r.name, err)
			continue
		}
		if resp.StatusCode == http.StatusNotFound && len(present) == 0 {
			continue
		}
		var list struct {
			Tags []string `json:"tags"`
		}
		if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &list) != nil {
			fail("GET tags of %s: status %d: %s", r.name, resp.StatusCode, bytes.TrimSpace(b))
			continue
		}
		if !slices.Equal(slices.Sorted(slices.Values(list.Tags)), slices.Sorted(slices.Values(present))) {
			fail("tags of %s listed as %v, but the tags that resolve are %v", r.name, list.Tags, present)
		}
	}

	l.mu.Lock()
	for _, r := range l.repos {
		clear(r.pending)
	}
	l.verifiedBlob += len(blobs)
	l.mu.Unlock()
	if testing.Verbose() && all {
		t.Logf("final verification: %d blobs, %d manifests in %s", len(blobs), len(mfs), time.Since(began).Round(time.Millisecond))
	}
}
