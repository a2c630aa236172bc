package main

// The peer is another registry, measured in the same run with the same
// client so that berth's figures come with a ratio that the machine's load
// affects less than the figures themselves. It is CNCF Distribution's
// "registry" binary, which the Makefile installs pinned.

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

const peerName = "distribution"

// peerSettings says, for the report, how the peer is configured (see
// peerConfig and startPeer).
const peerSettings = "the configuration its releases ship without authentication: filesystem driver, " +
	"in-memory blob descriptor cache (kept, as shipped), delete enabled, redirects off, " +
	"log level error and no access log, upload purging off, trace exporter none"

func peerTarget(bin string) target {
	return target{Name: peerName, start: func(ctx context.Context, dir string) (*server, error) {
		return startPeer(ctx, bin, dir, fsDriver(filepath.Join(dir, "storage")))
	}}
}

// fsDriver is the peer's filesystem storage driver, rooted at root.
func fsDriver(root string) map[string]any {
	return map[string]any{"filesystem": map[string]any{"rootdirectory": root}}
}

// peerConfig is the peer's configuration: the one its releases ship
// (cmd/registry/config-example.yml of v3.1.2) without its htpasswd
// authentication, with the storage driver (driver is its section, a
// single key naming it: see fsDriver and s3Driver) and the listen address
// of this run, and with what a fair comparison needs: deletes enabled as berth
// allows them; redirects off (the filesystem driver has none anyway); no
// log line per request, as berth writes none; no upload purging, a
// maintenance job that would otherwise start at a random time in the
// first hour; and a drain timeout, so that SIGTERM ends it cleanly. The
// in-memory blob descriptor cache of the shipped configuration is kept:
// it caches digests and sizes, not content, and berth's index answers the
// same questions from memory-mapped pages.
func peerConfig(driver map[string]any, addr string) ([]byte, error) {
	if len(driver) != 1 {
		return nil, fmt.Errorf("peer configuration: want one storage driver, got %d", len(driver))
	}
	storage := map[string]any{
		"cache":       map[string]any{"blobdescriptor": "inmemory"},
		"delete":      map[string]any{"enabled": true},
		"redirect":    map[string]any{"disable": true},
		"maintenance": map[string]any{"uploadpurging": map[string]any{"enabled": false}},
		"tag":         map[string]any{"concurrencylimit": 8},
	}
	for name, params := range driver {
		storage[name] = params
	}
	cfg := map[string]any{
		"version": "0.1",
		"log": map[string]any{
			"level":     "error",
			"accesslog": map[string]any{"disabled": true},
		},
		"storage": storage,
		"http": map[string]any{
			"addr":         addr,
			"draintimeout": "5s",
			"headers":      map[string]any{"X-Content-Type-Options": []string{"nosniff"}},
		},
		"health": map[string]any{
			"storagedriver": map[string]any{"enabled": true, "interval": "10s", "threshold": 3},
		},
	}
	return yaml.Marshal(cfg)
}

// peerEnv is the peer's environment: the caller's, without the variables
// that would change its configuration (REGISTRY_*) or its tracing
// (OTEL_*). It traces every request whatever its configuration says; with
// the exporter "none" the spans go nowhere instead of to a collector that
// is not there.
func peerEnv() []string {
	return append(environWithout("REGISTRY_", "OTEL_"), "OTEL_TRACES_EXPORTER=none")
}

// startPeer writes the peer's configuration, with the storage driver
// section driver, into dir, runs "bin serve dir/config.yml" on a free
// loopback port and waits until GET /v2/ answers.
func startPeer(ctx context.Context, bin, dir string, driver map[string]any) (*server, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	conf, err := peerConfig(driver, addr)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(path, conf, 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "serve", path)
	cmd.Env = peerEnv()
	s, err := startProcess(cmd, peerName, nil)
	if err != nil {
		return nil, err
	}
	s.addr, s.url = addr, "http://"+addr
	if err := s.waitReady(ctx); err != nil {
		s.kill()
		return nil, err
	}
	return s, nil
}

// freeAddr is a loopback address with a port free a moment ago, for a
// server that cannot be told to take any free port.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := ln.Addr().String()
	return addr, ln.Close()
}

// waitReady polls GET /v2/ until it answers 200, the process exits, or
// startTimeout passes.
func (s *server) waitReady(ctx context.Context) error {
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{Proxy: nil}}
	defer hc.CloseIdleConnections()
	deadline := time.Now().Add(startTimeout)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url+"/v2/", nil)
		if err != nil {
			return err
		}
		resp, err := hc.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-s.exited:
			return fmt.Errorf("%s exited before answering: %v\n%s", s.name, s.err, s.logTail())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not answer GET /v2/ on %s within %s\n%s", s.name, s.addr, startTimeout, s.logTail())
		}
	}
}

// peerVersion is what "bin --version" says, less the binary's path.
func peerVersion(ctx context.Context, bin string) string {
	out, err := exec.CommandContext(ctx, bin, "--version").Output()
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(out))
	if len(f) > 1 {
		f = f[1:]
	}
	return strings.Join(f, " ")
}
