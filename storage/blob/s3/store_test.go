package s3_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/blob"
	blobs3 "github.com/berth-registry/berth/storage/blob/s3"
)

// keys lists the keys of the bucket opts names, under prefix.
func keys(t testing.TB, opts blobs3.Options, prefix string) []string {
	t.Helper()
	var out []string
	p := awss3.NewListObjectsV2Paginator(gw.Client(), &awss3.ListObjectsV2Input{Bucket: &opts.Bucket, Prefix: &prefix})
	for p.HasMorePages() {
		page, err := p.NextPage(t.Context())
		if err != nil {
			t.Fatalf("list %s: %v", prefix, err)
		}
		for _, o := range page.Contents {
			out = append(out, aws.ToString(o.Key))
		}
	}
	return out
}

func random(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func readAll(t testing.TB, st blob.Staged) []byte {
	t.Helper()
	r, err := st.Reader(t.Context())
	if err != nil {
		t.Fatalf("reader: %v", err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read staged content: %v", err)
	}
	return b
}

func readBlob(t testing.TB, s blob.Store, d digest.Digest) []byte {
	t.Helper()
	f, err := s.Open(t.Context(), d)
	if err != nil {
		t.Fatalf("open %s: %v", d, err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatalf("read %s: %v", d, err)
	}
	return b
}

// hashState is the state of h, as HashState keeps it.
func hashState(t testing.TB, h hash.Hash) []byte {
	t.Helper()
	b, err := h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestContentInParts appends chunks of many sizes around the part size to
// one session, through two stores on the same bucket (two replicas): after
// each append both see the same size, content and hash state; the commit
// assembles the parts into the blob and leaves nothing in flight.
func TestContentInParts(t *testing.T) {
	opts := options(t)
	opts.PartSize = blobs3.MinPartSize
	a, b := openStore(t, opts), openStore(t, opts)
	const mib = 1 << 20
	chunks := []struct {
		n       int
		unknown bool // appended with its length unknown
	}{
		{1 * mib, false}, {3 * mib, true}, {7 * mib, false}, {5 * mib, false}, {100, true},
		{11*mib + 3, true}, {0, false}, {4*mib + 1, false}, {5*mib - 1, false},
	}
	id := rand.Text()
	st, err := a.Stage(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	var all []byte
	for i, c := range chunks {
		data := random(t, c.n)
		want := int64(c.n)
		if c.unknown {
			want = -1
		}
		// Alternate the replica that appends.
		on := a
		if i%2 == 1 {
			on = b
		}
		st, err := on.Resume(t.Context(), id)
		if err != nil {
			t.Fatalf("resume on replica %d: %v", i%2, err)
		}
		n, err := st.Append(t.Context(), bytes.NewReader(data), want, h)
		if err != nil || n != int64(c.n) {
			t.Fatalf("append %d of %d bytes: %d, %v", i, c.n, n, err)
		}
		all = append(all, data...)
		for r, other := range []*blobs3.Store{a, b} {
			st, err := other.Resume(t.Context(), id)
			if err != nil {
				t.Fatalf("resume on replica %d: %v", r, err)
			}
			if size, err := st.Size(t.Context()); err != nil || size != int64(len(all)) {
				t.Fatalf("after append %d replica %d sees %d bytes (%v), want %d", i, r, size, err, len(all))
			}
			if got := readAll(t, st); !bytes.Equal(got, all) {
				t.Fatalf("after append %d replica %d reads back %d bytes that differ from the %d appended", i, r, len(got), len(all))
			}
			size, state, err := st.(blob.HashStater).HashState(t.Context())
			if err != nil || size != int64(len(all)) || !bytes.Equal(state, hashState(t, h)) {
				t.Fatalf("after append %d replica %d's hash state differs (size %d, %v)", i, r, size, err)
			}
			// The hash state alone resumes the hash.
			h2 := sha256.New()
			if err := h2.(encoding.BinaryUnmarshaler).UnmarshalBinary(state); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(h2.Sum(nil), h.Sum(nil)) {
				t.Fatalf("after append %d the hash state gives another sum", i)
			}
		}
		// Pieces: full ones of the part size, then small ones shorter
		// together than a part.
		pieces := keys(t, opts, "uploads/"+id+"/")
		if len(pieces)-1 > len(all)/blobs3.MinPartSize+blobs3.MinPartSize {
			t.Fatalf("after append %d: %d objects in flight", i, len(pieces))
		}
	}
	d := digest.NewDigest(digest.SHA256, h)
	if d != digest.FromBytes(all) {
		t.Fatalf("hash gives %s, want %s", d, digest.FromBytes(all))
	}
	if err := st.Commit(t.Context(), d); err != nil {
		t.Fatalf("commit: %v", err)
	}
	if got := readBlob(t, b, d); !bytes.Equal(got, all) {
		t.Fatalf("the blob reads back %d bytes that differ from the %d appended", len(got), len(all))
	}
	if left := keys(t, opts, "uploads/"); len(left) != 0 {
		t.Fatalf("after commit, in flight: %v", left)
	}
	if got := keys(t, opts, ""); !slices.Equal(got, []string{"blobs/sha256/" + d.Encoded()}) {
		t.Fatalf("bucket holds %v, want only the blob", got)
	}
}

// TestPutLarge puts content longer than a part: staged, assembled, and
// nothing left in flight; a second Put of it changes nothing.
func TestPutLarge(t *testing.T) {
	opts := options(t)
	opts.PartSize = blobs3.MinPartSize
	s := openStore(t, opts)
	data := random(t, 2*blobs3.MinPartSize+12345)
	d := digest.FromBytes(data)
	for range 2 {
		if err := s.Put(t.Context(), d, bytes.NewReader(data), int64(len(data))); err != nil {
			t.Fatalf("put: %v", err)
		}
		if got := readBlob(t, s, d); !bytes.Equal(got, data) {
			t.Fatal("content differs")
		}
		if got := keys(t, opts, ""); !slices.Equal(got, []string{"blobs/sha256/" + d.Encoded()}) {
			t.Fatalf("bucket holds %v, want only the blob", got)
		}
	}
	err := s.Put(t.Context(), d, bytes.NewReader(data[:len(data)-1]), int64(len(data)))
	if !errors.Is(err, blob.ErrSizeMismatch) {
		t.Fatalf("put of a short body: %v", err)
	}
}

// failAfter yields data, then fails.
type failAfter struct {
	data []byte
	err  error
}

func (r *failAfter) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

// TestFailedAppendLeavesNoPiece: an append that fails after writing full
// pieces (and merging the small pieces before it into one) leaves the
// objects in flight, the content and the hash as they were.
func TestFailedAppendLeavesNoPiece(t *testing.T) {
	opts := options(t)
	opts.PartSize = blobs3.MinPartSize
	s := openStore(t, opts)
	id := rand.Text()
	st, err := s.Stage(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	first := random(t, 2<<20)
	if _, err := st.Append(t.Context(), bytes.NewReader(first), int64(len(first)), h); err != nil {
		t.Fatal(err)
	}
	before := keys(t, opts, "uploads/")
	boom := errors.New("client went away")
	n, err := st.Append(t.Context(), &failAfter{data: random(t, 12<<20), err: boom}, -1, h)
	if !errors.Is(err, boom) || n != 0 {
		t.Fatalf("failing append: %d, %v", n, err)
	}
	after := keys(t, opts, "uploads/")
	slices.Sort(before)
	slices.Sort(after)
	if !slices.Equal(before, after) {
		t.Fatalf("objects in flight before the failed append: %v; after: %v", before, after)
	}
	if got := readAll(t, st); !bytes.Equal(got, first) {
		t.Fatal("the content changed")
	}
	rest := random(t, 6<<20)
	if _, err := st.Append(t.Context(), bytes.NewReader(rest), -1, h); err != nil {
		t.Fatalf("append after the failure: %v", err)
	}
	all := append(slices.Clone(first), rest...)
	d := digest.NewDigest(digest.SHA256, h)
	if d != digest.FromBytes(all) {
		t.Fatal("the hash was not restored")
	}
	if err := st.Commit(t.Context(), d); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readBlob(t, s, d), all) {
		t.Fatal("content differs")
	}
}

// TestHashDisagreement: an append given a hash in another state than the
// one the content was staged with fails, and a commit under a digest the
// staged hash state does not give fails: nothing becomes visible.
func TestHashDisagreement(t *testing.T) {
	s := openStore(t, options(t))
	st, err := s.Stage(t.Context(), rand.Text())
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	data := []byte("some content")
	if _, err := st.Append(t.Context(), bytes.NewReader(data), -1, h); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Append(t.Context(), strings.NewReader("more"), 4, sha256.New()); err == nil {
		t.Fatal("an append with a fresh hash over staged content succeeded")
	}
	wrong := digest.FromString("other content")
	if err := st.Commit(t.Context(), wrong); err == nil {
		t.Fatal("a commit under a digest the content does not have succeeded")
	}
	if _, err := s.Stat(t.Context(), wrong); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("stat after the refused commit: %v", err)
	}
	if err := st.Commit(t.Context(), digest.FromBytes(data)); err != nil {
		t.Fatalf("commit under the right digest: %v", err)
	}
}

// countingTransport counts the bytes of response bodies.
type countingTransport struct {
	n atomic.Int64
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(r)
	if err == nil {
		resp.Body = &countingBody{resp.Body, &c.n}
	}
	return resp, err
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// TestRangedReads: Open seeks without reading, and net/http serves a range
// of a large blob reading little more than the range from the bucket.
func TestRangedReads(t *testing.T) {
	opts := options(t)
	counter := &countingTransport{}
	opts.HTTPClient = &http.Client{Transport: counter}
	s := openStore(t, opts)
	data := random(t, 24<<20)
	d := digest.FromBytes(data)
	if err := s.Put(t.Context(), d, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	f, err := s.Open(t.Context(), d)
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{20 << 20, 5, 0, 24<<20 - 10} {
		if _, err := f.Seek(off, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 10)
		if _, err := io.ReadFull(f, got); err != nil || !bytes.Equal(got, data[off:off+10]) {
			t.Fatalf("read 10 bytes at %d: %v", off, err)
		}
	}
	if end, err := f.Seek(0, io.SeekEnd); err != nil || end != int64(len(data)) {
		t.Fatalf("seek to the end: %d, %v", end, err)
	}
	if n, err := f.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("read at the end: %d, %v", n, err)
	}
	f.Close()

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, err := s.Open(r.Context(), d)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		defer f.Close()
		http.ServeContent(w, r, "", time.Time{}, f)
	}))
	defer srv.Close()
	counter.n.Store(0)
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL, nil)
	req.Header.Set("Range", "bytes=16777216-16777315")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, data[16<<20:16<<20+100]) {
		t.Fatalf("range request: %s, %d bytes, %v", resp.Status, len(body), err)
	}
	// The object's response is cut once the range is served; what came
	// from the bucket is far less than the object.
	if n := counter.n.Load(); n > 8<<20 {
		t.Fatalf("serving 100 bytes read %d bytes from the bucket", n)
	}
}

// TestWriteTo: a blob reader writes its content from where it stands to
// the end (the whole GET of distribution.Streamer), reading little more
// than that from the bucket.
func TestWriteTo(t *testing.T) {
	opts := options(t)
	counter := &countingTransport{}
	opts.HTTPClient = &http.Client{Transport: counter}
	s := openStore(t, opts)
	data := random(t, 3<<20+5)
	d := digest.FromBytes(data)
	if err := s.Put(t.Context(), d, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{0, 1<<20 + 3, int64(len(data))} {
		f, err := s.Open(t.Context(), d)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Seek(off, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		wt, ok := f.(interface {
			io.WriterTo
			Streaming() bool
		})
		if !ok || !wt.Streaming() {
			t.Fatalf("blob reader %T does not stream", f)
		}
		counter.n.Store(0)
		var got bytes.Buffer
		n, err := wt.WriteTo(&got)
		if err != nil || n != int64(len(data))-off || !bytes.Equal(got.Bytes(), data[off:]) {
			t.Fatalf("WriteTo from %d: %d bytes, %v; want the %d bytes after it", off, n, err, int64(len(data))-off)
		}
		if m := counter.n.Load(); m > int64(len(data))-off+64<<10 {
			t.Fatalf("WriteTo from %d read %d bytes from the bucket", off, m)
		}
		f.Close()
	}
}

// TestOpenFailsClearly: a bad endpoint, bucket or key stops Open with one
// line that says which.
func TestOpenFailsClearly(t *testing.T) {
	good := options(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String()
	l.Close()
	for _, tc := range []struct {
		name string
		edit func(*blobs3.Options)
		want string
	}{
		{"no endpoint", func(o *blobs3.Options) { o.Endpoint = closed }, "cannot reach " + closed},
		{"no bucket", func(o *blobs3.Options) { o.Bucket = "no-such-bucket" }, `bucket "no-such-bucket" does not exist`},
		{"bad secret", func(o *blobs3.Options) { o.SecretKey = "wrong" }, "denied: check accessKey and secretKey"},
		{"half a key", func(o *blobs3.Options) { o.SecretKey = "" }, "accessKey and secretKey go together"},
		{"bad part size", func(o *blobs3.Options) { o.PartSize = 1 << 20 }, "part size"},
		{"bad prefix", func(o *blobs3.Options) { o.Prefix = "a/../b" }, "prefix"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := good
			tc.edit(&opts)
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			_, err := blobs3.Open(ctx, opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("open: %v; want one line with %q", err, tc.want)
			}
		})
	}
}

// TestUnavailable: a service that is throttling, failing or gone is
// blob.ErrUnavailable, never blob.ErrNotFound.
func TestUnavailable(t *testing.T) {
	opts := options(t)
	s := openStore(t, opts)
	d := digest.FromString("x")
	var calls atomic.Int64
	busy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>`)
	}))
	defer busy.Close()
	opts.Endpoint = busy.URL
	slow, err := blobs3.New(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	opts.Endpoint = "http://" + l.Addr().String()
	l.Close()
	gone, err := blobs3.New(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]*blobs3.Store{"throttling": slow, "unreachable": gone} {
		_, err := s.Stat(t.Context(), d)
		if !errors.Is(err, blob.ErrUnavailable) || errors.Is(err, blob.ErrNotFound) {
			t.Errorf("%s: stat: %v, want ErrUnavailable", name, err)
		}
		err = s.Put(t.Context(), d, strings.NewReader("x"), 1)
		if !errors.Is(err, blob.ErrUnavailable) {
			t.Errorf("%s: put: %v, want ErrUnavailable", name, err)
		}
		if _, err := s.Stage(t.Context(), rand.Text()); !errors.Is(err, blob.ErrUnavailable) {
			t.Errorf("%s: stage: %v, want ErrUnavailable", name, err)
		}
		if err := s.Check(t.Context()); err == nil {
			t.Errorf("%s: check passed", name)
		}
	}
	if calls.Load() == 0 {
		t.Fatal("the throttling server was never asked")
	}
	// The real one still answers.
	if _, err := s.Stat(t.Context(), d); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("stat of absent content: %v", err)
	}
}

// TestOpenSweepsStale: Open removes what a crashed process left in flight
// once it is stale (a multipart upload, anonymous content, pieces of a
// session whose state is gone), and leaves live sessions alone.
func TestOpenSweepsStale(t *testing.T) {
	opts := options(t)
	s := openStore(t, opts)
	client := gw.Client()
	ctx := t.Context()
	// A live session, and anonymous content in flight.
	live := rand.Text()
	st, err := s.Stage(ctx, live)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Append(ctx, strings.NewReader("live"), 4, nil); err != nil {
		t.Fatal(err)
	}
	anon, err := s.Stage(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := anon.Append(ctx, strings.NewReader("anonymous"), -1, nil); err != nil {
		t.Fatal(err)
	}
	// A session that ended without removing its pieces, and a multipart
	// upload a commit never completed.
	ended := rand.Text()
	put := func(key string) {
		if _, err := client.PutObject(ctx, &awss3.PutObjectInput{Bucket: &opts.Bucket, Key: aws.String(key), Body: strings.NewReader("debris")}); err != nil {
			t.Fatal(err)
		}
	}
	put("uploads/" + ended + "/0000000000000000-0123456789abcdef")
	mp, err := client.CreateMultipartUpload(ctx, &awss3.CreateMultipartUploadInput{Bucket: &opts.Bucket, Key: aws.String("blobs/sha256/" + strings.Repeat("a", 64))})
	if err != nil {
		t.Fatal(err)
	}
	// Fresh, nothing is stale.
	openStore(t, opts)
	if n := len(keys(t, opts, "")); n != 4 {
		t.Fatalf("open with nothing stale left %d objects, want 4: %v", n, keys(t, opts, ""))
	}
	// S3 keeps times to the second.
	time.Sleep(1100 * time.Millisecond)
	opts.StaleAfter = time.Millisecond
	openStore(t, opts)
	want := []string{"uploads/" + live + "/"}
	got := keys(t, opts, "")
	if len(got) != 2 || !strings.HasPrefix(got[0], want[0]) || !strings.HasPrefix(got[1], want[0]) {
		t.Fatalf("after the sweep the bucket holds %v, want only the live session's state and piece", got)
	}
	ups, err := client.ListMultipartUploads(ctx, &awss3.ListMultipartUploadsInput{Bucket: &opts.Bucket})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range ups.Uploads {
		if aws.ToString(u.UploadId) == aws.ToString(mp.UploadId) {
			t.Fatal("the stale multipart upload was not aborted")
		}
	}
	st, err = s.Resume(ctx, live)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, st); string(got) != "live" {
		t.Fatalf("live session reads %q", got)
	}
}

// TestRacingAppendsLoseNothing: appends to one session from several
// writers at once (which callers are to serialise, but replicas without a
// shared lock could race) never lose an acknowledged chunk: the state is
// replaced only on the version an append read, so each append either
// lands whole or fails.
func TestRacingAppendsLoseNothing(t *testing.T) {
	s := openStore(t, options(t))
	ctx := t.Context()
	id := rand.Text()
	if _, err := s.Stage(ctx, id); err != nil {
		t.Fatal(err)
	}
	const writers = 6
	chunks := make([][]byte, writers)
	ok := make([]bool, writers)
	var wg sync.WaitGroup
	for i := range writers {
		chunks[i] = bytes.Repeat([]byte{byte('a' + i)}, 1000+i)
		wg.Go(func() {
			st, err := s.Resume(ctx, id)
			if err != nil {
				t.Error(err)
				return
			}
			_, err = st.Append(ctx, bytes.NewReader(chunks[i]), int64(len(chunks[i])), nil)
			ok[i] = err == nil
		})
	}
	wg.Wait()
	st, err := s.Resume(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	got := readAll(t, st)
	landed := 0
	for i, c := range chunks {
		n := bytes.Count(got, c[:1])
		switch {
		case ok[i] && n != len(c):
			t.Errorf("append %d was acknowledged, but the content holds %d of its %d bytes", i, n, len(c))
		case !ok[i] && n != 0:
			t.Errorf("append %d failed, but the content holds %d of its bytes", i, n)
		}
		if ok[i] {
			landed += len(c)
		}
	}
	if len(got) != landed {
		t.Fatalf("content of %d bytes, the acknowledged appends sum to %d", len(got), landed)
	}
	t.Logf("%d bytes landed from %d racing appends", landed, writers)
}

// directoryRaceTransport answers the first plain PUT of an object (one
// not conditional on its absence: a staged piece or an upload's state)
// with the 409 ExistingObjectIsDirectory that a posix-backed store gives
// while a concurrent delete removes the key's parent directory, then
// passes requests through.
type directoryRaceTransport struct {
	refused atomic.Int32
}

func (d *directoryRaceTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodPut && r.URL.Query().Get("uploadId") == "" && r.Header.Get("If-None-Match") == "" &&
		r.Header.Get("X-Amz-Copy-Source") == "" && d.refused.CompareAndSwap(0, 1) {
		if r.Body != nil {
			_, _ = io.Copy(io.Discard, r.Body)
			_ = r.Body.Close()
		}
		body := `<?xml version="1.0" encoding="UTF-8"?><Error><Code>ExistingObjectIsDirectory</Code><Message>Existing Object is a directory.</Message></Error>`
		return &http.Response{StatusCode: http.StatusConflict, Status: "409 Conflict", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header: http.Header{"Content-Type": {"application/xml"}}, Body: io.NopCloser(strings.NewReader(body)),
			ContentLength: int64(len(body)), Request: r}, nil
	}
	return http.DefaultTransport.RoundTrip(r)
}

// TestWriteRetriedAfterDirectoryRace: a chunk whose write was refused
// because the store briefly saw the key's parent as a directory is written
// again, and the content commits whole.
func TestWriteRetriedAfterDirectoryRace(t *testing.T) {
	opts := options(t)
	race := &directoryRaceTransport{}
	opts.HTTPClient = &http.Client{Transport: race}
	s := openStore(t, opts)
	data := random(t, 1<<10)
	d := digest.FromBytes(data)
	st, err := s.Stage(t.Context(), "race")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Append(t.Context(), bytes.NewReader(data), int64(len(data)), nil); err != nil {
		t.Fatalf("append after a transient ExistingObjectIsDirectory: %v", err)
	}
	if err := st.Commit(t.Context(), d); err != nil {
		t.Fatal(err)
	}
	if race.refused.Load() != 1 {
		t.Fatal("the transport never refused a write: the test tested nothing")
	}
	f, err := s.Open(t.Context(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := io.ReadAll(f)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes, %v; want the %d written", len(got), err, len(data))
	}
}
