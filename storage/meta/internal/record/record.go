// Package record owns the encodings of the index records that every index
// backend stores alike: JSON with the field names of the embedded index's
// schema, which the PostgreSQL index keeps too. A record so reads the same
// whichever backend wrote it, and one definition serves both.
//
// Records a backend keeps differently (a robot's secret hash, which the
// PostgreSQL index keeps in a column of its own) stay in that backend.
package record

import (
	"encoding/json"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/storage/meta"
)

// Blob is the record of meta.Blob.
type Blob struct {
	Size    int64     `json:"size"`
	Created time.Time `json:"created"`
}

// Link is the record of meta.Link; Seen is new in schema "2".
type Link struct {
	Linked time.Time `json:"linked"`
	Seen   time.Time `json:"seen,omitzero"`
}

// Manifest is the record of meta.Manifest.
type Manifest struct {
	MediaType     string              `json:"mediaType"`
	Size          int64               `json:"size"`
	ArtifactType  string              `json:"artifactType,omitempty"`
	Subject       *ocispec.Descriptor `json:"subject,omitempty"`
	Annotations   map[string]string   `json:"annotations,omitempty"`
	References    []digest.Digest     `json:"references,omitempty"`
	Created       time.Time           `json:"created"`
	Labels        map[string]string   `json:"labels,omitempty"`
	ConfigCreated *time.Time          `json:"configCreated,omitempty"`
}

// FromManifest returns the record of m.
func FromManifest(m meta.Manifest) Manifest {
	return Manifest{MediaType: m.MediaType, Size: m.Size, ArtifactType: m.ArtifactType,
		Subject: m.Subject, Annotations: m.Annotations, References: m.References, Created: m.Created,
		Labels: m.Labels, ConfigCreated: m.ConfigCreated}
}

// Meta returns the manifest r records.
func (r Manifest) Meta() meta.Manifest {
	return meta.Manifest{MediaType: r.MediaType, Size: r.Size, ArtifactType: r.ArtifactType,
		Subject: r.Subject, Annotations: r.Annotations, References: r.References, Created: r.Created,
		Labels: r.Labels, ConfigCreated: r.ConfigCreated}
}

// Upload is the record of meta.Upload.
type Upload struct {
	Repo      string    `json:"repo"`
	Algorithm string    `json:"algorithm"`
	Started   time.Time `json:"started"`
	// Owner is new in schema "2"; sessions of older stores have none.
	Owner string `json:"owner,omitempty"`
}

// Meta returns the upload session r records.
func (r Upload) Meta() meta.Upload {
	return meta.Upload{Repo: r.Repo, Algorithm: r.Algorithm, Started: r.Started, Owner: r.Owner}
}

// Pull is the record of a meta.Pull; its key names the repository, digest
// and identity.
type Pull struct {
	Time    time.Time `json:"time"`
	Address string    `json:"address,omitempty"`
}

// Cached is the record of meta.Cached.
type Cached struct {
	Upstream string    `json:"upstream"`
	Cached   time.Time `json:"cached"`
	Pulled   time.Time `json:"pulled"`
}

// TagCheck is the record of meta.TagCheck.
type TagCheck struct {
	Upstream string        `json:"upstream"`
	Checked  time.Time     `json:"checked"`
	Digest   digest.Digest `json:"digest,omitempty"`
}

// SyncedTag is the record of a tag a sync rule delivered.
type SyncedTag struct {
	Digest      digest.Digest `json:"digest"`
	Fingerprint string        `json:"fingerprint,omitempty"`
	Synced      time.Time     `json:"synced"`
}

// SyncRun is the record of a sync rule's run.
type SyncRun struct {
	Started   time.Time `json:"started"`
	Finished  time.Time `json:"finished"`
	Error     string    `json:"error,omitempty"`
	Tags      int       `json:"tags"`
	Manifests int       `json:"manifests"`
	Blobs     int       `json:"blobs"`
	Bytes     int64     `json:"bytes"`
}

// Delivery is a delivery of the outbox or a dead letter. The endpoint, key
// and Seq of an outbox delivery are its key; a dead letter, keyed by Seq,
// carries its endpoint and key.
type Delivery struct {
	Endpoint    string          `json:"endpoint,omitempty"`
	Key         string          `json:"key,omitempty"`
	EventID     string          `json:"eventID"`
	Payload     json.RawMessage `json:"payload"`
	Created     time.Time       `json:"created"`
	Attempts    int             `json:"attempts,omitempty"`
	NextAttempt time.Time       `json:"nextAttempt,omitzero"`
	LastError   string          `json:"lastError,omitempty"`
	Holder      string          `json:"holder,omitempty"`
	LeaseUntil  time.Time       `json:"leaseUntil,omitzero"`
	Died        time.Time       `json:"died,omitzero"`
}

// FromDelivery returns the record of d: with its endpoint and key when it
// is a dead letter, without them when the key says them.
func FromDelivery(d meta.Delivery, dead bool) Delivery {
	rec := Delivery{EventID: d.EventID, Payload: d.Payload, Created: d.Created, Attempts: d.Attempts,
		NextAttempt: d.NextAttempt, LastError: d.LastError, Holder: d.Holder, LeaseUntil: d.LeaseUntil, Died: d.Died}
	if dead {
		rec.Endpoint, rec.Key = d.Endpoint, d.Key
	}
	return rec
}

// Meta returns the delivery r records, numbered seq, for endpoint and key.
func (r Delivery) Meta(endpoint, key string, seq uint64) meta.Delivery {
	return meta.Delivery{Seq: seq, Endpoint: endpoint, Key: key, EventID: r.EventID, Payload: []byte(r.Payload),
		Created: r.Created, Attempts: r.Attempts, NextAttempt: r.NextAttempt, LastError: r.LastError,
		Holder: r.Holder, LeaseUntil: r.LeaseUntil, Died: r.Died}
}
