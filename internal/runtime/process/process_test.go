package process

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"paddock.dev/paddock/internal/isolate"
	"paddock.dev/paddock/internal/runtime"
)

// The test binary doubles as the shim: Start runs `BINARY shim DIR`.
func TestMain(m *testing.M) {
	if len(os.Args) == 3 && os.Args[1] == "shim" && os.Getenv("PADDOCK_TEST_OLD_SHIM") == "1" {
		oldShim(os.Args[2])
		os.Exit(0)
	}
	if len(os.Args) == 3 && os.Args[1] == "shim" {
		if err := RunShim(context.Background(), os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if len(os.Args) > 5 && os.Args[1] == "cgexec" {
		fmt.Fprintln(os.Stderr, CgroupExec(os.Args[2], os.Args[3], os.Args[4], os.Args[5:]))
		os.Exit(127)
	}
	os.Exit(m.Run())
}

func newRuntime(t *testing.T) *Runtime {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// Instances that run as users of their own pass through to theirs.
	os.Chmod(dir, 0o711)
	os.Chmod(filepath.Dir(dir), 0o711)
	if os.Geteuid() != 0 {
		t.Fatal("the runtime's tests need root (they run as root, as CI does): they check cgroups")
	}
	tr, err := isolate.NewTracker(fmt.Sprintf("paddock-test-%d-%s", os.Getpid(), strings.ReplaceAll(t.Name(), "/", "-")))
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(Config{Dir: filepath.Join(dir, "instances"), Logs: filepath.Join(dir, "logs"), Binary: exe, Tracker: tr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		insts, _ := r.List(context.Background())
		for _, in := range insts {
			r.Stop(context.Background(), in.ID)
		}
		if isolate.Populated(tr.Dir()) {
			t.Errorf("processes were left in the runtime's cgroup %s", tr.Dir())
		}
		isolate.Kill(tr.Dir(), 5*time.Second)
		isolate.Remove(tr.Dir())
	})
	return r
}

// daemonPID starts an instance whose command leaves a daemon behind, in a
// session of its own, and returns the instance and the daemon's pid.
func daemonPID(t *testing.T, r *Runtime, id string) (runtime.Instance, int) {
	t.Helper()
	in, err := r.Start(context.Background(), runtime.Spec{ID: id, App: "a", AppID: 1, Process: "web",
		Command: "setsid sleep 1000 & echo $! > child.pid; exec sleep 1000", StopTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	in = waitFor(t, r, in.ID, "running", func(in runtime.Instance) bool { return in.State == runtime.StateRunning })
	pidFile := filepath.Join(r.cfg.Dir, in.ID, "app", "child.pid")
	var child int
	deadline := time.Now().Add(5 * time.Second)
	for child == 0 && time.Now().Before(deadline) {
		b, _ := os.ReadFile(pidFile)
		child, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		time.Sleep(10 * time.Millisecond)
	}
	if !alive(child) {
		t.Fatalf("the daemon did not start (pid %d)", child)
	}
	t.Cleanup(func() { syscall.Kill(child, syscall.SIGKILL) })
	return in, child
}

func waitGoneT(t *testing.T, pid int, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("%s (pid %d) is still running", what, pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestStopEndsDaemons: a process that starts a session of its own leaves
// the process group, not the instance.
func TestStopEndsDaemons(t *testing.T) {
	r := newRuntime(t)
	in, child := daemonPID(t, r, "a.web.8")
	if err := r.Stop(context.Background(), in.ID); err != nil {
		t.Fatal(err)
	}
	waitGoneT(t, child, "a daemon of a stopped instance")
}

func TestCrashEndsDaemons(t *testing.T) {
	r := newRuntime(t)
	in, child := daemonPID(t, r, "a.web.9")
	syscall.Kill(in.PID, syscall.SIGKILL) // the main process only
	waitFor(t, r, in.ID, "restarted", func(in runtime.Instance) bool { return in.Restarts == 1 })
	waitGoneT(t, child, "a daemon of a crashed process")
	// The restart runs in a fresh cgroup and lives on: the killed one
	// would kill it at birth.
	again := waitFor(t, r, in.ID, "running again", func(in runtime.Instance) bool { return in.State == runtime.StateRunning && in.Restarts == 1 })
	time.Sleep(500 * time.Millisecond)
	if !alive(again.PID) {
		t.Errorf("the restarted process %d died", again.PID)
	}
}

func waitFor(t *testing.T, r *Runtime, id string, what string, ok func(runtime.Instance) bool) runtime.Instance {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	var last runtime.Instance
	for time.Now().Before(deadline) {
		insts, err := r.List(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range insts {
			if in.ID == id {
				last = in
				if ok(in) {
					return in
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("instance %s: not %s within 15s; last seen %+v", id, what, last)
	return last
}

func alive(pid int) bool { return pid > 0 && syscall.Kill(pid, 0) == nil }

func TestStartLogStop(t *testing.T) {
	r := newRuntime(t)
	ctx := context.Background()
	in, err := r.Start(ctx, runtime.Spec{ID: "a.web.1", App: "a", Process: "web", Command: "echo hello $PORT $GREETING; echo oops >&2; exec sleep 100",
		Env: []string{"GREETING=hi"}, Port: 4321, StopTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	in = waitFor(t, r, in.ID, "running", func(in runtime.Instance) bool { return in.State == runtime.StateRunning })
	waitFor(t, r, in.ID, "logged", func(runtime.Instance) bool {
		b, _ := os.ReadFile(r.LogFile(in.Spec))
		return strings.Contains(string(b), " out hello 4321 hi\n") && strings.Contains(string(b), " err oops\n")
	})
	if err := r.Stop(ctx, in.ID); err != nil {
		t.Fatal(err)
	}
	if alive(in.PID) {
		t.Errorf("pid %d still runs after Stop", in.PID)
	}
	if insts, _ := r.List(ctx); len(insts) != 0 {
		t.Errorf("List after Stop: got %+v, want none", insts)
	}
}

func TestCrashRestartsWithBackoff(t *testing.T) {
	r := newRuntime(t)
	in, err := r.Start(context.Background(), runtime.Spec{ID: "a.web.2", App: "a", Process: "web", Command: "exit 3"})
	if err != nil {
		t.Fatal(err)
	}
	got := waitFor(t, r, in.ID, "in a crash loop", func(in runtime.Instance) bool { return in.State == runtime.StateCrashLoop })
	if got.Restarts != crashLoopAfter || got.LastExit != "exited with code 3" {
		t.Errorf("got %d restarts, last exit %q; want %d and \"exited with code 3\"", got.Restarts, got.LastExit, crashLoopAfter)
	}
	b, _ := os.ReadFile(r.LogFile(in.Spec))
	if !strings.Contains(string(b), "restarting in 2s") {
		t.Errorf("log does not show the backoff growing:\n%s", b)
	}
}

func TestCrashTakesItsChildrenAlong(t *testing.T) {
	r := newRuntime(t)
	in, err := r.Start(context.Background(), runtime.Spec{ID: "a.web.7", App: "a", Process: "web",
		Command: "sleep 1000 & echo $! > child.pid; wait"})
	if err != nil {
		t.Fatal(err)
	}
	in = waitFor(t, r, in.ID, "running", func(in runtime.Instance) bool { return in.State == runtime.StateRunning })
	pidFile := filepath.Join(r.cfg.Dir, in.ID, "app", "child.pid")
	var child int
	deadline := time.Now().Add(5 * time.Second)
	for child == 0 && time.Now().Before(deadline) {
		b, _ := os.ReadFile(pidFile)
		child, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		time.Sleep(10 * time.Millisecond)
	}
	if !alive(child) {
		t.Fatalf("the child did not start (pid %d)", child)
	}
	syscall.Kill(in.PID, syscall.SIGKILL) // the main process only
	waitFor(t, r, in.ID, "restarted", func(in runtime.Instance) bool { return in.Restarts == 1 })
	deadline = time.Now().Add(5 * time.Second)
	for alive(child) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if alive(child) {
		t.Errorf("child %d of the killed process survived its restart", child)
	}
}

func TestStopEscalatesToSIGKILL(t *testing.T) {
	r := newRuntime(t)
	ctx := context.Background()
	in, err := r.Start(ctx, runtime.Spec{ID: "a.web.3", App: "a", Process: "web", Command: "trap '' TERM; sleep 100 & wait; sleep 100", StopTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	in = waitFor(t, r, in.ID, "running", func(in runtime.Instance) bool { return in.State == runtime.StateRunning })
	start := time.Now()
	if err := r.Stop(ctx, in.ID); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Stop took %s with a stop timeout of 300ms", d)
	}
	if alive(in.PID) {
		t.Errorf("pid %d survived Stop", in.PID)
	}
}

func TestAdoptionByANewRuntime(t *testing.T) {
	r := newRuntime(t)
	ctx := context.Background()
	in, err := r.Start(ctx, runtime.Spec{ID: "a.web.4", App: "a", Process: "web", Command: "exec sleep 100"})
	if err != nil {
		t.Fatal(err)
	}
	in = waitFor(t, r, in.ID, "running", func(in runtime.Instance) bool { return in.State == runtime.StateRunning })
	again, err := New(r.cfg)
	if err != nil {
		t.Fatal(err)
	}
	got := waitFor(t, again, in.ID, "adopted", func(got runtime.Instance) bool { return got.State == runtime.StateRunning })
	if got.PID != in.PID {
		t.Errorf("adopted pid %d, want %d", got.PID, in.PID)
	}
}

func TestLostShimIsReported(t *testing.T) {
	r := newRuntime(t)
	ctx := context.Background()
	in, err := r.Start(ctx, runtime.Spec{ID: "a.web.5", App: "a", Process: "web", Command: "exec sleep 100"})
	if err != nil {
		t.Fatal(err)
	}
	in = waitFor(t, r, in.ID, "running", func(in runtime.Instance) bool { return in.State == runtime.StateRunning })
	st, _ := readState(filepath.Join(r.cfg.Dir, in.ID))
	syscall.Kill(st.ShimPID, syscall.SIGKILL)
	waitFor(t, r, in.ID, "lost", func(in runtime.Instance) bool { return in.State == runtime.StateLost })
	if err := r.Stop(ctx, in.ID); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for alive(in.PID) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if alive(in.PID) {
		t.Errorf("the app process %d of a lost shim survived Stop", in.PID)
	}
}

// TestMemoryLimit: a memory-limited instance stays in its own cgroup v2
// (joining a memory cgroup must not take it out of the one that ends all
// its processes), and the limit is enforced.
func TestMemoryLimit(t *testing.T) {
	r := newRuntime(t)
	ctx := context.Background()
	in, err := r.Start(ctx, runtime.Spec{ID: "a.web.10", App: "a", AppID: 1, Process: "web", Command: "exec sleep 1000", Memory: 32 << 20})
	if err != nil {
		t.Fatal(err)
	}
	in = waitFor(t, r, in.ID, "running", func(in runtime.Instance) bool { return in.State == runtime.StateRunning })
	if !in.MemoryEnforced || !strings.Contains(in.MemoryLimit, "32 MiB (cgroup") {
		t.Fatalf("memory limit: got %q (enforced %v), want 32 MiB enforced by a cgroup", in.MemoryLimit, in.MemoryEnforced)
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(in.PID) + "/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	if want := "/app-1/instances/a.web.10/run-1\n"; !strings.Contains(string(b), want) {
		t.Errorf("the limited instance's cgroups:\n%s\nwant its own cgroup v2 (...%s)", b, want)
	}

	in, err = r.Start(ctx, runtime.Spec{ID: "a.web.6", App: "a", AppID: 1, Process: "web",
		Command: "head -c 300000000 /dev/zero | tail", Memory: 32 << 20})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, r, in.ID, "OOM-killed", func(in runtime.Instance) bool { return strings.HasPrefix(in.LastExit, "OOM-killed") })
	b, _ = os.ReadFile(r.LogFile(in.Spec))
	if !strings.Contains(string(b), "paddock process OOM-killed (memory limit 32 MiB)") {
		t.Errorf("log does not say the process was OOM-killed:\n%s", b)
	}
}

// TestSecrets: secrets reach the process as environment variables and as
// files on a tmpfs of the instance's own, again after a crash; what the
// process prints of them is scrubbed, split across writes too; and their
// values are in no file of the instance's folder on disk.
func TestSecrets(t *testing.T) {
	r := newRuntime(t)
	ctx := context.Background()
	const envValue, fileValue = "s3cr3t-env-value-4f1a", "s3cr3t-file-value-9b2c"
	sum := func(v string) string { h := sha256.Sum256([]byte(v)); return hex.EncodeToString(h[:]) }
	in, err := r.Start(ctx, runtime.Spec{ID: "a.web.11", App: "a", AppID: 1, Process: "web", UID: 123470, GID: 123470,
		Command: `echo "env=$API_KEY"; echo "file=$(cat $PADDOCK_SECRETS_DIR/CERT)"; printf 'split=s3cr3t-env'; sleep 0.1; echo '-value-4f1a'; ` +
			`echo "envsum=$(printf %s "$API_KEY" | sha256sum)"; echo "filesum=$(sha256sum < $PADDOCK_SECRETS_DIR/CERT)"; ` +
			`stat -c 'mode=%a uid=%u' $PADDOCK_SECRETS_DIR/CERT; stat -f -c 'fs=%T' $PADDOCK_SECRETS_DIR; exec sleep 1000`,
		Secrets: []runtime.Secret{{Name: "API_KEY", Value: []byte(envValue)}, {Name: "CERT", Value: []byte(fileValue), AsFile: true}}})
	if err != nil {
		t.Fatal(err)
	}
	in = waitFor(t, r, in.ID, "running", func(in runtime.Instance) bool { return in.State == runtime.StateRunning })
	want := []string{"env=[REDACTED:API_KEY]", "file=[REDACTED:CERT]", "split=[REDACTED:API_KEY]",
		"envsum=" + sum(envValue) + "  -", "filesum=" + sum(fileValue) + "  -", "mode=400 uid=123470", "fs=tmpfs"}
	logged := func(n int) func(runtime.Instance) bool {
		return func(runtime.Instance) bool {
			b, _ := os.ReadFile(r.LogFile(in.Spec))
			for _, w := range want {
				if strings.Count(string(b), w+"\n") < n {
					return false
				}
			}
			return true
		}
	}
	waitFor(t, r, in.ID, "given its secrets", logged(1))
	// A crash: the supervisor starts it again with the same secrets.
	syscall.Kill(in.PID, syscall.SIGKILL)
	waitFor(t, r, in.ID, "given its secrets again", logged(2))

	dir := filepath.Join(r.cfg.Dir, in.ID)
	filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		b, _ := os.ReadFile(path)
		if strings.Contains(string(b), envValue) || strings.Contains(string(b), fileValue) {
			t.Errorf("a secret's value is on disk in %s", path)
		}
		return nil
	})
	if err := r.Stop(ctx, in.ID); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile("/proc/self/mounts"); strings.Contains(string(b), r.secretsPath(in.ID)) {
		t.Errorf("the instance's secrets tmpfs is still mounted after Stop")
	}
	if strings.HasPrefix(r.secretsPath(in.ID), r.cfg.Dir) {
		t.Errorf("the secrets tmpfs %s is inside the data folder, where backups copy it", r.secretsPath(in.ID))
	}
}

// TestStopUnmountsOnlyInItsFolder: an app that moves the folder above its
// volume and leaves a link to another mount in its place makes the stop
// detach its own volume where it now is, never the mount the link names.
func TestStopUnmountsOnlyInItsFolder(t *testing.T) {
	r := newRuntime(t)
	ctx := context.Background()
	victim, source := t.TempDir(), t.TempDir()
	if err := os.Mkdir(filepath.Join(victim, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", filepath.Join(victim, "data"), "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Unmount(filepath.Join(victim, "data"), syscall.MNT_DETACH) })
	os.WriteFile(filepath.Join(source, "kept"), []byte("data\n"), 0o644)

	in, err := r.Start(ctx, runtime.Spec{ID: "a.web.1", App: "a", Process: "web", StopTimeout: time.Second,
		Mounts:  []runtime.Mount{{Source: source, Target: "x/data", Env: "PADDOCK_VOLUME_DATA"}},
		Command: fmt.Sprintf("cat $PADDOCK_VOLUME_DATA/kept && mv x y && ln -s %s x && echo moved; exec sleep 100", victim)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(r.LogFile(in.Spec))
			t.Logf("the instance's log:\n%s", b)
		}
	})
	waitFor(t, r, in.ID, "moved", func(runtime.Instance) bool {
		b, _ := os.ReadFile(r.LogFile(in.Spec))
		return strings.Contains(string(b), " out data\n") && strings.Contains(string(b), " out moved\n")
	})
	if err := r.Stop(ctx, in.ID); err != nil {
		t.Errorf("stop: %v", err)
	}
	if m := mountedBelow(victim); len(m) != 1 {
		t.Errorf("the mount the app's link named: %v, want it still mounted", m)
	}
	if m := mountedBelow(r.cfg.Dir); len(m) != 0 {
		t.Errorf("left mounted in the runtime's folder: %v", m)
	}
	if b, err := os.ReadFile(filepath.Join(source, "kept")); err != nil || string(b) != "data\n" {
		t.Errorf("the volume's data after the stop: %q %v", b, err)
	}
}

// TestListApp: one app's instances, read from its folders alone.
func TestListApp(t *testing.T) {
	r := newRuntime(t)
	ctx := context.Background()
	for _, s := range []runtime.Spec{
		{ID: "shop.web.aaa111", App: "shop", AppID: 1, Process: "web"},
		{ID: "shop.worker.bbb222", App: "shop", AppID: 1, Process: "worker"},
		{ID: "shopx.web.ccc333", App: "shopx", AppID: 2, Process: "web"},
	} {
		s.Command, s.StopTimeout = "exec sleep 1000", time.Second
		if _, err := r.Start(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	all, err := r.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	shop, err := r.ListApp(ctx, "shop")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, in := range shop {
		got = append(got, in.ID)
	}
	if len(all) != 3 || strings.Join(got, " ") != "shop.web.aaa111 shop.worker.bbb222" {
		t.Errorf("List: %d instances; ListApp(shop): %v; want 3, and shop's two", len(all), got)
	}
}

// TestCheckCommand: the health check command runs inside the instance, as
// its user with its environment; a failure says why without the secrets it
// prints; a check that hangs is killed at its timeout, with what it forked.
func TestCheckCommand(t *testing.T) {
	r := newRuntime(t)
	ctx := context.Background()
	const secret = "s3cr3t-check-value-77d1"
	in, err := r.Start(ctx, runtime.Spec{ID: "a.web.12", App: "a", AppID: 1, Process: "web", UID: 123471, GID: 123471,
		Command: "sleep 0.3; touch ready; exec sleep 1000", StopTimeout: time.Second,
		Secrets: []runtime.Secret{{Name: "DB_PASSWORD", Value: []byte(secret)}},
		Check: &runtime.Check{Interval: 100 * time.Millisecond, Timeout: 300 * time.Millisecond,
			Command: `id -u > checked-by; test -f ready || { echo "no db with $DB_PASSWORD"; exit 3; }`}})
	if err != nil {
		t.Fatal(err)
	}
	failed := waitFor(t, r, in.ID, "failing its check", func(in runtime.Instance) bool { return in.Checked != nil && !in.Checked.OK })
	if want := "exited with code 3: no db with [REDACTED:DB_PASSWORD]"; failed.Checked.Message != want {
		t.Errorf("failed check: %q, want %q", failed.Checked.Message, want)
	}
	waitFor(t, r, in.ID, "passing its check", func(in runtime.Instance) bool { return in.Checked != nil && in.Checked.OK })
	if b, _ := os.ReadFile(filepath.Join(r.cfg.Dir, in.ID, "app", "checked-by")); strings.TrimSpace(string(b)) != "123471" {
		t.Errorf("the check ran as uid %q, want the app's 123471", b)
	}
	if b, _ := os.ReadFile(filepath.Join(r.cfg.Dir, in.ID, "state.json")); strings.Contains(string(b), secret) {
		t.Errorf("state.json holds the secret: %s", b)
	}
	if err := r.Stop(ctx, in.ID); err != nil {
		t.Fatal(err)
	}

	// A check that hangs, with a child in a session of its own.
	in, err = r.Start(ctx, runtime.Spec{ID: "a.web.13", App: "a", AppID: 1, Process: "web", UID: 123471, GID: 123471,
		Command: "exec sleep 1000", StopTimeout: time.Second,
		Check: &runtime.Check{Interval: 100 * time.Millisecond, Timeout: 200 * time.Millisecond,
			Command: `setsid sleep 1000 & echo $! >> hung.pids; exec sleep 1000`}})
	if err != nil {
		t.Fatal(err)
	}
	hung := waitFor(t, r, in.ID, "timing out", func(in runtime.Instance) bool { return in.Checked != nil && !in.Checked.OK })
	if want := "timed out after 200ms"; hung.Checked.Message != want {
		t.Errorf("hung check: %q, want %q", hung.Checked.Message, want)
	}
	b, _ := os.ReadFile(filepath.Join(r.cfg.Dir, in.ID, "app", "hung.pids"))
	if err := r.Stop(ctx, in.ID); err != nil {
		t.Fatal(err)
	}
	for _, f := range strings.Fields(string(b)) {
		pid, _ := strconv.Atoi(f)
		waitGoneT(t, pid, "a check's child")
	}
}
