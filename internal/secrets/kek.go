package secrets

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
)

// KEK is a key-encryption key: it wraps and unwraps data keys. The local
// implementation is [LocalKEK]; an external KMS can implement it too.
type KEK interface {
	// ID is a stable identifier of the key that reveals nothing about it.
	// It is stored beside everything the key wraps.
	ID() string
	// Wrap encrypts plaintext, binding aad; Unwrap with another aad fails.
	Wrap(plaintext, aad []byte) ([]byte, error)
	// Unwrap decrypts what Wrap returned; it fails if the ciphertext or aad
	// were changed or another key wrapped it.
	Unwrap(ciphertext, aad []byte) ([]byte, error)
}

// KeySize is the length of a KEK and of every data key: 32 bytes, AES-256.
const KeySize = 32

// Errors about the KEK. Their messages say what to do.
var (
	// ErrNoKEK: there is no KEK where one was looked for.
	ErrNoKEK = errors.New("secrets: no key-encryption key")
	// ErrBadKEK: a KEK was found but is unusable (length, encoding,
	// permissions of its file).
	ErrBadKEK = errors.New("secrets: unusable key-encryption key")
	// ErrWrongKEK: the KEK does not open the data keys in the store.
	ErrWrongKEK = errors.New("secrets: the key-encryption key does not open the store's data keys")
)

// wrapVersion is the first byte of everything a LocalKEK wraps.
const wrapVersion = 1

// LocalKEK is a KEK held in memory: 32 random bytes. It never prints its key:
// every fmt verb and slog print [REDACTED].
//
// The 32 bytes are a root key from which two keys are derived with HKDF-SHA256:
// the AES-256-GCM key that wraps, and an identifier key; ID is the first 16
// hex digits of the SHA-256 of the identifier key. What Wrap returns is one
// version byte (1), a random 96-bit nonce, the ciphertext and the 16-byte tag.
type LocalKEK struct {
	root [KeySize]byte
	aead cipher.AEAD
	id   string
}

var _ KEK = (*LocalKEK)(nil)

// GenerateKEK returns a new random KEK, in memory only.
func GenerateKEK() (*LocalKEK, error) {
	var k [KeySize]byte
	rand.Read(k[:])
	defer clear(k[:])
	return newLocalKEK(k[:])
}

// newLocalKEK makes a LocalKEK from a copy of key.
func newLocalKEK(key []byte) (*LocalKEK, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("%w: the key is %d bytes; a key is %d bytes", ErrBadKEK, len(key), KeySize)
	}
	k := &LocalKEK{}
	copy(k.root[:], key)
	wrapKey, err := hkdf.Key(sha256.New, key, nil, "paddock kek wrap v1", KeySize)
	if err != nil {
		return nil, err
	}
	defer clear(wrapKey)
	idKey, err := hkdf.Key(sha256.New, key, nil, "paddock kek id v1", KeySize)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(idKey)
	clear(idKey)
	k.id = hex.EncodeToString(sum[:8])
	block, err := aes.NewCipher(wrapKey)
	if err != nil {
		return nil, err
	}
	if k.aead, err = cipher.NewGCMWithRandomNonce(block); err != nil {
		return nil, err
	}
	return k, nil
}

// ID returns 16 hex digits that identify the key without revealing it.
func (k *LocalKEK) ID() string { return k.id }

// Wrap seals plaintext with AES-256-GCM under a fresh random nonce, binding aad.
func (k *LocalKEK) Wrap(plaintext, aad []byte) ([]byte, error) {
	out := make([]byte, 1, 1+len(plaintext)+k.aead.Overhead())
	out[0] = wrapVersion
	return k.aead.Seal(out, nil, plaintext, aad), nil
}

// errUnwrap is what every failed Unwrap says: no detail can help an attacker.
var errUnwrap = errors.New("secrets: unwrap: wrong key, or the wrapped key or its associated data were changed")

// Unwrap opens what Wrap returned.
func (k *LocalKEK) Unwrap(ciphertext, aad []byte) ([]byte, error) {
	if len(ciphertext) < 1+k.aead.Overhead() || ciphertext[0] != wrapVersion {
		return nil, errUnwrap
	}
	pt, err := k.aead.Open(nil, nil, ciphertext[1:], aad)
	if err != nil {
		return nil, errUnwrap
	}
	return pt, nil
}

// redacted is how every key-holding type prints.
const redacted = "[REDACTED]"

// String returns [REDACTED].
func (k *LocalKEK) String() string { return redacted }

// GoString returns [REDACTED].
func (k *LocalKEK) GoString() string { return redacted }

// Format prints [REDACTED] for every verb, so that no verb (%x, %d, %+v)
// reaches the key bytes.
func (k *LocalKEK) Format(f fmt.State, verb rune) { fmt.Fprint(f, redacted) }

// LogValue returns [REDACTED] with the key's ID, which is not secret.
func (k *LocalKEK) LogValue() slog.Value {
	return slog.GroupValue(slog.String("id", k.id), slog.String("key", redacted))
}
