package conformance_test

import (
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Every kind of bad credential, against a real berth: each gets 401 with a
// Bearer challenge and the spec's error body, and none is ever logged.
func TestBadCredentials(t *testing.T) {
	srv := startAuthServerWith(t, "  token:\n    lifetime: 2s\n")
	admin := srv.client("admin", true)
	seed(t, admin, "team/app", "v1")
	seed(t, admin, "team/other", "v1")
	url := srv.URL + "/v2/team/app/tags/list"

	good := tokenFor(t, srv.URL, "writer", "writer-pw", "repository:team/app:pull")
	if st := bearerStatus(t, url, good); st != http.StatusOK {
		t.Fatalf("a good token: status %d", st)
	}
	head, payload, sig := splitJWT(t, good)
	forgedPayload := strings.Replace(decodeSeg(t, payload), `"writer"`, `"admin"`, 1)
	tampered := head + "." + base64.RawURLEncoding.EncodeToString([]byte(forgedPayload)) + "." + sig
	none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." +
		base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(decodeSeg(t, payload), `"writer"`, `"admin"`, 1))) + "."

	checks := map[string]int{
		"wrong password": basicStatus(t, url, "writer", "not-the-password"),
		"unknown user":   basicStatus(t, url, "mallory", "writer-pw"),
		"tampered JWT":   bearerStatus(t, url, tampered),
		"alg none":       bearerStatus(t, url, none),
		"not a JWT":      bearerStatus(t, url, "definitely.not.ajwt"),
	}
	for name, st := range checks {
		if st != http.StatusUnauthorized {
			t.Errorf("%s: status %d, want 401", name, st)
		}
	}
	// A token for another repository does not open this one: the caller
	// may read it, so it is told to fetch a token with the right scope.
	other := tokenFor(t, srv.URL, "writer", "writer-pw", "repository:team/other:pull")
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+other)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="insufficient_scope"`) {
		t.Errorf("token for another repository: status %d, challenge %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	// A reader's token for a repository the reader may not write, used to
	// write: refused outright.
	readerTok := tokenFor(t, srv.URL, "reader", "reader-pw", "repository:team/app:pull,push")
	req, _ = http.NewRequest(http.MethodPost, srv.URL+"/v2/team/app/blobs/uploads/", nil)
	req.Header.Set("Authorization", "Bearer "+readerTok)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("reader pushing with a token: status %d, want 403", resp.StatusCode)
	}
	// Expired: the configured lifetime is two seconds.
	deadline := time.Now().Add(10 * time.Second)
	for bearerStatus(t, url, good) != http.StatusUnauthorized {
		if time.Now().After(deadline) {
			t.Fatal("a token was still accepted 10s after its 2s lifetime")
		}
		time.Sleep(200 * time.Millisecond)
	}

	logs := srv.Logs()
	for _, secret := range []string{"writer-pw", "reader-pw", "admin-pw", "not-the-password", good, sig, readerTok} {
		if strings.Contains(logs, secret) {
			t.Errorf("the server log contains a secret (%.12s...)", secret)
		}
	}
}

func splitJWT(t *testing.T, tok string) (string, string, string) {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", tok)
	}
	return parts[0], parts[1], parts[2]
}

func decodeSeg(t *testing.T, seg string) string {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
