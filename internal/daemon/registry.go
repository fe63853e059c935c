package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"paddock.dev/paddock/internal/image"
	"paddock.dev/paddock/internal/kube"
	"paddock.dev/paddock/internal/store"
	"paddock.dev/paddock/internal/wire"
)

// registry keeps the image registry's logins sealed in the store, like
// secrets: "push", what Paddock pushes apps' images with, and "pull", what
// the cluster's nodes pull them with (each app namespace's pull secret).
// Without a pull login the push login is the nodes' too; a read-only pull
// login keeps the push password off the cluster.
type registry struct {
	st   store.Store
	kr   keyring
	img  *image.Registry
	kube *kube.Runtime
	log  *slog.Logger
	// reapply has every app applied again, for its new pull secret.
	reapply func()

	// writing is held by a change of a login, from the store to what is
	// used; mu guards what is used.
	writing sync.Mutex
	mu      sync.Mutex
	push    login
	pull    login
}

type login struct{ username, password string }

func credentialName(kind string) string { return "registry-" + kind }

// credentialAAD binds a sealed password to its credential's name.
func credentialAAD(name string) []byte { return []byte("credential\x00" + name) }

// startRegistry opens the kept logins; a login given on the command line
// (user name) and in $PADDOCK_REGISTRY_PASSWORD replaces the kept push
// login, and is kept for later starts.
func startRegistry(ctx context.Context, cfg Config, st store.Store, kr keyring, img *image.Registry, k *kube.Runtime, log *slog.Logger) (*registry, error) {
	r := &registry{st: st, kr: kr, img: img, kube: k, log: log, reapply: func() {}}
	img.Login = r.pushLogin
	if cfg.RegistryPassword != "" {
		if cfg.RegistryUsername == "" {
			return nil, errors.New("$PADDOCK_REGISTRY_PASSWORD is set without --registry-username: give both, or neither and set the login with `paddock registry login`")
		}
		if err := r.SetCredential(ctx, "push", cfg.RegistryUsername, cfg.RegistryPassword, "paddock up"); err != nil {
			return nil, err
		}
		log.Info("registry login kept sealed in the store: later starts need neither --registry-username nor $PADDOCK_REGISTRY_PASSWORD", "username", cfg.RegistryUsername)
	} else if cfg.RegistryUsername != "" {
		log.Warn("--registry-username without $PADDOCK_REGISTRY_PASSWORD is ignored: the kept login, if any, is used; change it with `paddock registry login`", "username", cfg.RegistryUsername)
	}
	for _, kind := range []string{"push", "pull"} {
		if err := r.load(ctx, kind); err != nil {
			return nil, err
		}
	}
	r.apply()
	return r, nil
}

// load opens the kept login of kind.
func (r *registry) load(ctx context.Context, kind string) error {
	name := credentialName(kind)
	c, err := r.st.GetCredential(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		r.set(kind, login{})
		return nil
	}
	if err != nil {
		return err
	}
	pw, err := r.kr.Open(ctx, c.Password, credentialAAD(name))
	if err != nil {
		return fmt.Errorf("the registry's %s login kept in the store: %w", kind, err)
	}
	r.set(kind, login{c.Username, string(pw)})
	return nil
}

func (r *registry) set(kind string, l login) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if kind == "push" {
		r.push = l
	} else {
		r.pull = l
	}
}

func (r *registry) pushLogin() (string, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.push.username, r.push.password
}

// apply gives the cluster the nodes' login: the pull login, else the push
// login, else none.
func (r *registry) apply() {
	r.mu.Lock()
	l := r.pull
	if l.username == "" {
		l = r.push
	}
	r.mu.Unlock()
	if l.username == "" {
		r.kube.SetPull(nil)
		return
	}
	host, _, _ := strings.Cut(r.img.Repository, "/")
	r.kube.SetPull(&kube.PullCredentials{Server: host, Username: l.username, Password: l.password})
}

func (r *registry) Info(ctx context.Context) (wire.Registry, error) {
	out := wire.Registry{Repository: r.img.Repository, Insecure: r.img.Insecure, BaseImage: r.img.Base}
	for _, kind := range []string{"push", "pull"} {
		c, err := r.st.GetCredential(ctx, credentialName(kind))
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return out, err
		}
		rc := &wire.RegistryCredential{Username: c.Username, UpdatedBy: c.UpdatedBy, UpdatedAt: c.UpdatedAt}
		if kind == "push" {
			out.Push = rc
		} else {
			out.Pull = rc
		}
	}
	return out, nil
}

func (r *registry) SetCredential(ctx context.Context, kind, username, password, by string) error {
	r.writing.Lock()
	defer r.writing.Unlock()
	name := credentialName(kind)
	sealed, err := r.kr.Seal(ctx, []byte(password), credentialAAD(name))
	if err != nil {
		return err
	}
	if err := r.st.PutCredential(ctx, store.Credential{Name: name, Username: username, Password: sealed, UpdatedBy: by, UpdatedAt: time.Now().UTC()}); err != nil {
		return err
	}
	r.set(kind, login{username, password})
	r.apply()
	r.reapply()
	return nil
}

func (r *registry) DeleteCredential(ctx context.Context, kind string) error {
	r.writing.Lock()
	defer r.writing.Unlock()
	if err := r.st.DeleteCredential(ctx, credentialName(kind)); err != nil {
		return err
	}
	r.set(kind, login{})
	r.apply()
	r.reapply()
	return nil
}
