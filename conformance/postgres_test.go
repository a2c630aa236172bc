package conformance_test

import (
	"fmt"
	"path/filepath"
	"testing"
)

// postgresS3ConfigFile writes a configuration that keeps the index in a
// fresh database of pg and the blobs in a fresh bucket of gw, with its
// keys, and returns its path.
func postgresS3ConfigFile(t *testing.T) string {
	t.Helper()
	dsn := pg.Database(t)
	b := gw.Bucket(t)
	path := filepath.Join(t.TempDir(), "berth.yaml")
	writeTestFile(t, path, fmt.Sprintf(`storage:
  blobs:
    s3: {endpoint: %q, region: %s, bucket: %s, prefix: "", accessKey: %s, secretKey: %s, forcePathStyle: true, redirect: false}
  index:
    postgres: {dsn: %q}
`, b.Endpoint, b.Region, b.Name, b.AccessKey, b.SecretKey, dsn))
	return path
}
