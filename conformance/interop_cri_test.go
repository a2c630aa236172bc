//go:build linux

package conformance_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// criStartTimeout bounds how long containerd with its CRI plugin may take
// to answer crictl.
const criStartTimeout = 60 * time.Second

// criNode is containerd with its CRI plugin, the image service a kubelet
// pulls through, on a private socket and root, with registry settings
// read from a hosts directory (the plugin's config_path), as Kubernetes
// nodes are set up. It unpacks with the native snapshotter, which works on
// any file system, and starts no pods: no CNI plugin or network is used.
type criNode struct {
	cfg, sock string
	env       []string
}

// startCRI starts containerd with the CRI plugin reading hostsDir, and
// waits until crictl gets an answer from its image service.
func startCRI(t *testing.T, hostsDir string) *criNode {
	t.Helper()
	bin := serverPath(t, "containerd", "containerd")
	dir := daemonDir(t, "berth-cri-")
	n := &criNode{sock: filepath.Join(dir, "containerd.sock"), cfg: filepath.Join(dir, "crictl.yaml"), env: clientEnv(t)}
	config := filepath.Join(dir, "config.toml")
	writeTestFile(t, config, fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
temp = %[3]q
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = %[4]q

[ttrpc]
  address = %[5]q

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = %[6]q

[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %[7]q
    conf_dir = %[8]q
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = %[9]q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), filepath.Join(dir, "tmp"),
		n.sock, n.sock+".ttrpc", filepath.Join(dir, "opt"),
		filepath.Join(dir, "cni", "bin"), filepath.Join(dir, "cni", "conf"), hostsDir))
	writeTestFile(t, n.cfg, fmt.Sprintf("runtime-endpoint: unix://%[1]s\nimage-endpoint: unix://%[1]s\ntimeout: 60\n", n.sock))
	d := startDaemon(t, "containerd (CRI)", n.env, containerdStopTimeout, bin, "--config", config)
	d.waitReady(t, criStartTimeout, func() error { return n.try(t, "images").err })
	t.Logf("containerd's CRI plugin is up on %s", n.sock)
	return n
}

// try runs crictl against the node; it may fail.
func (n *criNode) try(t *testing.T, args ...string) clientResult {
	t.Helper()
	return execClient(t, "", n.env, "crictl", append([]string{"--config", n.cfg}, args...)...)
}

// pull pulls ref, with creds ("user:password") if not empty; it must
// succeed.
func (n *criNode) pull(t *testing.T, ref, creds string) {
	t.Helper()
	args := []string{"pull"}
	if creds != "" {
		args = append(args, "--creds", creds)
	}
	if r := n.try(t, append(args, ref)...); r.err != nil {
		t.Fatalf("crictl pull %s: %v\nstdout:\n%s\nstderr:\n%s", ref, r.err, r.stdout, r.stderr)
	}
}

// image returns the CRI status of a pulled image: its id (the config
// digest) and the repository digests it was pulled by.
func (n *criNode) image(t *testing.T, ref string) (id string, repoDigests []string) {
	t.Helper()
	r := n.try(t, "inspecti", "--output", "json", ref)
	if r.err != nil {
		t.Fatalf("crictl inspecti %s: %v\n%s%s", ref, r.err, r.stdout, r.stderr)
	}
	var st struct {
		Status struct {
			ID          string   `json:"id"`
			RepoDigests []string `json:"repoDigests"`
		} `json:"status"`
	}
	decodeJSON(t, "crictl inspecti", r.stdout, &st)
	return st.Status.ID, st.Status.RepoDigests
}

// criHosts writes a hosts directory for the CRI plugin: srv's address
// over plain HTTP (credentials then come with each pull, as the kubelet
// gives them from imagePullSecrets), and srv as the mirror of mirrorHost
// with an Authorization header of mirrorCreds, if any, as a node is
// given fixed registry credentials.
func criHosts(t *testing.T, srv *registryUnderTest, mirrorCreds string) string {
	t.Helper()
	dir := t.TempDir()
	write := func(host, content string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(dir, host), 0o700); err != nil {
			t.Fatal(err)
		}
		writeTestFile(t, filepath.Join(dir, host, "hosts.toml"), content)
	}
	write(srv.Addr, fmt.Sprintf(`server = "http://%[1]s"

[host."http://%[1]s"]
  capabilities = ["pull", "resolve"]
`, srv.Addr))
	mirror := fmt.Sprintf(`server = "https://%s"

[host."http://%s"]
  capabilities = ["pull", "resolve"]
`, mirrorHost, srv.Addr)
	if mirrorCreds != "" {
		mirror += fmt.Sprintf("  [host.\"http://%s\".header]\n    Authorization = [\"Basic %s\"]\n", srv.Addr, base64.StdEncoding.EncodeToString([]byte(mirrorCreds)))
	}
	write(mirrorHost, mirror)
	return dir
}

// TestCRIPull pulls from Berth the way a Kubernetes node does, through
// containerd's CRI plugin driven by crictl: by tag, by digest, an index
// resolved to the node's platform, and through a mirror hosts.toml.
//
// Against a Berth with authentication the pulls carry credentials the
// way the kubelet passes an imagePullSecret (crictl --creds), or come
// from an Authorization header in the mirror's hosts.toml; a public
// repository is pulled anonymously; and a pull without credentials of a
// private repository fails at once, with containerd's usual wording.
func TestCRIPull(t *testing.T) {
	t.Run("anonymous", func(t *testing.T) {
		srv := startRegistry(t, anonymousMode)
		node := startCRI(t, criHosts(t, srv, ""))
		criPulls(t, node, srv, "cri", "")
	})
	t.Run("authenticated", func(t *testing.T) {
		s := startAuthServer(t)
		srv := &registryUnderTest{Server: s.Server, mode: authenticatedMode, user: "writer", pass: s.users["writer"]}
		creds := "writer:" + s.users["writer"]
		node := startCRI(t, criHosts(t, srv, creds))
		criPulls(t, node, srv, "team/cri", creds)

		// A public repository needs no credentials.
		pub := pushRandomImage(t, srv, "public/cri:v1")
		node.pull(t, srv.Addr+"/public/cri:v1", "")
		if id, _ := node.image(t, srv.Addr+"/public/cri:v1"); id != pub {
			t.Errorf("anonymous pull of public/cri:v1: image id %s, want %s", id, pub)
		}

		// A private one, without credentials or with wrong ones, is
		// refused at once: containerd gives up after asking once with
		// the token it got, rather than over and over.
		before := strings.Count(s.Logs(), "access denied")
		r := node.try(t, "pull", srv.Addr+"/team/cri:v1-refused")
		if r.err == nil {
			t.Fatalf("crictl pull of team/cri without credentials succeeded:\n%s", r.stdout)
		}
		out := r.stdout + r.stderr
		if want := "pull access denied, repository does not exist or may require authorization"; !strings.Contains(out, want) {
			t.Errorf("crictl pull without credentials: output lacks %q:\n%s", want, out)
		}
		if n := strings.Count(s.Logs(), "access denied") - before; n > 2 {
			t.Errorf("containerd asked %d times before giving up on a refused pull, want at most 2", n)
		}
		r = node.try(t, "pull", "--creds", "writer:wrong", srv.Addr+"/team/cri:v1")
		if r.err == nil || !strings.Contains(r.stdout+r.stderr, "401 Unauthorized") {
			t.Errorf("crictl pull with a wrong password: %v\n%s%s", r.err, r.stdout, r.stderr)
		}
	})
}

// pushRandomImage pushes a random image for the host's platform to
// repoTag and returns its config digest, the id a CRI image gets.
func pushRandomImage(t *testing.T, srv *registryUnderTest, repoTag string) string {
	t.Helper()
	_, images := randomIndex(t, []v1.Platform{{OS: "linux", Architecture: runtime.GOARCH}},
		types.OCIImageIndex, types.OCIManifestSchema1, types.OCIConfigJSON, types.OCILayer)
	pushTestImage(t, srv, repoTag, images[0].img)
	name, err := images[0].img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	return name.String()
}

// criPulls pushes an index (the host's platform and another) and an image
// to repo, then pulls them through the CRI plugin: the index by tag and by
// digest, the image by tag, and the index again through the mirror name.
func criPulls(t *testing.T, node *criNode, srv *registryUnderTest, repo, creds string) {
	other := v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}
	if runtime.GOARCH == "arm64" {
		other = v1.Platform{OS: "linux", Architecture: "amd64"}
	}
	idx, images := randomIndex(t, []v1.Platform{{OS: "linux", Architecture: runtime.GOARCH}, other},
		types.OCIImageIndex, types.OCIManifestSchema1, types.OCIConfigJSON, types.OCILayer)
	indexDigest := pushTestIndex(t, srv, repo+":multi", idx).String()
	hostCfg, err := images[0].img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	single := pushRandomImage(t, srv, repo+":single")

	// The index by tag: the node's platform is what it gets.
	byTag := srv.Addr + "/" + repo + ":multi"
	node.pull(t, byTag, creds)
	id, digests := node.image(t, byTag)
	if id != hostCfg.String() {
		t.Errorf("crictl pull %s: image id %s, want the %s image's config %s", byTag, id, runtime.GOARCH, hostCfg)
	}
	if want := srv.Addr + "/" + repo + "@" + indexDigest; !slices.Contains(digests, want) {
		t.Errorf("crictl pull %s: repository digests %q, want %s", byTag, digests, want)
	}

	// By digest.
	byDigest := srv.Addr + "/" + repo + "@" + indexDigest
	node.try(t, "rmi", byTag)
	node.pull(t, byDigest, creds)
	if id, _ := node.image(t, byDigest); id != hostCfg.String() {
		t.Errorf("crictl pull %s: image id %s, want %s", byDigest, id, hostCfg)
	}

	// A single image by tag.
	node.pull(t, srv.Addr+"/"+repo+":single", creds)
	if id, _ := node.image(t, srv.Addr+"/"+repo+":single"); id != single {
		t.Errorf("crictl pull %s:single: image id %s, want %s", repo, id, single)
	}

	// Through the mirror name; with authentication on, the mirror's
	// hosts.toml carries the credentials, and crictl gives none.
	mirrored := mirrorHost + "/" + repo + ":multi"
	node.pull(t, mirrored, "")
	if id, _ := node.image(t, mirrored); id != hostCfg.String() {
		t.Errorf("crictl pull %s through the mirror: image id %s, want %s", mirrored, id, hostCfg)
	}
	var list struct {
		Images []struct {
			RepoTags []string `json:"repoTags"`
		} `json:"images"`
	}
	r := node.try(t, "images", "--output", "json")
	if r.err != nil {
		t.Fatalf("crictl images: %v\n%s", r.err, r.stderr)
	}
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil {
		t.Fatalf("crictl images output: %v\n%s", err, r.stdout)
	}
	var tags []string
	for _, im := range list.Images {
		tags = append(tags, im.RepoTags...)
	}
	for _, want := range []string{srv.Addr + "/" + repo + ":single", mirrored} {
		if !slices.Contains(tags, want) {
			t.Errorf("crictl images does not list %s: %q", want, tags)
		}
	}
}
