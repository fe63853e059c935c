package secrets

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"
)

// KeyKind says what a data key is for. The store keeps it as text.
type KeyKind string

const (
	// KindValue keys seal secret values ([Keyring.Seal]).
	KindValue KeyKind = "value"
	// KindDigest is the HMAC key behind [Keyring.Digest]; the one with the
	// smallest ID is used.
	KindDigest KeyKind = "digest"
)

// DataKey is a data key as the store keeps it: only ever wrapped by a KEK.
// Nothing in it is secret without the KEK.
type DataKey struct {
	ID      int64     // assigned by the store; > 0, never reused
	Kind    KeyKind   // what the key is for
	Wrapped []byte    // the 32-byte key wrapped by the KEK named by KEKID
	KEKID   string    // [KEK.ID] of the KEK that wrapped it
	Seals   int64     // seals reserved under this key (see KeyStore.CountSeals)
	Created time.Time // when the key was made
}

// KeyStore keeps data keys. The platform's store implements it; [MemStore]
// is an in-memory one for tests. Implementations must be safe for
// concurrent use, and must pass the contract tests in package secretstest.
type KeyStore interface {
	// DataKeys returns every data key, in any order.
	DataKeys(ctx context.Context) ([]DataKey, error)

	// AddDataKey stores k with a new ID, greater than every ID the store
	// has ever assigned, and returns it with that ID. k.ID is ignored.
	AddDataKey(ctx context.Context, k DataKey) (DataKey, error)

	// CountSeals adds n to the seal count of data key id, atomically, and
	// returns the new count. It fails if there is no such key.
	//
	// The keyring calls it before it uses a batch of n seals (a
	// reservation, see Config.SealBatch), so the stored count is never
	// below the number of seals made, even across a crash; it may be above
	// it by the unused part of the last batch.
	CountSeals(ctx context.Context, id, n int64) (int64, error)

	// RewrapDataKeys calls fn for every data key in turn (never two at
	// once), in one transaction, and stores the Wrapped and KEKID fields
	// fn returns (the other fields are ignored). If fn or a write fails,
	// nothing changes and the error is returned. fn may be called again
	// for every key if the transaction is retried. No data key may be
	// added while it runs.
	RewrapDataKeys(ctx context.Context, fn func(DataKey) (DataKey, error)) error
}

// MemStore is a KeyStore in memory, for tests. The zero value is ready.
type MemStore struct {
	mu     sync.Mutex
	keys   []DataKey
	lastID int64
}

var _ KeyStore = (*MemStore)(nil)

// NewMemStore returns an empty MemStore.
func NewMemStore() *MemStore { return &MemStore{} }

func cloneKey(k DataKey) DataKey {
	k.Wrapped = slices.Clone(k.Wrapped)
	return k
}

// DataKeys returns copies of every key.
func (m *MemStore) DataKeys(ctx context.Context) ([]DataKey, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]DataKey, len(m.keys))
	for i, k := range m.keys {
		out[i] = cloneKey(k)
	}
	return out, nil
}

// AddDataKey stores a copy of k under a new ID.
func (m *MemStore) AddDataKey(ctx context.Context, k DataKey) (DataKey, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lastID++
	k = cloneKey(k)
	k.ID = m.lastID
	m.keys = append(m.keys, k)
	return cloneKey(k), nil
}

// CountSeals adds n to key id's seal count.
func (m *MemStore) CountSeals(ctx context.Context, id, n int64) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := range m.keys {
		if m.keys[i].ID == id {
			m.keys[i].Seals += n
			return m.keys[i].Seals, nil
		}
	}
	return 0, fmt.Errorf("count seals: no data key %d", id)
}

// RewrapDataKeys replaces every key's Wrapped and KEKID with fn's, or
// nothing if fn fails.
func (m *MemStore) RewrapDataKeys(ctx context.Context, fn func(DataKey) (DataKey, error)) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	next := make([]DataKey, len(m.keys))
	for i, k := range m.keys {
		got, err := fn(cloneKey(k))
		if err != nil {
			return err
		}
		k.Wrapped, k.KEKID = slices.Clone(got.Wrapped), got.KEKID
		next[i] = k
	}
	m.keys = next
	return nil
}
