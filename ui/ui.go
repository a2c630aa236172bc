package ui

import (
	"bytes"
	"context"
	"crypto/rand"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

//go:embed templates static
var files embed.FS

// Options configure the web interface.
type Options struct {
	// Config is the ui section of the configuration.
	Config Config
	// Logger receives the failures of pages; nil discards them.
	Logger *slog.Logger
	// Now tells the time, for relative times; nil means time.Now.
	Now func() time.Time
	// APIContext, when set, derives the context of every request the
	// interface makes to the API: the server marks them as browsing, so
	// that the manifests people look at are not recorded as pulls.
	APIContext func(context.Context) context.Context
}

// UI is the web interface: an http.Handler serving /ui/ and sending a
// browser that asks / for a page there, and passing every other request
// to the API.
type UI struct {
	api     http.Handler
	cfg     Config
	log     *slog.Logger
	now     func() time.Time
	pages   map[string]*template.Template
	static  http.Handler
	csrfKey []byte
	routes  *http.ServeMux
	// apiContext is Options.APIContext.
	apiContext func(context.Context) context.Context
}

// pageNames are the templates of the pages, each executed inside
// layout.html.
var pageNames = [...]string{
	"repositories.html", "search.html", "repository.html", "artifact.html", "history.html",
	"board.html", "confirm.html", "login.html", "notfound.html", "error.html",
}

// New returns the web interface over api, the handler that serves Berth's
// HTTP API to clients (behind authentication when it is on). Requests
// outside /ui/ go to api unchanged.
func New(api http.Handler, opts Options) (*UI, error) {
	if err := opts.Config.Validate(); err != nil {
		return nil, err
	}
	u := &UI{api: api, cfg: opts.Config, log: opts.Logger, now: opts.Now, apiContext: opts.APIContext, pages: map[string]*template.Template{}}
	if u.log == nil {
		u.log = slog.New(slog.DiscardHandler)
	}
	if u.now == nil {
		u.now = time.Now
	}
	u.csrfKey = make([]byte, 32)
	if _, err := rand.Read(u.csrfKey); err != nil {
		return nil, fmt.Errorf("ui: csrf key: %w", err)
	}
	for _, name := range pageNames {
		t, err := template.New(name).Funcs(u.funcs()).ParseFS(files, "templates/layout.html", "templates/parts.html", "templates/"+name)
		if err != nil {
			return nil, fmt.Errorf("ui: parse %s: %w", name, err)
		}
		u.pages[name] = t
	}
	static, err := fs.Sub(files, "static")
	if err != nil {
		return nil, fmt.Errorf("ui: %w", err)
	}
	u.static = http.StripPrefix("/ui/static/", http.FileServer(http.FS(static)))
	u.routes = u.newRoutes()
	return u, nil
}

func (u *UI) newRoutes() *http.ServeMux {
	m := http.NewServeMux()
	m.HandleFunc("GET /ui/{$}", u.page(u.repositoriesPage))
	m.HandleFunc("GET /ui/search", u.page(u.searchPage))
	m.HandleFunc("GET /ui/r/{path...}", u.page(u.repositoryPages))
	m.HandleFunc("GET /ui/board", u.page(u.boardPage))
	m.HandleFunc("GET /ui/board/confirm", u.page(u.confirmPage))
	m.HandleFunc("POST /ui/board/promote", u.form(u.promote))
	m.HandleFunc("POST /ui/board/rollback", u.form(u.rollback))
	m.HandleFunc("GET /ui/login", u.page(u.loginPage))
	m.HandleFunc("POST /ui/login", u.form(u.loginForm))
	m.HandleFunc("POST /ui/logout", u.form(u.logout))
	m.HandleFunc("GET /ui/static/", u.serveStatic)
	m.HandleFunc("/ui/", u.page(func(*request) error { return errNotFound }))
	return m
}

// ServeHTTP serves the web interface under /ui/, sends a browser asking
// for / to it, and passes everything else to the API.
func (u *UI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch p := r.URL.Path; {
	case p == "/" && (r.Method == http.MethodGet || r.Method == http.MethodHead) &&
		strings.Contains(r.Header.Get("Accept"), "text/html"):
		http.Redirect(w, r, "/ui/", http.StatusSeeOther)
	case p == "/ui":
		http.Redirect(w, r, "/ui/", http.StatusMovedPermanently)
	case strings.HasPrefix(p, "/ui/"):
		securityHeaders(w.Header())
		u.routes.ServeHTTP(w, r)
	default:
		u.api.ServeHTTP(w, r)
	}
}

// securityHeaders keeps the pages to their own origin: no script, style,
// font or frame from elsewhere, no framing by another site.
func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
		"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
}

func (u *UI) serveStatic(w http.ResponseWriter, r *http.Request) {
	// The assets change with the binary: a day's cache, revalidated.
	w.Header().Set("Cache-Control", "public, max-age=86400, must-revalidate")
	u.static.ServeHTTP(w, r)
}

// request is one page request: the visitor, its API client and what the
// page will render.
type request struct {
	w     http.ResponseWriter
	r     *http.Request
	ctx   context.Context
	api   *apiClient
	who   visitor
	flash *flash
	// auth reports whether the API asks for credentials.
	auth bool
}

// errNotFound answers a page for something that does not exist or that
// the visitor may not see: the two look the same.
var errNotFound = errors.New("not found")

// badRequest is a page error for a request that cannot be answered, said
// to the visitor as it is.
type badRequest string

func (e badRequest) Error() string { return string(e) }

// begin reads the visitor's session and prepares the API client: with
// authentication on, it asks the token service once for a token naming
// the visitor (from the session's refresh token, or anonymous) that also
// covers the listings filtered per caller. A session the token service no
// longer accepts (expired, or its user removed) is ended, with a message.
func (u *UI) begin(w http.ResponseWriter, r *http.Request) *request {
	req := &request{w: w, r: r, ctx: r.Context(), api: &apiClient{api: u.api, orig: r, mark: u.apiContext}}
	req.flash = takeFlash(w, r)
	_, auth, err := req.api.discover(req.ctx)
	if err != nil {
		u.log.WarnContext(req.ctx, "ui: the API names no token service", "error", err)
	}
	req.auth = auth
	if !auth {
		return req
	}
	if tok := cookieValue(r, sessionCookie); tok != "" {
		name, kind, _, err := claims(tok)
		if err == nil {
			req.api.refresh = tok
			err = req.api.authorize(req.ctx, catalogScope)
		}
		if err == nil {
			req.who = visitor{Name: name, Kind: kind, refresh: tok}
			return req
		}
		req.api.refresh, req.api.tokens = "", nil
		setCookie(w, r, sessionCookie, "", -1)
		r.AddCookie(&http.Cookie{Name: sessionCookie}) // reads below see no session
		req.flash = &flash{Kind: "error", Text: "Your session has ended: log in again."}
	}
	if err := req.api.authorize(req.ctx, catalogScope); err != nil && req.ctx.Err() == nil {
		u.log.WarnContext(req.ctx, "ui: no anonymous token", "error", err)
	}
	return req
}

// catalogScope is the scope of the listings the API filters per caller:
// the catalog, the repository summaries and metadata search.
const catalogScope = "registry:catalog:*"

// page wraps a GET handler: it begins the request and answers its errors
// with the not-found or error page.
func (u *UI) page(h func(*request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		req := u.begin(w, r)
		if err := h(req); err != nil {
			u.fail(req, err)
		}
	}
}

// form wraps a POST handler: the form must come from the UI's own pages.
func (u *UI) form(h func(*request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := u.checkForm(w, r); err != nil {
			u.log.InfoContext(r.Context(), "ui: form refused", "path", r.URL.Path, "remote", r.RemoteAddr, "error", err)
			req := &request{w: w, r: r, ctx: r.Context()}
			u.render(req, http.StatusForbidden, "error.html", "Refused", errorView{Title: "Refused", Message: errForged.Error()})
			return
		}
		req := u.begin(w, r)
		if err := h(req); err != nil {
			u.fail(req, err)
		}
	}
}

// errorView is the data of the error page.
type errorView struct {
	Title   string
	Message string
}

// fail answers a page that could not be built.
func (u *UI) fail(req *request, err error) {
	var br badRequest
	switch {
	case errors.Is(err, errNotFound), hidden(err):
		u.render(req, http.StatusNotFound, "notfound.html", "Not found", nil)
	case errors.As(err, &br):
		u.render(req, http.StatusBadRequest, "error.html", "Bad request", errorView{Title: "Bad request", Message: br.Error()})
	default:
		if req.ctx.Err() == nil {
			u.log.ErrorContext(req.ctx, "ui: page failed", "path", req.r.URL.Path, "error", err)
		}
		u.render(req, http.StatusInternalServerError, "error.html", "Error",
			errorView{Title: "Something went wrong", Message: "Berth could not build this page; the server log says why."})
	}
}

// view is what every page renders.
type view struct {
	Title string
	// Nav names the section of the navigation the page belongs to.
	Nav   string
	Who   visitor
	Auth  bool
	CSRF  string
	Flash *flash
	// Here is the page's own path and query, for the login form's return.
	Here string
	// Environments are the release board's columns.
	Environments []string
	Data         any
}

// render executes a page inside the layout and writes it with status.
func (u *UI) render(req *request, status int, name, title string, data any) {
	v := view{Title: title, Who: req.who, Auth: req.auth, Flash: req.flash, Here: localPath(req.r.URL.RequestURI()),
		Environments: u.cfg.Environments, Data: data}
	v.Nav = map[string]string{"repositories.html": "repositories", "repository.html": "repositories", "artifact.html": "repositories",
		"history.html": "repositories", "search.html": "search", "board.html": "board", "confirm.html": "board", "login.html": "login"}[name]
	v.CSRF = u.csrfToken(ensureBrowser(req.w, req.r), cookieValue(req.r, sessionCookie))
	var buf bytes.Buffer
	if err := u.pages[name].ExecuteTemplate(&buf, "layout.html", v); err != nil {
		u.log.ErrorContext(req.ctx, "ui: render page", "page", name, "error", err)
		http.Error(req.w, "Berth could not render this page.", http.StatusInternalServerError)
		return
	}
	h := req.w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	// Pages show what this visitor may see: never kept by a cache.
	h.Set("Cache-Control", "no-store")
	h.Set("Vary", "Cookie")
	req.w.WriteHeader(status)
	_, _ = req.w.Write(buf.Bytes())
}

// redirect sends the visitor to path, a page of the UI, after a form.
func redirect(req *request, path string) {
	http.Redirect(req.w, req.r, localPath(path), http.StatusSeeOther)
}
