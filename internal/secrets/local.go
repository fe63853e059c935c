package secrets

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// OpenLocal opens the keyring of a platform whose KEK is local: in the
// environment variable env (if set and not empty) or in the folder dir
// (see [LoadKEK]). cfg.KEK must be nil; cfg.Store is required.
//
// It makes a new KEK (dir/kek, and created is true) only when there is
// none and the store holds no data key, so nothing can be stranded. When
// the store holds data keys, the KEK must open them: otherwise the error
// wraps [ErrNoKEK] or [ErrWrongKEK], names the KEK the store needs, and
// says how to restore it. It never replaces a key file.
//
// It also finishes a [Keyring.RotateLocal] that a crash interrupted: if the
// store's data keys are wrapped by the staged key (dir/kek.next), that key
// becomes dir/kek; if by the old one, the staged key is removed.
func OpenLocal(ctx context.Context, dir, env string, cfg Config) (kr *Keyring, created bool, err error) {
	if cfg.KEK != nil {
		return nil, false, errors.New("secrets: open local keyring: cfg.KEK must be nil; the key comes from the key folder or the environment")
	}
	if cfg.Store == nil {
		return nil, false, errors.New("secrets: open local keyring: Store is required")
	}
	if env != "" && os.Getenv(env) != "" {
		if cfg.KEK, err = LoadKEK(dir, env); err != nil {
			return nil, false, err
		}
		kr, err = New(ctx, cfg)
		return kr, false, err
	}
	dks, err := cfg.Store.DataKeys(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("secrets: read data keys: %w", err)
	}
	cur, curErr := readKEKFile(dir, KEKFile)
	next, nextErr := readKEKFile(dir, StagedKEKFile)
	staged := filepath.Join(dir, StagedKEKFile)

	if len(dks) == 0 {
		switch {
		case curErr == nil:
			cfg.KEK = cur
		case errors.Is(curErr, ErrNoKEK):
			if cfg.KEK, err = CreateKEK(dir); err != nil {
				return nil, false, err
			}
			created = true
		default:
			return nil, false, curErr
		}
		if err := removeStale(staged); err != nil {
			return nil, false, err
		}
		kr, err = New(ctx, cfg)
		return kr, created, err
	}

	want := dks[0].KEKID
	switch {
	case curErr == nil && cur.ID() == want:
		cfg.KEK = cur
		if err := removeStale(staged); err != nil {
			return nil, false, err
		}
	case nextErr == nil && next.ID() == want:
		// A rotation committed in the store and stopped before its key
		// file replaced the old one.
		if err := os.Rename(staged, filepath.Join(dir, KEKFile)); err != nil {
			return nil, false, fmt.Errorf("secrets: finish an interrupted key rotation: %w", err)
		}
		if err := syncDir(dir); err != nil {
			return nil, false, fmt.Errorf("secrets: finish an interrupted key rotation: %w", err)
		}
		cfg.KEK = next
	case curErr != nil && !errors.Is(curErr, ErrNoKEK):
		return nil, false, curErr
	case curErr != nil:
		how := "restore it from your `paddock keys export` backup with `paddock keys import FILE --data DATA` (while no server runs)"
		if env != "" {
			how += ", or set " + env
		}
		return nil, false, fmt.Errorf("%w, and %s; the store's secrets need key-encryption key %s: %s", curErr, envState(env), want, how)
	default:
		return nil, false, fmt.Errorf("%w: %s holds key %s, and the store's data keys are wrapped by key %s; "+
			"restore key %s from your `paddock keys export` backup with `paddock keys import FILE --data DATA` (while no server runs)",
			ErrWrongKEK, filepath.Join(dir, KEKFile), cur.ID(), want, want)
	}
	kr, err = New(ctx, cfg)
	return kr, false, err
}

// removeStale removes a staged key that the store does not use.
func removeStale(path string) error {
	err := os.Remove(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("secrets: remove the unused staged key: %w", err)
	}
	return nil
}

// RotateLocal rotates a KEK kept in dir/kek (see [OpenLocal]): it writes a
// new key to dir/kek.next, re-wraps every data key under it ([Keyring.Rotate]),
// then renames it over dir/kek. A crash at any point leaves a key that opens
// the store, which the next OpenLocal finds. It refuses when the KEK in use
// is not the one in dir/kek (one from the environment is rotated with
// [Keyring.Rotate] and a new value for the variable).
func (k *Keyring) RotateLocal(ctx context.Context, dir string) error {
	old := k.KEK()
	onDisk, err := readKEKFile(dir, KEKFile)
	if err != nil {
		return fmt.Errorf("secrets: rotate: %w", err)
	}
	if onDisk.ID() != old.ID() {
		return fmt.Errorf("secrets: rotate: the key-encryption key in use (%s) is not the one in %s (%s); a key from the environment cannot be rotated in its folder",
			old.ID(), filepath.Join(dir, KEKFile), onDisk.ID())
	}
	// A staged key left by an earlier attempt may be replaced only if the
	// store is not wrapped by it.
	if err := VerifyKEK(ctx, k.store, old); err != nil {
		return fmt.Errorf("secrets: rotate: restart the server to finish an interrupted rotation first: %w", err)
	}
	next, err := GenerateKEK()
	if err != nil {
		return err
	}
	if err := writeKeyFile(dir, StagedKEKFile, next, true); err != nil {
		return err
	}
	// On failure the staged key stays: if the store did commit, it is the
	// only key that opens it.
	if err := k.Rotate(ctx, next); err != nil {
		return err
	}
	if err := os.Rename(filepath.Join(dir, StagedKEKFile), filepath.Join(dir, KEKFile)); err != nil {
		return fmt.Errorf("secrets: rotate: the store uses the new key, and it stays in %s: %w", filepath.Join(dir, StagedKEKFile), err)
	}
	return syncDir(dir)
}
