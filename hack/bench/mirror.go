package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// Targets of issue 14: a cold pull through the mirror against a direct
// pull from its upstream, in the same run.
const (
	mirrorFirstByteTarget = 1.10
	mirrorTotalTarget     = 1.15
)

const mirrorTitle = "cold pull of a single-layer image through the pull-through cache, against a direct pull from its upstream (median of the rounds)"

// mirrorBench starts an upstream berth holding an image of one layer of
// size bytes, then, rounds times, pulls it directly from the upstream,
// through a new mirror with an empty cache, and through another with
// prefetch on, and returns the time to the layer's first byte and the
// pull's total time of each mirror against the direct pull.
func mirrorBench(ctx context.Context, bin, scratch string, size int64, rounds int) ([]row, error) {
	up, err := startBerth(ctx, bin, filepath.Join(scratch, "mirror-upstream"))
	if err != nil {
		return nil, err
	}
	defer func() { _ = up.stop() }()
	c := newClient(up.url)
	const repo = "bench/big"
	layer := blobDigest(0x6d6972726f72, size)
	if err := c.pushBlob(ctx, repo, 0x6d6972726f72, size, layer); err != nil {
		return nil, err
	}
	config := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	if err := c.putBlob(ctx, repo, config); err != nil {
		return nil, err
	}
	body, err := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": manifestType,
		"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": fmt.Sprintf("sha256:%x", sha256.Sum256(config)), "size": len(config)},
		"layers": []map[string]any{{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": size}},
	})
	if err != nil {
		return nil, err
	}
	if err := c.putManifest(ctx, repo, "v1", body); err != nil {
		return nil, err
	}
	var direct, mirror, prefetch []pullTimes
	through := func(r int, name, extra string) (pullTimes, error) {
		dir := filepath.Join(scratch, fmt.Sprintf("mirror-%s-%d", name, r))
		cfg := filepath.Join(scratch, fmt.Sprintf("mirror-%s-%d.yaml", name, r))
		conf := fmt.Sprintf("proxy:\n  upstreams:\n    - name: up\n      url: %s\n      namespace: hub\n%s", up.url, extra)
		if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
			return pullTimes{}, err
		}
		m, err := startBerth(ctx, bin, dir, "--config", cfg)
		if err != nil {
			return pullTimes{}, err
		}
		t, err := pullImage(ctx, newClient(m.url), "hub/"+repo)
		serr := m.stop()
		if err != nil {
			return t, fmt.Errorf("pull through the mirror (%s): %w\nthe mirror's log:\n%s", name, err, m.logTail())
		}
		_ = os.RemoveAll(dir)
		return t, serr
	}
	for r := range max(rounds, 1) {
		d, err := pullImage(ctx, newClient(up.url), repo)
		if err != nil {
			return nil, fmt.Errorf("direct pull: %w", err)
		}
		direct = append(direct, d)
		t, err := through(r, "plain", "")
		if err != nil {
			return nil, err
		}
		mirror = append(mirror, t)
		p, err := through(r, "prefetch", "      prefetch: true\n")
		if err != nil {
			return nil, err
		}
		prefetch = append(prefetch, p)
		fmt.Printf("bench: round %d: first byte / total: direct %s / %s; mirror %s / %s; mirror with prefetch %s / %s\n", r+1,
			d.firstByte, d.total, t.firstByte, t.total, p.firstByte, p.total)
	}
	med := func(ts []pullTimes, f func(pullTimes) time.Duration) float64 {
		v := make([]float64, 0, len(ts))
		for _, t := range ts {
			v = append(v, float64(f(t))/float64(time.Millisecond))
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	first := func(t pullTimes) time.Duration { return t.firstByte }
	total := func(t pullTimes) time.Duration { return t.total }
	mk := func(name string, mv, dv, target float64) row {
		ratio := mv / dv
		return row{Name: name, Value: mv, Unit: "ms", Limit: fmt.Sprintf("direct %.1f ms", dv), Ratio: ratio,
			Target: fmt.Sprintf("<= %.2f", target), Met: met(ratio <= target)}
	}
	return []row{
		mk("cold pull "+sizeName(size)+", time to the layer's first byte", med(mirror, first), med(direct, first), mirrorFirstByteTarget),
		mk("cold pull "+sizeName(size)+", total", med(mirror, total), med(direct, total), mirrorTotalTarget),
		mk("cold pull "+sizeName(size)+" with prefetch, time to the layer's first byte", med(prefetch, first), med(direct, first), mirrorFirstByteTarget),
		mk("cold pull "+sizeName(size)+" with prefetch, total", med(prefetch, total), med(direct, total), mirrorTotalTarget),
	}, nil
}

// pullTimes are the times of one pull.
type pullTimes struct {
	firstByte time.Duration // from asking for the layer to its first byte
	total     time.Duration // from asking for the manifest to the layer's last byte
}

// pullImage pulls repo:v1 as a client does: the manifest, the config,
// then the layer, read whole.
func pullImage(ctx context.Context, c *client, repo string) (pullTimes, error) {
	start := time.Now()
	resp, err := c.do(ctx, http.MethodGet, c.url("/v2/"+repo+"/manifests/v1", nil), nil, 0,
		map[string]string{"Accept": manifestType}, http.StatusOK, true)
	if err != nil {
		return pullTimes{}, err
	}
	var m struct {
		Config struct{ Digest string }   `json:"config"`
		Layers []struct{ Digest string } `json:"layers"`
	}
	err = json.NewDecoder(resp.Body).Decode(&m)
	resp.Body.Close()
	if err != nil || len(m.Layers) != 1 {
		return pullTimes{}, fmt.Errorf("manifest of %s: %v", repo, err)
	}
	if _, err := c.do(ctx, http.MethodGet, c.url("/v2/"+repo+"/blobs/"+m.Config.Digest, nil), nil, 0, nil, http.StatusOK, false); err != nil {
		return pullTimes{}, err
	}
	asked := time.Now()
	resp, err = c.do(ctx, http.MethodGet, c.url("/v2/"+repo+"/blobs/"+m.Layers[0].Digest, nil), nil, 0, nil, http.StatusOK, true)
	if err != nil {
		return pullTimes{}, err
	}
	defer resp.Body.Close()
	buf := make([]byte, 256*kib)
	var t pullTimes
	n, err := resp.Body.Read(buf)
	t.firstByte = time.Since(asked)
	if n == 0 && err != nil {
		return t, err
	}
	if _, err := io.CopyBuffer(io.Discard, resp.Body, buf); err != nil {
		return t, err
	}
	t.total = time.Since(start)
	return t, nil
}
