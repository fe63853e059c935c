package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"paddock.dev/paddock/internal/api"
	"paddock.dev/paddock/internal/secrets"
	"paddock.dev/paddock/internal/store"
	"paddock.dev/paddock/internal/store/sqlite"
)

// keys gives the API the keyring's status, rotation and backup.
type keys struct {
	kr      *secrets.Keyring
	st      store.Store
	dir     string // the KEK's folder, DATA/keys
	fromEnv bool   // the KEK came from PADDOCK_KEK at start
}

var _ api.Keys = keys{}

func (k keys) Status(ctx context.Context) (api.KeyStatus, error) {
	s := k.kr.Status()
	dks, err := k.st.DataKeys(ctx)
	if err != nil {
		return api.KeyStatus{}, err
	}
	out := api.KeyStatus{KEK: s.KEKID, KEKSource: "key file " + filepath.Join(k.dir, secrets.KEKFile), MaxSeals: s.MaxSeals}
	if k.fromEnv {
		out.KEKSource = "environment variable " + kekEnv
	}
	var digest int64 // the digest key in use: the one with the smallest ID
	for _, d := range dks {
		if d.Kind == string(secrets.KindDigest) && (digest == 0 || d.ID < digest) {
			digest = d.ID
		}
	}
	for _, d := range dks {
		out.DataKeys = append(out.DataKeys, api.DataKeyStatus{ID: d.ID, Kind: d.Kind, KEK: d.KEKID, Seals: d.Seals,
			Active: d.ID == s.CurrentKeyID || d.ID == digest, CreatedAt: d.Created})
	}
	return out, nil
}

func (k keys) Rotate(ctx context.Context) error {
	if k.fromEnv {
		return fmt.Errorf("%w: the KEK comes from %s, which the server cannot change: rotate it by restarting with a new value (not supported yet)", errors.ErrUnsupported, kekEnv)
	}
	return k.kr.RotateLocal(ctx, k.dir)
}

func (k keys) Export(_ context.Context, passphrase []byte) ([]byte, error) {
	return secrets.Export(k.kr.KEK(), passphrase)
}

// Import writes the backup's KEK to the key folder and, if it is not the
// one in use (a store without data keys accepts any), makes the keyring use
// it too, so that new data keys are wrapped by the key the file holds.
func (k keys) Import(ctx context.Context, backup, passphrase []byte) error {
	kek, err := secrets.ImportKEK(ctx, k.dir, keyStore{k.st}, backup, passphrase)
	for _, bad := range []error{secrets.ErrNotBackup, secrets.ErrBackupDamaged, secrets.ErrPassphrase, secrets.ErrWrongKEK, secrets.ErrBadKEK} {
		if errors.Is(err, bad) {
			return fmt.Errorf("%w: %w", api.ErrBadBackup, err)
		}
	}
	if err != nil {
		return err
	}
	if kek.ID() != k.kr.KEK().ID() {
		return k.kr.Rotate(ctx, kek)
	}
	return nil
}

// ImportKey restores a KEK backup into the data folder of a platform that is
// not running (paddock up refuses to start without its key): it checks that
// the backup's key opens the store's data keys before it writes anything.
func ImportKey(ctx context.Context, data string, backup, passphrase []byte) error {
	unlock, err := lockData(data)
	if err != nil {
		return err
	}
	defer unlock()
	// A folder without a store is the wrong one: opening it would make an
	// empty store, which any key fits.
	if _, err := os.Stat(filepath.Join(data, "paddock.db")); err != nil {
		return fmt.Errorf("%s holds no Paddock store (%w): give the data folder of the platform whose key this is", data, err)
	}
	st, err := sqlite.Open(ctx, filepath.Join(data, "paddock.db"))
	if err != nil {
		return err
	}
	defer st.Close()
	_, err = secrets.ImportKEK(ctx, keysDir(data), keyStore{st}, backup, passphrase)
	return err
}
