package s3_test

import (
	"os"
	"testing"

	"github.com/berth-registry/berth/internal/testserver/versitygw"
	"github.com/berth-registry/berth/storage/blob"
	"github.com/berth-registry/berth/storage/blob/blobtest"
	blobs3 "github.com/berth-registry/berth/storage/blob/s3"
)

// gw is the S3 server of this package's tests.
var gw = versitygw.New()

func TestMain(m *testing.M) { os.Exit(gw.Run(m)) }

// options are the options of a store in a fresh bucket of gw.
func options(t testing.TB) blobs3.Options {
	t.Helper()
	b := gw.Bucket(t)
	return blobs3.Options{Endpoint: b.Endpoint, Region: b.Region, Bucket: b.Name,
		AccessKey: b.AccessKey, SecretKey: b.SecretKey, ForcePathStyle: true}
}

// openStore opens a store with opts, failing t if it cannot.
func openStore(t testing.TB, opts blobs3.Options) *blobs3.Store {
	t.Helper()
	s, err := blobs3.Open(t.Context(), opts)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	return s
}

func TestSuite(t *testing.T) {
	blobtest.Run(t, func(t *testing.T) blob.Store { return openStore(t, options(t)) })
}

// TestSuiteRedirecting runs the suite over a store that redirects reads,
// which adds the redirect test, and under a prefix.
func TestSuiteRedirecting(t *testing.T) {
	blobtest.Run(t, func(t *testing.T) blob.Store {
		opts := options(t)
		opts.Prefix = "some/prefix"
		return blobs3.Redirecting{Store: openStore(t, opts)}
	})
}
