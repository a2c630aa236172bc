package ui

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// What the pages read from the API, in the API's JSON forms.

// searchResult is one result of GET /v2/_berth/search.
type searchResult struct {
	Repository   string            `json:"repository"`
	Digest       string            `json:"digest"`
	MediaType    string            `json:"mediaType"`
	ArtifactType string            `json:"artifactType"`
	Size         int64             `json:"size"`
	Created      time.Time         `json:"created"`
	Pushed       time.Time         `json:"pushed"`
	Tags         []string          `json:"tags"`
	Annotations  map[string]string `json:"annotations"`
	Labels       map[string]string `json:"labels"`
}

// Commit is the commit that built the result's artifact.
func (s searchResult) Commit() string { return commitOf(s.Annotations, s.Labels) }

// repoSummary is one entry of GET /v2/_berth/repositories.
type repoSummary struct {
	Name      string     `json:"name"`
	Tags      int        `json:"tags"`
	Manifests int        `json:"manifests"`
	LastPush  *time.Time `json:"lastPush"`
}

// actor is who made a tag move.
type actor struct {
	Kind    string `json:"kind"`
	Name    string `json:"name"`
	Address string `json:"address"`
}

// String names the actor as the CLI does: user:alice, robot:ci, anonymous.
func (a actor) String() string {
	if a.Name == "" {
		return a.Kind
	}
	return a.Kind + ":" + a.Name
}

// tagMove is one entry of a tag's history.
type tagMove struct {
	Seq      uint64    `json:"seq"`
	Time     time.Time `json:"time"`
	Previous string    `json:"previous"`
	Digest   string    `json:"digest"`
	Action   string    `json:"action"`
	Actor    actor     `json:"actor"`
}

// descriptor is an OCI content descriptor.
type descriptor struct {
	MediaType    string            `json:"mediaType"`
	Digest       string            `json:"digest"`
	Size         int64             `json:"size"`
	ArtifactType string            `json:"artifactType"`
	Annotations  map[string]string `json:"annotations"`
	Platform     *platform         `json:"platform"`
}

// platform is the platform of an index's child.
type platform struct {
	OS           string `json:"os"`
	Architecture string `json:"architecture"`
	Variant      string `json:"variant"`
	OSVersion    string `json:"os.version"`
}

func (p *platform) String() string {
	if p == nil {
		return "unknown"
	}
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	if p.OSVersion != "" {
		s += " (" + p.OSVersion + ")"
	}
	return s
}

// manifest is an image manifest or an index, in OCI or Docker form.
type manifest struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType"`
	ArtifactType  string            `json:"artifactType"`
	Config        *descriptor       `json:"config"`
	Layers        []descriptor      `json:"layers"`
	Manifests     []descriptor      `json:"manifests"`
	Subject       *descriptor       `json:"subject"`
	Annotations   map[string]string `json:"annotations"`
}

// manifestAccept is the Accept header of the pages' manifest requests:
// every manifest and index type Berth stores.
const manifestAccept = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, " +
	"application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json"

// isIndex reports whether a media type is an index or manifest list.
func isIndex(mediaType string) bool {
	return mediaType == "application/vnd.oci.image.index.v1+json" ||
		mediaType == "application/vnd.docker.distribution.manifest.list.v2+json"
}

// isImageConfig reports whether a config media type is a container
// image's.
func isImageConfig(mediaType string) bool {
	return mediaType == "application/vnd.oci.image.config.v1+json" ||
		mediaType == "application/vnd.docker.container.image.v1+json"
}

// linkRE reads the target of a Link header.
var linkRE = regexp.MustCompile(`^<([^>]+)>;\s*rel="next"$`)

// nextLast is the last parameter of the next page an answer links to;
// empty when there is none.
func nextLast(resp *apiResponse) string {
	m := linkRE.FindStringSubmatch(resp.header.Get("Link"))
	if m == nil {
		return ""
	}
	u, err := url.Parse(m[1])
	if err != nil {
		return ""
	}
	return u.Query().Get("last")
}

// searchAll follows the pages of a search up to limit results; truncated
// reports that more were left.
func (c *apiClient) searchAll(ctx context.Context, q url.Values, limit int) (all []searchResult, truncated bool, err error) {
	q = cloneValues(q)
	if q.Get("n") == "" {
		q.Set("n", strconv.Itoa(limit)) // the API caps it at its page size
	}
	for pages := 0; pages < 1000; pages++ {
		var body struct {
			Results []searchResult `json:"results"`
		}
		resp, err := c.getJSON(ctx, "/v2/_berth/search", q, &body)
		if err != nil {
			return nil, false, err
		}
		all = append(all, body.Results...)
		last := nextLast(resp)
		if last == "" {
			return all, false, nil
		}
		if len(all) >= limit {
			return all[:limit], true, nil
		}
		q.Set("last", last)
	}
	return all, true, nil
}

func cloneValues(v url.Values) url.Values {
	out := url.Values{}
	for k, vs := range v {
		out[k] = append([]string(nil), vs...)
	}
	return out
}

// getManifest fetches a manifest by tag or digest and returns it with its
// digest, media type and raw body.
func (c *apiClient) getManifest(ctx context.Context, repo, ref string) (m manifest, dgst, mediaType string, raw []byte, err error) {
	resp, err := c.get(ctx, "/v2/"+repo+"/manifests/"+ref, nil, manifestAccept)
	if err != nil {
		return m, "", "", nil, err
	}
	if err := json.Unmarshal(resp.body, &m); err != nil {
		return m, "", "", nil, badRequest("the manifest is not JSON")
	}
	mediaType = m.MediaType
	if mediaType == "" {
		mediaType, _, _ = strings.Cut(resp.header.Get("Content-Type"), ";")
	}
	return m, resp.header.Get("Docker-Content-Digest"), mediaType, resp.body, nil
}

// referrers lists the manifests whose subject is dgst.
func (c *apiClient) referrers(ctx context.Context, repo, dgst string) ([]descriptor, error) {
	var idx struct {
		Manifests []descriptor `json:"manifests"`
	}
	if _, err := c.getJSON(ctx, "/v2/"+repo+"/referrers/"+dgst, nil, &idx); err != nil {
		return nil, err
	}
	return idx.Manifests, nil
}

// headManifest reports the digest a tag names, or "" when it names none.
func (c *apiClient) headManifest(ctx context.Context, repo, ref string) (string, error) {
	h := http.Header{"Accept": {manifestAccept}}
	resp, err := c.do(ctx, http.MethodHead, "/v2/"+repo+"/manifests/"+ref, nil, nil, h)
	if err != nil {
		return "", err
	}
	if resp.status != http.StatusOK {
		return "", nil
	}
	return resp.header.Get("Docker-Content-Digest"), nil
}
