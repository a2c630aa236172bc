package ui

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"
)

// The UI's cookies. All are HttpOnly, SameSite=Strict, limited to /ui/,
// and Secure when the visitor came over TLS.
const (
	// sessionCookie holds the refresh token the token service gave at
	// login: the session.
	sessionCookie = "berth_session"
	// csrfCookie holds a random value naming the visitor's browser, to
	// which the forms' tokens are bound.
	csrfCookie = "berth_csrf"
	// flashCookie carries a one-line message to the page a form sends
	// the visitor back to.
	flashCookie = "berth_flash"
	// csrfField is the forms' hidden field holding the token.
	csrfField  = "csrf"
	cookiePath = "/ui/"
)

// visitor is who a page is for.
type visitor struct {
	// Name is the user or robot name; empty for anonymous.
	Name string
	// Kind is "user" or "robot".
	Kind string
	// refresh is the session's refresh token.
	refresh string
}

// LoggedIn reports whether the visitor has a session.
func (v visitor) LoggedIn() bool { return v.refresh != "" }

// setCookie sets one of the UI's cookies; maxAge below zero removes it.
func setCookie(w http.ResponseWriter, r *http.Request, name, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name: name, Value: value, Path: cookiePath, MaxAge: maxAge,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
	})
}

func cookieValue(r *http.Request, name string) string {
	c, err := r.Cookie(name)
	if err != nil {
		return ""
	}
	return c.Value
}

// claims reads the subject, kind and expiry of a token from the token
// service. The signature is not checked here: the token service checks it
// when the UI exchanges the token, on every page.
func claims(token string) (name, kind string, exp time.Time, err error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return "", "", time.Time{}, errors.New("not a JWT")
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", "", time.Time{}, fmt.Errorf("decode token claims: %w", err)
	}
	var c struct {
		Sub  string `json:"sub"`
		Kind string `json:"kind"`
		Exp  int64  `json:"exp"`
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		return "", "", time.Time{}, fmt.Errorf("decode token claims: %w", err)
	}
	return c.Sub, c.Kind, time.Unix(c.Exp, 0), nil
}

// csrfToken is the token the forms of a page carry: an HMAC, under a key
// of this process, of the visitor's csrf cookie and session. A site that
// can neither read the visitor's cookies nor the key cannot make one.
func (u *UI) csrfToken(browser, session string) string {
	m := hmac.New(sha256.New, u.csrfKey)
	m.Write([]byte(browser))
	m.Write([]byte{0})
	m.Write([]byte(session))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// ensureBrowser returns the visitor's csrf cookie, setting a new one if
// there is none.
func ensureBrowser(w http.ResponseWriter, r *http.Request) string {
	if v := cookieValue(r, csrfCookie); len(v) >= 32 {
		return v
	}
	v := randomString()
	setCookie(w, r, csrfCookie, v, 0)
	// Later reads in this request see it too.
	r.AddCookie(&http.Cookie{Name: csrfCookie, Value: v})
	return v
}

func randomString() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails
	return base64.RawURLEncoding.EncodeToString(b)
}

// errForged is checkForm's error for a request another site may have
// made.
var errForged = errors.New("this form was not sent from Berth's own pages, or it has expired: reload the page and try again")

// checkForm refuses a POST that may come from another site: one the
// browser says is cross-site, one from another origin, and one whose form
// lacks the token of the visitor's session.
func (u *UI) checkForm(w http.ResponseWriter, r *http.Request) error {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		return errForged
	}
	from := r.Header.Get("Origin")
	if from == "" {
		from = r.Header.Get("Referer")
	}
	if from != "" && !sameHost(from, r.Host) {
		return errForged
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		return fmt.Errorf("read form: %w", err)
	}
	browser := cookieValue(r, csrfCookie)
	got := r.PostForm.Get(csrfField)
	want := u.csrfToken(browser, cookieValue(r, sessionCookie))
	if browser == "" || !hmac.Equal([]byte(got), []byte(want)) {
		return errForged
	}
	return nil
}

// sameHost reports whether the origin or page a form came from is on the
// host the visitor reached Berth at. The scheme is not compared: behind a
// proxy that ends TLS, Berth sees plain HTTP from an https origin.
func sameHost(from, host string) bool {
	u, err := url.Parse(from)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && strings.EqualFold(u.Host, host)
}

// flash is a message shown once, on the next page.
type flash struct {
	// Kind is "ok" or "error".
	Kind string `json:"k"`
	Text string `json:"t"`
}

func setFlash(w http.ResponseWriter, r *http.Request, kind, text string) {
	b, _ := json.Marshal(flash{Kind: kind, Text: text})
	setCookie(w, r, flashCookie, base64.RawURLEncoding.EncodeToString(b), 60)
}

// takeFlash reads and removes the flash message, if any.
func takeFlash(w http.ResponseWriter, r *http.Request) *flash {
	v := cookieValue(r, flashCookie)
	if v == "" {
		return nil
	}
	setCookie(w, r, flashCookie, "", -1)
	raw, err := base64.RawURLEncoding.DecodeString(v)
	if err != nil {
		return nil
	}
	var f flash
	if json.Unmarshal(raw, &f) != nil || f.Text == "" || (f.Kind != "ok" && f.Kind != "error") {
		return nil
	}
	return &f
}

// localPath returns next if it is a path of the UI, else the UI's home:
// forms send the visitor back only within the UI.
func localPath(next string) string {
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil ||
		strings.Contains(next, "\\") || strings.HasPrefix(next, "//") {
		return "/ui/"
	}
	if clean := path.Clean(u.Path); clean != u.Path && clean+"/" != u.Path || !strings.HasPrefix(u.Path, "/ui/") {
		return "/ui/"
	}
	return u.RequestURI()
}

// errLoginRefused is login's error for a wrong user name or password.
var errLoginRefused = errors.New("wrong user name or password")

// loginLimited is login's error when the token service refuses the
// visitor for too many failed logins.
type loginLimited struct{ retry string }

func (e loginLimited) Error() string {
	if n, err := strconv.Atoi(e.retry); err == nil && n > 0 {
		return fmt.Sprintf("too many failed logins: try again in %d seconds", n)
	}
	return "too many failed logins: try again later"
}

// login exchanges a user name and password for a refresh token at the
// token service the API names, as a client logging in does.
func (c *apiClient) login(ctx context.Context, user, pass string) (string, error) {
	ch, ok, err := c.discover(ctx)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", errors.New("this registry asks for no login")
	}
	realm, err := url.Parse(ch.realm)
	if err != nil {
		return "", fmt.Errorf("token realm %q: %w", ch.realm, err)
	}
	form := url.Values{"grant_type": {"password"}, "username": {user}, "password": {pass}, "access_type": {"offline"}}
	if ch.service != "" {
		form.Set("service", ch.service)
	}
	resp, err := c.send(ctx, http.MethodPost, realm.Path, []byte(form.Encode()),
		http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}, "")
	if err != nil {
		return "", err
	}
	switch resp.status {
	case http.StatusOK:
	case http.StatusUnauthorized:
		return "", errLoginRefused
	case http.StatusTooManyRequests:
		return "", loginLimited{retry: resp.header.Get("Retry-After")}
	default:
		return "", errorOf(resp)
	}
	var ans tokenAnswer
	if err := json.Unmarshal(resp.body, &ans); err != nil {
		return "", fmt.Errorf("decode token: %w", err)
	}
	if ans.RefreshToken == "" {
		return "", errors.New("the token service gave no refresh token")
	}
	return ans.RefreshToken, nil
}
