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

RESULTS := $(CURDIR)/conformance/results

# "make run" settings, e.g. make run ADDR=127.0.0.1:5001 ARGS='--log-level debug'.
ADDR ?= 127.0.0.1:5000
DATA ?= ./data
ARGS ?=

.PHONY: all build run tools lint test test-unit test-conformance clean

all: test

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/berth ./cmd/berth

run: build
	$(BIN)/berth serve --addr $(ADDR) --data $(DATA) $(ARGS)

tools: $(STATICCHECK) $(OCI_CONFORMANCE)

# Tools are file targets: built only when missing (the suite also when its
# pin changes). "make clean" forces a rebuild.
$(STATICCHECK):
	@mkdir -p $(TOOLS)
	GOBIN=$(TOOLS) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

$(OCI_CONFORMANCE): conformance/suite/go.mod conformance/suite/go.sum
	@mkdir -p $(TOOLS)
	cd conformance/suite && GOWORK=off $(GO) build -o $(OCI_CONFORMANCE) $(OCI_CONFORMANCE_PKG)

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

test: build tools lint
	$(unit-tests)
	$(conformance-tests)

test-unit:
	$(unit-tests)

test-conformance: build tools
	$(conformance-tests)

clean:
	rm -rf $(BIN) $(RESULTS)
