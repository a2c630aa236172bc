// Module suite pins the official OCI Distribution Spec conformance suite
// used to test Berth. It is a separate module so that the suite's
// dependencies never leak into Berth's own go.mod, and so that
// "go test ./..." from the repository root does not include it.
//
// Build the suite with:
//
//	cd conformance/suite && go build -o OUT github.com/opencontainers/distribution-spec/conformance
module github.com/berth-registry/berth/conformance/suite

go 1.24.0

tool github.com/opencontainers/distribution-spec/conformance

require (
	github.com/goccy/go-yaml v1.18.0 // indirect
	github.com/opencontainers/distribution-spec/conformance v0.0.0-20260831232431-97274622c111 // indirect
	github.com/opencontainers/distribution-spec/specs-go v0.0.0-20240926185104-8376368dd8aa // indirect
	github.com/opencontainers/go-digest v1.0.0 // indirect
	github.com/opencontainers/image-spec v1.1.1 // indirect
)
