package isolate

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// A machine's app users come in blocks of RangeSize user IDs, block k
// starting at FirstUID + k*RangeSize. A platform owns one block: its router
// runs as the block's first user and app N as Base+N, so two platforms on
// one machine never share a user.
//
// The blocks lie above where useradd hands out subordinate IDs (up to
// 600,100,000 by default) and systemd-nspawn picks container ranges (up to
// 0x6FFFFFFF), and below 2^31, which some tools mishandle; Claim also skips
// a block that /etc/passwd, /etc/group, /etc/subuid or /etc/subgid use.
const (
	FirstUID  = 0x70000000
	RangeSize = 65536
	maxSlots  = 4094 // up to 0x7FFE0000
)

// firstSlot is the first block Claim looks at. The package's tests claim
// from a registry of their own, far from the blocks the machine's real
// platforms (which start at 0) hold, whose app users' processes would
// otherwise count as theirs.
var firstSlot = 0

// DefaultRegistry is the machine-wide folder where platforms claim their
// blocks of user IDs, one file per block naming the data folder that owns it.
const DefaultRegistry = "/var/lib/paddock-uid-ranges"

// rangeFile is the data folder's record of its block.
const rangeFile = "uid-range.json"

// Range is the block of user IDs of one platform's apps.
type Range struct {
	Slot int    `json:"slot"`
	Base uint32 `json:"base"` // the router's user; app N is Base+N
	Size uint32 `json:"size"`
}

func slotRange(k int) Range {
	return Range{Slot: k, Base: FirstUID + uint32(k)*RangeSize, Size: RangeSize}
}

// Router is the user the router runs as once it has bound its ports.
func (r Range) Router() uint32 { return r.Base }

// App is the user of the app with the given ID (store.App.ID, never reused).
func (r Range) App(id int64) (uint32, error) {
	if id <= 0 || id >= int64(r.Size) {
		return 0, fmt.Errorf("app id %d is outside the %d app users of this platform (uids %d to %d): the block is used up; move the apps to a new data folder", id, r.Size-1, r.Base+1, r.Base+r.Size-1)
	}
	return r.Base + uint32(id), nil
}

// Cgroup names the platform's cgroup (see Tracker).
func (r Range) Cgroup() string { return "paddock-" + strconv.Itoa(r.Slot) }

// Contains reports whether uid belongs to the block.
func (r Range) Contains(uid uint32) bool { return uid >= r.Base && uid-r.Base < r.Size }

func (r Range) String() string {
	return fmt.Sprintf("%d-%d", r.Base, r.Base+r.Size-1)
}

// Claim returns the block of user IDs of the platform whose data folder is
// data, claiming one in registry on its first start. A data folder keeps its
// block for good (its apps' files are owned by those users). Claim refuses
// a block that the registry says another existing data folder owns: two
// platforms sharing app users could read each other's apps.
//
// A claim whose data folder is gone, or no longer records that block, is
// stale: its block is given to a new platform only when no process runs as
// any of its users.
func Claim(registry, data string) (Range, error) {
	data, err := filepath.Abs(data)
	if err != nil {
		return Range{}, err
	}
	// One name for the folder, however it is reached.
	if real, err := filepath.EvalSymlinks(data); err == nil {
		data = real
	}
	if err := os.MkdirAll(registry, 0o755); err != nil {
		return Range{}, fmt.Errorf("uid registry %s: %w", registry, err)
	}
	unlock, err := lock(filepath.Join(registry, ".lock"))
	if err != nil {
		return Range{}, fmt.Errorf("uid registry %s: %w", registry, err)
	}
	defer unlock()

	r, err := readRange(data)
	switch {
	case err == nil:
		owner, err := claimant(registry, r.Slot)
		switch {
		case err == nil && owner == data:
			return r, nil
		case err == nil && recordsSlot(owner, r.Slot):
			return Range{}, fmt.Errorf("the app users %s of the data folder %s are also claimed by the platform at %s (see %s): two platforms must not share app users; start this one with a fresh data folder, or remove the other", r, data, owner, filepath.Join(registry, strconv.Itoa(r.Slot)))
		case err != nil && !errors.Is(err, fs.ErrNotExist):
			return Range{}, err
		}
		// Unclaimed (a new registry) or claimed by a folder that gave it up.
		return r, writeClaim(registry, r.Slot, data)
	case !errors.Is(err, fs.ErrNotExist):
		return Range{}, err
	}

	used := systemIDs()
	for k := firstSlot; k < maxSlots; k++ {
		owner, err := claimant(registry, k)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return Range{}, err
		}
		r := slotRange(k)
		if err == nil && (recordsSlot(owner, k) || len(ProcessesOf(r)) > 0) || overlaps(r, used) {
			continue
		}
		if err := writeClaim(registry, k, data); err != nil {
			return Range{}, err
		}
		b, err := json.Marshal(r)
		if err != nil {
			return Range{}, err
		}
		if err := writeFileAtomic(filepath.Join(data, rangeFile), b, 0o644); err != nil {
			return Range{}, fmt.Errorf("record the app users in %s: %w", data, err)
		}
		return r, nil
	}
	return Range{}, fmt.Errorf("uid registry %s: all %d blocks of app users are claimed by existing data folders or used by the system's users: remove the claims of data folders no longer in use", registry, maxSlots)
}

func readRange(data string) (Range, error) {
	var r Range
	b, err := os.ReadFile(filepath.Join(data, rangeFile))
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(b, &r); err != nil || r != slotRange(r.Slot) || r.Slot < 0 || r.Slot >= maxSlots {
		return r, fmt.Errorf("%s is damaged (%q): it records which users this platform's apps run as; restore it from a backup", filepath.Join(data, rangeFile), b)
	}
	return r, nil
}

// recordsSlot reports whether the data folder dir still records block k.
func recordsSlot(dir string, k int) bool {
	r, err := readRange(dir)
	return err == nil && r.Slot == k
}

func claimant(registry string, k int) (string, error) {
	b, err := os.ReadFile(filepath.Join(registry, strconv.Itoa(k)))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

func writeClaim(registry string, k int, data string) error {
	return writeFileAtomic(filepath.Join(registry, strconv.Itoa(k)), []byte(data+"\n"), 0o644)
}

// ProcessesOf lists the processes that run as a user of r, in any of
// their real, effective, saved or file system IDs.
func ProcessesOf(r Range) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		// The status file, not the folder's owner: a process that made
		// itself non-dumpable shows a folder owned by root.
		b, err := os.ReadFile("/proc/" + e.Name() + "/status")
		if err != nil {
			continue
		}
		_, rest, ok := strings.Cut(string(b), "\nUid:")
		if !ok {
			continue
		}
		line, _, _ := strings.Cut(rest, "\n")
		for _, f := range strings.Fields(line) {
			if uid, err := strconv.ParseUint(f, 10, 32); err == nil && r.Contains(uint32(uid)) {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// idSpan is a run of IDs [from, to) that the system uses.
type idSpan struct{ from, to uint64 }

// systemIDs lists the IDs of the machine's users and groups, and the
// subordinate ID ranges given to them.
func systemIDs() []idSpan {
	var out []idSpan
	for _, f := range []string{"/etc/passwd", "/etc/group"} {
		b, _ := os.ReadFile(f)
		for _, line := range strings.Split(string(b), "\n") {
			if fs := strings.Split(line, ":"); len(fs) > 2 {
				if id, err := strconv.ParseUint(fs[2], 10, 32); err == nil {
					out = append(out, idSpan{id, id + 1})
				}
			}
		}
	}
	for _, f := range []string{"/etc/subuid", "/etc/subgid"} {
		b, _ := os.ReadFile(f)
		for _, line := range strings.Split(string(b), "\n") {
			if fs := strings.Split(line, ":"); len(fs) == 3 {
				from, err1 := strconv.ParseUint(fs[1], 10, 32)
				n, err2 := strconv.ParseUint(fs[2], 10, 32)
				if err1 == nil && err2 == nil {
					out = append(out, idSpan{from, from + n})
				}
			}
		}
	}
	return out
}

func overlaps(r Range, used []idSpan) bool {
	lo, hi := uint64(r.Base), uint64(r.Base)+uint64(r.Size)
	for _, u := range used {
		if u.from < hi && lo < u.to {
			return true
		}
	}
	return false
}

func lock(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}

// writeFileAtomic replaces path with data: temp file, fsync, rename, fsync
// of the folder.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
