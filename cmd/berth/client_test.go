package main

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// roundTripFunc records what the client would send.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestTokenChallenge checks where the client sends credentials when asked
// for a token: only to the registry's own host, never from https down to
// http, and not again once the registry has refused them.
func TestTokenChallenge(t *testing.T) {
	base, _ := url.Parse("https://registry.example.com")
	var sent []string
	c := &apiClient{base: base, username: "alice", password: "pw", http: &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		user, pass, _ := r.BasicAuth()
		sent = append(sent, r.URL.Scheme+"://"+r.URL.Host+r.URL.Path+" "+user+":"+pass)
		return &http.Response{StatusCode: http.StatusOK, Body: io.NopCloser(strings.NewReader(`{"token":"T"}`)), Header: http.Header{}}, nil
	})}}
	for _, tc := range []struct {
		challenge string
		want      bool
	}{
		{`Bearer realm="https://registry.example.com/auth/token",service="berth",scope="repository:a:pull"`, true},
		{`Bearer realm="https://REGISTRY.example.com/auth/token",service="berth"`, true},
		{`Bearer realm="http://registry.example.com/auth/token",service="berth"`, false},
		{`Bearer realm="https://elsewhere.example.com/auth/token",service="berth"`, false},
		{`Bearer realm="https://registry.example.com:8443/auth/token",service="berth"`, false},
		{`Bearer realm="https://registry.example.com/auth/token",service="berth",error="invalid_token"`, false},
		{`Basic realm="registry"`, false},
	} {
		sent = nil
		tok, ok := c.token(context.Background(), tc.challenge)
		if ok != tc.want || (ok && tok != "T") {
			t.Errorf("%s: token %q %v, want %v", tc.challenge, tok, ok, tc.want)
		}
		if !tc.want && len(sent) != 0 {
			t.Errorf("%s: sent %v", tc.challenge, sent)
		}
		if tc.want && (len(sent) != 1 || !strings.HasSuffix(sent[0], " alice:pw")) {
			t.Errorf("%s: sent %v, want one request with the credentials", tc.challenge, sent)
		}
	}
}
