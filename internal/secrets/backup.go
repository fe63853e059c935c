package secrets

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
)

// A KEK backup is a PEM block, printable and safe to paste:
//
//	-----BEGIN PADDOCK KEY BACKUP-----
//	Checksum: <64 hex digits>
//	Iterations: 600000                      (passphrase only)
//	Key-Id: <the KEK's ID>
//	Protection: none | pbkdf2-sha256-aes256gcm
//	Salt: <base64 of 16 random bytes>       (passphrase only)
//	Version: 1
//
//	<base64 of the payload>
//	-----END PADDOCK KEY BACKUP-----
//
// With Protection none the payload is the 32-byte KEK itself: the file is
// then as secret as the key file. With a passphrase, the payload is a
// random 96-bit nonce, then the KEK sealed by AES-256-GCM under
// PBKDF2-HMAC-SHA256(passphrase, Salt, Iterations, 32 bytes), with
// associated data "paddock key backup v1 " + Key-Id.
//
// Checksum is the SHA-256, in hex, of the lines
//
//	paddock key backup
//	Version: 1
//	Key-Id: <id>
//	Protection: <protection>
//	Iterations: <n>                         (passphrase only)
//	Salt: <salt>                            (passphrase only)
//
// each ending in "\n", followed by the payload's bytes. It tells a damaged
// file from a wrong passphrase. After decoding, the key's ID must equal
// Key-Id.
const (
	backupType    = "PADDOCK KEY BACKUP"
	backupVersion = "1"
	protNone      = "none"
	protPBKDF2    = "pbkdf2-sha256-aes256gcm"
	// BackupIterations is the PBKDF2 iteration count of a new backup.
	BackupIterations = 600_000
	maxIterations    = 10_000_000
	saltSize         = 16
)

// Errors of [ParseBackup] and [ImportKEK]. [ErrWrongKEK] is the fourth:
// the backup is sound but of another platform's key.
var (
	ErrNotBackup     = errors.New("secrets: not a Paddock key backup")
	ErrBackupDamaged = errors.New("secrets: the key backup is damaged")
	ErrPassphrase    = errors.New("secrets: the key backup's passphrase is missing or wrong")
)

// Export returns a backup of kek, which must be a [*LocalKEK] (a KMS key
// cannot leave its KMS). With an empty passphrase the key is in the file in
// the clear; with one, it is sealed under a key derived from it. The
// format is in the comment of [BackupIterations].
func Export(kek KEK, passphrase []byte) ([]byte, error) {
	lk, ok := kek.(*LocalKEK)
	if !ok {
		return nil, fmt.Errorf("secrets: export: key-encryption key %s is not a local key and cannot be exported", kek.ID())
	}
	h := map[string]string{"Version": backupVersion, "Key-Id": lk.ID()}
	var payload []byte
	if len(passphrase) == 0 {
		h["Protection"] = protNone
		payload = bytes.Clone(lk.root[:])
	} else {
		salt := make([]byte, saltSize)
		rand.Read(salt)
		h["Protection"] = protPBKDF2
		h["Iterations"] = strconv.Itoa(BackupIterations)
		h["Salt"] = base64.StdEncoding.EncodeToString(salt)
		aead, err := backupAEAD(passphrase, salt, BackupIterations)
		if err != nil {
			return nil, err
		}
		payload = aead.Seal(nil, nil, lk.root[:], backupAAD(lk.ID()))
	}
	defer clear(payload)
	h["Checksum"] = backupChecksum(h, payload)
	var out bytes.Buffer
	if err := pem.Encode(&out, &pem.Block{Type: backupType, Headers: h, Bytes: payload}); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

func backupAAD(id string) []byte { return []byte("paddock key backup v1 " + id) }

func backupAEAD(passphrase, salt []byte, iter int) (cipher.AEAD, error) {
	key, err := pbkdf2.Key(sha256.New, string(passphrase), salt, iter, KeySize)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCMWithRandomNonce(block)
}

func backupChecksum(h map[string]string, payload []byte) string {
	s := sha256.New()
	fmt.Fprintf(s, "paddock key backup\nVersion: %s\nKey-Id: %s\nProtection: %s\n", h["Version"], h["Key-Id"], h["Protection"])
	if h["Protection"] != protNone {
		fmt.Fprintf(s, "Iterations: %s\nSalt: %s\n", h["Iterations"], h["Salt"])
	}
	s.Write(payload)
	return hex.EncodeToString(s.Sum(nil))
}

// ParseBackup returns the KEK in a backup made by [Export]. Errors wrap
// [ErrNotBackup], [ErrBackupDamaged] or [ErrPassphrase].
func ParseBackup(data, passphrase []byte) (*LocalKEK, error) {
	i := bytes.Index(data, []byte("-----BEGIN "+backupType+"-----"))
	if i < 0 {
		return nil, fmt.Errorf("%w: it has no %q line", ErrNotBackup, "-----BEGIN "+backupType+"-----")
	}
	b, _ := pem.Decode(data[i:])
	if b == nil || b.Type != backupType {
		return nil, fmt.Errorf("%w: it cannot be decoded (cut short, or characters changed)", ErrBackupDamaged)
	}
	defer clear(b.Bytes)
	h := b.Headers
	if h["Version"] != backupVersion {
		return nil, fmt.Errorf("%w: it is of version %q, and this Paddock reads version %s", ErrBackupDamaged, h["Version"], backupVersion)
	}
	want := backupChecksum(h, b.Bytes)
	if subtle.ConstantTimeCompare([]byte(want), []byte(h["Checksum"])) != 1 {
		return nil, fmt.Errorf("%w: checksum mismatch", ErrBackupDamaged)
	}
	var key []byte
	switch h["Protection"] {
	case protNone:
		key = b.Bytes
	case protPBKDF2:
		if len(passphrase) == 0 {
			return nil, fmt.Errorf("%w: the backup is protected by a passphrase; give it", ErrPassphrase)
		}
		iter, err := strconv.Atoi(h["Iterations"])
		if err != nil || iter < 1 || iter > maxIterations {
			return nil, fmt.Errorf("%w: Iterations %q is not in 1..%d", ErrBackupDamaged, h["Iterations"], maxIterations)
		}
		salt, err := base64.StdEncoding.DecodeString(h["Salt"])
		if err != nil || len(salt) < 8 {
			return nil, fmt.Errorf("%w: bad Salt", ErrBackupDamaged)
		}
		aead, err := backupAEAD(passphrase, salt, iter)
		if err != nil {
			return nil, err
		}
		if key, err = aead.Open(nil, nil, b.Bytes, backupAAD(h["Key-Id"])); err != nil {
			return nil, fmt.Errorf("%w: the passphrase does not open the backup", ErrPassphrase)
		}
		defer clear(key)
	default:
		return nil, fmt.Errorf("%w: unknown protection %q", ErrBackupDamaged, h["Protection"])
	}
	if len(key) != KeySize {
		return nil, fmt.Errorf("%w: it holds %d bytes of key, not %d", ErrBackupDamaged, len(key), KeySize)
	}
	kek, err := newLocalKEK(key)
	if err != nil {
		return nil, err
	}
	if kek.ID() != h["Key-Id"] {
		return nil, fmt.Errorf("%w: the key in it is not key %s its header names", ErrBackupDamaged, h["Key-Id"])
	}
	return kek, nil
}

// ImportKEK restores a KEK from a backup into dir/kek. Before it changes
// anything it checks that the key opens every data key in store; if not,
// the error wraps [ErrWrongKEK] (another platform's backup); a store without
// data keys accepts any backup. A key file
// already in dir with another key is kept beside, as kek.replaced.N.
// If the platform reads its KEK from an environment variable, that
// variable still wins over the file.
func ImportKEK(ctx context.Context, dir string, store KeyStore, backup, passphrase []byte) (KEK, error) {
	kek, err := ParseBackup(backup, passphrase)
	if err != nil {
		return nil, err
	}
	dks, err := store.DataKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("secrets: read data keys: %w", err)
	}
	for _, dk := range dks {
		if dk.KEKID != kek.ID() {
			return nil, fmt.Errorf("%w: this key does not open the data keys in the store: it is another platform's backup (it holds key %s; the store needs key %s)",
				ErrWrongKEK, kek.ID(), dk.KEKID)
		}
	}
	if err := verifyKeys(kek, dks); err != nil {
		return nil, err
	}
	if err := ensureKeyDir(dir); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, KEKFile)
	if old, err := readKEKFile(dir, KEKFile); err == nil && old.ID() == kek.ID() {
		return old, nil
	}
	if _, err := os.Lstat(path); err == nil {
		if err := keepAside(path); err != nil {
			return nil, err
		}
	}
	if err := writeKeyFile(dir, KEKFile, kek, true); err != nil {
		return nil, err
	}
	return kek, nil
}

// keepAside hard-links path to the first free path.replaced.N.
func keepAside(path string) error {
	for n := 1; n < 1000; n++ {
		err := os.Link(path, fmt.Sprintf("%s.replaced.%d", path, n))
		if err == nil {
			return nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("secrets: keep the old key file aside: %w", err)
		}
	}
	return fmt.Errorf("secrets: keep the old key file aside: too many %s.replaced.N files", path)
}
