package ui

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Bounds on what one page reads and shows.
const (
	repositoriesPerPage = 50
	historyPerPage      = 50
	searchPerPage       = 50
	// maxRepoManifests bounds the manifests a repository page reads.
	maxRepoManifests = 2000
	// maxTagRows bounds the tags a repository page describes one by one.
	maxTagRows = 200
	// maxConfigBytes bounds the image config an artifact page reads.
	maxConfigBytes = 1 << 20
	// maxReferrerNodes and maxReferrerDepth bound a referrers tree.
	maxReferrerNodes = 100
	maxReferrerDepth = 4
)

// nameRE is the specification's grammar of a repository name.
var nameRE = regexp.MustCompile(`^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$`)

// digestRE is the form of a digest the pages accept in their paths.
var digestRE = regexp.MustCompile(`^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$`)

// --- Repositories ---

// repositoriesView is the data of the repositories page.
type repositoriesView struct {
	Q            string
	Repositories []repoSummary
	// Next is the URL of the next page; empty on the last.
	Next   string
	Search searchForm
}

func (u *UI) repositoriesPage(req *request) error {
	q := strings.TrimSpace(req.r.URL.Query().Get("q"))
	query := url.Values{"n": {strconv.Itoa(repositoriesPerPage)}}
	if q != "" {
		query.Set("q", q)
	}
	if last := req.r.URL.Query().Get("last"); last != "" {
		query.Set("last", last)
	}
	var body struct {
		Repositories []repoSummary `json:"repositories"`
	}
	resp, err := req.api.getJSON(req.ctx, "/v2/_berth/repositories", query, &body)
	if err != nil {
		var e *apiError
		if errors.As(err, &e) && e.Status == http.StatusBadRequest {
			return badRequest(e.Message)
		}
		return err
	}
	v := repositoriesView{Q: q, Repositories: body.Repositories}
	if last := nextLast(resp); last != "" {
		next := url.Values{"last": {last}}
		if q != "" {
			next.Set("q", q)
		}
		v.Next = "/ui/?" + next.Encode()
	}
	u.render(req, http.StatusOK, "repositories.html", "Repositories", v)
	return nil
}

// --- Search ---

// searchForm is the search form's fields.
type searchForm struct {
	Text, Annotation, Label, Commit, Repository string
}

// searchView is the data of the search page.
type searchView struct {
	Form    searchForm
	Asked   bool
	Results []searchResult
	Next    string
	Error   string
}

// hexRE matches a whole commit id.
var hexRE = regexp.MustCompile(`^[0-9a-f]{40}([0-9a-f]{24})?$`)

func (u *UI) searchPage(req *request) error {
	in := req.r.URL.Query()
	f := searchForm{
		Text: strings.TrimSpace(in.Get("text")), Annotation: strings.TrimSpace(in.Get("annotation")),
		Label: strings.TrimSpace(in.Get("label")), Commit: strings.TrimSpace(in.Get("commit")),
		Repository: strings.TrimSpace(in.Get("repository")),
	}
	v := searchView{Form: f}
	q := url.Values{"n": {strconv.Itoa(searchPerPage)}}
	text := f.Text
	if f.Annotation != "" {
		q.Set("annotation", f.Annotation)
	}
	if f.Label != "" {
		q.Set("label", f.Label)
	}
	if c := strings.ToLower(f.Commit); c != "" {
		if hexRE.MatchString(c) {
			// A whole commit id is looked up in the annotation index.
			q.Add("annotation", annotationRevision+"="+c)
		} else {
			text = strings.TrimSpace(text + " " + c)
		}
	}
	if text != "" {
		q.Set("text", text)
	}
	if f.Repository != "" {
		q.Set("repository", f.Repository)
	}
	if len(q) == 1 {
		u.render(req, http.StatusOK, "search.html", "Search", v)
		return nil
	}
	v.Asked = true
	if last := in.Get("last"); last != "" {
		q.Set("last", last)
	}
	var body struct {
		Results []searchResult `json:"results"`
	}
	resp, err := req.api.getJSON(req.ctx, "/v2/_berth/search", q, &body)
	if err != nil {
		var e *apiError
		if errors.As(err, &e) && e.Status == http.StatusBadRequest {
			v.Error = e.Message
			u.render(req, http.StatusBadRequest, "search.html", "Search", v)
			return nil
		}
		return err
	}
	v.Results = body.Results
	if last := nextLast(resp); last != "" {
		next := cloneValues(in)
		next.Set("last", last)
		v.Next = "/ui/search?" + next.Encode()
	}
	u.render(req, http.StatusOK, "search.html", "Search", v)
	return nil
}

// --- Repository pages: /ui/r/<name>[/-/artifact/<ref> | /-/history/<tag>] ---

func (u *UI) repositoryPages(req *request) error {
	path := req.r.PathValue("path")
	name, rest, _ := strings.Cut(path, "/-/")
	name = strings.TrimSuffix(name, "/")
	if !nameRE.MatchString(name) || len(name) > 255 {
		return errNotFound
	}
	switch kind, ref, _ := strings.Cut(rest, "/"); {
	case rest == "":
		return u.repositoryPage(req, name)
	case kind == "artifact" && (tagRE.MatchString(ref) || digestRE.MatchString(ref)):
		return u.artifactPage(req, name, ref)
	case kind == "history" && tagRE.MatchString(ref):
		return u.historyPage(req, name, ref)
	}
	return errNotFound
}

// tagRow is one tag of the repository page.
type tagRow struct {
	Tag          string
	Digest       string
	Size         int64
	Created      time.Time
	Commit       string
	Version      string
	ArtifactType string
	// Kind is image, index or artifact; Platforms counts an index's.
	Kind      string
	Platforms int
	Signed    bool
	// Environment marks a tag that is a column of the release board.
	Environment bool
}

// repositoryView is the data of the repository page.
type repositoryView struct {
	Name string
	Tags []tagRow
	// SignatureTags counts the tags of the referrers tag schema
	// (sha256-<hex>.sig, .att, .sbom), which are not listed.
	SignatureTags int
	Untagged      int
	Manifests     int
	// Truncated reports that the repository holds more than the page
	// shows.
	Truncated bool
}

// signatureTagRE matches a tag of the referrers tag schema.
var signatureTagRE = regexp.MustCompile(`^(sha256|sha512)-([a-f0-9]+)\.(sig|att|sbom)$`)

func (u *UI) repositoryPage(req *request, name string) error {
	if err := req.api.authorize(req.ctx, "repository:"+name+":pull", catalogScope); err != nil {
		return err
	}
	// The tag list answers 404 for an unknown repository and refuses one
	// the visitor may not see: both are "not found" here.
	if _, err := req.api.get(req.ctx, "/v2/"+name+"/tags/list", url.Values{"n": {"1"}}); err != nil {
		return err
	}
	results, truncated, err := req.api.searchAll(req.ctx, url.Values{"repository": {name}}, maxRepoManifests)
	if err != nil {
		return err
	}
	v := repositoryView{Name: name, Manifests: len(results), Truncated: truncated}
	signed := map[string]bool{}
	var rows []tagRow
	for _, res := range results {
		if len(res.Tags) == 0 {
			v.Untagged++
		}
		for _, tag := range res.Tags {
			if m := signatureTagRE.FindStringSubmatch(tag); m != nil {
				v.SignatureTags++
				if m[3] == "sig" {
					signed[m[1]+":"+m[2]] = true
				}
				continue
			}
			rows = append(rows, tagRow{Tag: tag, Digest: res.Digest, Created: res.Created, Commit: res.Commit(),
				Version: versionOf(res.Annotations, res.Labels), ArtifactType: res.ArtifactType,
				Environment: slices.Contains(u.cfg.Environments, tag)})
		}
	}
	sort.Slice(rows, func(i, j int) bool {
		if !rows[i].Created.Equal(rows[j].Created) {
			return rows[i].Created.After(rows[j].Created)
		}
		return rows[i].Tag < rows[j].Tag
	})
	if len(rows) > maxTagRows {
		rows, v.Truncated = rows[:maxTagRows], true
	}
	// Describe each digest once: its size, kind and signatures.
	type facts struct {
		size      int64
		kind      string
		platforms int
		signed    bool
	}
	known := map[string]facts{}
	for i, row := range rows {
		f, ok := known[row.Digest]
		if !ok {
			m, _, mediaType, raw, err := req.api.getManifest(req.ctx, name, row.Digest)
			if err != nil {
				return err
			}
			f.kind, f.size, f.platforms = artifactKind(m, mediaType, int64(len(raw)))
			refs, err := req.api.referrers(req.ctx, name, row.Digest)
			if err != nil {
				return err
			}
			f.signed = signed[row.Digest] || slices.ContainsFunc(refs, func(d descriptor) bool { return referrerKind(d.ArtifactType) == "signature" })
			known[row.Digest] = f
		}
		rows[i].Size, rows[i].Kind, rows[i].Platforms, rows[i].Signed = f.size, f.kind, f.platforms, f.signed
	}
	v.Tags = rows
	u.render(req, http.StatusOK, "repository.html", name, v)
	return nil
}

// artifactKind says what a manifest describes, and its size: the manifest
// with its config and layers for an image or artifact, the index with its
// children's manifests for an index.
func artifactKind(m manifest, mediaType string, manifestSize int64) (kind string, size int64, platforms int) {
	size = manifestSize
	if isIndex(mediaType) {
		for _, c := range m.Manifests {
			size += c.Size
		}
		return "index", size, len(m.Manifests)
	}
	if m.Config != nil {
		size += m.Config.Size
	}
	for _, l := range m.Layers {
		size += l.Size
	}
	if m.Config != nil && isImageConfig(m.Config.MediaType) && m.ArtifactType == "" {
		return "image", size, 0
	}
	return "artifact", size, 0
}

// referrerKind sorts a referrer by its artifact type: signature, sbom,
// attestation or other.
func referrerKind(artifactType string) string {
	t := strings.ToLower(artifactType)
	switch {
	case strings.Contains(t, "signature"), strings.Contains(t, "cosign.artifact.sig"), strings.Contains(t, "sigstore.bundle"):
		return "signature"
	case strings.Contains(t, "spdx"), strings.Contains(t, "cyclonedx"), strings.Contains(t, "sbom"), strings.Contains(t, "syft"):
		return "sbom"
	case strings.Contains(t, "in-toto"), strings.Contains(t, "attestation"), strings.Contains(t, "provenance"),
		strings.Contains(t, "slsa"), strings.Contains(t, "dsse"), strings.Contains(t, "vex"):
		return "attestation"
	}
	return "other"
}

// --- Artifact ---

// kv is one annotation or label.
type kv struct{ Key, Value string }

func sortedKV(m map[string]string) []kv {
	out := make([]kv, 0, len(m))
	for k, v := range m {
		out = append(out, kv{k, v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// refNode is one referrer in the referrers tree of an artifact page.
type refNode struct {
	Repo         string
	Digest       string
	ArtifactType string
	Kind         string
	Size         int64
	Created      time.Time
	// Tag is set for a referrer attached by the tag schema rather than
	// the referrers API.
	Tag      string
	Children []*refNode
}

// imageConfig is what an artifact page shows of an image config.
type imageConfig struct {
	OS           string
	Architecture string
	Variant      string
	Created      time.Time
	Entrypoint   []string
	Cmd          []string
	User         string
	Labels       []kv
}

// command is a copyable command line.
type command struct {
	Tool string
	Line string
}

// artifactView is the data of the artifact page.
type artifactView struct {
	Repo, Ref, Digest  string
	MediaType, Type    string
	Kind               string
	Tags               []string
	Created, Pushed    time.Time
	ManifestSize, Size int64
	Commit, Version    string
	Source             string
	Config             *descriptor
	Image              *imageConfig
	Layers             []descriptor
	Platforms          []descriptor
	Subject            *descriptor
	Annotations        []kv
	Labels             []kv
	Referrers          []*refNode
	Commands           []command
	Raw                string
}

func (u *UI) artifactPage(req *request, repo, ref string) error {
	if err := req.api.authorize(req.ctx, "repository:"+repo+":pull", catalogScope); err != nil {
		return err
	}
	m, dgst, mediaType, raw, err := req.api.getManifest(req.ctx, repo, ref)
	if err != nil {
		return err
	}
	v := artifactView{Repo: repo, Ref: ref, Digest: dgst, MediaType: mediaType, Type: m.ArtifactType,
		ManifestSize: int64(len(raw)), Subject: m.Subject, Annotations: sortedKV(m.Annotations)}
	v.Kind, v.Size, _ = artifactKind(m, mediaType, int64(len(raw)))
	if isIndex(mediaType) {
		v.Platforms = m.Manifests
	} else {
		v.Config, v.Layers = m.Config, m.Layers
	}
	// What the index knows of it: tags, times, labels.
	res, _, err := req.api.searchAll(req.ctx, url.Values{"repository": {repo}, "digest": {dgst}}, 1)
	if err != nil {
		return err
	}
	var labels map[string]string
	if len(res) > 0 {
		v.Tags, v.Created, v.Pushed, labels = res[0].Tags, res[0].Created, res[0].Pushed, res[0].Labels
	}
	if m.Config != nil && isImageConfig(m.Config.MediaType) && m.Config.Size <= maxConfigBytes {
		if v.Image, err = readImageConfig(req, repo, m.Config.Digest); err != nil {
			return err
		}
	}
	if v.Image != nil && labels == nil {
		for _, l := range v.Image.Labels {
			if labels == nil {
				labels = map[string]string{}
			}
			labels[l.Key] = l.Value
		}
	}
	v.Labels = sortedKV(labels)
	v.Commit, v.Version = commitOf(m.Annotations, labels), versionOf(m.Annotations, labels)
	v.Source = m.Annotations[annotationSource]
	nodes := 0
	if v.Referrers, err = referrerTree(req, repo, dgst, 1, &nodes); err != nil {
		return err
	}
	// Signatures, attestations and SBOMs attached by the tag schema.
	if alg, hex, ok := strings.Cut(dgst, ":"); ok {
		for _, kind := range []struct{ suffix, kind string }{{"sig", "signature"}, {"att", "attestation"}, {"sbom", "sbom"}} {
			tag := alg + "-" + hex + "." + kind.suffix
			d, err := req.api.headManifest(req.ctx, repo, tag)
			if err != nil {
				return err
			}
			if d != "" {
				v.Referrers = append(v.Referrers, &refNode{Repo: repo, Digest: d, Kind: kind.kind, Tag: tag})
			}
		}
	}
	v.Commands = commands(req, repo, dgst, v.Kind, mediaType)
	var pretty bytes.Buffer
	if json.Indent(&pretty, raw, "", "  ") == nil {
		v.Raw = pretty.String()
	}
	title := repo + "@" + shortDigest(dgst)
	if !strings.Contains(ref, ":") {
		title = repo + ":" + ref
	}
	u.render(req, http.StatusOK, "artifact.html", title, v)
	return nil
}

// readImageConfig reads the parts of an image config a page shows.
func readImageConfig(req *request, repo, dgst string) (*imageConfig, error) {
	resp, err := req.api.get(req.ctx, "/v2/"+repo+"/blobs/"+dgst, nil)
	if err != nil {
		if hidden(err) {
			return nil, nil // a config the repository lacks is not the page's failure
		}
		return nil, err
	}
	var c struct {
		OS           string    `json:"os"`
		Architecture string    `json:"architecture"`
		Variant      string    `json:"variant"`
		Created      time.Time `json:"created"`
		Config       struct {
			Entrypoint []string          `json:"Entrypoint"`
			Cmd        []string          `json:"Cmd"`
			User       string            `json:"User"`
			Labels     map[string]string `json:"Labels"`
		} `json:"config"`
	}
	if json.Unmarshal(resp.body, &c) != nil {
		return nil, nil // not an image config after all: nothing to show
	}
	return &imageConfig{OS: c.OS, Architecture: c.Architecture, Variant: c.Variant, Created: c.Created,
		Entrypoint: c.Config.Entrypoint, Cmd: c.Config.Cmd, User: c.Config.User, Labels: sortedKV(c.Config.Labels)}, nil
}

// referrerTree reads the referrers of dgst, and theirs, depth first, up to
// maxReferrerDepth levels and maxReferrerNodes in all.
func referrerTree(req *request, repo, dgst string, depth int, nodes *int) ([]*refNode, error) {
	if depth > maxReferrerDepth || *nodes >= maxReferrerNodes {
		return nil, nil
	}
	refs, err := req.api.referrers(req.ctx, repo, dgst)
	if err != nil {
		return nil, err
	}
	var out []*refNode
	for _, d := range refs {
		if *nodes >= maxReferrerNodes {
			break
		}
		*nodes++
		n := &refNode{Repo: repo, Digest: d.Digest, ArtifactType: d.ArtifactType, Kind: referrerKind(d.ArtifactType), Size: d.Size}
		if t, err := time.Parse(time.RFC3339, d.Annotations["org.opencontainers.image.created"]); err == nil {
			n.Created = t
		}
		if n.Children, err = referrerTree(req, repo, d.Digest, depth+1, nodes); err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}

// commands are the command lines that pull an artifact by digest.
func commands(req *request, repo, dgst, kind, mediaType string) []command {
	host := req.r.Host
	ref := host + "/" + repo + "@" + dgst
	tls := req.r.TLS != nil
	insecure, plain, scheme := " --insecure", " --plain-http", "http"
	if tls {
		insecure, plain, scheme = "", "", "https"
	}
	var out []command
	if kind != "artifact" {
		out = append(out, command{"docker", "docker pull " + ref})
	}
	out = append(out,
		command{"crane", "crane manifest" + insecure + " " + ref},
		command{"oras", "oras pull" + plain + " " + ref})
	user := ""
	if req.who.LoggedIn() {
		user = " -u " + req.who.Name
	}
	out = append(out, command{"curl", "curl" + user + " -H 'Accept: " + mediaType + "' " + scheme + "://" + host + "/v2/" + repo + "/manifests/" + dgst})
	return out
}

// --- History ---

// historyView is the data of a tag's history page.
type historyView struct {
	Repo, Tag string
	Moves     []tagMove
	Next      string
}

func (u *UI) historyPage(req *request, repo, tag string) error {
	if err := req.api.authorize(req.ctx, "repository:"+repo+":pull", catalogScope); err != nil {
		return err
	}
	q := url.Values{"n": {strconv.Itoa(historyPerPage)}}
	if last := req.r.URL.Query().Get("last"); last != "" {
		if _, err := strconv.ParseUint(last, 10, 64); err != nil {
			return badRequest("last must be the number of a move")
		}
		q.Set("last", last)
	}
	var body struct {
		History []tagMove `json:"history"`
	}
	resp, err := req.api.getJSON(req.ctx, "/v2/"+repo+"/_berth/tags/"+tag+"/history", q, &body)
	if err != nil {
		return err
	}
	v := historyView{Repo: repo, Tag: tag, Moves: body.History}
	if last := nextLast(resp); last != "" {
		v.Next = historyURL(repo, tag) + "?" + url.Values{"last": {last}}.Encode()
	}
	u.render(req, http.StatusOK, "history.html", repo+":"+tag+" history", v)
	return nil
}

// --- Login ---

// loginView is the data of the login page.
type loginView struct {
	User  string
	Next  string
	Error string
}

func (u *UI) loginPage(req *request) error {
	if !req.auth {
		setFlash(req.w, req.r, "ok", "This registry asks for no login.")
		redirect(req, "/ui/")
		return nil
	}
	u.render(req, http.StatusOK, "login.html", "Log in", loginView{Next: localPath(req.r.URL.Query().Get("next"))})
	return nil
}

func (u *UI) loginForm(req *request) error {
	if !req.auth {
		return u.loginPage(req)
	}
	user := strings.TrimSpace(req.r.PostForm.Get("username"))
	pass := req.r.PostForm.Get("password")
	next := localPath(req.r.PostForm.Get("next"))
	v := loginView{User: user, Next: next}
	if user == "" || pass == "" {
		v.Error = "Enter your user name and password."
		u.render(req, http.StatusBadRequest, "login.html", "Log in", v)
		return nil
	}
	refresh, err := req.api.login(req.ctx, user, pass)
	var limited loginLimited
	switch {
	case errors.Is(err, errLoginRefused):
		v.Error = "Wrong user name or password."
		u.render(req, http.StatusUnauthorized, "login.html", "Log in", v)
		return nil
	case errors.As(err, &limited):
		v.Error = strings.ToUpper(limited.Error()[:1]) + limited.Error()[1:] + "."
		u.render(req, http.StatusTooManyRequests, "login.html", "Log in", v)
		return nil
	case err != nil:
		return err
	}
	name, kind, exp, err := claims(refresh)
	if err != nil {
		return err
	}
	maxAge := int(exp.Sub(u.now()).Seconds())
	setCookie(req.w, req.r, sessionCookie, refresh, max(maxAge, 1))
	// A new session, a new browser id: forms made before do not carry over.
	setCookie(req.w, req.r, csrfCookie, randomString(), 0)
	u.log.InfoContext(req.ctx, "ui: login", "identity", kind+":"+name, "remote", req.r.RemoteAddr)
	setFlash(req.w, req.r, "ok", "Logged in as "+name+".")
	redirect(req, next)
	return nil
}

func (u *UI) logout(req *request) error {
	setCookie(req.w, req.r, sessionCookie, "", -1)
	setCookie(req.w, req.r, csrfCookie, randomString(), 0)
	setFlash(req.w, req.r, "ok", "Logged out.")
	redirect(req, "/ui/")
	return nil
}
