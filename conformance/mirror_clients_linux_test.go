//go:build linux

package conformance_test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/berth-registry/berth/conformance/internal/berthtest"
)

// hostArchImage is randomImage for the host's platform, which containerd
// and Docker unpack.
func hostArchImage(t *testing.T, sizes ...int64) v1.Image {
	t.Helper()
	img := randomImage(t, sizes...)
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg = cfg.DeepCopy()
	cfg.Architecture = runtime.GOARCH
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// TestMirrorContainerdNamespaces: one _default/hosts.toml makes containerd
// pull images of two registry names through one Berth, which routes each
// by containerd's ns parameter to its upstream and unpacks them; nothing
// reaches the registries' own hosts.
func TestMirrorContainerdNamespaces(t *testing.T) {
	up := startUpstream(t)
	app, tool := hostArchImage(t, 5000), hostArchImage(t, 7000)
	dApp := up.push(t, "library/app:v1", app)
	dTool := up.push(t, "org/tool:v2", tool)
	// Two upstreams, each for a registry name; here both are the same
	// Berth, under different namespaces of the upstream.
	cfg := filepath.Join(t.TempDir(), "mirror.yaml")
	writeTestFile(t, cfg, fmt.Sprintf(`proxy:
  upstreams:
    - name: dockerhub
      url: http://%[1]s
      namespace: docker.io
      username: %[2]s
      password: %[3]s
    - name: quay
      url: http://%[1]s
      namespace: quay.io
      hosts: [quay.io]
      username: %[2]s
      password: %[3]s
`, up.Addr, upstreamUser, up.pass))
	mirror := berthtest.Start(t, berthtest.WithArgs("--config", cfg))

	hosts := t.TempDir()
	if err := os.MkdirAll(filepath.Join(hosts, "_default"), 0o700); err != nil {
		t.Fatal(err)
	}
	writeTestFile(t, filepath.Join(hosts, "_default", "hosts.toml"), fmt.Sprintf(`[host."http://%s"]
  capabilities = ["pull", "resolve"]
`, mirror.Addr))
	ctrd := startContainerd(t)
	for _, c := range []struct {
		ref, repo string
		want      string
	}{
		{"docker.io/library/app:v1", "docker.io/library/app", dApp.String()},
		{"quay.io/org/tool:v2", "quay.io/org/tool", dTool.String()},
	} {
		ctrd.run("images", "pull", "--hosts-dir", hosts, "--snapshotter", ctrd.snapshotter, c.ref)
		if status, unpacked := ctrd.check(c.ref); !strings.HasPrefix(status, "complete") || unpacked != "true" {
			t.Errorf("%s pulled through the mirror: %s, unpacked %s", c.ref, status, unpacked)
		}
		if out := ctrd.run("images", "ls", "name=="+c.ref); !strings.Contains(out, c.want) {
			t.Errorf("%s: containerd lists another digest than %s:\n%s", c.ref, c.want, out)
		}
		// The mirror holds it under the registry's namespace.
		if _, _, body := get(t, http.MethodGet, "http://"+mirror.Addr+"/v2/"+c.repo+"/tags/list", nil); !strings.Contains(string(body), c.ref[strings.LastIndex(c.ref, ":")+1:]) {
			t.Errorf("the mirror's tags of %s: %s", c.repo, body)
		}
	}
}

// TestMirrorDockerRegistryMirrors: the Docker engine, given Berth as its
// registry mirror, pulls a Docker Hub name (library/app) through it: Berth
// sends the unprefixed name to its default upstream.
func TestMirrorDockerRegistryMirrors(t *testing.T) {
	up := startUpstream(t)
	app := hostArchImage(t, 6000)
	up.push(t, "library/app:v1", app)
	mirror := startMirror(t, up, "      default: true\n      hosts: [docker.io]\n")
	eng := startDockerd(t, "--registry-mirror", "http://"+mirror.Addr)
	eng.run(t, "", "pull", "app:v1")
	cfgName, err := app.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	if id := eng.inspect(t, "app:v1", "{{.Id}}"); id != cfgName.String() {
		t.Errorf("the image Docker pulled through the mirror has id %s; want its config's digest %s", id, cfgName)
	}
	if _, _, body := get(t, http.MethodGet, "http://"+mirror.Addr+"/v2/hub/library/app/tags/list", nil); !strings.Contains(string(body), `"v1"`) {
		t.Errorf("the mirror's tags of hub/library/app: %s", body)
	}
}
