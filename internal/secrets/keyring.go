package secrets

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Defaults of Config.
const (
	// DefaultMaxSeals is how many values one data key seals before a new
	// one is made: 2^24, far below the 2^32 random 96-bit nonces after
	// which GCM's nonce-collision risk stops being negligible.
	DefaultMaxSeals = 1 << 24
	// DefaultSealBatch is how many seals are reserved in the store at once.
	DefaultSealBatch = 1024
	// DefaultCacheSize is how many unwrapped value keys are kept in memory.
	DefaultCacheSize = 64
)

// DigestLen is the length of what [Keyring.Digest] returns, in hex digits.
const DigestLen = 12

// Config configures a Keyring.
type Config struct {
	// KEK wraps the data keys. Required.
	KEK KEK
	// Store keeps the data keys. Required.
	Store KeyStore
	// MaxSeals is how many values a data key seals before a new one is
	// made. Zero means DefaultMaxSeals; more than DefaultMaxSeals is
	// refused.
	MaxSeals int64
	// SealBatch is how many seals are reserved in the store with one
	// CountSeals call. Zero means DefaultSealBatch. A crash loses the unused
	// part of a batch: the stored count is then above the true one, which
	// only retires the key a little early; it is never below it.
	SealBatch int64
	// CacheSize is how many unwrapped value keys are kept in memory. Zero
	// means DefaultCacheSize.
	CacheSize int
	// Now stamps new data keys. Nil means time.Now.
	Now func() time.Time
}

// Keyring seals and opens secret values by envelope encryption (see the
// package comment). It is safe for concurrent use.
//
// Unwrapped value keys are cached (Config.CacheSize, least recently used
// evicted). The raw bytes of a data key are overwritten as soon as its
// cipher is built; the AES key schedule inside crypto/aes cannot be reached
// and goes with the garbage collector when the cipher is evicted.
type Keyring struct {
	store     KeyStore
	maxSeals  int64
	batch     int64
	now       func() time.Time
	cacheSize int

	// slow serialises everything that writes to the store (reservations,
	// new keys, rotation) and re-reads of it, so that the KEK and the
	// wrapped keys in memory always change together.
	slow sync.Mutex

	mu     sync.Mutex
	kek    KEK
	keys   map[int64]DataKey // as last read from or written to the store
	cur    *sealer           // where new seals go; nil until the first Seal
	digest []byte            // HMAC key of Digest; nil until needed
	cache  *keyCache
}

// sealer is the current value key with the seals reserved for it.
type sealer struct {
	id   int64
	aead cipher.AEAD
	left int64 // reserved in the store and not yet used
}

// New returns a Keyring over cfg.Store. It checks that cfg.KEK opens every
// data key in the store: if not, the error wraps [ErrWrongKEK] and says
// which KEK the store needs. A store without data keys is fine; the first
// Seal makes one.
func New(ctx context.Context, cfg Config) (*Keyring, error) {
	if cfg.KEK == nil || cfg.Store == nil {
		return nil, errors.New("secrets: new keyring: KEK and Store are required")
	}
	k := &Keyring{
		store:     cfg.Store,
		maxSeals:  cfg.MaxSeals,
		batch:     cfg.SealBatch,
		now:       cfg.Now,
		cacheSize: cfg.CacheSize,
		kek:       cfg.KEK,
	}
	switch {
	case k.maxSeals == 0:
		k.maxSeals = DefaultMaxSeals
	case k.maxSeals < 0 || k.maxSeals > DefaultMaxSeals:
		return nil, fmt.Errorf("secrets: new keyring: MaxSeals %d is not in 1..%d", k.maxSeals, DefaultMaxSeals)
	}
	switch {
	case k.batch == 0:
		k.batch = DefaultSealBatch
	case k.batch < 0:
		return nil, fmt.Errorf("secrets: new keyring: SealBatch %d is negative", k.batch)
	}
	k.batch = min(k.batch, k.maxSeals)
	if k.cacheSize <= 0 {
		k.cacheSize = DefaultCacheSize
	}
	if k.now == nil {
		k.now = time.Now
	}
	k.cache = newKeyCache(k.cacheSize)

	dks, err := k.store.DataKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("secrets: read data keys: %w", err)
	}
	if err := verifyKeys(k.kek, dks); err != nil {
		return nil, err
	}
	k.keys = keyMap(dks)
	if dk, ok := k.digestKeyMeta(); ok {
		if err := k.loadDigest(dk, k.kek); err != nil {
			return nil, err
		}
	}
	return k, nil
}

// VerifyKEK checks that kek opens every data key in store. An error wraps
// [ErrWrongKEK] and says which KEK the store needs. A store without data
// keys passes.
func VerifyKEK(ctx context.Context, store KeyStore, kek KEK) error {
	dks, err := store.DataKeys(ctx)
	if err != nil {
		return fmt.Errorf("secrets: read data keys: %w", err)
	}
	return verifyKeys(kek, dks)
}

func verifyKeys(kek KEK, dks []DataKey) error {
	id := kek.ID()
	for _, dk := range dks {
		if dk.KEKID != id {
			return fmt.Errorf("%w: the store's data keys are wrapped by key-encryption key %s, and this key is %s; "+
				"restore key %s from your `paddock keys export` backup with `paddock keys import FILE --data DATA` (while no server runs)",
				ErrWrongKEK, dk.KEKID, id, dk.KEKID)
		}
	}
	for _, dk := range dks {
		raw, err := kek.Unwrap(dk.Wrapped, wrapAAD(dk.Kind))
		ok := err == nil && len(raw) == KeySize
		clear(raw)
		if !ok {
			return fmt.Errorf("%w: data key %d names key-encryption key %s, which does not open it: the store or the key is damaged",
				ErrWrongKEK, dk.ID, id)
		}
	}
	return nil
}

func keyMap(dks []DataKey) map[int64]DataKey {
	m := make(map[int64]DataKey, len(dks))
	for _, dk := range dks {
		m[dk.ID] = dk
	}
	return m
}

// wrapAAD is the associated data of a data key wrapped by the KEK: a key
// of one kind cannot pass for one of another.
func wrapAAD(kind KeyKind) []byte { return []byte("paddock data key v1 " + string(kind)) }

// sealAAD is the associated data of a sealed value: a format label, the
// data key's ID, then the caller's associated data.
func sealAAD(id int64, aad []byte) []byte {
	const label = "paddock secret v1"
	b := make([]byte, 0, len(label)+8+len(aad))
	b = append(b, label...)
	b = binary.BigEndian.AppendUint64(b, uint64(id))
	return append(b, aad...)
}

func newAEAD(raw []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(raw)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCMWithRandomNonce(block)
}

// Seal encrypts plaintext with AES-256-GCM under the current value key and
// a random nonce, binding aad (use [AAD] to build it from app, name and
// version). It makes a new data key when the current one has sealed
// Config.MaxSeals values.
func (k *Keyring) Seal(ctx context.Context, plaintext, aad []byte) (Sealed, error) {
	id, aead, err := k.takeSeal(ctx)
	if err != nil {
		return Sealed{}, err
	}
	return Sealed{KeyID: id, Box: aead.Seal(nil, nil, plaintext, sealAAD(id, aad))}, nil
}

// takeSeal returns the key the next seal uses, having counted it.
func (k *Keyring) takeSeal(ctx context.Context) (int64, cipher.AEAD, error) {
	k.mu.Lock()
	if c := k.cur; c != nil && c.left > 0 {
		c.left--
		k.mu.Unlock()
		return c.id, c.aead, nil
	}
	k.mu.Unlock()

	k.slow.Lock()
	defer k.slow.Unlock()
	for {
		k.mu.Lock()
		c := k.cur
		if c != nil && c.left > 0 {
			c.left--
			k.mu.Unlock()
			return c.id, c.aead, nil
		}
		if c == nil {
			c = k.pickCurrent()
		}
		var seals int64
		if c != nil {
			seals = k.keys[c.id].Seals
		}
		k.mu.Unlock()

		if c == nil || seals >= k.maxSeals {
			if err := k.newValueKey(ctx); err != nil {
				return 0, nil, err
			}
			continue
		}
		if c.aead == nil {
			k.mu.Lock()
			dk, kek := k.keys[c.id], k.kek
			k.mu.Unlock()
			aead, err := unwrapValueKey(dk, kek)
			if err != nil {
				return 0, nil, err
			}
			c.aead = aead
		}
		n := min(k.batch, k.maxSeals-seals)
		total, err := k.store.CountSeals(ctx, c.id, n)
		if err != nil {
			return 0, nil, fmt.Errorf("secrets: count seals of data key %d: %w", c.id, err)
		}
		k.mu.Lock()
		dk := k.keys[c.id]
		dk.Seals = total
		k.keys[c.id] = dk
		c.left += n
		k.cur = c
		k.mu.Unlock()
	}
}

// pickCurrent returns a sealer for the newest value key, without a cipher
// or reservation, or nil if there is none. k.mu is held.
func (k *Keyring) pickCurrent() *sealer {
	var best int64
	for id, dk := range k.keys {
		if dk.Kind == KindValue && id > best {
			best = id
		}
	}
	if best == 0 {
		return nil
	}
	return &sealer{id: best}
}

// newValueKey makes a value key and makes it current. k.slow is held.
func (k *Keyring) newValueKey(ctx context.Context) error {
	dk, aead, err := k.addKey(ctx, KindValue)
	if err != nil {
		return err
	}
	k.mu.Lock()
	k.keys[dk.ID] = dk
	k.cur = &sealer{id: dk.ID, aead: aead}
	k.cache.put(dk.ID, aead)
	k.mu.Unlock()
	return nil
}

// addKey makes a random data key of kind and stores it wrapped. It returns
// the stored key and, for a value key, its cipher. k.slow is held.
func (k *Keyring) addKey(ctx context.Context, kind KeyKind) (DataKey, cipher.AEAD, error) {
	raw := make([]byte, KeySize)
	rand.Read(raw)
	defer clear(raw)
	k.mu.Lock()
	kek := k.kek
	k.mu.Unlock()
	wrapped, err := kek.Wrap(raw, wrapAAD(kind))
	if err != nil {
		return DataKey{}, nil, fmt.Errorf("secrets: wrap a new data key: %w", err)
	}
	var aead cipher.AEAD
	if kind == KindValue {
		if aead, err = newAEAD(raw); err != nil {
			return DataKey{}, nil, err
		}
	}
	dk, err := k.store.AddDataKey(ctx, DataKey{
		Kind: kind, Wrapped: wrapped, KEKID: kek.ID(), Created: k.now().UTC(),
	})
	if err != nil {
		return DataKey{}, nil, fmt.Errorf("secrets: store a new data key: %w", err)
	}
	return dk, aead, nil
}

// Open decrypts s, which must have been sealed with the same aad. If s was
// changed, or aad differs (the value was moved to another row or app), the
// error wraps [ErrTampered]; errors reading the store do not.
func (k *Keyring) Open(ctx context.Context, s Sealed, aad []byte) ([]byte, error) {
	aead, err := k.aead(ctx, s.KeyID)
	if err != nil {
		return nil, err
	}
	pt, err := aead.Open(nil, nil, s.Box, sealAAD(s.KeyID, aad))
	if err != nil {
		return nil, fmt.Errorf("%w (data key %d)", ErrTampered, s.KeyID)
	}
	return pt, nil
}

// aead returns the cipher of value key id, from the cache or unwrapped.
func (k *Keyring) aead(ctx context.Context, id int64) (cipher.AEAD, error) {
	k.mu.Lock()
	if a, ok := k.cache.get(id); ok {
		k.mu.Unlock()
		return a, nil
	}
	dk, ok := k.keys[id]
	kek := k.kek
	k.mu.Unlock()

	if !ok {
		// Another server may have made it since we read the store.
		if err := k.reload(ctx); err != nil {
			return nil, err
		}
		k.mu.Lock()
		dk, ok = k.keys[id]
		kek = k.kek
		k.mu.Unlock()
		if !ok {
			return nil, fmt.Errorf("%w: it names data key %d, which the store does not hold", ErrTampered, id)
		}
	}
	if dk.Kind != KindValue {
		return nil, fmt.Errorf("%w: it names data key %d, which is not a value key", ErrTampered, id)
	}
	a, err := unwrapValueKey(dk, kek)
	if err != nil {
		return nil, err
	}
	k.mu.Lock()
	k.cache.put(id, a)
	k.mu.Unlock()
	return a, nil
}

// unwrapValueKey returns the cipher of value key dk, unwrapped by kek.
func unwrapValueKey(dk DataKey, kek KEK) (cipher.AEAD, error) {
	if dk.KEKID != kek.ID() {
		return nil, fmt.Errorf("%w: data key %d is wrapped by key-encryption key %s, and this keyring's is %s", ErrWrongKEK, dk.ID, dk.KEKID, kek.ID())
	}
	raw, err := kek.Unwrap(dk.Wrapped, wrapAAD(dk.Kind))
	defer clear(raw)
	if err != nil || len(raw) != KeySize {
		return nil, fmt.Errorf("%w: data key %d does not unwrap: the store or the key is damaged", ErrWrongKEK, dk.ID)
	}
	return newAEAD(raw)
}

// reload re-reads the data keys from the store.
func (k *Keyring) reload(ctx context.Context) error {
	k.slow.Lock()
	defer k.slow.Unlock()
	return k.reloadLocked(ctx)
}

func (k *Keyring) reloadLocked(ctx context.Context) error {
	dks, err := k.store.DataKeys(ctx)
	if err != nil {
		return fmt.Errorf("secrets: read data keys: %w", err)
	}
	k.mu.Lock()
	k.keys = keyMap(dks)
	k.mu.Unlock()
	return nil
}

// Digest returns a short identifier of value (DigestLen hex digits of
// HMAC-SHA256 under the digest key), to show users which version of a
// secret they have without revealing it: without the KEK it cannot be
// computed, so a low-entropy value cannot be guessed from it. It is the
// same for the same value across KEK rotations and data key rollovers.
// The first call on an empty store makes the digest key.
func (k *Keyring) Digest(ctx context.Context, value []byte) (string, error) {
	key, err := k.digestKey(ctx)
	if err != nil {
		return "", err
	}
	m := hmac.New(sha256.New, key)
	m.Write(value)
	sum := m.Sum(nil)
	return hex.EncodeToString(sum[:DigestLen/2]), nil
}

func (k *Keyring) digestKey(ctx context.Context) ([]byte, error) {
	k.mu.Lock()
	key := k.digest
	k.mu.Unlock()
	if key != nil {
		return key, nil
	}
	k.slow.Lock()
	defer k.slow.Unlock()
	for try := 0; ; try++ {
		k.mu.Lock()
		key = k.digest
		dk, ok := k.digestKeyMeta()
		kek := k.kek
		k.mu.Unlock()
		if key != nil {
			return key, nil
		}
		if ok {
			if err := k.loadDigest(dk, kek); err != nil {
				return nil, err
			}
			continue
		}
		if try > 0 {
			return nil, errors.New("secrets: the store lost the digest key just made")
		}
		// Another server may have made one; if two are made at once, both
		// settle on the one with the smaller ID.
		if err := k.reloadLocked(ctx); err != nil {
			return nil, err
		}
		k.mu.Lock()
		_, ok = k.digestKeyMeta()
		k.mu.Unlock()
		if !ok {
			if _, _, err := k.addKey(ctx, KindDigest); err != nil {
				return nil, err
			}
			if err := k.reloadLocked(ctx); err != nil {
				return nil, err
			}
		}
	}
}

// digestKeyMeta returns the digest key with the smallest ID. k.mu is held
// (or k is not shared yet).
func (k *Keyring) digestKeyMeta() (DataKey, bool) {
	var best DataKey
	for id, dk := range k.keys {
		if dk.Kind == KindDigest && (best.ID == 0 || id < best.ID) {
			best = dk
		}
	}
	return best, best.ID != 0
}

// loadDigest unwraps dk with kek and makes it the digest key.
func (k *Keyring) loadDigest(dk DataKey, kek KEK) error {
	raw, err := kek.Unwrap(dk.Wrapped, wrapAAD(KindDigest))
	if err != nil || len(raw) != KeySize {
		clear(raw)
		return fmt.Errorf("%w: digest key %d does not unwrap: the store or the key is damaged", ErrWrongKEK, dk.ID)
	}
	k.mu.Lock()
	k.digest = raw
	k.mu.Unlock()
	return nil
}

// Rotate re-wraps every data key under newKEK in one store transaction and
// then uses newKEK. No value is re-encrypted, so it takes milliseconds;
// Seal and Open keep working throughout (a Seal that must reserve seals or
// make a key waits for the transaction). Afterwards the old KEK opens
// nothing in the store.
//
// If Rotate returns an error, the store is unchanged unless the error was
// the loss of the transaction's acknowledgement; keep newKEK until
// [VerifyKEK] says which key the store needs ([Keyring.RotateLocal] does).
func (k *Keyring) Rotate(ctx context.Context, newKEK KEK) error {
	k.slow.Lock()
	defer k.slow.Unlock()
	k.mu.Lock()
	old := k.kek
	k.mu.Unlock()
	if newKEK.ID() == old.ID() {
		return fmt.Errorf("secrets: rotate: the new key-encryption key is the current one (%s)", old.ID())
	}
	var rewrapped map[int64]DataKey
	err := k.store.RewrapDataKeys(ctx, func(dk DataKey) (DataKey, error) {
		if rewrapped == nil {
			rewrapped = make(map[int64]DataKey)
		}
		if dk.KEKID != old.ID() {
			return DataKey{}, fmt.Errorf("%w: data key %d is wrapped by key-encryption key %s, not by the current one (%s)", ErrWrongKEK, dk.ID, dk.KEKID, old.ID())
		}
		raw, err := old.Unwrap(dk.Wrapped, wrapAAD(dk.Kind))
		defer clear(raw)
		if err != nil || len(raw) != KeySize {
			return DataKey{}, fmt.Errorf("%w: data key %d does not unwrap: the store or the key is damaged", ErrWrongKEK, dk.ID)
		}
		w, err := newKEK.Wrap(raw, wrapAAD(dk.Kind))
		if err != nil {
			return DataKey{}, fmt.Errorf("secrets: wrap data key %d under the new key: %w", dk.ID, err)
		}
		dk.Wrapped, dk.KEKID = w, newKEK.ID()
		rewrapped[dk.ID] = dk
		return dk, nil
	})
	if err != nil {
		return fmt.Errorf("secrets: rotate the key-encryption key: %w", err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if rewrapped == nil {
		rewrapped = make(map[int64]DataKey)
	}
	// Keep the freshest seal counts: the transaction may have read older ones.
	for id, dk := range rewrapped {
		if mine, ok := k.keys[id]; ok && mine.Seals > dk.Seals {
			dk.Seals = mine.Seals
			rewrapped[id] = dk
		}
	}
	k.kek, k.keys = newKEK, rewrapped
	return nil
}

// KEK returns the KEK in use, for [Export].
func (k *Keyring) KEK() KEK {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.kek
}

// Status is what `paddock keys status` shows.
type Status struct {
	KEKID        string // ID of the KEK in use
	DataKeys     int    // data keys of every kind in the store
	CurrentKeyID int64  // the value key new seals use; 0 before the first
	CurrentSeals int64  // seals reserved under it: up to Config.SealBatch more than made
	MaxSeals     int64  // seals after which a new value key is made
}

// Status reports the keys, from memory.
func (k *Keyring) Status() Status {
	k.mu.Lock()
	defer k.mu.Unlock()
	st := Status{KEKID: k.kek.ID(), DataKeys: len(k.keys), MaxSeals: k.maxSeals}
	c := k.cur
	if c == nil {
		c = k.pickCurrent()
	}
	if c != nil {
		st.CurrentKeyID, st.CurrentSeals = c.id, k.keys[c.id].Seals
	}
	return st
}

// String returns [REDACTED].
func (k *Keyring) String() string { return redacted }

// GoString returns [REDACTED].
func (k *Keyring) GoString() string { return redacted }

// Format prints [REDACTED] for every verb.
func (k *Keyring) Format(f fmt.State, verb rune) { fmt.Fprint(f, redacted) }

// LogValue returns the KEK's ID and [REDACTED].
func (k *Keyring) LogValue() slog.Value {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slog.GroupValue(slog.String("kek", k.kek.ID()), slog.String("keys", redacted))
}
