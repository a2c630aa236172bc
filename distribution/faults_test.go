package distribution_test

import (
	"net/http"
	"syscall"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/distribution"
	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/blob/fs/faultfs"
)

// A storage fault reaches the client as a 5xx with the specification's
// error body; nothing partial remains, and the same request succeeds once
// the fault clears.
func TestStorageFaultsOverHTTP(t *testing.T) {
	cases := []struct {
		name   string
		op     string
		err    error
		status int
	}{
		{"disk full", faultfs.OpWrite, syscall.ENOSPC, http.StatusInsufficientStorage},
		{"permission denied", faultfs.OpCreate, syscall.EACCES, http.StatusInternalServerError},
		{"fsync fails", faultfs.OpSync, syscall.EIO, http.StatusInternalServerError},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ffs := faultfs.New()
			e := newEnvWithStore(t, distribution.Options{}, storage.Options{}, ffs)
			blob := content("fault "+c.name, 100_000)
			d := digest.FromBytes(blob)
			ffs.Fail(c.op, c.err)

			// Monolithic blob push.
			r := e.do(http.MethodPost, "/v2/faults/app/blobs/uploads/?digest="+d.String(), blob)
			wantError(t, r, c.status, "UNKNOWN")
			wantError(t, e.do(http.MethodGet, "/v2/faults/app/blobs/"+d.String(), nil), http.StatusNotFound, "BLOB_UNKNOWN")
			e.wantNoBlobFile(d)
			e.wantEmptyDir("tmp")

			// Manifest push.
			config := content("config "+c.name, 64)
			ffs.Clear()
			e.pushBlob("faults/app", config)
			ffs.Fail(c.op, c.err)
			body := imageManifest(t, descriptor("application/vnd.oci.image.config.v1+json", config), nil, "")
			r = e.do(http.MethodPut, "/v2/faults/app/manifests/v1", body, "Content-Type", "application/vnd.oci.image.manifest.v1+json")
			wantError(t, r, c.status, "UNKNOWN")
			wantError(t, e.do(http.MethodGet, "/v2/faults/app/manifests/v1", nil), http.StatusNotFound, "MANIFEST_UNKNOWN")

			// Once the fault clears, the same requests succeed.
			ffs.Clear()
			wantStatus(t, e.do(http.MethodPost, "/v2/faults/app/blobs/uploads/?digest="+d.String(), blob), http.StatusCreated)
			if got := e.blobContent("faults/app", d); string(got) != string(blob) {
				t.Fatal("blob content differs after the fault cleared")
			}
			wantStatus(t, e.do(http.MethodPut, "/v2/faults/app/manifests/v1", body, "Content-Type", "application/vnd.oci.image.manifest.v1+json"), http.StatusCreated)
		})
	}
}
