package deploy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"paddock.dev/paddock/internal/runtime"
	"paddock.dev/paddock/internal/secrets"
	"paddock.dev/paddock/internal/store"
)

// Keyring seals and opens secret values; internal/secrets implements it.
// The associated data binds a sealed value to the place it was sealed for.
type Keyring interface {
	Seal(ctx context.Context, plaintext, aad []byte) ([]byte, error)
	Open(ctx context.Context, sealed, aad []byte) ([]byte, error)
	// Digest is a short keyed digest of a value, to tell versions apart
	// without revealing anything of it.
	Digest(ctx context.Context, value []byte) (string, error)
}

// MaxSecret is the largest secret value.
const MaxSecret = 64 << 10

// ErrNoKeyring: secrets cannot be set or read without the keyring.
var ErrNoKeyring = errors.New("secrets are not available on this server: it has no keyring")

// ErrSecretDamaged: a stored secret version does not open (changed in the
// store, or moved from another row).
var ErrSecretDamaged = errors.New("secret damaged")

// SecretOptions say how a secret is given to instances and when.
type SecretOptions struct {
	AsFile bool // a file in $PADDOCK_SECRETS_DIR rather than an environment variable
	// NoRestart stores the version without a release: it reaches the
	// instances with the app's next release.
	NoRestart bool
}

// SecretInfo describes the current version of a secret, never its value.
type SecretInfo struct {
	Name      string
	Version   int
	Digest    string
	AsFile    bool
	UpdatedBy string
	UpdatedAt time.Time
}

// secretAAD binds a sealed value to its app, name and version: moved to
// another row or app, it fails to open.
func secretAAD(appID int64, name string, version int) []byte {
	return []byte("paddock secret\x00" + strconv.FormatInt(appID, 10) + "\x00" + name + "\x00" + strconv.Itoa(version))
}

// validateSecretName says what is wrong with a secret's name, if anything:
// it must be an environment variable name the platform does not set.
func validateSecretName(name string) error {
	if len(name) > 256 || !configKey.MatchString(name) {
		return fmt.Errorf("%w: secret name %q: use letters, digits and underscores, not starting with a digit (it is also the environment variable's or the file's name)", ErrInvalid, name)
	}
	if reservedKeys[name] || name == "HOME" || name == "PATH" || strings.HasPrefix(name, "PADDOCK_") {
		return fmt.Errorf("%w: secret name %q is set by the platform (PORT, HOME, PATH and PADDOCK_* are)", ErrInvalid, name)
	}
	if len(name) > 255 {
		return fmt.Errorf("%w: secret name %q: at most 255 bytes (it is also a file's name)", ErrInvalid, name)
	}
	return nil
}

// An app's secrets go to every instance in its environment (bounded by
// the kernel's limit on a program's arguments and environment) or in a
// pipe and a tmpfs: these bound them all.
const (
	maxEnvSecrets = 1 << 20
	maxAllSecrets = 8 << 20
)

// SetSecret stores value as the next version of app's secret name and,
// unless opts.NoRestart, rolls it out in a new release, which it returns.
func (s *Service) SetSecret(ctx context.Context, app, name string, value []byte, opts SecretOptions, actor string) (*store.Release, error) {
	if err := validateSecretName(name); err != nil {
		return nil, err
	}
	switch {
	case len(value) == 0:
		return nil, fmt.Errorf("%w: secret %s: the value is empty (to remove a secret, unset it)", ErrInvalid, name)
	case len(value) > MaxSecret:
		return nil, fmt.Errorf("%w: secret %s: the value has %d bytes, over the limit of %d", ErrInvalid, name, len(value), MaxSecret)
	}
	return s.changeSecret(ctx, app, name, value, opts, actor)
}

// UnsetSecret removes app's secret name in a new version, rolled out like
// SetSecret's.
func (s *Service) UnsetSecret(ctx context.Context, app, name string, noRestart bool, actor string) (*store.Release, error) {
	if err := validateSecretName(name); err != nil {
		return nil, err
	}
	return s.changeSecret(ctx, app, name, nil, SecretOptions{NoRestart: noRestart}, actor)
}

// changeSecret adds a version of a secret: value, or nil to unset it.
func (s *Service) changeSecret(ctx context.Context, app, name string, value []byte, opts SecretOptions, actor string) (*store.Release, error) {
	if s.cfg.Keyring == nil {
		return nil, ErrNoKeyring
	}
	defer s.lock(app)()
	a, err := s.st.GetApp(ctx, app)
	if err != nil {
		return nil, err
	}
	latest, err := s.st.LatestSecretVersions(ctx, app)
	if err != nil {
		return nil, err
	}
	v := store.SecretVersion{App: app, Name: name, Version: 1, AsFile: opts.AsFile, CreatedBy: actor, CreatedAt: s.now().UTC()}
	var last *store.SecretVersion
	for i := range latest {
		if latest[i].Name == name {
			last = &latest[i]
			v.Version = last.Version + 1
		}
	}
	verb := "set"
	if value == nil {
		if last == nil || last.Deleted {
			return nil, fmt.Errorf("secret %s of %s: %w", name, app, store.ErrNotFound)
		}
		v.Deleted, verb = true, "unset"
	} else {
		if v.Sealed, err = s.cfg.Keyring.Seal(ctx, value, secretAAD(a.ID, name, v.Version)); err != nil {
			return nil, fmt.Errorf("seal secret %s: %w", name, err)
		}
		// Bound to the app and name: equal digests mean equal values of
		// one secret, and a developer of another app cannot test guesses.
		if v.Digest, err = s.cfg.Keyring.Digest(ctx, append(secretAAD(a.ID, name, 0), value...)); err != nil {
			return nil, fmt.Errorf("digest of secret %s: %w", name, err)
		}
	}
	if value != nil {
		if err := s.checkTotal(ctx, a, latest, name, len(value), opts.AsFile); err != nil {
			return nil, err
		}
	}
	if err := s.st.AddSecretVersion(ctx, v); err != nil {
		return nil, err
	}
	s.event(ctx, app, "", "", fmt.Sprintf("secret %s %s (v%d) by %s", name, verb, v.Version, actor))
	if opts.NoRestart {
		return nil, nil
	}
	pins, err := s.nextSecrets(ctx, app)
	if err != nil {
		return nil, err
	}
	config, err := s.lastConfig(ctx, app)
	if err != nil {
		return nil, err
	}
	rel, err := s.st.AddRelease(ctx, app, func(a store.App, cur *store.Release) (store.Release, error) {
		next := store.Release{Config: config, Secrets: pins, CreatedBy: actor, CreatedAt: s.now().UTC(),
			Description: "Secrets: " + verb + " " + name}
		if cur != nil {
			next.Build, next.Artifact, next.Manifest, next.Config = cur.Build, cur.Artifact, cur.Manifest, cur.Config
		}
		if next.Build == "" {
			next.Status = store.StatusDeployed // nothing to roll out
		}
		return next, nil
	})
	if err != nil {
		return nil, err
	}
	s.event(ctx, app, "", "", fmt.Sprintf("release v%d created by %s: %s", rel.Version, actor, rel.Description))
	s.Kick()
	return &rel, nil
}

// checkTotal refuses a change that would take app a's secrets over the
// totals an instance can take.
func (s *Service) checkTotal(ctx context.Context, a store.App, latest []store.SecretVersion, name string, size int, asFile bool) error {
	env, all := 0, 0
	if !asFile {
		env = len(name) + 1 + size
	}
	all = size
	for _, v := range latest {
		if v.Name == name || v.Deleted {
			continue
		}
		// The sealed size is the value's and a fixed overhead.
		n := max(len(v.Sealed)-64, 0)
		all += n
		if !v.AsFile {
			env += len(v.Name) + 1 + n
		}
	}
	switch {
	case env > maxEnvSecrets:
		return fmt.Errorf("%w: secret %s: the app's secrets in the environment would hold about %d KiB, over the %d KiB an instance's environment can take: give large ones as files (--as-file)", ErrInvalid, name, env>>10, maxEnvSecrets>>10)
	case all > maxAllSecrets:
		return fmt.Errorf("%w: secret %s: the app's secrets would hold about %d MiB, over the limit of %d MiB", ErrInvalid, name, all>>20, maxAllSecrets>>20)
	}
	return nil
}

// latestSecrets returns the newest version of each secret of app.
func (s *Service) latestSecrets(ctx context.Context, app string) (map[string]int, error) {
	versions, err := s.st.LatestSecretVersions(ctx, app)
	if err != nil {
		return nil, err
	}
	pins := map[string]int{}
	for _, v := range versions {
		if !v.Deleted {
			pins[v.Name] = v.Version
		}
	}
	return pins, nil
}

// nextSecrets returns the secret versions a new release of app pins: those
// of its current release, and the versions set or unset since that
// release was made (with --no-restart, say). After a rollback, a later
// unrelated release keeps the versions rolled back to.
func (s *Service) nextSecrets(ctx context.Context, app string) (map[string]int, error) {
	a, err := s.st.GetApp(ctx, app)
	if err != nil {
		return nil, err
	}
	if a.Release == 0 {
		return s.latestSecrets(ctx, app)
	}
	cur, err := s.st.GetRelease(ctx, app, a.Release)
	if err != nil {
		return nil, err
	}
	versions, err := s.st.LatestSecretVersions(ctx, app)
	if err != nil {
		return nil, err
	}
	pins := make(map[string]int, len(cur.Secrets))
	for n, v := range cur.Secrets {
		pins[n] = v
	}
	for _, v := range versions {
		if !v.CreatedAt.After(cur.CreatedAt) {
			continue
		}
		if v.Deleted {
			delete(pins, v.Name)
		} else {
			pins[v.Name] = v.Version
		}
	}
	return pins, nil
}

// Secrets describes the current version of each of app's secrets.
func (s *Service) Secrets(ctx context.Context, app string) ([]SecretInfo, error) {
	versions, err := s.st.LatestSecretVersions(ctx, app)
	if err != nil {
		return nil, err
	}
	out := []SecretInfo{}
	for _, v := range versions {
		if !v.Deleted {
			out = append(out, SecretInfo{Name: v.Name, Version: v.Version, Digest: v.Digest, AsFile: v.AsFile, UpdatedBy: v.CreatedBy, UpdatedAt: v.CreatedAt})
		}
	}
	return out, nil
}

// SecretHistory returns the versions of one of app's secrets, oldest
// first, without their values.
func (s *Service) SecretHistory(ctx context.Context, app, name string) ([]store.SecretVersion, error) {
	versions, err := s.st.ListSecretVersions(ctx, app, name)
	if err != nil {
		return nil, err
	}
	if len(versions) == 0 {
		return nil, fmt.Errorf("secret %s of %s: %w", name, app, store.ErrNotFound)
	}
	for i := range versions {
		versions[i].Sealed = nil
	}
	return versions, nil
}

// RevealSecret returns the value of the current version of app's secret
// name.
func (s *Service) RevealSecret(ctx context.Context, app, name string) ([]byte, error) {
	if s.cfg.Keyring == nil {
		return nil, ErrNoKeyring
	}
	a, err := s.st.GetApp(ctx, app)
	if err != nil {
		return nil, err
	}
	latest, err := s.st.LatestSecretVersions(ctx, app)
	if err != nil {
		return nil, err
	}
	for _, v := range latest {
		if v.Name == name && !v.Deleted {
			return s.openSecret(ctx, a, v)
		}
	}
	return nil, fmt.Errorf("secret %s of %s: %w", name, app, store.ErrNotFound)
}

// openSecret opens one version of one of app a's secrets.
func (s *Service) openSecret(ctx context.Context, a store.App, v store.SecretVersion) ([]byte, error) {
	value, err := s.cfg.Keyring.Open(ctx, v.Sealed, secretAAD(a.ID, v.Name, v.Version))
	if err != nil {
		return nil, fmt.Errorf("%w: secret %s v%d of %s does not open (%w): was it changed in the store? Set it again", ErrSecretDamaged, v.Name, v.Version, a.Name, err)
	}
	return value, nil
}

// openSecrets opens the given versions of app's secrets.
func (s *Service) openSecrets(ctx context.Context, a store.App, pins map[string]int) ([]runtime.Secret, error) {
	if len(pins) == 0 {
		return nil, nil
	}
	if s.cfg.Keyring == nil {
		return nil, ErrNoKeyring
	}
	versions, err := s.st.PinnedSecretVersions(ctx, a.Name, pins)
	if err != nil {
		return nil, err
	}
	var out []runtime.Secret
	for _, v := range versions {
		if v.Deleted {
			continue
		}
		value, err := s.openSecret(ctx, a, v)
		if err != nil {
			return nil, err
		}
		out = append(out, runtime.Secret{Name: v.Name, Value: value, AsFile: v.AsFile})
	}
	if len(out) != len(pins) {
		return nil, fmt.Errorf("app %s: %d of the %d secret versions its release pins are missing from the store", a.Name, len(pins)-len(out), len(pins))
	}
	return out, nil
}

// flusher is a writer that holds output back until Flush.
type flusher interface {
	io.Writer
	Flush() error
}

type noFlush struct{ io.Writer }

func (noFlush) Flush() error { return nil }

// scrubber returns a writer that passes output on to w with the values of
// app a's secrets scrubbed: those of its current release and the newest
// versions, what its instances may hold.
func (s *Service) scrubber(ctx context.Context, a store.App, w io.Writer) (flusher, error) {
	pins, err := s.latestSecrets(ctx, a.Name)
	if err != nil {
		return nil, err
	}
	sets := []map[string]int{pins}
	if a.Release != 0 {
		rel, err := s.st.GetRelease(ctx, a.Name, a.Release)
		if err != nil {
			return nil, err
		}
		sets = append(sets, rel.Secrets)
	}
	var out flusher = noFlush{w}
	for _, set := range sets {
		opened, err := s.openSecrets(ctx, a, set)
		if err != nil || len(opened) == 0 {
			if err != nil {
				return nil, err
			}
			continue
		}
		values := make(map[string][]byte, len(opened))
		for _, sec := range opened {
			values[sec.Name] = sec.Value
		}
		out = chain{secrets.NewRedactor(values).NewWriter(out), out}
	}
	return out, nil
}

// chain is a redacting writer in front of the next one: Flush flushes
// both, in order.
type chain struct {
	*secrets.Writer
	next flusher
}

func (c chain) Flush() error {
	if err := c.Writer.Flush(); err != nil {
		return err
	}
	return c.next.Flush()
}
