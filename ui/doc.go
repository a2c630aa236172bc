// Package ui serves Berth's web interface for people, at /ui/: the
// repositories with their tags and artifacts, the referrers of each
// artifact (signatures, SBOMs, attestations), the history of each tag, and
// a release board where the environment tags of repositories are columns
// that people with push access promote along and roll back.
//
// It owns the pages (html/template, embedded with the stylesheet and a
// small script that only enhances them), the login session, and the
// protection of its forms against cross-site requests. It owns no data:
// every page is built from requests to Berth's public HTTP API, sent
// in-process to the same handler that serves clients, carrying the
// session's token, so the access rules and filters of the API apply to
// the pages exactly as they apply to any client. A page for something the
// API refuses to show answers as if it did not exist.
package ui
