package image_test

import (
	"archive/tar"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"paddock.dev/paddock/internal/build"
	"paddock.dev/paddock/internal/image"
)

// startRegistry serves go-containerregistry's registry on loopback; with a
// password set, it asks for it.
func startRegistry(t *testing.T, user, password string) string {
	t.Helper()
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	h := reg
	if password != "" {
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if u, p, ok := r.BasicAuth(); !ok || u != user || p != password {
				w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
				http.Error(w, "wrong credentials", http.StatusUnauthorized)
				return
			}
			reg.ServeHTTP(w, r)
		})
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func artifact(t *testing.T) string {
	t.Helper()
	src := t.TempDir()
	if err := os.MkdirAll(filepath.Join(src, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "bin", "web"), []byte("#!/bin/sh\necho hi\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("bin/web", filepath.Join(src, "start")); err != nil {
		t.Fatal(err)
	}
	a := &build.Artifacts{Dir: t.TempDir()}
	digest, err := a.Store(t.Context(), src, 0)
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(a.Dir, strings.Replace(digest, ":", "-", 1)+".tar.gz")
}

// TestBuild builds an image from a real artifact, pushes it to a real
// registry, and pulls it back as a cluster node would.
func TestBuild(t *testing.T) {
	host := startRegistry(t, "", "")
	r := &image.Registry{Repository: host + "/paddock", Insecure: true}
	art := artifact(t)
	ref, err := r.Build(t.Context(), art, "shop", "v1")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(ref, host+"/paddock/shop@sha256:") {
		t.Fatalf("ref = %q, want %s/paddock/shop@sha256:…", ref, host)
	}

	d, err := name.NewDigest(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(d)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Config.WorkingDir != "/app" || cfg.OS != "linux" {
		t.Errorf("config working dir %q os %q", cfg.Config.WorkingDir, cfg.OS)
	}
	files := map[string]*tar.Header{}
	tr := tar.NewReader(mutate.Extract(img))
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		files[hdr.Name] = hdr
		if hdr.Name == "app/bin/web" {
			body, _ := io.ReadAll(tr)
			if string(body) != "#!/bin/sh\necho hi\n" {
				t.Errorf("app/bin/web = %q", body)
			}
		}
	}
	if h := files["app/bin/web"]; h == nil || h.Mode&0o111 == 0 || h.Uid != image.UID {
		t.Errorf("app/bin/web = %+v, want an executable of uid %d", h, image.UID)
	}
	if cfg.Config.User != "10001" {
		t.Errorf("image user = %q, want 10001: never root", cfg.Config.User)
	}
	if h := files["app/start"]; h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != "bin/web" {
		t.Errorf("app/start = %+v, want a link to bin/web", h)
	}

	// The tag names the same image, and the same artifact gives the same
	// digest again: a rebuild of an unchanged app pushes nothing new.
	tagged, err := remote.Image(d.Context().Tag("v1"))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := tagged.Digest(); got.String() != d.DigestStr() {
		t.Errorf("tag v1 = %s, want %s", got, d.DigestStr())
	}
	again, err := r.Build(t.Context(), art, "shop", "v2")
	if err != nil {
		t.Fatal(err)
	}
	if again != ref {
		t.Errorf("same artifact gave %s, then %s", ref, again)
	}
}

// TestBuildCredentials: a registry that asks for a password gets it; a
// wrong one is refused with an error that does not show it.
func TestBuildCredentials(t *testing.T) {
	host := startRegistry(t, "paddock", "right-horse-battery")
	art := artifact(t)
	password := "right-horse-battery"
	r := &image.Registry{Repository: host + "/paddock", Insecure: true, Login: func() (string, string) { return "paddock", password }}
	if _, err := r.Build(t.Context(), art, "shop", "v1"); err != nil {
		t.Fatalf("with the right password: %v", err)
	}
	password = "wrong-staple-secret"
	_, err := r.Build(t.Context(), art, "shop", "v2")
	if err == nil {
		t.Fatal("a wrong password was accepted")
	}
	if strings.Contains(err.Error(), "wrong-staple-secret") {
		t.Errorf("error shows the password: %v", err)
	}
	if !strings.Contains(err.Error(), "UNAUTHORIZED") && !strings.Contains(err.Error(), "401") {
		t.Errorf("error = %v, want it to say the registry refused the credentials", err)
	}
}

// TestBuildBadArtifact: an artifact that is not a gzipped tar is refused
// with its path, and nothing is pushed.
func TestBuildBadArtifact(t *testing.T) {
	host := startRegistry(t, "", "")
	bad := filepath.Join(t.TempDir(), "sha256-bad.tar.gz")
	if err := os.WriteFile(bad, []byte("not gzip"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := &image.Registry{Repository: host + "/paddock", Insecure: true}
	if _, err := r.Build(t.Context(), bad, "shop", "v1"); err == nil || !strings.Contains(err.Error(), bad) {
		t.Fatalf("err = %v, want one naming %s", err, bad)
	}
	tag, err := name.NewTag(host+"/paddock/shop:v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := remote.Image(tag); err == nil {
		t.Error("an image was pushed for a bad artifact")
	}
}

// TestResolve: a tag is pinned to the digest it names, with Paddock's
// registry login; a digest stays as it is; a tag that does not exist is an
// error that names it.
func TestResolve(t *testing.T) {
	host := startRegistry(t, "paddock", "right-horse-battery")
	r := &image.Registry{Repository: host + "/paddock", Insecure: true, Login: func() (string, string) { return "paddock", "right-horse-battery" }}
	ref, err := r.Build(t.Context(), artifact(t), "shop", "v1")
	if err != nil {
		t.Fatal(err)
	}
	got, err := r.Resolve(t.Context(), host+"/paddock/shop:v1")
	if err != nil || got != ref {
		t.Errorf("Resolve of the tag = %q, %v; want %s", got, err, ref)
	}
	if got, err := r.Resolve(t.Context(), ref); err != nil || got != ref {
		t.Errorf("Resolve of a digest = %q, %v; want it unchanged", got, err)
	}
	if _, err := r.Resolve(t.Context(), host+"/paddock/shop:nosuch"); err == nil || !strings.Contains(err.Error(), "nosuch") {
		t.Errorf("Resolve of a missing tag: %v; want an error naming it", err)
	}
}
