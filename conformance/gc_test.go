package conformance_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/random"
	ggcrremote "github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-registry/berth/admin"
	"github.com/berth-registry/berth/conformance/internal/berthtest"
)

// The scale of TestGCUnderLoad.
const (
	gcWorkers      = 16 // concurrent pushers
	gcImages       = 40 // images pushed by each
	gcRepos        = 4  // repositories the pushers share
	gcSharedLayers = 8  // pool of layers the images share, two per image
	gcDeleteEvery  = 3  // every third image is deleted once pushed
	// gcGrace is far above the time one push takes here (tens of
	// milliseconds), and well below the time the load runs, so that
	// collections during the load do reclaim deleted images.
	gcGrace = "2s"
	// gcPause paces the collector; it is not a timing assumption.
	gcPause   = 20 * time.Millisecond
	gcTimeout = 3 * time.Minute
)

// gcRun asks the server at base for a garbage collection.
func gcRun(ctx context.Context, base, grace string) (admin.GCResult, error) {
	var res admin.GCResult
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+admin.GCPath+"?grace="+grace, nil)
	if err != nil {
		return res, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return res, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return res, fmt.Errorf("gc answered %s", resp.Status)
	}
	return res, json.NewDecoder(resp.Body).Decode(&res)
}

// TestGCUnderLoad (release lifecycle, part 6): garbage collection runs
// repeatedly while pushers push images that share layers and delete some
// of them. Every push must succeed (the grace exceeds a push), every
// remaining image must pull completely, and once everything is deleted a
// final collection leaves the blob directory empty and fsck clean.
func TestGCUnderLoad(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), gcTimeout)
	defer cancel()
	bin := berthtest.Build(t)
	// A grace of 2s needs lookups to record Seen more often than the
	// default: at most a quarter of the grace.
	cfg := filepath.Join(t.TempDir(), "berth.yaml")
	if err := os.WriteFile(cfg, []byte("gc:\n  seenRefresh: 500ms\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := berthtest.Start(t, berthtest.WithArgs("--config", cfg))
	host := srv.Addr
	started := time.Now()

	shared := make([]v1.Layer, gcSharedLayers)
	for i := range shared {
		l, err := random.Layer(64<<10, types.OCILayer)
		if err != nil {
			t.Fatal(err)
		}
		shared[i] = l
	}

	// The collector: back to back until the pushers are done.
	stop := make(chan struct{})
	var gcRuns atomic.Int64
	var gcBytes, gcLinks, gcManifests atomic.Int64
	gcDone := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				gcDone <- nil
				return
			default:
			}
			res, err := gcRun(ctx, srv.URL, gcGrace)
			if err != nil {
				gcDone <- err
				return
			}
			gcRuns.Add(1)
			gcBytes.Add(res.BytesReclaimed)
			gcLinks.Add(int64(res.LinksRemoved))
			gcManifests.Add(int64(res.ManifestsRemoved))
			time.Sleep(gcPause)
		}
	}()

	var mu sync.Mutex
	var kept []name.Digest
	var deleted int
	var wg sync.WaitGroup
	errs := make(chan error, gcWorkers)
	for w := range gcWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- func() error {
				repo := fmt.Sprintf("%s/gc/r%d", host, w%gcRepos)
				for i := range gcImages {
					own, err := random.Layer(8<<10, types.OCILayer)
					if err != nil {
						return err
					}
					img, err := mutate.AppendLayers(empty.Image, shared[(w+i)%gcSharedLayers], shared[(w+i+1)%gcSharedLayers], own)
					if err != nil {
						return err
					}
					img = mutate.MediaType(img, types.OCIManifestSchema1)
					img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
					tag, err := name.NewTag(fmt.Sprintf("%s:w%d-i%d", repo, w, i), name.Insecure)
					if err != nil {
						return err
					}
					if err := ggcrremote.Write(tag, img, ggcrremote.WithContext(ctx)); err != nil {
						return fmt.Errorf("push %s: %w", tag, err)
					}
					d, err := img.Digest()
					if err != nil {
						return err
					}
					ref := tag.Context().Digest(d.String())
					if i%gcDeleteEvery == 0 {
						// An SBOM-like referrer first, orphaned by the
						// delete: collection removes it with its layer.
						if err := gcPushReferrer(ctx, tag.Context(), img); err != nil {
							return err
						}
						if err := ggcrremote.Delete(ref, ggcrremote.WithContext(ctx)); err != nil {
							return fmt.Errorf("delete %s: %w", ref, err)
						}
						mu.Lock()
						deleted++
						mu.Unlock()
						continue
					}
					mu.Lock()
					kept = append(kept, ref)
					mu.Unlock()
				}
				return nil
			}()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	close(stop)
	if err := <-gcDone; err != nil {
		t.Fatalf("collector: %v", err)
	}
	if t.Failed() {
		return
	}
	loadTook := time.Since(started)

	// Everything kept pulls completely: the manifest, the config and
	// every layer, each hashed against its digest.
	for _, ref := range kept {
		if err := gcPull(ctx, ref); err != nil {
			t.Fatalf("pull %s: %v", ref, err)
		}
	}

	// Delete everything; a final collection leaves no blob behind.
	for _, ref := range kept {
		if err := ggcrremote.Delete(ref, ggcrremote.WithContext(ctx)); err != nil {
			t.Fatalf("delete %s: %v", ref, err)
		}
	}
	// The final collection goes through the CLI.
	cli := exec.CommandContext(ctx, bin, "gc", "--registry", srv.URL, "--grace", "0s", "--json")
	cli.Env = append(os.Environ(), "BERTH_USERNAME=", "BERTH_PASSWORD=")
	out, err := cli.Output()
	if err != nil {
		t.Fatalf("berth gc: %v\n%s", err, out)
	}
	var final admin.GCResult
	if err := json.Unmarshal(out, &final); err != nil {
		t.Fatalf("berth gc --json: %v\n%s", err, out)
	}
	var left []string
	err = filepath.WalkDir(filepath.Join(srv.DataDir, "blobs"), func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !e.IsDir() {
			left = append(left, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Fatalf("final gc %+v left %d blob files, e.g. %s", final, len(left), left[0])
	}
	// Every orphaned referrer was collected exactly once, during the load
	// or at the end.
	if got := gcManifests.Load() + int64(final.ManifestsRemoved); got != int64(deleted) {
		t.Errorf("collections removed %d orphaned referrers, want %d", got, deleted)
	}
	srv.Stop()
	r := fsckJSON(t, bin, 0, "--data", srv.DataDir, "--verify-content")
	if len(r.Problems) != 0 || len(r.Orphans) != 0 {
		t.Fatalf("fsck after gc: problems %v, orphans %v", r.Problems, r.Orphans)
	}
	t.Logf("GC under load: %d images (%d workers x %d, %d repositories, %d shared layers), %d deleted during the load; "+
		"%d collections (grace %s) during %s of load removed %d orphaned referrers and %d links and reclaimed %d bytes; final collection %+v; total %s",
		gcWorkers*gcImages, gcWorkers, gcImages, gcRepos, gcSharedLayers, deleted,
		gcRuns.Load(), gcGrace, loadTook.Round(time.Millisecond), gcManifests.Load(), gcLinks.Load(), gcBytes.Load(), final.Report, time.Since(started).Round(time.Millisecond))
}

// gcPushReferrer pushes, by digest, an artifact whose subject is img: one
// small layer of its own and an artifact type, as an SBOM attachment is.
func gcPushReferrer(ctx context.Context, repo name.Repository, img v1.Image) error {
	desc, err := partial.Descriptor(img)
	if err != nil {
		return err
	}
	layer, err := random.Layer(1<<10, types.OCILayer)
	if err != nil {
		return err
	}
	sbom, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return err
	}
	sbom = mutate.MediaType(sbom, types.OCIManifestSchema1)
	sbom = mutate.ConfigMediaType(sbom, types.OCIConfigJSON)
	sbom = mutate.Subject(sbom, *desc).(v1.Image)
	d, err := sbom.Digest()
	if err != nil {
		return err
	}
	if err := ggcrremote.Write(repo.Digest(d.String()), sbom, ggcrremote.WithContext(ctx)); err != nil {
		return fmt.Errorf("push referrer of %s: %w", desc.Digest, err)
	}
	return nil
}

// gcPull pulls the image ref names and checks that its config and every
// layer read back whole, with the digest and size the manifest gives.
func gcPull(ctx context.Context, ref name.Digest) error {
	img, err := ggcrremote.Image(ref, ggcrremote.WithContext(ctx))
	if err != nil {
		return err
	}
	m, err := img.Manifest()
	if err != nil {
		return err
	}
	if _, err := img.RawConfigFile(); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	if len(layers) != len(m.Layers) {
		return fmt.Errorf("%d layers, manifest lists %d", len(layers), len(m.Layers))
	}
	for i, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			return fmt.Errorf("layer %d: %w", i, err)
		}
		h := sha256.New()
		n, err := io.Copy(h, rc)
		_ = rc.Close()
		if err != nil {
			return fmt.Errorf("layer %d: %w", i, err)
		}
		want := m.Layers[i].Digest
		if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != want.String() || n != m.Layers[i].Size {
			return fmt.Errorf("layer %d: read %d bytes hashing to %s, want %d bytes %s", i, n, got, m.Layers[i].Size, want)
		}
	}
	return nil
}
