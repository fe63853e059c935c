package daemon

import (
	"context"
	"fmt"
	"path/filepath"

	"paddock.dev/paddock/internal/secrets"
	"paddock.dev/paddock/internal/store"
)

// kekEnv names the environment variable that may hold the KEK (base64 of
// 32 bytes) instead of DATA/keys/kek.
const kekEnv = "PADDOCK_KEK"

// keysDir is where the KEK lives in the data folder.
func keysDir(data string) string { return filepath.Join(data, "keys") }

// keyStore keeps the keyring's data keys in the platform's store.
type keyStore struct{ st store.Store }

var _ secrets.KeyStore = keyStore{}

func (k keyStore) DataKeys(ctx context.Context) ([]secrets.DataKey, error) {
	keys, err := k.st.DataKeys(ctx)
	out := make([]secrets.DataKey, len(keys))
	for i, d := range keys {
		out[i] = fromStore(d)
	}
	return out, err
}

func (k keyStore) AddDataKey(ctx context.Context, d secrets.DataKey) (secrets.DataKey, error) {
	added, err := k.st.AddDataKey(ctx, toStore(d))
	return fromStore(added), err
}

func (k keyStore) CountSeals(ctx context.Context, id, n int64) (int64, error) {
	return k.st.CountSeals(ctx, id, n)
}

func (k keyStore) RewrapDataKeys(ctx context.Context, fn func(secrets.DataKey) (secrets.DataKey, error)) error {
	return k.st.RewrapDataKeys(ctx, func(d store.DataKey) (store.DataKey, error) {
		n, err := fn(fromStore(d))
		return toStore(n), err
	})
}

func fromStore(d store.DataKey) secrets.DataKey {
	return secrets.DataKey{ID: d.ID, Kind: secrets.KeyKind(d.Kind), Wrapped: d.Wrapped, KEKID: d.KEKID, Seals: d.Seals, Created: d.Created}
}

func toStore(d secrets.DataKey) store.DataKey {
	return store.DataKey{ID: d.ID, Kind: string(d.Kind), Wrapped: d.Wrapped, KEKID: d.KEKID, Seals: d.Seals, Created: d.Created}
}

// keyring gives deploy the keyring, sealed values as bytes.
type keyring struct{ *secrets.Keyring }

func (k keyring) Seal(ctx context.Context, plaintext, aad []byte) ([]byte, error) {
	s, err := k.Keyring.Seal(ctx, plaintext, aad)
	if err != nil {
		return nil, err
	}
	return s.MarshalBinary()
}

func (k keyring) Open(ctx context.Context, sealed, aad []byte) ([]byte, error) {
	var s secrets.Sealed
	if err := s.UnmarshalBinary(sealed); err != nil {
		return nil, fmt.Errorf("%w: %w", secrets.ErrTampered, err)
	}
	return k.Keyring.Open(ctx, s, aad)
}
