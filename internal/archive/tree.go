package archive

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
)

// kind is the type of a node in an archive's tree.
type kind uint8

const (
	kindDir         kind = iota + 1
	kindImplicitDir      // a folder created for an entry's parent, not named by an entry of its own
	kindFile
	kindSymlink
)

// node is what an archive holds at one path.
type node struct {
	kind   kind
	target string // symlinks only
}

// Symlink resolution is done on the archive's own tree, in memory, so that
// the same rule holds at Pack and Unpack: every symlink must resolve inside
// the root even when its target passes through other symlinks
// ("a -> x/l/../y" with "x/l -> .." escapes although it looks inside).
const (
	maxLinkFollows = 40   // as Linux's MAXSYMLINKS
	maxTargetLen   = 4096 // as Linux's PATH_MAX
)

var (
	errLinkEscapes  = errors.New("points outside the folder")
	errLinkAbsolute = errors.New("points outside the folder: its target is an absolute path")
	errLinkLoop     = errors.New("too many levels of symbolic links")
	errLinkEmpty    = errors.New("has an empty target")
	errLinkLong     = errors.New("has a target longer than 4096 bytes")
)

// checkLink reports whether the symlink at name (a clean slash-separated
// path relative to the root) with the given target resolves inside the
// root, following the symlinks of tree. A nil tree checks the target alone.
func checkLink(tree map[string]node, name, target string) error {
	switch {
	case target == "":
		return errLinkEmpty
	case len(target) > maxTargetLen:
		return errLinkLong
	case path.IsAbs(target):
		return errLinkAbsolute
	}
	r := resolver{tree: tree}
	_, err := r.walk(parentElems(name), target)
	return err
}

func parentElems(name string) []string {
	dir := path.Dir(name)
	if dir == "." {
		return nil
	}
	return strings.Split(dir, "/")
}

type resolver struct {
	tree    map[string]node
	follows int
}

// walk resolves target from the folder cur, as the kernel would, and returns
// the folder elements it lands on.
func (r *resolver) walk(cur []string, target string) ([]string, error) {
	if path.IsAbs(target) {
		return nil, errLinkAbsolute
	}
	for el := range strings.SplitSeq(target, "/") {
		switch el {
		case "", ".":
			continue
		case "..":
			if len(cur) == 0 {
				return nil, errLinkEscapes
			}
			cur = cur[:len(cur)-1]
			continue
		}
		next := append(cur[:len(cur):len(cur)], el)
		n, ok := r.tree[strings.Join(next, "/")]
		if !ok || n.kind != kindSymlink {
			cur = next
			continue
		}
		r.follows++
		if r.follows > maxLinkFollows {
			return nil, errLinkLoop
		}
		res, err := r.walk(cur, n.target)
		if err != nil {
			return nil, err
		}
		cur = res
	}
	return cur, nil
}

// ContextReader returns a reader of r that stops once ctx is done, so that
// a long copy can be cancelled.
func ContextReader(ctx context.Context, r io.Reader) io.Reader { return ctxReader{ctx, r} }

// ctxReader stops reading once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// unsafe wraps ErrUnsafePath with the entry's name and the reason.
func unsafe(name, reason string) error {
	return fmt.Errorf("entry %q: %s: %w", name, reason, ErrUnsafePath)
}
