package secrets

import (
	"bytes"
	"testing"
)

// FuzzParseBackup: any file either parses to a key whose export parses
// back to it, or fails with one of the documented errors; never a panic.
func FuzzParseBackup(f *testing.F) {
	kek, _ := GenerateKEK()
	plain, _ := Export(kek, nil)
	f.Add(plain)
	f.Add([]byte("-----BEGIN PADDOCK KEY BACKUP-----\nVersion: 1\n\nAAAA\n-----END PADDOCK KEY BACKUP-----\n"))
	f.Add([]byte("not a backup"))
	f.Fuzz(func(t *testing.T, data []byte) {
		// No passphrase: the PBKDF2 branch stops before deriving, so an
		// input cannot make the fuzzer spin on 10 million iterations.
		k, err := ParseBackup(data, nil)
		if err != nil {
			if k != nil {
				t.Fatal("a key with an error")
			}
			return
		}
		again, err := Export(k, nil)
		if err != nil {
			t.Fatal(err)
		}
		k2, err := ParseBackup(again, nil)
		if err != nil || k2.ID() != k.ID() {
			t.Fatalf("re-export does not parse back: %v", err)
		}
	})
}

// FuzzUnmarshalSealed: what unmarshals marshals back to the same bytes.
func FuzzUnmarshalSealed(f *testing.F) {
	s := Sealed{KeyID: 300, Box: bytes.Repeat([]byte{1}, 40)}
	b, _ := s.MarshalBinary()
	f.Add(b)
	f.Add([]byte{1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		var s Sealed
		if err := s.UnmarshalBinary(data); err != nil {
			return
		}
		back, err := s.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if s.KeyID <= 0 || !bytes.Equal(back, data) {
			t.Fatalf("%x unmarshals to key %d and marshals to %x", data, s.KeyID, back)
		}
	})
}
