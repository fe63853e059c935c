package process

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"paddock.dev/paddock/internal/isolate"
)

// Memory limits use the kernel's memory cgroup: v1 (memory.limit_in_bytes)
// where the memory controller is mounted on its own, which the instance
// joins between fork and exec (cgexec) while staying in its cgroup v2;
// else v2 (memory.max) on the instance's own cgroup v2, which then holds
// both. Elsewhere the limit is reported as not enforced, never silently
// dropped.
const cgroupV1 = "/sys/fs/cgroup/memory"

// createCgroup limits instance id to limit bytes. track is the instance's
// cgroup v2 ("" if it has none). It returns the cgroup that holds the limit
// and a description of the enforcement, or "" and the reason the limit
// cannot be enforced.
func createCgroup(id, track string, limit int64) (dir, desc string) {
	if fi, err := os.Stat(filepath.Join(cgroupV1, "memory.limit_in_bytes")); err == nil && !fi.IsDir() {
		dir = filepath.Join(cgroupV1, "paddock", id)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", "cannot create memory cgroup: " + err.Error()
		}
		if err := os.WriteFile(filepath.Join(dir, "memory.limit_in_bytes"), []byte(strconv.FormatInt(limit, 10)), 0o644); err != nil {
			os.Remove(dir)
			return "", "cannot set memory limit: " + err.Error()
		}
		// Without swap accounting the limit would let the process swap out.
		os.WriteFile(filepath.Join(dir, "memory.memsw.limit_in_bytes"), []byte(strconv.FormatInt(limit, 10)), 0o644)
		return dir, fmt.Sprintf("%d MiB (cgroup v1)", limit>>20)
	}
	if track == "" {
		return "", "no memory cgroup: processes are not tracked in cgroups here"
	}
	if err := isolate.EnableController(track, "memory"); err != nil {
		return "", "no memory cgroup controller: " + err.Error()
	}
	if err := os.WriteFile(filepath.Join(track, "memory.max"), []byte(strconv.FormatInt(limit, 10)), 0o644); err != nil {
		return "", "cannot set memory limit: " + err.Error()
	}
	os.WriteFile(filepath.Join(track, "memory.swap.max"), []byte("0"), 0o644)
	return track, fmt.Sprintf("%d MiB (cgroup v2)", limit>>20)
}

func joinCgroup(dir string, pid int) error {
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
		return fmt.Errorf("join memory cgroup: %w", err)
	}
	return nil
}

// cgroupOOMKills returns how many processes the kernel killed in the cgroup
// for lack of memory.
func cgroupOOMKills(dir string) int64 {
	if dir == "" {
		return 0
	}
	for _, name := range []string{"memory.oom_control", "memory.events"} {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			continue
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "oom_kill "); ok {
				n, _ := strconv.ParseInt(v, 10, 64)
				return n
			}
		}
	}
	return 0
}

func cgroupMemoryUsed(dir string) int64 {
	for _, name := range []string{"memory.usage_in_bytes", "memory.current"} {
		if b, err := os.ReadFile(filepath.Join(dir, name)); err == nil {
			n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
			return n
		}
	}
	return 0
}

// removeCgroup removes an instance's cgroup once its processes are gone.
func removeCgroup(dir string) {
	os.Remove(dir)
}
