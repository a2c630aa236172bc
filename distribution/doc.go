// Package distribution serves the OCI Distribution Specification v1.1 API
// over HTTP: the route table (routes.go), one file per resource (blobs,
// uploads, manifests, tags, referrers, catalog), Berth's extensions
// (lifecycle.go, search.go, repositories.go), and the specification's error
// codes (errors.go).
//
// Handlers are thin: they validate what the client sent (names, references,
// digests, ranges, lengths), call the narrow Store interface, and turn its
// results and errors into the status codes, headers and JSON bodies the
// specification names.
package distribution
