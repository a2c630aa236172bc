package ui

import (
	"errors"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"
)

// maxBoardRows bounds the repositories a release board shows.
const maxBoardRows = 100

// boardCell is one environment of one repository on the release board.
type boardCell struct {
	Env string
	// Digest is what the environment's tag names; empty when the tag is
	// not set.
	Digest string
	// Letter names the artifact within its row: cells with the same
	// letter hold the same digest.
	Letter  string
	Commit  string
	Version string
	// Since, By and Action describe the tag's last move.
	Since  time.Time
	By     string
	Action string
	// Previous is the digest the tag named before its last move: what a
	// rollback restores.
	Previous string
	// Next is the environment a promotion from here moves the digest
	// to, when that is a move; empty otherwise.
	Next string
}

// boardRow is one repository on the release board.
type boardRow struct {
	Repo  string
	Cells []boardCell
	// Same reports that every environment names one artifact.
	Same bool
	// CanPush reports that the visitor may promote and roll back here.
	CanPush bool
}

// boardView is the data of the release board.
type boardView struct {
	Repository string
	Rows       []boardRow
	Truncated  bool
	Back       string
}

// boardFilter reads the repository filter of the board: a name, or a
// name followed by /** for every repository under it.
func boardFilter(r *http.Request) (string, error) {
	f := strings.TrimSpace(r.URL.Query().Get("repository"))
	if f == "" || f == "**" {
		return "", nil
	}
	if !nameRE.MatchString(strings.TrimSuffix(f, "/**")) {
		return "", badRequest("repository: want a repository name, or a name followed by /**")
	}
	return f, nil
}

func (u *UI) boardPage(req *request) error {
	filter, err := boardFilter(req.r)
	if err != nil {
		return err
	}
	v := boardView{Repository: filter, Back: localPath(req.r.URL.RequestURI())}
	// Which digest each environment tag names, in every repository the
	// visitor may see: one search per environment.
	found := map[string]map[string]searchResult{} // repo -> env -> result
	for _, env := range u.cfg.Environments {
		q := url.Values{"tag": {env}}
		if filter != "" {
			q.Set("repository", filter)
		}
		results, truncated, err := req.api.searchAll(req.ctx, q, maxBoardRows)
		if err != nil {
			var e *apiError
			if errors.As(err, &e) && e.Status == http.StatusBadRequest {
				return badRequest(e.Message)
			}
			return err
		}
		v.Truncated = v.Truncated || truncated
		for _, res := range results {
			if found[res.Repository] == nil {
				found[res.Repository] = map[string]searchResult{}
			}
			found[res.Repository][env] = res
		}
	}
	repos := make([]string, 0, len(found))
	for repo := range found {
		repos = append(repos, repo)
	}
	sort.Strings(repos)
	if len(repos) > maxBoardRows {
		repos, v.Truncated = repos[:maxBoardRows], true
	}
	// One token for everything the board reads and may change.
	scopes := []string{catalogScope}
	for _, repo := range repos {
		scopes = append(scopes, "repository:"+repo+":pull,push")
	}
	if err := req.api.authorize(req.ctx, scopes...); err != nil {
		return err
	}
	for _, repo := range repos {
		row, err := u.boardRow(req, repo, found[repo])
		if err != nil {
			return err
		}
		v.Rows = append(v.Rows, row)
	}
	u.render(req, http.StatusOK, "board.html", "Release board", v)
	return nil
}

// boardRow describes one repository's environments.
func (u *UI) boardRow(req *request, repo string, envs map[string]searchResult) (boardRow, error) {
	row := boardRow{Repo: repo, CanPush: req.api.may(req.ctx, repo, "push"), Same: true}
	letters := map[string]string{}
	for _, env := range u.cfg.Environments {
		c := boardCell{Env: env}
		if res, ok := envs[env]; ok {
			c.Digest, c.Commit, c.Version = res.Digest, res.Commit(), versionOf(res.Annotations, res.Labels)
			if letters[c.Digest] == "" {
				letters[c.Digest] = string(rune('A' + len(letters)%26))
			}
			c.Letter = letters[c.Digest]
			move, err := lastMove(req, repo, env)
			if err != nil {
				return row, err
			}
			if move != nil {
				c.Since, c.By, c.Action, c.Previous = move.Time, move.Actor.String(), move.Action, move.Previous
			}
		}
		row.Cells = append(row.Cells, c)
	}
	for i := range row.Cells {
		c := &row.Cells[i]
		if c.Digest == "" || c.Digest != row.Cells[0].Digest {
			row.Same = false
		}
		if i+1 < len(row.Cells) && c.Digest != "" && row.Cells[i+1].Digest != c.Digest {
			c.Next = row.Cells[i+1].Env
		}
	}
	return row, nil
}

// lastMove is a tag's newest move, or nil when it has no history.
func lastMove(req *request, repo, tag string) (*tagMove, error) {
	var body struct {
		History []tagMove `json:"history"`
	}
	if _, err := req.api.getJSON(req.ctx, "/v2/"+repo+"/_berth/tags/"+tag+"/history", url.Values{"n": {"1"}}, &body); err != nil {
		if hidden(err) {
			return nil, nil
		}
		return nil, err
	}
	if len(body.History) == 0 {
		return nil, nil
	}
	return &body.History[0], nil
}

// confirmView is the data of the page confirming a promotion or rollback.
type confirmView struct {
	// Action is promote or rollback.
	Action string
	Repo   string
	// From is the environment promoted from; To the tag that moves.
	From, To string
	// Digest is what To will name; Current what it names now.
	Digest, Current string
	Commit          string
	CurrentCommit   string
	Back            string
}

func (u *UI) confirmPage(req *request) error {
	q := req.r.URL.Query()
	v := confirmView{Action: q.Get("action"), Repo: q.Get("repository"), From: q.Get("from"), To: q.Get("to"),
		Back: localPath(q.Get("back"))}
	if !nameRE.MatchString(v.Repo) || !tagRE.MatchString(v.To) || (v.Action != "promote" && v.Action != "rollback") {
		return badRequest("this confirmation needs an action (promote or rollback), a repository and a tag")
	}
	if err := req.api.authorize(req.ctx, "repository:"+v.Repo+":pull,push", catalogScope); err != nil {
		return err
	}
	current, err := req.api.headManifest(req.ctx, v.Repo, v.To)
	if err != nil {
		return err
	}
	v.Current = current
	switch v.Action {
	case "promote":
		if !tagRE.MatchString(v.From) {
			return badRequest("a promotion needs the environment it promotes from")
		}
		d, err := req.api.headManifest(req.ctx, v.Repo, v.From)
		if err != nil {
			return err
		}
		if d == "" {
			return errNotFound
		}
		v.Digest = d
	case "rollback":
		move, err := lastMove(req, v.Repo, v.To)
		if err != nil {
			return err
		}
		if move == nil || move.Previous == "" {
			return badRequest(v.Repo + ":" + v.To + " named nothing before its last move: there is nothing to roll back to")
		}
		v.Digest = move.Previous
	}
	// Commits, for people to check what they move.
	for _, p := range []struct {
		digest string
		dst    *string
	}{{v.Digest, &v.Commit}, {v.Current, &v.CurrentCommit}} {
		if p.digest == "" {
			continue
		}
		res, _, err := req.api.searchAll(req.ctx, url.Values{"repository": {v.Repo}, "digest": {p.digest}}, 1)
		if err != nil {
			return err
		}
		if len(res) > 0 {
			*p.dst = res[0].Commit()
		}
	}
	title := "Promote to " + v.To
	if v.Action == "rollback" {
		title = "Roll back " + v.To
	}
	u.render(req, http.StatusOK, "confirm.html", title, v)
	return nil
}

// promote answers the confirmed promotion form: the tag "to" of the
// repository is pointed at the digest the visitor confirmed, with the
// API's promotion, as `berth promote` does.
func (u *UI) promote(req *request) error {
	f := req.r.PostForm
	repo, from, to, dgst := f.Get("repository"), f.Get("from"), f.Get("to"), f.Get("digest")
	back := localPath(f.Get("back"))
	var out struct {
		Digest string   `json:"digest"`
		Move   *tagMove `json:"move"`
	}
	if !nameRE.MatchString(repo) || !tagRE.MatchString(to) || !digestRE.MatchString(dgst) {
		return badRequest("a promotion needs a repository, a tag and a digest")
	}
	// A promotion reads its source with the token's own scopes: ask for
	// pull as well as push, as berth promote does.
	if err := req.api.authorize(req.ctx, "repository:"+repo+":pull,push"); err != nil {
		return err
	}
	status, err := req.api.postJSON(req.ctx, "/v2/"+repo+"/_berth/tags/"+to+"/promote",
		map[string]string{"repository": repo, "reference": dgst}, &out, http.StatusOK, http.StatusCreated)
	switch {
	case err != nil:
		setFlash(req.w, req.r, "error", "Promotion refused: "+refusal(err))
	case status == http.StatusCreated:
		u.log.InfoContext(req.ctx, "ui: promote", "repository", repo, "from", from, "to", to, "digest", dgst,
			"identity", req.who.Kind+":"+req.who.Name, "remote", req.r.RemoteAddr)
		setFlash(req.w, req.r, "ok", "Promoted "+repo+"@"+shortDigest(dgst)+" from "+from+" to "+to+".")
	default:
		setFlash(req.w, req.r, "ok", repo+":"+to+" already names "+shortDigest(dgst)+": nothing moved.")
	}
	redirect(req, back)
	return nil
}

// rollback answers the confirmed rollback form: the tag goes back to the
// digest the visitor confirmed, with the API's rollback, as
// `berth tag rollback --to` does.
func (u *UI) rollback(req *request) error {
	f := req.r.PostForm
	repo, tag, to := f.Get("repository"), f.Get("to"), f.Get("digest")
	back := localPath(f.Get("back"))
	if !nameRE.MatchString(repo) || !tagRE.MatchString(tag) || !digestRE.MatchString(to) {
		return badRequest("a rollback needs a repository, a tag and a digest")
	}
	var move tagMove
	_, err := req.api.postJSON(req.ctx, "/v2/"+repo+"/_berth/tags/"+tag+"/rollback",
		map[string]string{"to": to}, &move, http.StatusOK)
	if err != nil {
		setFlash(req.w, req.r, "error", "Rollback refused: "+refusal(err))
	} else {
		u.log.InfoContext(req.ctx, "ui: rollback", "repository", repo, "tag", tag, "digest", to,
			"identity", req.who.Kind+":"+req.who.Name, "remote", req.r.RemoteAddr)
		setFlash(req.w, req.r, "ok", "Rolled "+repo+":"+tag+" back to "+shortDigest(to)+".")
	}
	redirect(req, back)
	return nil
}

// refusal says why the API refused a change, in its words.
func refusal(err error) string {
	var e *apiError
	if !errors.As(err, &e) {
		return "Berth could not make the change."
	}
	switch e.Status {
	case http.StatusUnauthorized, http.StatusForbidden:
		return "you may not change tags in this repository."
	}
	if e.Message == "" {
		return e.Code
	}
	return e.Message + "."
}
