package secrets

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// Files in the KEK folder. The folder is the KEK's alone, mode 0700; every
// file in it is mode 0600 and holds the base64 of 32 bytes and a newline
// (the same text an environment variable holds).
const (
	// KEKFile holds the KEK.
	KEKFile = "kek"
	// StagedKEKFile holds the next KEK while a rotation runs
	// ([Keyring.RotateLocal]); [OpenLocal] finishes or discards it.
	StagedKEKFile = "kek.next"
)

// maxKeyFile bounds what is read from a key file or variable.
const maxKeyFile = 1024

// LoadKEK returns the KEK held, base64-encoded, in the environment variable
// named env if it is set and not empty, else the one in dir/kek. An empty env
// means the environment is not consulted.
//
// The folder must be mode 0700 and the file 0600 (or stricter), both owned
// by this process's user, and the file not a symbolic link. Every error wraps
// [ErrNoKEK] (nothing there) or [ErrBadKEK] (something unusable there) and
// says what to do about it.
func LoadKEK(dir, env string) (KEK, error) {
	if env != "" {
		if v := os.Getenv(env); v != "" {
			return kekFromText([]byte(v), "the environment variable "+env)
		}
	}
	k, err := readKEKFile(dir, KEKFile)
	if errors.Is(err, ErrNoKEK) {
		what := "restore it from your `paddock keys export` backup with `paddock keys import FILE --data DATA` (while no server runs)"
		if env != "" {
			what += ", or set " + env
		}
		return nil, fmt.Errorf("%w, and %s; %s", err, envState(env), what)
	}
	if err != nil {
		return nil, err
	}
	return k, nil
}

func envState(env string) string {
	if env == "" {
		return "no environment variable is set up for it"
	}
	return env + " is not set"
}

// CreateKEK makes a new KEK and writes it to dir/kek, making dir (mode 0700)
// if needed. It refuses to replace a key file that exists: a key is never
// made silently where one may have been lost. The caller decides when a
// new key is right: see [OpenLocal] for the rule Paddock uses.
func CreateKEK(dir string) (KEK, error) {
	if err := ensureKeyDir(dir); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, KEKFile)
	if _, err := os.Lstat(path); err == nil {
		return nil, fmt.Errorf("secrets: %s already exists; refusing to replace a key-encryption key", path)
	}
	k, err := GenerateKEK()
	if err != nil {
		return nil, err
	}
	if err := writeKeyFile(dir, KEKFile, k, false); err != nil {
		return nil, err
	}
	return k, nil
}

// kekFromText decodes the base64 text of a key; where says where it came
// from, for errors. The text is never quoted in an error.
func kekFromText(text []byte, where string) (*LocalKEK, error) {
	text = bytes.TrimSpace(text)
	key := make([]byte, base64.StdEncoding.DecodedLen(len(text)))
	n, err := base64.StdEncoding.Decode(key, text)
	defer clear(key)
	if err != nil {
		return nil, fmt.Errorf("%w: %s is not base64 (%v); it must hold the base64 of %d random bytes, such as `head -c 32 /dev/urandom | base64` prints", ErrBadKEK, where, err, KeySize)
	}
	if n != KeySize {
		return nil, fmt.Errorf("%w: %s decodes to %d bytes; a key is %d bytes: restore it from your `paddock keys export` backup", ErrBadKEK, where, n, KeySize)
	}
	return newLocalKEK(key[:n])
}

// checkPrivate checks that fi, at path, is its owner's only and that the
// owner is this process's user. mode is what to chmod it to.
func checkPrivate(path string, fi fs.FileInfo, mode os.FileMode) error {
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("%w: %s has mode %04o; it must be readable by its owner only: chmod %o %s", ErrBadKEK, path, perm, mode, path)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("%w: %s is owned by uid %d, not by this process's user (uid %d): chown it", ErrBadKEK, path, st.Uid, os.Geteuid())
	}
	return nil
}

// checkKeyDir checks the folder of the key files.
func checkKeyDir(dir string) error {
	fi, err := os.Lstat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: the key folder %s does not exist", ErrNoKEK, dir)
	}
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadKEK, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%w: %s is not a folder", ErrBadKEK, dir)
	}
	return checkPrivate(dir, fi, 0o700)
}

// ensureKeyDir makes dir, mode 0700, or checks the one there.
func ensureKeyDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("secrets: make the key folder: %w", err)
	}
	return checkKeyDir(dir)
}

// readKEKFile reads dir/name. A missing file is ErrNoKEK.
func readKEKFile(dir, name string) (*LocalKEK, error) {
	if err := checkKeyDir(dir); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, name)
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("%w: %s does not exist", ErrNoKEK, path)
	case errors.Is(err, syscall.ELOOP):
		return nil, fmt.Errorf("%w: %s is a symbolic link; a key file must be a regular file", ErrBadKEK, path)
	case err != nil:
		return nil, fmt.Errorf("%w: %v", ErrBadKEK, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadKEK, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrBadKEK, path)
	}
	if err := checkPrivate(path, fi, 0o600); err != nil {
		return nil, err
	}
	text, err := io.ReadAll(io.LimitReader(f, maxKeyFile))
	defer clear(text)
	if err != nil {
		return nil, fmt.Errorf("%w: read %s: %v", ErrBadKEK, path, err)
	}
	return kekFromText(text, path)
}

// writeKeyFile writes k to dir/name atomically: a temporary file (0600),
// fsync, then a rename over the old file (replace) or a hard link that
// fails if the name is taken (!replace), then fsync of the folder.
func writeKeyFile(dir, name string, k *LocalKEK, replace bool) (err error) {
	text := make([]byte, base64.StdEncoding.EncodedLen(KeySize)+1)
	base64.StdEncoding.Encode(text, k.root[:])
	text[len(text)-1] = '\n'
	defer clear(text)

	f, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return fmt.Errorf("secrets: write key file: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			os.Remove(tmp)
		}
	}()
	if err = f.Chmod(0o600); err == nil {
		if _, err = f.Write(text); err == nil {
			err = f.Sync()
		}
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("secrets: write key file: %w", err)
	}
	path := filepath.Join(dir, name)
	if replace {
		err = os.Rename(tmp, path)
	} else {
		err = os.Link(tmp, path)
		os.Remove(tmp)
	}
	if err != nil {
		return fmt.Errorf("secrets: write key file %s: %w", path, err)
	}
	if err = syncDir(dir); err != nil {
		return fmt.Errorf("secrets: write key file %s: %w", path, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
