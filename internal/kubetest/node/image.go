package node

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"paddock.dev/paddock/internal/archive"
)

// image is an unpacked image.
type image struct {
	// id is the image's repository@digest, as a kubelet reports imageID.
	id string
	// rootfs is the folder holding the flattened file system.
	rootfs string
	// config is the image's run configuration (env, working dir, command).
	config v1.Config
}

// imageStore pulls images and keeps each unpacked once, in a folder named
// for its digest.
type imageStore struct {
	dir string

	mu     sync.Mutex // held for a whole pull: a second pod waits, then reuses
	images map[v1.Hash]*image
}

func newImageStore(dir string) *imageStore {
	return &imageStore{dir: dir, images: make(map[v1.Hash]*image)}
}

// pull returns the image ref names, pulling and unpacking it if this node
// has not yet, as auth (nil: anonymously). Registries on loopback are
// spoken to in plain HTTP.
func (s *imageStore) pull(ctx context.Context, ref string, auth authn.Authenticator) (*image, error) {
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return nil, fmt.Errorf("parse image reference %q: %w", ref, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return nil, err
	}
	if d, ok := r.(name.Digest); ok {
		if h, err := v1.NewHash(d.DigestStr()); err == nil {
			if img, ok := s.images[h]; ok {
				return img, nil
			}
		}
	}
	if auth == nil {
		auth = authn.Anonymous
	}
	img, err := remote.Image(r, remote.WithContext(ctx), remote.WithAuth(auth))
	if err != nil {
		return nil, fmt.Errorf("pull %s: %w", ref, err)
	}
	digest, err := img.Digest()
	if err != nil {
		return nil, fmt.Errorf("pull %s: %w", ref, err)
	}
	if cached, ok := s.images[digest]; ok {
		return cached, nil
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("pull %s: config: %w", ref, err)
	}
	rootfs := filepath.Join(s.dir, digest.Algorithm+"-"+digest.Hex)
	if err := unpack(ctx, img, rootfs); err != nil {
		return nil, fmt.Errorf("pull %s: %w", ref, err)
	}
	out := &image{id: r.Context().Name() + "@" + digest.String(), rootfs: rootfs, config: cfg.Config}
	s.images[digest] = out
	return out, nil
}

// unpack flattens img's layers and unpacks them into dst through
// archive.Unpack, which refuses paths and links that leave the tree, into
// a temporary folder renamed into place when complete.
func unpack(ctx context.Context, img v1.Image, dst string) error {
	tmp, err := os.MkdirTemp(filepath.Dir(dst), ".unpack-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	pr, pw := io.Pipe()
	written := make(chan struct{})
	defer func() { <-written }()
	go func() {
		defer close(written)
		// archive.Unpack reads gzip streams; the fastest level keeps this
		// cheap.
		rc := mutate.Extract(img)
		defer rc.Close()
		gz, err := gzip.NewWriterLevel(pw, gzip.BestSpeed)
		if err != nil {
			pw.CloseWithError(err)
			return
		}
		if _, err := io.Copy(gz, rc); err != nil {
			pw.CloseWithError(fmt.Errorf("flatten layers: %w", err))
			return
		}
		pw.CloseWithError(gz.Close())
	}()
	err = archive.Unpack(ctx, pr, tmp, archive.Limits{})
	pr.CloseWithError(err) // ends the writer if Unpack stopped early
	if err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

// pullAuth finds the credentials for ref's registry among the pod's
// imagePullSecrets (kubernetes.io/dockerconfigjson), as the kubelet does;
// nil if none names it. A pull secret that is missing or unreadable is an
// error, which the pod shows as ErrImagePull.
func (pd *pod) pullAuth(ctx context.Context, ref string) (authn.Authenticator, error) {
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return nil, fmt.Errorf("parse image reference %q: %w", ref, err)
	}
	host := r.Context().RegistryStr()
	for _, ps := range pd.spec.Spec.ImagePullSecrets {
		s, err := pd.prov.cfg.client.CoreV1().Secrets(pd.spec.Namespace).Get(ctx, ps.Name, metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("image pull secret %q: %w", ps.Name, err)
		}
		var cfg struct {
			Auths map[string]struct {
				Username string `json:"username"`
				Password string `json:"password"`
			} `json:"auths"`
		}
		if err := json.Unmarshal(s.Data[corev1.DockerConfigJsonKey], &cfg); err != nil {
			return nil, fmt.Errorf("image pull secret %q: %s: %w", ps.Name, corev1.DockerConfigJsonKey, err)
		}
		for server, a := range cfg.Auths {
			if strings.TrimPrefix(strings.TrimPrefix(server, "https://"), "http://") == host {
				return &authn.Basic{Username: a.Username, Password: a.Password}, nil
			}
		}
	}
	return nil, nil
}
