// Package image turns a build artifact into an OCI image and pushes it to
// a registry, in Go, without a container daemon: what the Kubernetes
// runtime runs. The image is the base image (none by default) and one layer
// holding the artifact under /app, the containers' working directory.
//
// The same artifact on the same base always gives the same image digest:
// the artifact is packed deterministically and the image config has no
// timestamps. A push of an image the registry has already costs a few
// HEAD requests.
package image

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	goruntime "runtime"
	"strconv"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// AppDir is where the artifact's files are in the image.
const AppDir = "app"

// UID owns the app's files in the image, and is the user its containers
// run as (kube.AppUID).
const UID = 10001

// Registry is where images are pushed, and how.
type Registry struct {
	// Repository is the registry host and the path below which each app
	// gets a repository: "registry.example/paddock" pushes shop's images
	// to registry.example/paddock/shop.
	Repository string
	// Insecure allows plain HTTP: for a registry on loopback.
	Insecure bool
	// Login returns the user name and password to log in with; nil, or an
	// empty pair, pushes anonymously. The password is a secret: it never
	// appears in an error.
	Login func() (username, password string)
	// Base is the image whose file system the app's layer goes on top of
	// (its shell and libraries); "" builds on an empty image.
	Base string
}

// Build makes the image of an artifact (a gzipped tar, as
// internal/build stores them) for app, tags it with tag and pushes it.
// It returns the image's reference by digest, which is what pods name.
func (r *Registry) Build(ctx context.Context, artifact, app, tag string) (string, error) {
	var user, password string
	if r.Login != nil {
		user, password = r.Login()
	}
	opts := remoteOptions(ctx, user, password)
	repo, err := name.NewRepository(strings.TrimSuffix(r.Repository, "/")+"/"+app, r.nameOptions()...)
	if err != nil {
		return "", fmt.Errorf("image repository for %s: %w", app, err)
	}
	base := empty.Image
	if r.Base != "" {
		ref, err := name.ParseReference(r.Base, r.nameOptions()...)
		if err != nil {
			return "", fmt.Errorf("base image %q: %w", r.Base, err)
		}
		if base, err = remote.Image(ref, opts...); err != nil {
			return "", fmt.Errorf("base image %s: %w", r.Base, scrub(err, password))
		}
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return underApp(artifact) },
		tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return "", fmt.Errorf("image layer of %s: %w", artifact, err)
	}
	img, err := mutate.AppendLayers(base, layer)
	if err != nil {
		return "", fmt.Errorf("image of %s: %w", app, err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return "", fmt.Errorf("image config of %s: %w", app, err)
	}
	cfg = cfg.DeepCopy()
	cfg.Config.WorkingDir = "/" + AppDir
	cfg.Config.User = strconv.Itoa(UID)
	if len(cfg.Config.Env) == 0 {
		cfg.Config.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	}
	if cfg.Config.Labels == nil {
		cfg.Config.Labels = map[string]string{}
	}
	cfg.Config.Labels["dev.paddock.app"] = app
	cfg.OS, cfg.Architecture = "linux", goruntime.GOARCH
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		return "", fmt.Errorf("image config of %s: %w", app, err)
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	digest, err := img.Digest()
	if err != nil {
		return "", fmt.Errorf("image digest of %s: %w", app, err)
	}
	if err := remote.Write(repo.Tag(tag), img, opts...); err != nil {
		return "", fmt.Errorf("push image of %s to %s: %w", app, repo, scrub(err, password))
	}
	return repo.Digest(digest.String()).String(), nil
}

func (r *Registry) nameOptions() []name.Option {
	if r.Insecure {
		return []name.Option{name.Insecure}
	}
	return nil
}

func remoteOptions(ctx context.Context, user, password string) []remote.Option {
	auth := authn.Anonymous
	if user != "" || password != "" {
		auth = &authn.Basic{Username: user, Password: password}
	}
	return []remote.Option{remote.WithContext(ctx), remote.WithAuth(auth)}
}

// underApp opens an artifact and streams it as an uncompressed tar whose
// entries are under AppDir/, the layer's content.
func underApp(artifact string) (io.ReadCloser, error) {
	f, err := os.Open(artifact)
	if err != nil {
		return nil, err
	}
	zr, err := gzip.NewReader(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("artifact %s: %w", artifact, err)
	}
	pr, pw := io.Pipe()
	go func() {
		defer f.Close()
		pw.CloseWithError(prefix(tar.NewReader(zr), pw))
	}()
	return pr, nil
}

func prefix(tr *tar.Reader, w io.Writer) error {
	tw := tar.NewWriter(w)
	if err := tw.WriteHeader(&tar.Header{Name: AppDir + "/", Typeflag: tar.TypeDir, Mode: 0o755, Uid: UID, Gid: UID}); err != nil {
		return err
	}
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return tw.Close()
		}
		if err != nil {
			return err
		}
		clean := path.Clean(hdr.Name)
		if clean == "." {
			continue
		}
		if path.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../") {
			return fmt.Errorf("artifact entry %q is outside its folder", hdr.Name)
		}
		hdr.Name = AppDir + "/" + clean
		// The app's own user owns its files, as on one machine: it may
		// write its folder, and runs as no one else.
		hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = UID, UID, "", ""
		if hdr.Typeflag == tar.TypeDir {
			hdr.Name += "/"
		}
		if hdr.Typeflag == tar.TypeLink {
			hdr.Linkname = AppDir + "/" + path.Clean(hdr.Linkname)
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return err
		}
	}
}

// Errors of Resolve.
var (
	// ErrNoImage: the registry has no image of that reference.
	ErrNoImage = errors.New("no such image")
	// ErrNoAccess: the registry wants a login Paddock does not have for it.
	ErrNoAccess = errors.New("no access to the image")
)

// Resolve pins an image reference to the digest its tag names now, so that
// a release runs the same image for good, whatever the tag later names; a
// reference by digest is returned as it is. Paddock's own registry is
// reached with its login and, if Insecure, over plain HTTP; any other
// anonymously. r may be nil: no registry of Paddock's.
func (r *Registry) Resolve(ctx context.Context, ref string) (string, error) {
	var opts []name.Option
	var user, password string
	if r != nil {
		host, _, _ := strings.Cut(r.Repository, "/")
		if parsed, err := name.ParseReference(ref); err == nil && parsed.Context().RegistryStr() == host {
			opts = r.nameOptions()
			if r.Login != nil {
				user, password = r.Login()
			}
		}
	}
	parsed, err := name.ParseReference(ref, opts...)
	if err != nil {
		return "", fmt.Errorf("image %q: %w", ref, err)
	}
	if d, ok := parsed.(name.Digest); ok {
		return d.String(), nil
	}
	desc, err := remote.Head(parsed, remoteOptions(ctx, user, password)...)
	if err != nil {
		var terr *transport.Error
		switch {
		case errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound:
			err = ErrNoImage
		case errors.As(err, &terr) && (terr.StatusCode == http.StatusUnauthorized || terr.StatusCode == http.StatusForbidden):
			err = ErrNoAccess
		default:
			err = scrub(err, password)
		}
		return "", fmt.Errorf("resolve image %s: %w", ref, err)
	}
	return parsed.Context().Digest(desc.Digest.String()).String(), nil
}

// scrub keeps a password out of an error, whatever a registry echoed back.
func scrub(err error, password string) error {
	if password == "" || !strings.Contains(err.Error(), password) {
		return err
	}
	return errors.New(strings.ReplaceAll(err.Error(), password, "[REDACTED]"))
}
