package s3_test

import (
	"crypto/sha256"
	"encoding/binary"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// stream yields n bytes that differ from block to block, without holding
// them: a block of a fixed pattern whose first bytes are its offset.
type stream struct {
	n, off int64
	block  []byte
}

func (s *stream) Read(p []byte) (int, error) {
	if s.off >= s.n {
		return 0, io.EOF
	}
	if s.block == nil {
		s.block = make([]byte, 64<<10)
		for i := range s.block {
			s.block[i] = byte(i*7 + i>>8)
		}
	}
	in := s.off % int64(len(s.block))
	if in == 0 {
		binary.BigEndian.PutUint64(s.block, uint64(s.off))
	}
	n := copy(p, s.block[in:min(int64(len(s.block)), in+s.n-s.off)])
	s.off += int64(n)
	return n, nil
}

// peakRSS is the process's peak resident set size in bytes since the last
// resetPeakRSS, or -1 where Linux's /proc does not say.
func peakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err == nil {
				return kb << 10
			}
		}
	}
	return -1
}

// resetPeakRSS starts a new peak, where Linux allows it.
func resetPeakRSS() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

// heapPeak samples the live heap until stop is closed and returns its
// highest value.
func heapPeak(stop <-chan struct{}) uint64 {
	var peak uint64
	var ms runtime.MemStats
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		runtime.ReadMemStats(&ms)
		peak = max(peak, ms.HeapAlloc)
		select {
		case <-stop:
			return peak
		case <-tick.C:
		}
	}
}

// TestLargeUploadMemoryFlat streams 1 GiB through Stage, Append (of
// unknown length, as a client's streamed PATCH) and Commit, and reads it
// back: the heap and the resident set grow by a few parts, not by the
// content.
func TestLargeUploadMemoryFlat(t *testing.T) {
	const size = 1 << 30
	opts := options(t)
	s := openStore(t, opts)
	ctx := t.Context()

	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	resetPeakRSS()
	rssBase := peakRSS()
	stop := make(chan struct{})
	var peak uint64
	var wg sync.WaitGroup
	wg.Go(func() { peak = heapPeak(stop) })

	st, err := s.Stage(ctx, "large")
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	n, err := st.Append(ctx, &stream{n: size}, -1, h)
	if err != nil || n != size {
		t.Fatalf("append: %d, %v", n, err)
	}
	d := digest.NewDigest(digest.SHA256, h)
	if err := st.Commit(ctx, d); err != nil {
		t.Fatalf("commit: %v", err)
	}
	f, err := s.Open(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	back := sha256.New()
	m, err := io.Copy(back, f)
	f.Close()
	close(stop)
	wg.Wait()
	if err != nil || m != size {
		t.Fatalf("read back: %d, %v", m, err)
	}
	if got := digest.NewDigest(digest.SHA256, back); got != d {
		t.Fatalf("read back %s, want %s", got, d)
	}
	growth := int64(peak) - int64(base.HeapAlloc)
	rss := peakRSS() - rssBase
	t.Logf("1 GiB through the store: heap grew by at most %d MiB, peak RSS by %d MiB", growth>>20, rss>>20)
	// One part buffer in use, one in the pool, the SDK's buffers: tens
	// of MiB, whatever the content's size.
	const bound = 96 << 20
	if growth > bound {
		t.Errorf("the heap grew by %d MiB streaming 1 GiB, want at most %d MiB", growth>>20, bound>>20)
	}
	if rssBase >= 0 && rss > 2*bound {
		t.Errorf("the peak resident set grew by %d MiB streaming 1 GiB, want at most %d MiB", rss>>20, 2*bound>>20)
	}
}
