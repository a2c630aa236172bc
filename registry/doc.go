// Package registry assembles a Berth server from its parts: it owns the
// configuration (defaults, YAML file, BERTH_* environment variables), opens
// the store, wraps the distribution API in middleware (request logging,
// panic recovery), puts the web interface in front of it, and runs the
// HTTP server with timeouts and a graceful shutdown.
package registry
