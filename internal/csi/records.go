package csi

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
)

// What the plugin knows about each volume and snapshot lives beside it in
// the pool, as one small JSON file written atomically:
//
//	ROOT/volumes/vol-ID        the volume (a subvolume or a folder)
//	ROOT/volumes/vol-ID.json   its record
//	ROOT/snapshots/snap-ID     the snapshot
//	ROOT/snapshots/snap-ID.json
//
// ROOT is the mounted filesystem of the btrfs backend, the pool folder of
// the folders backend. The record is the commit point: a volume exists once
// its record is written, and is gone once its record is removed. Creating
// makes the data first and writes the record last; deleting removes the
// record first. A crash in between leaves data without a record, which no
// caller was ever told about (or was told is gone); opening the pool
// removes it.
const (
	volumesDir   = "volumes"
	snapshotsDir = "snapshots"
)

var (
	volumeIDPattern   = regexp.MustCompile(`^vol-[0-9a-f]{20}$`)
	snapshotIDPattern = regexp.MustCompile(`^snap-[0-9a-f]{20}$`)
)

// newID returns a fresh random id with the prefix ("vol" or "snap"). Ids are
// never derived from names, so a name deleted and created again gets a new
// id, and an id is safe as a file name.
func newID(prefix string) string {
	b := make([]byte, 10)
	rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

// volumeRecord is what the plugin keeps about a volume.
type volumeRecord struct {
	ID       string    `json:"id"`
	Name     string    `json:"name"`
	Capacity int64     `json:"capacity"`
	UID      int       `json:"uid"`
	GID      int       `json:"gid"`
	Created  time.Time `json:"created"`
	// At most one of these: where the volume's first content came from.
	FromSnapshot string `json:"from_snapshot,omitempty"`
	FromVolume   string `json:"from_volume,omitempty"`
	// Where the node service published the volume. A reboot unmounts
	// everything behind the plugin's back, so each one is checked against
	// the mount table before it counts.
	Publications []publication `json:"publications,omitempty"`
}

// publication is one NodePublishVolume: a target path and how.
type publication struct {
	Target   string `json:"target"`
	ReadOnly bool   `json:"readonly,omitempty"`
	// Mode is the CSI access mode asked for, e.g. SINGLE_NODE_WRITER;
	// SINGLE_NODE_SINGLE_WRITER allows no other target beside this one.
	Mode string `json:"mode"`
}

// snapshotRecord is what the plugin keeps about a snapshot.
type snapshotRecord struct {
	ID           string    `json:"id"`
	Name         string    `json:"name"`
	SourceVolume string    `json:"source_volume"`
	Size         int64     `json:"size"` // the source volume's capacity when the snapshot was taken
	UID          int       `json:"uid"`
	GID          int       `json:"gid"`
	Created      time.Time `json:"created"`
}

// writeRecord writes v as JSON to path atomically: a temporary file,
// fsync, rename, fsync of the folder.
func writeRecord(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	return syncDir(filepath.Dir(path))
}

// removeRecord removes a record durably; a missing one is not an error.
func removeRecord(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", filepath.Base(path), err)
	}
	return syncDir(filepath.Dir(path))
}

// loadRecords reads every record in dir whose name matches the id pattern,
// and lists the entries that have no record (leftovers of a crash) and the
// temporary files of an interrupted write.
func loadRecords[T any](dir string, pattern *regexp.Regexp) (records map[string]*T, orphans []string, err error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("list %s: %w", dir, err)
	}
	records = make(map[string]*T)
	data := map[string]bool{}
	for _, e := range entries {
		name := e.Name()
		switch {
		case strings.HasSuffix(name, ".json.tmp"):
			os.Remove(filepath.Join(dir, name))
		case strings.HasSuffix(name, ".json") && pattern.MatchString(strings.TrimSuffix(name, ".json")):
			b, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				return nil, nil, fmt.Errorf("read %s: %w", name, err)
			}
			r := new(T)
			if err := json.Unmarshal(b, r); err != nil {
				return nil, nil, fmt.Errorf("read %s in %s: %w (the file is damaged; restore it from a backup or remove it and its data)", name, dir, err)
			}
			records[strings.TrimSuffix(name, ".json")] = r
		case pattern.MatchString(name):
			data[name] = true
		}
	}
	for id := range data {
		if _, ok := records[id]; !ok {
			orphans = append(orphans, id)
		}
	}
	slices.Sort(orphans)
	return records, orphans, nil
}
