package secrets

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrTampered is wrapped by every error of [Keyring.Open] about the sealed
// value itself: it was changed, cut, moved to another row (its associated
// data differ), or names a data key the store does not hold. Its messages
// name nothing secret; the caller adds which secret and version it was.
var ErrTampered = errors.New("secrets: sealed value does not open: tampered, damaged, or moved")

// Sealed is a value sealed by [Keyring.Seal]: the ID of the data key and
// the random 96-bit nonce, ciphertext and 16-byte GCM tag. None of it is
// secret.
type Sealed struct {
	KeyID int64  // the data key's ID in the KeyStore
	Box   []byte // nonce || ciphertext || tag
}

// sealedVersion is the first byte of a marshalled Sealed.
const sealedVersion = 1

// gcmOverhead is the nonce and tag a sealed box adds to its plaintext.
const gcmOverhead = 12 + 16

// MarshalBinary encodes s for a BLOB column: one version byte (1), the key
// ID as an unsigned varint, then Box. A 64-byte value takes 93–101 bytes.
func (s Sealed) MarshalBinary() ([]byte, error) {
	if s.KeyID <= 0 {
		return nil, fmt.Errorf("secrets: marshal sealed value: key ID %d", s.KeyID)
	}
	b := make([]byte, 0, 1+binary.MaxVarintLen64+len(s.Box))
	b = append(b, sealedVersion)
	b = binary.AppendUvarint(b, uint64(s.KeyID))
	return append(b, s.Box...), nil
}

// UnmarshalBinary decodes what MarshalBinary wrote. Errors wrap ErrTampered.
// s does not keep b.
func (s *Sealed) UnmarshalBinary(b []byte) error {
	if len(b) == 0 || b[0] != sealedVersion {
		return fmt.Errorf("%w: not a sealed value of a known version", ErrTampered)
	}
	id, n := binary.Uvarint(b[1:])
	if n <= 0 || id == 0 || id > 1<<63-1 || n != len(binary.AppendUvarint(nil, id)) {
		return fmt.Errorf("%w: bad data key ID", ErrTampered)
	}
	box := b[1+n:]
	if len(box) < gcmOverhead {
		return fmt.Errorf("%w: too short", ErrTampered)
	}
	s.KeyID = int64(id)
	s.Box = append([]byte(nil), box...)
	return nil
}

// AAD encodes parts as associated data without ambiguity: each part is
// preceded by its length (a varint), so ("ab","c") and ("a","bc") differ.
// For a secret version: AAD(appID, name, strconv.Itoa(version)).
func AAD(parts ...string) []byte {
	n := 0
	for _, p := range parts {
		n += binary.MaxVarintLen64 + len(p)
	}
	b := make([]byte, 0, n)
	for _, p := range parts {
		b = binary.AppendUvarint(b, uint64(len(p)))
		b = append(b, p...)
	}
	return b
}
