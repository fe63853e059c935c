package csi

import (
	"context"
	"errors"
	"fmt"
)

// backend stores the volumes and snapshots; the plugin above it keeps the
// records, the names and the CSI rules. Volumes and snapshots are folders
// named by id in root()/volumes and root()/snapshots, whose parents only
// root can reach.
type backend interface {
	// kind is "btrfs" or "folders".
	kind() string
	// enforced reports whether a volume's size caps what it can hold, and
	// if not, why.
	enforced() (bool, string)
	// root is the folder that holds volumes/ and snapshots/.
	root() string
	// create makes an empty volume at path (a fresh name in volumes/),
	// able to hold size bytes.
	create(ctx context.Context, path string, size int64) error
	// copy makes dst a copy of the volume or snapshot src: read-only for a
	// snapshot, writable and able to hold size bytes for a volume.
	copy(ctx context.Context, src, dst string, readOnly bool, size int64) error
	// resize changes the bytes the volume at path can hold.
	resize(path string, size int64) error
	// remove deletes a volume or snapshot; a missing one is not an error.
	remove(path string) error
	// usage returns the bytes the volume or snapshot at path holds, and a
	// warning when something in it escapes its size (empty if none).
	usage(ctx context.Context, path string) (used int64, warning string, err error)
	// reserve makes sure the pool can hold volumes whose sizes add up to
	// total, size being the one about to be made or grown; it grows the
	// pool when it can. It fails with a *noRoomError.
	reserve(ctx context.Context, total, size int64) error
	// available returns the bytes of new volumes the pool could still take
	// beside volumes whose sizes add up to total.
	available(ctx context.Context, total int64) (int64, error)
	// free is the free space of the pool, for a volume's stats.
	free() (int64, error)
	// close lets go of the pool, leaving it mounted.
	close() error
	// detach unmounts the pool (btrfs); the caller checks nothing is
	// published.
	detach() error
}

// noRoomError is a volume that does not fit in the pool, even grown as far
// as it may grow.
type noRoomError struct {
	Size  int64 // the volume asked for (made or grown to)
	Need  int64 // the pool size volumes and snapshots would need
	Max   int64 // the largest the pool may become
	Alone bool  // the volume would not fit even in an empty pool
	Where string
}

func (e *noRoomError) Error() string {
	if e.Alone {
		return fmt.Sprintf("a volume of %s does not fit in the pool, which may grow to %s at most (%s); ask for less", formatBytes(e.Size), formatBytes(e.Max), e.Where)
	}
	return fmt.Sprintf("the pool is full: with a volume of %s it would need %s, and it may grow to %s at most (%s); delete volumes or snapshots, or make room", formatBytes(e.Size), formatBytes(e.Need), formatBytes(e.Max), e.Where)
}

// errPoolFull is the filesystem of the pool out of space (ENOSPC) during an
// operation of the plugin.
var errPoolFull = errors.New("the pool is out of space; delete snapshots or volumes, or make room on the disk under the pool")

// formatBytes writes a byte count the way people read sizes: "16 MiB",
// "1.5 GiB", "512 B".
func formatBytes(n int64) string {
	const unit = 1024
	if n < unit && n > -unit {
		return fmt.Sprintf("%d B", n)
	}
	v := float64(n)
	for _, u := range []string{"KiB", "MiB", "GiB", "TiB", "PiB"} {
		v /= unit
		if v < unit && v > -unit || u == "PiB" {
			if v == float64(int64(v)) {
				return fmt.Sprintf("%d %s", int64(v), u)
			}
			return fmt.Sprintf("%.1f %s", v, u)
		}
	}
	return fmt.Sprintf("%d B", n)
}
