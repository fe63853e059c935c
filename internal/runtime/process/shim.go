package process

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode"

	"paddock.dev/paddock/internal/isolate"
	"paddock.dev/paddock/internal/logs"
	"paddock.dev/paddock/internal/runtime"
	"paddock.dev/paddock/internal/secrets"
)

// Restart policy: the delay doubles from restartBase with each crash that
// comes within stableAfter of a start, up to restartMax; from crashLoopAfter
// such crashes in a row the instance is reported as a crash loop.
const (
	restartBase    = time.Second
	restartMax     = time.Minute
	stableAfter    = 30 * time.Second
	crashLoopAfter = 3
	appLineRate    = 10000 // lines a second an instance's log keeps
)

// newShim prepares the supervision of the instance in dir: its spec, its
// log, the redactor of its secrets (given holds them all) and its memory
// cgroup.
func newShim(dir string, given []runtime.Secret) (*shim, error) {
	var ss shimSpec
	if err := readJSON(filepath.Join(dir, "spec.json"), &ss); err != nil {
		return nil, fmt.Errorf("read spec: %w", err)
	}
	out, err := logs.Open(ss.LogFile, ss.LogLimit)
	if err != nil {
		return nil, err
	}
	// An app that floods its output loses lines, not the machine's disk
	// or the platform's time.
	out.SetRate(appLineRate)

	sh := &shim{dir: dir, spec: ss, logs: out}
	if len(given) > 0 {
		sh.secretEnv = secretsEnv(envSecrets(given))
		values := make(map[string][]byte, len(given))
		for _, s := range given {
			values[s.Name] = s.Value
		}
		sh.redactor = secrets.NewRedactor(values)
	}
	sh.st = shimState{ShimPID: os.Getpid(), State: runtime.StateStarting}
	if ss.Memory > 0 {
		sh.st.Cgroup, sh.st.MemoryLimit = createCgroup(ss.ID, ss.Track, ss.Memory)
		if sh.st.Cgroup == "" {
			out.Line("paddock", "memory limit not enforced: "+sh.st.MemoryLimit)
		}
	}
	if err := sh.save(); err != nil {
		out.Close()
		return nil, err
	}
	return sh, nil
}

// supervise supervises the instance until stop is closed: it restarts the
// process when it exits, with backoff, and keeps state.json current.
func (sh *shim) supervise(stop <-chan struct{}) {
	defer sh.logs.Close()
	crashes := 0
	for {
		exited, started := sh.start()
		done := make(chan struct{})
		checked := make(chan runtime.CheckResult)
		if sh.spec.Check != nil && sh.st.State == runtime.StateRunning {
			go sh.checks(done, checked)
		}
		var exit error
	running:
		for {
			select {
			case exit = <-exited:
				break running
			case r := <-checked:
				sh.st.Checked = &r
				sh.save()
			case <-stop:
				close(done)
				sh.terminate(exited)
				return
			}
		}
		close(done)
		sh.st.Checked = nil
		// Whatever the main process leaves behind goes with it, or it
		// would hold the port against the restart.
		sh.killAll()
		sh.flushOutput()
		if _, err := os.Stat(filepath.Join(sh.dir, "spec.json")); errors.Is(err, fs.ErrNotExist) {
			// The runtime removed the instance, with a stop that never
			// reached this supervisor: nothing is left to restart.
			return
		}
		desc := sh.describe(exit)
		if time.Since(started) >= stableAfter {
			crashes = 0
		}
		crashes++
		delay := min(restartBase<<min(crashes-1, 10), restartMax)
		sh.st.Restarts++
		sh.st.LastExit = desc
		sh.st.PID = 0
		sh.st.State = runtime.StateBackoff
		if crashes >= crashLoopAfter {
			sh.st.State = runtime.StateCrashLoop
		}
		// The log first: whoever sees the state finds the line.
		sh.logs.Line("paddock", fmt.Sprintf("process %s; restarting in %s", desc, delay))
		sh.save()
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-stop:
			t.Stop()
			sh.stopped()
			return
		}
	}
}

// shim supervises one instance.
type shim struct {
	dir       string
	spec      shimSpec
	logs      *logs.File
	st        shimState
	oomBefore int64
	runs      int    // processes started, each in a cgroup of its own
	run       string // the running process's cgroup (v2); "" without one
	secretEnv []string
	redactor  *secrets.Redactor // nil without secrets
	flush     []func() error    // the running process's output writers
}

// output returns the writer of a stream of the process's output: its log,
// through the redactor when the instance has secrets, which then holds back
// the start of what could be a secret until the rest arrives.
func (sh *shim) output(stream string) io.Writer {
	w := sh.logs.Stream(stream)
	if sh.redactor == nil {
		return w
	}
	rw := sh.redactor.NewWriter(w)
	sh.flush = append(sh.flush, rw.Flush)
	return rw
}

// flushOutput passes on what the redactors held back of an ended process.
func (sh *shim) flushOutput() {
	for _, f := range sh.flush {
		f()
	}
	sh.flush = nil
}

func (sh *shim) save() error {
	return writeJSON(filepath.Join(sh.dir, "state.json"), sh.st)
}

// start starts the process; the channel gets its exit. A process that
// cannot start at all counts as one that exited at once.
func (sh *shim) start() (<-chan error, time.Time) {
	exited := make(chan error, 1)
	cmd := sh.command(sh.spec.Command)
	cmd.Stdout = sh.output("out")
	cmd.Stderr = sh.output("err")
	if sh.spec.Track != "" {
		// Born inside the instance's cgroup: no process of it ever runs
		// outside, whatever it forks or however it detaches. Each start
		// gets a fresh cgroup below it: this kernel kills whatever is
		// cloned into a cgroup that was killed once.
		sh.runs++
		sh.run = filepath.Join(sh.spec.Track, "run-"+strconv.Itoa(sh.runs))
		if err := os.Mkdir(sh.run, 0o755); err != nil {
			exited <- fmt.Errorf("create cgroup: %w", err)
			return exited, time.Now()
		}
		fd, err := sh.inCgroup(cmd)
		if err != nil {
			exited <- err
			return exited, time.Now()
		}
		defer fd.Close()
	}
	// Output still held open by a stray grandchild must not keep the shim
	// from seeing the exit.
	cmd.WaitDelay = time.Second
	sh.oomBefore = cgroupOOMKills(sh.st.Cgroup)
	now := time.Now()
	if err := cmd.Start(); err != nil {
		exited <- err
		return exited, now
	}
	sh.st.PID = cmd.Process.Pid
	sh.st.StartedAt = now.UTC()
	sh.st.State = runtime.StateRunning
	sh.save()
	sh.logs.Line("paddock", fmt.Sprintf("started pid %d: %s", cmd.Process.Pid, sh.spec.Command))
	go func() { exited <- cmd.Wait() }()
	return exited, now
}

// command returns a command that runs script as the instance's process
// runs: as its user, in its folder, with its environment, in a process
// group of its own.
func (sh *shim) command(script string) *exec.Cmd {
	cmd := exec.Command("/bin/sh", "-c", script)
	if sh.st.Cgroup != "" && sh.st.Cgroup != sh.spec.Track {
		// Join the v1 memory cgroup between fork and exec, through this
		// binary, so that no process of the instance ever runs outside it
		// (the cgroup v2 it is born in stays its own). The shim
		// may outlive its binary's file (`go run` deletes it, an upgrade
		// replaces it): /proc/self/exe still opens the running one.
		cmd = exec.Command("/proc/self/exe", "cgexec", sh.st.Cgroup,
			strconv.FormatUint(uint64(sh.spec.UID), 10), strconv.FormatUint(uint64(sh.spec.GID), 10),
			"/bin/sh", "-c", script)
	} else if sh.spec.UID != 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: sh.spec.UID, Gid: sh.spec.GID, Groups: []uint32{}}}
	}
	cmd.Dir = filepath.Join(sh.dir, "app")
	cmd.Env = append(append(append([]string{}, sh.spec.Env...), sh.secretEnv...), "PORT="+strconv.Itoa(sh.spec.Port), "HOME="+cmd.Dir)
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	return cmd
}

// inCgroup makes cmd start inside the running process's cgroup (v2); the
// caller closes the descriptor once cmd started.
func (sh *shim) inCgroup(cmd *exec.Cmd) (*os.File, error) {
	fd, err := isolate.Open(sh.run)
	if err != nil {
		return nil, err
	}
	cmd.SysProcAttr.UseCgroupFD = true
	cmd.SysProcAttr.CgroupFD = int(fd.Fd())
	return fd, nil
}

// checks runs the health check command until done is closed, sending each
// result: 5 ms after the process started, then twice as long each time, up
// to a quarter of a second, until it first passes; then every interval.
func (sh *shim) checks(done <-chan struct{}, results chan<- runtime.CheckResult) {
	c := sh.spec.Check
	wait, passed := 5*time.Millisecond, false
	for {
		select {
		case <-done:
			return
		case <-time.After(wait):
		}
		r := sh.check(c)
		select {
		case results <- r:
		case <-done:
			return
		}
		passed = passed || r.OK
		if passed {
			wait = c.Interval
		} else {
			wait = min(wait*2, 250*time.Millisecond, c.Interval)
		}
	}
}

// check runs the health check command once. Its processes live in the
// instance's cgroup, so that they count against its limits and go with it.
func (sh *shim) check(c *runtime.Check) runtime.CheckResult {
	cmd := sh.command(c.Command)
	var out tail
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = time.Second
	timedOut := false
	err := func() error {
		if sh.run != "" {
			fd, err := sh.inCgroup(cmd)
			if err != nil {
				return err
			}
			defer fd.Close()
		}
		return cmd.Start()
	}()
	if err == nil {
		pgid := cmd.Process.Pid
		timer := time.AfterFunc(c.Timeout, func() { syscall.Kill(-pgid, syscall.SIGKILL) })
		err = cmd.Wait()
		timedOut = !timer.Stop()
	}
	r := runtime.CheckResult{OK: err == nil, At: time.Now().UTC()}
	if err == nil {
		return r
	}
	var ee *exec.ExitError
	switch {
	case timedOut:
		r.Message = "timed out after " + c.Timeout.String()
	case errors.As(err, &ee):
		r.Message = fmt.Sprintf("exited with code %d", ee.ExitCode())
	default:
		r.Message = "failed to start: " + err.Error()
	}
	if line := out.lastLine(); line != "" {
		r.Message += ": " + line
	}
	if sh.redactor != nil {
		r.Message = sh.redactor.RedactString(r.Message)
	}
	return r
}

// tail keeps the end of a check's output: its last line is the reason
// it gives.
type tail struct{ b []byte }

const tailMax = 512

func (t *tail) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > tailMax {
		t.b = append(t.b[:0], t.b[len(t.b)-tailMax:]...)
	}
	return len(p), nil
}

// lastLine is the last line that is not blank, printable and at most 200
// bytes long.
func (t *tail) lastLine() string {
	lines := strings.Split(strings.TrimSpace(string(t.b)), "\n")
	line := strings.TrimSpace(lines[len(lines)-1])
	line = strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return '?'
	}, strings.ToValidUTF8(line, "?"))
	if len(line) > 200 {
		line = strings.ToValidUTF8(line[:200], "") + "…"
	}
	return line
}

func (sh *shim) describe(err error) string {
	if cgroupOOMKills(sh.st.Cgroup) > sh.oomBefore {
		return fmt.Sprintf("OOM-killed (memory limit %d MiB)", sh.spec.Memory>>20)
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return "killed by signal " + ws.Signal().String()
		}
		return fmt.Sprintf("exited with code %d", ee.ExitCode())
	}
	if err == nil {
		return "exited with code 0"
	}
	return "failed to start: " + err.Error()
}

// killAll kills every process of the instance: its cgroup, else its
// process group.
func (sh *shim) killAll() {
	if sh.spec.Track != "" {
		if err := isolate.Kill(sh.spec.Track, 10*time.Second); err != nil {
			sh.logs.Line("paddock", err.Error())
			return
		}
		// The killed runs' cgroups go; the instance's stays for the next.
		ents, _ := os.ReadDir(sh.spec.Track)
		for _, e := range ents {
			if e.IsDir() {
				isolate.Remove(filepath.Join(sh.spec.Track, e.Name()))
			}
		}
	} else if sh.st.PID > 0 {
		syscall.Kill(-sh.st.PID, syscall.SIGKILL)
	}
}

// terminate stops the instance: SIGTERM to all its processes, then SIGKILL
// after the stop timeout.
func (sh *shim) terminate(exited <-chan error) {
	sh.st.State = runtime.StateStopping
	sh.save()
	if pid := sh.st.PID; pid > 0 {
		// Every process of the instance gets SIGTERM once: through its
		// cgroup, which holds those that left the process group too.
		if sh.spec.Track != "" {
			isolate.Signal(sh.spec.Track, syscall.SIGTERM)
		} else {
			syscall.Kill(-pid, syscall.SIGTERM)
		}
		timeout := sh.spec.StopTimeout
		if timeout <= 0 {
			timeout = 10 * time.Second
		}
		select {
		case <-exited:
			sh.logs.Line("paddock", "stopped")
		case <-time.After(timeout):
			syscall.Kill(-pid, syscall.SIGKILL)
			<-exited
			sh.logs.Line("paddock", fmt.Sprintf("stopped with SIGKILL after %s", timeout))
		}
		// Children that left the main process behind go too.
		sh.killAll()
	}
	sh.flushOutput()
	sh.stopped()
}

func (sh *shim) stopped() {
	sh.st.State = runtime.StateStopped
	sh.st.PID = 0
	sh.save()
}

// CgroupExec runs as `paddock cgexec CGROUP UID GID ARGV...`: it moves
// itself into the cgroup, becomes UID and GID unless they are 0, then
// replaces itself with ARGV.
func CgroupExec(cgroup, uid, gid string, argv []string) error {
	if err := joinCgroup(cgroup, os.Getpid()); err != nil {
		return err
	}
	u, err := strconv.Atoi(uid)
	if err != nil {
		return fmt.Errorf("cgexec: uid %q: %w", uid, err)
	}
	g, err := strconv.Atoi(gid)
	if err != nil {
		return fmt.Errorf("cgexec: gid %q: %w", gid, err)
	}
	if u != 0 {
		if err := syscall.Setgroups(nil); err != nil {
			return fmt.Errorf("cgexec: %w", err)
		}
		if err := syscall.Setgid(g); err != nil {
			return fmt.Errorf("cgexec: %w", err)
		}
		if err := syscall.Setuid(u); err != nil {
			return fmt.Errorf("cgexec: %w", err)
		}
	}
	return syscall.Exec(argv[0], argv, os.Environ())
}
