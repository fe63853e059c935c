package audit

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
)

// tailLine is the last complete line of a file and where it starts.
type tailLine struct {
	line  []byte
	start int64
}

// number returns the 1-based line number of t in f by counting newlines
// before it: a full read, done only to name a bad line in an error.
func (t *tailLine) number(f *os.File) int64 {
	r := io.NewSectionReader(f, 0, t.start)
	buf := make([]byte, 64<<10)
	n := int64(1)
	for {
		k, err := r.Read(buf)
		n += int64(bytes.Count(buf[:k], []byte{'\n'}))
		if err != nil {
			return n
		}
	}
}

// recoverTail finds the last complete line of f, reading only the end of the
// file. Bytes after the last newline are a torn write (never acknowledged,
// since a line is acknowledged only after its newline was fsync'd): they are
// truncated away and the truncation is fsync'd. It returns nil for an empty
// file, and the file's size after any truncation.
func recoverTail(f *os.File, name string, log *slog.Logger) (*tailLine, int64, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	size := st.Size()
	if size == 0 {
		return nil, 0, nil
	}
	from := max(0, size-(2*maxLine+2))
	buf := make([]byte, size-from)
	if _, err := f.ReadAt(buf, from); err != nil {
		return nil, 0, fmt.Errorf("read %s: %w", name, err)
	}
	nl := bytes.LastIndexByte(buf, '\n')
	if nl < 0 && from > 0 {
		return nil, 0, fmt.Errorf("%s: last %d bytes hold no line end: %w", name, len(buf), ErrMalformed)
	}
	if end := from + int64(nl) + 1; end < size {
		if err := f.Truncate(end); err != nil {
			return nil, 0, fmt.Errorf("truncate torn line of %s: %w", name, err)
		}
		if err := f.Sync(); err != nil {
			return nil, 0, fmt.Errorf("truncate torn line of %s: %w", name, err)
		}
		log.Warn("audit: removed a torn last line", "file", name, "bytes", size-end)
		size = end
	}
	if nl < 0 {
		return nil, 0, nil
	}
	prev := bytes.LastIndexByte(buf[:nl], '\n')
	if prev < 0 && from > 0 {
		return nil, 0, fmt.Errorf("%s: last line longer than %d bytes: %w", name, maxLine, ErrMalformed)
	}
	return &tailLine{line: bytes.Clone(buf[prev+1 : nl]), start: from + int64(prev) + 1}, size, nil
}

// loadOrCreateKey reads the signing key's seed from dir, or creates one if
// there is none and no checkpoint was ever signed (a missing key with
// checkpoints present means the key was lost or removed: a new one would make
// every old checkpoint fail, so that is an error). The key file must not be
// readable by group or others.
func loadOrCreateKey(dir string, haveCheckpoints bool) (ed25519.PrivateKey, error) {
	path := filepath.Join(dir, KeyFile)
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		if haveCheckpoints {
			return nil, fmt.Errorf("%s is missing but %s has checkpoints: %w", KeyFile, CheckpointFile, ErrMissing)
		}
		return createKey(dir)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s has mode %v: it must be readable by its owner only (chmod 600)", path, st.Mode().Perm())
	}
	return readKey(f)
}

func readKey(r io.Reader) (ed25519.PrivateKey, error) {
	seed, err := io.ReadAll(io.LimitReader(r, ed25519.SeedSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", KeyFile, err)
	}
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("%s holds %d bytes, want a %d-byte Ed25519 seed", KeyFile, len(seed), ed25519.SeedSize)
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

// publicKeyIn reads the public half of dir's key, for Verify.
func publicKeyIn(dir string) (ed25519.PublicKey, error) {
	f, err := os.Open(filepath.Join(dir, KeyFile))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	k, err := readKey(f)
	if err != nil {
		return nil, err
	}
	return k.Public().(ed25519.PublicKey), nil
}

// createKey writes a new seed atomically: a 0600 temp file, fsync, rename,
// fsync of the folder.
func createKey(dir string) (ed25519.PrivateKey, error) {
	seed := make([]byte, ed25519.SeedSize)
	if _, err := rand.Read(seed); err != nil {
		return nil, err
	}
	tmp, err := os.CreateTemp(dir, KeyFile+".tmp*") // mode 0600
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(seed); err != nil {
		tmp.Close()
		return nil, err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, err
	}
	if err := tmp.Close(); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, KeyFile)); err != nil {
		return nil, err
	}
	if err := syncDir(dir); err != nil {
		return nil, err
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
