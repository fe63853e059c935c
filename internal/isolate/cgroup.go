package isolate

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
)

// ErrNoCgroup2 means the machine has no cgroup v2 hierarchy to track
// processes in.
var ErrNoCgroup2 = errors.New("no cgroup v2 hierarchy is mounted")

// Tracker keeps every process an app starts, builds included, in a cgroup
// of the cgroup v2 hierarchy (the "unified" tree on machines that mount v1
// controllers beside it; no controller is needed):
//
//	ROOT/NAME/app-ID/instances/ID    one instance's processes
//	ROOT/NAME/app-ID/builds/ID       one build's processes
//
// A process cannot leave its cgroup by forking, changing its session or
// daemonising, and writing 1 to cgroup.kill ends every process in a cgroup
// and the cgroups below it at once: a stop, a build timeout or the
// destruction of an app leaves nothing behind.
type Tracker struct {
	dir string // ROOT/NAME

	mu    sync.Mutex
	ports *ebpf.Map // the fence's map of instance ports; nil before Fence
}

// NewTracker makes the platform's cgroup, ROOT/name.
func NewTracker(name string) (*Tracker, error) {
	root, err := cgroup2Root()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(root, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create cgroup %s: %w", dir, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "cgroup.kill")); err != nil {
		return nil, fmt.Errorf("cgroup %s has no cgroup.kill (Linux 5.14 or later is needed): %w", dir, err)
	}
	return &Tracker{dir: dir}, nil
}

// Dir returns the platform's cgroup.
func (t *Tracker) Dir() string { return t.dir }

// AppDir returns the cgroup of every process of the app with the given ID.
func (t *Tracker) AppDir(appID int64) string {
	return filepath.Join(t.dir, "app-"+strconv.FormatInt(appID, 10))
}

// Kinds of cgroups below an app's.
const (
	Instances = "instances"
	Builds    = "builds"
)

// Group makes a fresh cgroup for one instance or build (kind) of an app
// and returns its folder.
func (t *Tracker) Group(appID int64, kind, name string) (string, error) {
	if name == "" || strings.ContainsAny(name, "/\x00") || name == "." || name == ".." {
		return "", fmt.Errorf("cgroup name %q: a cgroup is named for its instance or build, a single folder name", name)
	}
	parent := filepath.Join(t.AppDir(appID), kind)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return "", fmt.Errorf("create cgroup %s: %w", parent, err)
	}
	dir := filepath.Join(parent, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return "", fmt.Errorf("create cgroup %s: %w", dir, err)
	}
	return dir, nil
}

// KillApp ends every process of an app, its builds' included, and removes
// its cgroups.
func (t *Tracker) KillApp(appID int64) error {
	dir := t.AppDir(appID)
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := Kill(dir, 10*time.Second); err != nil {
		return err
	}
	return Remove(dir)
}

// KillGroups ends every process in the cgroups of one kind of an app
// (appID 0: of every app), and removes those cgroups.
func (t *Tracker) KillGroups(appID int64, kind string) error {
	pattern := filepath.Join(t.AppDir(appID), kind)
	if appID == 0 {
		pattern = filepath.Join(t.dir, "app-*", kind)
	}
	dirs, err := filepath.Glob(pattern)
	if err != nil {
		return err
	}
	var errs []error
	for _, d := range dirs {
		if err := Kill(d, 10*time.Second); err != nil {
			errs = append(errs, err)
			continue
		}
		errs = append(errs, Remove(d))
	}
	return errors.Join(errs...)
}

// cgroup2Root finds where the cgroup v2 hierarchy is mounted.
func cgroup2Root() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok || !strings.HasPrefix(post, "cgroup2 ") {
			continue
		}
		if f := strings.Fields(pre); len(f) >= 5 && f[3] == "/" {
			return f[4], nil
		}
	}
	return "", ErrNoCgroup2
}

// EnableController makes controller (such as "memory") available in the
// cgroup v2 dir: it enables it in the subtree_control of each cgroup above
// dir, from the hierarchy's root down. Those cgroups hold no process of
// their own (only the leaves do), as the kernel requires.
func EnableController(dir, controller string) error {
	root, err := cgroup2Root()
	if err != nil {
		return err
	}
	rel, err := filepath.Rel(root, filepath.Dir(dir))
	if err != nil || strings.HasPrefix(rel, "..") {
		return fmt.Errorf("%s is not in the cgroup v2 hierarchy at %s", dir, root)
	}
	b, err := os.ReadFile(filepath.Join(root, "cgroup.controllers"))
	if err != nil {
		return err
	}
	if !slices.Contains(strings.Fields(string(b)), controller) {
		return fmt.Errorf("the cgroup v2 hierarchy at %s has no %s controller (it may be mounted as v1)", root, controller)
	}
	d := root
	for _, part := range append([]string{""}, strings.Split(rel, string(filepath.Separator))...) {
		d = filepath.Join(d, part)
		if err := os.WriteFile(filepath.Join(d, "cgroup.subtree_control"), []byte("+"+controller), 0); err != nil {
			return fmt.Errorf("enable %s in %s: %w", controller, d, err)
		}
	}
	return nil
}

// Populated reports whether any process is left in the cgroup dir or
// below it. A cgroup that does not exist holds none.
func Populated(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.events"))
	if err != nil {
		return false
	}
	return strings.Contains(string(b), "populated 1")
}

// Kill ends every process in the cgroup dir and below it with SIGKILL, and
// waits up to wait for them to be gone.
//
// A killed cgroup is done with: on some kernels every process later cloned
// into it (CgroupFD) is killed at birth, so each start takes a fresh one.
func Kill(dir string, wait time.Duration) error {
	if err := os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("kill cgroup %s: %w", dir, err)
	}
	deadline := time.Now().Add(wait)
	for Populated(dir) {
		if time.Now().After(deadline) {
			return fmt.Errorf("kill cgroup %s: processes still there after %s (stuck in the kernel? see %s)", dir, wait, filepath.Join(dir, "cgroup.procs"))
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}

// Signal sends sig to every process in the cgroup dir and below it: a
// graceful stop reaches the processes that left their group too.
func Signal(dir string, sig syscall.Signal) {
	filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		b, _ := os.ReadFile(filepath.Join(path, "cgroup.procs"))
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 0 {
				syscall.Kill(pid, sig)
			}
		}
		return nil
	})
}

// Remove removes the cgroup dir and those below it, which must hold no
// process any more. One that is already gone is no error.
func Remove(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	for _, e := range ents {
		if e.IsDir() {
			if err := Remove(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove cgroup %s: %w", dir, err)
	}
	return nil
}

// Open opens a cgroup for SysProcAttr.CgroupFD, so that a child process
// starts inside it (clone3 with CLONE_INTO_CGROUP): it never runs a single
// instruction outside.
func Open(dir string) (*os.File, error) {
	f, err := os.OpenFile(dir, os.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		return nil, fmt.Errorf("open cgroup: %w", err)
	}
	return f, nil
}
