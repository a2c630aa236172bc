package proxy_test

import (
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// slowReader reads at most 64 KiB at a time, pausing before each read.
type slowReader struct {
	r     io.Reader
	pause time.Duration
}

func (s slowReader) Read(p []byte) (int, error) {
	time.Sleep(s.pause)
	return s.r.Read(p[:min(len(p), 64<<10)])
}

// TestBigFill: a blob many times the ring, pulled at once by a client
// that keeps up, one that starts late and one that lags far behind (it
// reads from the staged file, then from the committed blob), arrives whole
// to each.
func TestBigFill(t *testing.T) {
	u := startUpstream(t)
	m := startMirror(t, u, time.Hour)
	for round := range 2 {
		img := u.push(t, "team/big", fmt.Sprint(round), 40<<20+12345)
		url := m.srv.URL + "/v2/hub/team/big/blobs/" + string(img.ld)
		errs := make(chan error, 3)
		pull := func(delay, pause time.Duration) {
			time.Sleep(delay)
			resp, err := http.Get(url)
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			h := sha256.New()
			n, err := io.Copy(h, slowReader{resp.Body, pause})
			if err == nil && digest.NewDigest(digest.SHA256, h) != img.ld {
				err = fmt.Errorf("hashes to %s", digest.NewDigest(digest.SHA256, h))
			}
			if err != nil {
				err = fmt.Errorf("round %d: pull after %s pausing %s: %d bytes of %d: %w", round, delay, pause, n, len(img.layer), err)
			}
			errs <- err
		}
		go pull(0, 0)
		go pull(20*time.Millisecond, 0)
		go pull(0, 2*time.Millisecond)
		for range 3 {
			if err := <-errs; err != nil {
				t.Error(err)
			}
		}
		if n := u.count("GET", "/v2/team/big/blobs/"+string(img.ld)); n != 1 {
			t.Errorf("round %d: %d upstream GETs", round, n)
		}
	}
}
