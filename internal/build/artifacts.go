package build

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"paddock.dev/paddock/internal/archive"
)

// ErrCorrupt: an artifact's content does not match its digest.
var ErrCorrupt = errors.New("artifact is corrupt")

// DefaultArtifactLimits is what Extract accepts when Artifacts.Limits is
// zero: more than an upload (archive's defaults), since a build adds
// dependencies and binaries to the source.
var DefaultArtifactLimits = archive.Limits{MaxBytes: 4 << 30, MaxFiles: 1_000_000}

// Artifacts keeps build artifacts in one folder, content-addressed: each is
// Dir/sha256-<hex>.tar.gz, read-only, named by the SHA-256 of its bytes.
type Artifacts struct {
	Dir    string         // created by Store if missing
	Limits archive.Limits // what Extract accepts; zero fields take DefaultArtifactLimits
}

const digestPrefix = "sha256:"

// Store packs srcDir deterministically (archive.PackAll: everything, ignore
// rules do not apply to a build's output) and stores it atomically (temp
// file, fsync, rename, fsync of Dir) as a read-only file. An existing
// artifact with the same digest is kept, unless its content no longer
// matches, in which case it is replaced. Store returns the digest,
// "sha256:<hex>".
//
// With owner other than 0, srcDir is a tree that user could write (a
// build's output) and every file in it must be owned by owner
// (archive.PackOwned): root stores nothing the user could not read.
func (a *Artifacts) Store(ctx context.Context, srcDir string, owner uint32) (digest string, err error) {
	if err := os.MkdirAll(a.Dir, 0o755); err != nil {
		return "", fmt.Errorf("store artifact: %w", err)
	}
	tmp, err := os.CreateTemp(a.Dir, ".tmp-*.tar.gz")
	if err != nil {
		return "", fmt.Errorf("store artifact: %w", err)
	}
	defer func() {
		if tmp != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()

	h := sha256.New()
	bw := bufio.NewWriterSize(io.MultiWriter(tmp, h), 1<<16)
	pack := archive.PackAll
	if owner != 0 {
		pack = func(ctx context.Context, dir string, w io.Writer) error { return archive.PackOwned(ctx, dir, w, owner) }
	}
	if err := pack(ctx, srcDir, bw); err != nil {
		return "", fmt.Errorf("store artifact: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return "", fmt.Errorf("store artifact: %w", err)
	}
	if err := tmp.Chmod(0o444); err != nil {
		return "", fmt.Errorf("store artifact: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return "", fmt.Errorf("store artifact: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("store artifact: %w", err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	digest = digestPrefix + sum
	final := a.path(sum)

	if ok, _ := fileHasDigest(ctx, final, sum); ok {
		return digest, nil // the deferred clean-up removes the temp file
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return "", fmt.Errorf("store artifact: %w", err)
	}
	tmp = nil
	if err := syncDir(a.Dir); err != nil {
		return "", fmt.Errorf("store artifact: %w", err)
	}
	return digest, nil
}

// Extract unpacks the artifact with the given digest into dst, an empty
// folder, hashing what it reads: if the content does not match the digest,
// it removes what it extracted and returns an error wrapping ErrCorrupt. A
// missing artifact is an error matching fs.ErrNotExist.
func (a *Artifacts) Extract(ctx context.Context, digest, dst string) error {
	sum, err := parseDigest(digest)
	if err != nil {
		return err
	}
	f, err := os.Open(a.path(sum))
	if err != nil {
		return fmt.Errorf("extract artifact: %w", err)
	}
	defer f.Close()

	h := sha256.New()
	r := io.TeeReader(f, h)
	unpackErr := archive.Unpack(ctx, r, dst, a.limits())
	if ctx.Err() != nil {
		return fmt.Errorf("extract artifact %s: %w", digest, ctx.Err())
	}
	// Unpack stops at the end of the tar stream: hash the rest too.
	// On an Unpack error, Unpack has already removed what it extracted (and
	// a folder that was not empty must be left alone).
	if _, err := io.Copy(io.Discard, r); err != nil {
		if unpackErr == nil {
			clearDir(dst)
		}
		return fmt.Errorf("extract artifact %s: %w", digest, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sum {
		if unpackErr == nil {
			clearDir(dst)
		}
		return fmt.Errorf("extract artifact %s: content hashes to %s%s: %w", digest, digestPrefix, got, ErrCorrupt)
	}
	if unpackErr != nil {
		return fmt.Errorf("extract artifact %s: %w", digest, unpackErr)
	}
	return nil
}

// Prune removes the artifacts whose digest keep lacks and that were stored
// before cutoff (a newer one may belong to a release being made).
func (a *Artifacts) Prune(keep map[string]bool, cutoff time.Time) (removed int, err error) {
	entries, err := os.ReadDir(a.Dir)
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		sum, ok := strings.CutPrefix(e.Name(), "sha256-")
		if !ok {
			continue
		}
		sum, ok = strings.CutSuffix(sum, ".tar.gz")
		fi, ierr := e.Info()
		if !ok || ierr != nil || keep["sha256:"+sum] || !fi.ModTime().Before(cutoff) {
			continue
		}
		if err := os.Remove(filepath.Join(a.Dir, e.Name())); err == nil {
			removed++
		}
	}
	return removed, nil
}

// File returns the path of the artifact with the given digest, which must
// exist.
func (a *Artifacts) File(digest string) (string, error) {
	sum, err := parseDigest(digest)
	if err != nil {
		return "", err
	}
	p := a.path(sum)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("artifact %s: %w", digest, err)
	}
	return p, nil
}

func (a *Artifacts) path(sum string) string {
	return filepath.Join(a.Dir, "sha256-"+sum+".tar.gz")
}

func (a *Artifacts) limits() archive.Limits {
	l := a.Limits
	if l.MaxBytes == 0 {
		l.MaxBytes = DefaultArtifactLimits.MaxBytes
	}
	if l.MaxFiles == 0 {
		l.MaxFiles = DefaultArtifactLimits.MaxFiles
	}
	return l
}

// parseDigest returns the hex of a "sha256:<64 lowercase hex>" digest. The
// strict check also keeps a digest from naming any other file.
func parseDigest(digest string) (string, error) {
	sum, ok := strings.CutPrefix(digest, digestPrefix)
	if !ok || len(sum) != sha256.Size*2 || strings.Trim(sum, "0123456789abcdef") != "" {
		return "", fmt.Errorf("invalid artifact digest %q: want sha256:<64 lowercase hex digits>", digest)
	}
	return sum, nil
}

// fileHasDigest reports whether the file at path hashes to sum.
func fileHasDigest(ctx context.Context, path, sum string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, archive.ContextReader(ctx, f)); err != nil {
		return false, err
	}
	return hex.EncodeToString(h.Sum(nil)) == sum, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// clearDir removes what is in dir, best effort.
func clearDir(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		_ = os.RemoveAll(filepath.Join(dir, e.Name()))
	}
}
