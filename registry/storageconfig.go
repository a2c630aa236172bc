package registry

import (
	"errors"
	"fmt"
	"net/url"

	"github.com/berth-registry/berth/storage/meta/postgres"
)

// StorageConfig picks where the store keeps its content: with nothing
// set, the index and the blobs are files under the data directory.
type StorageConfig struct {
	// Blobs picks the blob store.
	Blobs BlobsConfig `yaml:"blobs"`
	// Index picks the index.
	Index IndexConfig `yaml:"index"`
}

// IndexConfig picks the index: the bbolt file dataDir/index.db unless
// Postgres is set.
type IndexConfig struct {
	// Postgres keeps the index in a PostgreSQL database, which several
	// Berth replicas can share; see docs/scale-out.md.
	Postgres *PostgresConfig `yaml:"postgres"`
}

// PostgresConfig is the PostgreSQL database of the index.
type PostgresConfig struct {
	// DSN is the database's connection URL or key=value string, such as
	// postgres://berth@127.0.0.1:5432/berth?sslmode=disable;
	// BERTH_POSTGRES_DSN overrides it (and sets it when the configuration
	// has none).
	DSN string `yaml:"dsn"`
}

// BlobsConfig picks the blob store: files under the data directory unless
// S3 is set.
type BlobsConfig struct {
	// S3 keeps blobs in a bucket of an S3-compatible object store.
	S3 *S3Config `yaml:"s3"`
}

// S3Config is a bucket of an S3-compatible object store that holds the
// blobs; see docs/s3.md.
type S3Config struct {
	// Endpoint is the URL of the service, http://127.0.0.1:9000 say;
	// empty means AWS's endpoint for Region.
	Endpoint string `yaml:"endpoint"`
	// Region is the bucket's region (us-east-1 when empty).
	Region string `yaml:"region"`
	// Bucket is the bucket, which must exist.
	Bucket string `yaml:"bucket"`
	// Prefix is prepended to every key, so that a bucket can hold other
	// things, or several registries.
	Prefix string `yaml:"prefix"`
	// AccessKey and SecretKey are the credentials; BERTH_S3_ACCESS_KEY
	// and BERTH_S3_SECRET_KEY override them. With neither, the AWS
	// SDK's default chain (environment, shared files, instance role)
	// applies.
	AccessKey string `yaml:"accessKey"`
	SecretKey string `yaml:"secretKey"`
	// ForcePathStyle names the bucket in the URL's path rather than its
	// host, as most S3-compatible servers want.
	ForcePathStyle bool `yaml:"forcePathStyle"`
	// Redirect answers a blob GET with 307 to a pre-signed URL of the
	// object, so that clients fetch the bytes from the object store; a
	// HEAD is answered by Berth as ever. Clients must be able to reach
	// the endpoint.
	Redirect bool `yaml:"redirect"`
}

// applyEnv overlays the secrets the environment may hold.
func (s *StorageConfig) applyEnv(getenv func(string) string) {
	if v := getenv("BERTH_POSTGRES_DSN"); v != "" {
		if s.Index.Postgres == nil {
			s.Index.Postgres = &PostgresConfig{}
		}
		s.Index.Postgres.DSN = v
	}
	if s.Blobs.S3 == nil {
		return
	}
	if v := getenv("BERTH_S3_ACCESS_KEY"); v != "" {
		s.Blobs.S3.AccessKey = v
	}
	if v := getenv("BERTH_S3_SECRET_KEY"); v != "" {
		s.Blobs.S3.SecretKey = v
	}
}

// validate reports the first storage setting that cannot work without
// asking any service: whether the bucket is there, and the database, is
// checked at start.
func (s StorageConfig) validate() error {
	if p := s.Index.Postgres; p != nil {
		if p.DSN == "" {
			return errors.New("storage.index.postgres.dsn: a DSN is required (or BERTH_POSTGRES_DSN), such as postgres://berth@127.0.0.1:5432/berth?sslmode=disable")
		}
		if err := postgres.ValidateDSN(p.DSN); err != nil {
			return fmt.Errorf("storage.index.postgres.dsn: %w", err)
		}
	}
	c := s.Blobs.S3
	if c == nil {
		return nil
	}
	if c.Bucket == "" {
		return errors.New("storage.blobs.s3.bucket: a bucket is required")
	}
	if c.Endpoint != "" {
		u, err := url.Parse(c.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("storage.blobs.s3.endpoint %q: want an http or https URL", c.Endpoint)
		}
	}
	if (c.AccessKey == "") != (c.SecretKey == "") {
		return errors.New("storage.blobs.s3: accessKey and secretKey go together (BERTH_S3_ACCESS_KEY, BERTH_S3_SECRET_KEY)")
	}
	return nil
}
