SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build
.DELETE_ON_ERROR:

GO ?= go

BIN := $(CURDIR)/bin
TOOLS := $(BIN)/tools

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# --verify -q: in a repository without commits plain "rev-parse HEAD" prints "HEAD".
COMMIT ?= $(shell git rev-parse --verify -q HEAD 2>/dev/null || echo unknown)
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT)

# Pinned tools. The conformance suite itself is pinned in conformance/suite/go.mod.
STATICCHECK_VERSION := v0.8.2
STATICCHECK := $(TOOLS)/staticcheck
OCI_CONFORMANCE := $(TOOLS)/oci-conformance
OCI_CONFORMANCE_PKG := github.com/opencontainers/distribution-spec/conformance

# Real clients for the interoperability tests, pinned. The Go-built ones are
# installed with "go install" into $(TOOLS); a stamp file per version makes a
# new pin reinstall. skopeo, containerd (with ctr and the CRI plugin),
# podman and docker.io (dockerd 20.10 and its docker command) are Debian
# packages. crictl drives containerd's CRI plugin as the kubelet does;
# buildx is the docker command's plugin for "imagetools" (about two minutes
# to build from cold). chromium, with a font for its screenshots, is the
# browser the web interface tests drive. curl and wget upload and download
# files over plain HTTP as build machines and deploy targets do.
CRANE_VERSION := v0.22.1
ORAS_VERSION := v1.3.6
REGCTL_VERSION := v0.11.7
HELM_VERSION := v3.22.0
COSIGN_VERSION := v2.6.5
CRICTL_VERSION := v1.37.0
BUILDX_VERSION := v0.38.2
GO_CLIENTS := \
	crane=github.com/google/go-containerregistry/cmd/crane@$(CRANE_VERSION) \
	oras=oras.land/oras/cmd/oras@$(ORAS_VERSION) \
	regctl=github.com/regclient/regclient/cmd/regctl@$(REGCTL_VERSION) \
	helm=helm.sh/helm/v3/cmd/helm@$(HELM_VERSION) \
	cosign=github.com/sigstore/cosign/v2/cmd/cosign@$(COSIGN_VERSION) \
	crictl=sigs.k8s.io/cri-tools/cmd/crictl@$(CRICTL_VERSION) \
	buildx=github.com/docker/buildx/cmd/buildx@$(BUILDX_VERSION)
CLIENT_STAMPS := $(foreach c,$(GO_CLIENTS),$(TOOLS)/.stamp-$(subst /,_,$(subst =,-,$(c))))
DEBIAN_CLIENTS := skopeo containerd podman docker.io chromium fonts-dejavu-core curl wget

# The registry "make bench" measures side by side with berth, pinned and
# installed the same way as the clients, by "make bench" alone.
DISTRIBUTION_VERSION := v3.1.2
BENCH_TOOLS := \
	registry=github.com/distribution/distribution/v3/cmd/registry@$(DISTRIBUTION_VERSION)
BENCH_STAMPS := $(foreach c,$(BENCH_TOOLS),$(TOOLS)/.stamp-$(subst /,_,$(subst =,-,$(c))))

# The S3-compatible server that tests of Berth on a bucket start
# (internal/testserver/versitygw), pinned and installed the same way as the
# clients, by the targets that run those tests.
VERSITYGW_VERSION := v1.8.0
TEST_SERVERS := \
	versitygw=github.com/versity/versitygw/cmd/versitygw@$(VERSITYGW_VERSION)
SERVER_STAMPS := $(foreach c,$(TEST_SERVERS),$(TOOLS)/.stamp-$(subst /,_,$(subst =,-,$(c))))

RESULTS := $(CURDIR)/conformance/results

# "make run" settings, e.g. make run ADDR=127.0.0.1:5001 ARGS='--log-level debug'.
ADDR ?= 127.0.0.1:5000
DATA ?= ./data
ARGS ?=

# "make fuzz" runs each fuzz target for this long, e.g. make fuzz FUZZTIME=5m.
FUZZTIME ?= 30s

.PHONY: all build run tools clients test-servers postgres debs lint test test-unit test-conformance fuzz bench ui-screenshots clean

all: test

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/berth ./cmd/berth

run: build
	$(BIN)/berth serve --addr $(ADDR) --data $(DATA) $(ARGS)

tools: $(STATICCHECK) $(OCI_CONFORMANCE)

# Tools are file targets: built only when missing or when their pin
# changes (staticcheck's through a pin file named after its version, the
# suite's through its go.mod). "make clean" forces a rebuild.
$(STATICCHECK): $(TOOLS)/.pin-staticcheck-$(STATICCHECK_VERSION)
	GOBIN=$(TOOLS) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	@touch $@

$(TOOLS)/.pin-%:
	@mkdir -p $(TOOLS)
	@touch $@

$(OCI_CONFORMANCE): conformance/suite/go.mod conformance/suite/go.sum
	@mkdir -p $(TOOLS)
	cd conformance/suite && GOWORK=off $(GO) build -o $(OCI_CONFORMANCE) $(OCI_CONFORMANCE_PKG)

clients: $(CLIENT_STAMPS) debs

# PostgreSQL comes from Debian (hack/install-postgres.sh: only when its
# server is missing, and without starting its service); versitygw is built
# pinned through the Go module proxy.
test-servers: $(SERVER_STAMPS) postgres

postgres:
	hack/install-postgres.sh

$(TOOLS)/.stamp-%:
	@mkdir -p $(TOOLS)
	@spec='$(filter $(word 1,$(subst -, ,$*))=%,$(GO_CLIENTS) $(BENCH_TOOLS) $(TEST_SERVERS))'; \
	echo "installing $${spec#*=}"; \
	GOBIN=$(TOOLS) $(GO) install "$${spec#*=}"
	@touch $@

debs:
	hack/install-debs.sh $(DEBIAN_CLIENTS)

lint: $(STATICCHECK)
	@unformatted="$$(gofmt -l .)"; \
	if [[ -n "$$unformatted" ]]; then \
		echo "gofmt -l reports unformatted files:"; echo "$$unformatted"; exit 1; \
	fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

# The conformance and interop tests run a real berth process; they are run
# separately, against the binary built by "build".
define unit-tests
pkgs="$$($(GO) list ./... | grep -v /conformance)"; \
$(GO) test -race -count=1 $$pkgs
endef

define conformance-tests
rm -rf $(RESULTS)
BERTH_BIN=$(BIN)/berth OCI_CONFORMANCE_BIN=$(OCI_CONFORMANCE) \
	$(GO) test -v -count=1 -timeout 20m ./conformance/...
endef

test: build tools clients test-servers lint
	$(unit-tests)
	$(conformance-tests)

test-unit: test-servers
	$(unit-tests)

test-conformance: build tools clients test-servers
	$(conformance-tests)

# "go test -fuzz" takes one target per run. The seed corpora (f.Add and
# testdata/fuzz) already run as plain tests in "make test".
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./storage/manifest/
	$(GO) test -run '^$$' -fuzz '^FuzzUploadStateMachine$$' -fuzztime $(FUZZTIME) ./storage/
	$(GO) test -run '^$$' -fuzz '^FuzzName$$' -fuzztime $(FUZZTIME) ./distribution/
	$(GO) test -run '^$$' -fuzz '^FuzzTag$$' -fuzztime $(FUZZTIME) ./distribution/
	$(GO) test -run '^$$' -fuzz '^FuzzReference$$' -fuzztime $(FUZZTIME) ./distribution/
	$(GO) test -run '^$$' -fuzz '^FuzzContentRange$$' -fuzztime $(FUZZTIME) ./distribution/
	$(GO) test -run '^$$' -fuzz '^FuzzRange$$' -fuzztime $(FUZZTIME) ./distribution/

# "make bench" runs the benchmark harness against a real berth and, in the
# same run, against the pinned peer registry (PEER= skips it, PEER=PATH
# takes another binary), e.g. make bench BENCHFLAGS='-quick' or
# BENCHFLAGS='-repeat 3 -out /tmp/bench.md'. Results of a full run are kept
# in docs/benchmarks.md.
BENCHFLAGS ?=
PEER ?= $(TOOLS)/registry

bench: build $(if $(filter $(TOOLS)/registry,$(PEER)),$(BENCH_STAMPS))
	$(GO) run ./hack/bench -berth $(BIN)/berth $(if $(PEER),-peer $(PEER)) $(BENCHFLAGS)

# "make ui-screenshots" refreshes the screenshots docs/ui.md shows, from a
# run of the web interface's browser tests; pngquant keeps them small.
UI_SHOTS := board repository artifact history board-phone

ui-screenshots: build
	hack/install-debs.sh chromium fonts-dejavu-core pngquant
	rm -rf $(RESULTS)/ui
	BERTH_BIN=$(BIN)/berth $(GO) test -count=1 -run '^TestWebUI$$' ./conformance/
	@mkdir -p docs/ui
	for s in $(UI_SHOTS); do \
		pngquant --quality=70-90 --speed 1 --strip --force --output docs/ui/$$s.png $(RESULTS)/ui/$$s.png; \
	done

clean:
	rm -rf $(BIN) $(RESULTS)
