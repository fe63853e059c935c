// Package process is the default runtime: each instance is a local process
// group watched by a small supervisor (the shim, run from the same binary as
// `paddock shim DIR`), one per app (see supervisor.go). Supervisors are
// detached from the server, so instances keep running while the server
// restarts or upgrades; a new server adopts them by reading the state each
// supervisor keeps on disk.
//
// On disk, for an instance ID:
//
//	Dir/ID/spec.json    what to run (written by Start, read by the supervisor)
//	Dir/ID/state.json   what runs (written atomically by the supervisor)
//	Dir/ID/app/         the instance's working folder, the release's artifact
//	Logs/APP/ID.log     the instance's output, one timestamped line each
//
// With a Tracker, every process of an instance starts inside a cgroup of
// its own (isolate.Tracker.Group): whatever it forks, however it detaches,
// a stop or a crash of the main process ends all of it.
package process

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"paddock.dev/paddock/internal/isolate"
	"paddock.dev/paddock/internal/runtime"
)

var _ runtime.Runtime = (*Runtime)(nil)

// Config configures a Runtime.
type Config struct {
	Dir  string // required: one folder per instance below it
	Logs string // required: instance logs below it, one folder per app
	// Binary is the executable started as `Binary shim DIR`; default: this
	// process's own executable.
	Binary string
	// Supervisors holds a folder per supervisor; default: "supervisors"
	// beside Dir.
	Supervisors string
	// Extract unpacks an artifact into an empty folder; required to run
	// instances that have an artifact.
	Extract func(ctx context.Context, digest, dst string) error
	// LogLimit bounds one instance log file before it rotates; default 8 MiB.
	LogLimit int64
	// SecretsDir holds the tmpfs of each instance's secret files, outside
	// the data folder; default /run/paddock-secrets/HASH, HASH naming Dir.
	SecretsDir string
	// Tracker holds each instance's processes in a cgroup of its own; nil
	// tracks them by process group only, which a process that starts a
	// session of its own leaves.
	Tracker *isolate.Tracker
	Logger  *slog.Logger // default: discard
}

// Runtime runs instances as supervised local processes.
type Runtime struct {
	cfg Config
	log *slog.Logger

	// listed keeps what List read of each instance's folder, so that a
	// pass over hundreds of idle instances re-reads only what changed.
	mu     sync.Mutex
	listed map[string]*listed

	supMu sync.Mutex
	sups  map[string]string // app key → the supervisor it used last
}

// listed is what List knows of one instance folder: its spec and state as
// of the files' identities, and its shim once checked.
type listed struct {
	specID, stateID fileID
	spec            shimSpec
	state           shimState
	shimPID, pidfd  int // the shim checked last, and a pidfd of it (-1: none)
}

// fileID tells one version of a file from another: they are written by
// rename, so each has an inode of its own.
type fileID struct {
	ino, size int64
	mtime     int64
}

func idOf(path string) (fileID, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return fileID{}, err
	}
	return fileID{int64(st.Ino), st.Size, st.Mtim.Nano()}, nil
}

// New returns a Runtime after creating its folders.
func New(cfg Config) (*Runtime, error) {
	if cfg.Dir == "" || cfg.Logs == "" {
		return nil, errors.New("process runtime: Dir and Logs are required")
	}
	if cfg.Binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("process runtime: find own executable: %w", err)
		}
		cfg.Binary = exe
	}
	if cfg.Supervisors == "" {
		cfg.Supervisors = filepath.Join(filepath.Dir(cfg.Dir), "supervisors")
	}
	// Supervisors outlive the server and know instances by their folders'
	// paths: those must not depend on the server's working folder.
	for _, d := range []*string{&cfg.Dir, &cfg.Logs, &cfg.Supervisors} {
		abs, err := filepath.Abs(*d)
		if err != nil {
			return nil, fmt.Errorf("process runtime: %w", err)
		}
		*d = abs
	}
	if cfg.LogLimit == 0 {
		cfg.LogLimit = 8 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	for _, d := range []string{cfg.Dir, cfg.Logs, cfg.Supervisors} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("process runtime: %w", err)
		}
	}
	// Instances running as other users pass through to their own folder,
	// and see nothing else: no listing, no other instance's files.
	if err := os.Chmod(cfg.Dir, 0o711); err != nil {
		return nil, fmt.Errorf("process runtime: %w", err)
	}
	if cfg.SecretsDir == "" {
		sum := sha256.Sum256([]byte(cfg.Dir))
		cfg.SecretsDir = filepath.Join("/run/paddock-secrets", hex.EncodeToString(sum[:8]))
	}
	r := &Runtime{cfg: cfg, log: cfg.Logger, sups: map[string]string{}}
	r.sweepSecrets()
	return r, nil
}

func (r *Runtime) secretsPath(id string) string { return filepath.Join(r.cfg.SecretsDir, id) }

// sweepSecrets takes away the secret tmpfs of instances that have no
// folder any more: a crash between mounting one and writing the spec.
func (r *Runtime) sweepSecrets() {
	ents, _ := os.ReadDir(r.cfg.SecretsDir)
	for _, e := range ents {
		if _, err := os.Stat(filepath.Join(r.cfg.Dir, e.Name(), "spec.json")); errors.Is(err, fs.ErrNotExist) {
			r.log.Warn("taking away the secret files of an instance that is gone", "instance", e.Name())
			unmountSecrets(r.secretsPath(e.Name()))
		}
	}
}

// shimSpec is spec.json: the instance spec plus what the shim needs to know
// about its surroundings.
type shimSpec struct {
	runtime.Spec
	LogFile  string `json:"log_file"`
	LogLimit int64  `json:"log_limit"`
	// Track is the instance's cgroup (v2), which holds all its processes;
	// "" without a Tracker.
	Track string `json:"track,omitempty"`
	// Supervisor is the folder of the supervisor that runs the instance;
	// "" for an instance started before supervisors were per app, whose
	// shim of its own serves the instance's folder.
	Supervisor string `json:"supervisor,omitempty"`
}

// supervisor returns the folder that the supervisor of the instance in
// dir serves.
func (ss *shimSpec) supervisor(dir string) string {
	if ss.Supervisor == "" {
		return dir
	}
	return ss.Supervisor
}

// shimState is state.json.
type shimState struct {
	ShimPID   int           `json:"shim_pid"`
	PID       int           `json:"pid"`
	State     runtime.State `json:"state"`
	Restarts  int           `json:"restarts"`
	StartedAt time.Time     `json:"started_at"`
	LastExit  string        `json:"last_exit,omitempty"`
	// Checked is the last result of the health check command, of the
	// current process.
	Checked     *runtime.CheckResult `json:"checked,omitempty"`
	MemoryLimit string               `json:"memory_limit,omitempty"`
	Cgroup      string               `json:"cgroup,omitempty"`
}

// LogFile returns where the instance's output goes.
func (r *Runtime) LogFile(s runtime.Spec) string {
	return filepath.Join(r.cfg.Logs, runtime.LogFolder(s.App, s.AppID), s.ID+".log")
}

// Start prepares the instance's folder and starts its shim.
func (r *Runtime) Start(ctx context.Context, s runtime.Spec) (runtime.Instance, error) {
	dir := filepath.Join(r.cfg.Dir, s.ID)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return runtime.Instance{}, fmt.Errorf("start %s: %w", s.ID, err)
	}
	fail := func(err error) (runtime.Instance, error) {
		os.RemoveAll(dir)
		return runtime.Instance{}, fmt.Errorf("start %s: %w", s.ID, err)
	}
	appDir := filepath.Join(dir, "app")
	if err := os.Mkdir(appDir, 0o755); err != nil {
		return fail(err)
	}
	if s.Artifact != "" {
		if r.cfg.Extract == nil {
			return fail(errors.New("no artifact extractor configured"))
		}
		if err := r.cfg.Extract(ctx, s.Artifact, appDir); err != nil {
			return fail(err)
		}
	}
	if s.UID != 0 {
		// Given away while dir (0700) keeps the app out, then opened.
		if err := isolate.GiveTree(appDir, int(s.UID), int(s.GID)); err != nil {
			return fail(err)
		}
		if err := os.Chmod(dir, 0o711); err != nil {
			return fail(err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(r.LogFile(s)), 0o755); err != nil {
		return fail(err)
	}
	ss := shimSpec{Spec: s, LogFile: r.LogFile(s), LogLimit: r.cfg.LogLimit}
	if r.cfg.Tracker != nil {
		track, err := r.cfg.Tracker.Group(s.AppID, isolate.Instances, s.ID)
		if err != nil {
			return fail(err)
		}
		ss.Track = track
		fail = func(err error) (runtime.Instance, error) {
			isolate.Remove(track)
			r.cfg.Tracker.Release(s.Port)
			os.RemoveAll(dir)
			return runtime.Instance{}, fmt.Errorf("start %s: %w", s.ID, err)
		}
		// The port is the instance's own from now on: no other app may
		// bind it or reach it but through the router.
		if err := r.cfg.Tracker.Assign(s.Port, s.UID); err != nil {
			return fail(err)
		}
	}
	mountEnv, err := bindMounts(appDir, s.Mounts, s.UID, s.GID)
	if err != nil {
		return fail(err)
	}
	if len(s.Mounts) > 0 {
		fail0 := fail
		fail = func(err error) (runtime.Instance, error) { unbindMounts(appDir, s.Mounts); return fail0(err) }
		ss.Env = append(ss.Env, mountEnv...)
	}
	secretsDir, err := writeSecretFiles(r.secretsPath(s.ID), s)
	if err != nil {
		return fail(err)
	}
	if secretsDir != "" {
		fail0 := fail
		fail = func(err error) (runtime.Instance, error) { unmountSecrets(secretsDir); return fail0(err) }
		ss.Env = append(ss.Env, "PADDOCK_SECRETS_DIR="+secretsDir)
	}
	// The secrets go to the supervisor in the request, in memory only; a
	// supervisor that is exiting takes nothing on, and another is asked.
	req := request{Op: "start", Dir: dir, Secrets: s.Secrets}
	var skip string
	for try := 0; ; try++ {
		sup, err := r.supervisorOf(s, skip)
		if err != nil {
			return fail(err)
		}
		ss.Supervisor = sup
		if err := writeJSON(filepath.Join(dir, "spec.json"), ss); err != nil {
			return fail(err)
		}
		err = call(ctx, sup, req)
		if err == nil {
			break
		}
		if !errors.Is(err, errGone) || try == 2 {
			if !errors.Is(err, errGone) {
				// It may have taken the instance on: it lets go of it
				// before the folder goes.
				call(context.WithoutCancel(ctx), sup, request{Op: "stop", Dir: dir})
			}
			return fail(err)
		}
		skip = sup
	}

	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		if st, err := readState(dir); err == nil && st.State != "" {
			in := r.instance(dir, ss, st)
			in.Secrets = nil // the values stay with the supervisor
			return in, nil
		}
		select {
		case <-ctx.Done():
			r.Stop(context.WithoutCancel(ctx), s.ID)
			return runtime.Instance{}, ctx.Err()
		case <-deadline.C:
			r.Stop(context.WithoutCancel(ctx), s.ID)
			return runtime.Instance{}, fmt.Errorf("start %s: its supervisor did not report within 10s; see %s", s.ID, filepath.Join(ss.Supervisor, "shim.log"))
		case <-tick.C:
		}
	}
}

// List reports every instance with a folder under Dir.
func (r *Runtime) List(ctx context.Context) ([]runtime.Instance, error) {
	return r.list("")
}

// ListApp returns the instances of one app. It reads only the folders
// named for the app (an instance's ID, its folder's name, starts with its
// app's name and a dot), not every instance's, so that one app's
// instances cost the same with 5 instances on the machine or 500. A name
// that is another app's prefix ("shop" of "shop.web") may match more
// folders; the caller keeps those of its app.
func (r *Runtime) ListApp(ctx context.Context, app string) ([]runtime.Instance, error) {
	return r.list(app + ".")
}

func (r *Runtime) list(prefix string) ([]runtime.Instance, error) {
	entries, err := os.ReadDir(r.cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("list instances: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.listed == nil {
		r.listed = map[string]*listed{}
	}
	seen := make(map[string]bool, len(entries))
	var out []runtime.Instance
	for _, e := range entries {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), prefix) {
			continue
		}
		dir := filepath.Join(r.cfg.Dir, e.Name())
		l := r.listed[e.Name()]
		specID, err := idOf(filepath.Join(dir, "spec.json"))
		if err != nil {
			continue // being created or removed
		}
		if l == nil || l.specID != specID {
			if l != nil {
				l.close()
			}
			l = &listed{specID: specID, pidfd: -1}
			if err := readJSON(filepath.Join(dir, "spec.json"), &l.spec); err != nil {
				delete(r.listed, e.Name())
				continue
			}
			r.listed[e.Name()] = l
		}
		seen[e.Name()] = true
		stateID, err := idOf(filepath.Join(dir, "state.json"))
		if err != nil {
			// Before its shim's first word, or while Stop removes the
			// folder: nothing to report, and nothing lost.
			continue
		}
		if stateID != l.stateID {
			st, err := readState(dir)
			if err != nil {
				st = shimState{State: runtime.StateLost}
			}
			l.state, l.stateID = st, stateID
		}
		out = append(out, r.instanceOf(dir, l.spec, l.state, l.shimAlive(dir)))
	}
	for name, l := range r.listed {
		if !seen[name] && strings.HasPrefix(name, prefix) {
			l.close()
			delete(r.listed, name)
		}
	}
	return out, nil
}

// shimAlive is shimAlive for the shim in l's state, reading its command
// line only the first time: then a pidfd of the checked process answers,
// which no process that gets its pid since can pass for.
func (l *listed) shimAlive(instDir string) bool {
	dir := l.spec.supervisor(instDir)
	pid := l.state.ShimPID
	if pid <= 0 {
		return false
	}
	if l.shimPID == pid && l.pidfd >= 0 {
		// Readable once the process has ended, zombie or reaped.
		fds := []unix.PollFd{{Fd: int32(l.pidfd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 0)
		return err == nil && n == 0
	}
	l.close()
	if !shimAlive(pid, dir) {
		return false
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return true // checked above; checked again next time
	}
	if !shimAlive(pid, dir) { // the pid changed hands between the two
		unix.Close(fd)
		return false
	}
	l.shimPID, l.pidfd = pid, fd
	return true
}

// close lets go of the pidfd of the shim l checked last.
func (l *listed) close() {
	if l.pidfd >= 0 {
		unix.Close(l.pidfd)
	}
	l.shimPID, l.pidfd = 0, -1
}

func (r *Runtime) instance(dir string, ss shimSpec, st shimState) runtime.Instance {
	return r.instanceOf(dir, ss, st, shimAlive(st.ShimPID, ss.supervisor(dir)))
}

func (r *Runtime) instanceOf(dir string, ss shimSpec, st shimState, alive bool) runtime.Instance {
	inst := runtime.Instance{
		Spec:        ss.Spec,
		State:       st.State,
		PID:         st.PID,
		Restarts:    st.Restarts,
		StartedAt:   st.StartedAt,
		LastExit:    st.LastExit,
		Checked:     st.Checked,
		MemoryLimit: st.MemoryLimit,
		// The shim made a cgroup for the limit: it holds.
		MemoryEnforced: st.Cgroup != "",
	}
	if st.State != runtime.StateStopped && !alive {
		inst.State = runtime.StateLost
	}
	if st.Cgroup != "" {
		inst.MemoryUsed = cgroupMemoryUsed(st.Cgroup)
	}
	inst.Cgroup = ss.Track
	return inst
}

// Stop asks the supervisor to stop the instance, waits for it, and removes
// the instance's folder. The log stays.
func (r *Runtime) Stop(ctx context.Context, id string) error {
	dir := filepath.Join(r.cfg.Dir, id)
	var ss shimSpec
	if err := readJSON(filepath.Join(dir, "spec.json"), &ss); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("stop %s: %w", id, runtime.ErrNotFound)
		}
		return fmt.Errorf("stop %s: %w", id, err)
	}
	st, _ := readState(dir)
	timeout := ss.StopTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	switch sup := ss.supervisor(dir); {
	case !shimAlive(st.ShimPID, sup):
	case ss.Supervisor == "":
		// A shim of its own, from before supervisors were per app.
		syscall.Kill(st.ShimPID, syscall.SIGTERM)
		if !waitGone(ctx, st.ShimPID, sup, timeout+5*time.Second) {
			r.log.Warn("shim did not stop in time; killing it", "instance", id, "pid", st.ShimPID)
			syscall.Kill(st.ShimPID, syscall.SIGKILL)
		}
	default:
		// Delivered whatever becomes of ctx: a stop that never reaches the
		// supervisor would leave it restarting what is killed below.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout+5*time.Second)
		err := call(cctx, sup, request{Op: "stop", Dir: dir})
		cancel()
		if err != nil && !errors.Is(err, errGone) {
			r.log.Warn("the supervisor did not stop the instance; killing its processes", "instance", id, "err", err)
		}
	}
	// Whatever the supervisor did, nothing of the instance may survive it: end
	// its cgroup, or its process group if it is still there and still ours.
	if ss.Track != "" {
		if err := isolate.Kill(ss.Track, 10*time.Second); err != nil {
			return fmt.Errorf("stop %s: %w", id, err)
		}
		if err := isolate.Remove(ss.Track); err != nil {
			r.log.Warn("remove the instance's cgroup", "instance", id, "err", err)
		}
		if r.cfg.Tracker != nil {
			r.cfg.Tracker.Release(ss.Port)
		}
	} else if st.PID > 0 && ownsProcess(st.PID, filepath.Join(dir, "app")) {
		syscall.Kill(-st.PID, syscall.SIGKILL)
	}
	if st.Cgroup != "" && st.Cgroup != ss.Track {
		removeCgroup(st.Cgroup) // a v1 memory cgroup
	}
	unmountSecrets(r.secretsPath(id))
	unbindMounts(filepath.Join(dir, "app"), ss.Mounts)
	// Never a recursive removal across a mount: it would delete a volume's
	// data or a secret tmpfs's files.
	if left := mountedBelow(dir); len(left) > 0 {
		return fmt.Errorf("stop %s: %s still mounted: the instance's folder stays (unmount it, then stop again)", id, strings.Join(left, ", "))
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("stop %s: remove folder: %w", id, err)
	}
	return nil
}

// shimAlive reports whether pid is a shim serving dir: the pid alone could
// have been reused by an unrelated process since the state was written.
func shimAlive(pid int, dir string) bool {
	if pid <= 0 {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return false
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	if len(args) < 3 || args[len(args)-2] != "shim" {
		return false
	}
	served := args[len(args)-1]
	if !filepath.IsAbs(served) {
		// A shim of its own that an earlier server started with a
		// relative folder.
		cwd, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/cwd")
		if err != nil {
			return false
		}
		served = filepath.Join(cwd, served)
	}
	if served != dir {
		return false
	}
	// A zombie has a cmdline of its own no more; a stopped-but-unreaped
	// shim shows as state Z.
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	if i := strings.LastIndexByte(string(stat), ')'); i > 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
		return false
	}
	return true
}

// ownsProcess reports whether pid runs in the working folder dir.
func ownsProcess(pid int, dir string) bool {
	cwd, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/cwd")
	return err == nil && cwd == dir
}

func waitGone(ctx context.Context, pid int, dir string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if !shimAlive(pid, dir) {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(20 * time.Millisecond):
		}
	}
	return false
}

func readState(dir string) (shimState, error) {
	var st shimState
	err := readJSON(filepath.Join(dir, "state.json"), &st)
	return st, err
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// writeJSON replaces path atomically, so a reader never sees half a file.
func writeJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
