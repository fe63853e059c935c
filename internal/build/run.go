// Package build turns an app's unpacked source into an immutable artifact:
// Run executes the manifest's build command in the source folder, in its own
// process group that is killed as a whole on timeout or cancellation, and
// Artifacts keeps the result as a content-addressed, deterministic
// tar.gz that any number of releases can share.
//
// Isolation of the build (its own user, its cgroup) is the caller's to set
// up: Run takes the full environment and nothing else from the server's
// process.
package build

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"paddock.dev/paddock/internal/isolate"
)

// Sentinel errors of Run, for errors.Is.
var (
	ErrTimeout = errors.New("build timed out")      // "build timed out after 5m0s"
	ErrFailed  = errors.New("build command failed") // "build command failed: exit status 2"
)

// Spec is one build to run.
type Spec struct {
	Dir     string        // the unpacked source; the command runs here
	Command string        // run with /bin/sh -c
	Timeout time.Duration // kill the whole process group after this; 0: no timeout but ctx's
	Env     []string      // the full environment; nil means empty, never the server's own
	Output  io.Writer     // combined stdout and stderr, streamed as it comes; nil: discarded
	// UID and GID run the command as that user, who is given Dir and
	// everything in it first (Dir must be out of the user's reach until
	// then: see isolate.GiveTree); 0 runs it as this process.
	UID, GID uint32
	// Cgroup is a fresh cgroup (v2) to run the build in: every process it
	// starts stays there, however it detaches, and all of them end with the
	// build. "" tracks the build by its process group only.
	Cgroup string
	// Started, if set, learns the process group of the running build, so
	// that a later process can end it if this one dies first.
	Started func(pgid int)
}

// outputDrain bounds how long Run waits, after the build is over and its
// process group killed, for the output pipe to close: a process that left
// the group (setsid) may hold it open forever.
const outputDrain = 2 * time.Second

// Run runs s.Command with /bin/sh -c in s.Dir, in a process group of its
// own. When the command exits, any process it left behind in its group is
// killed; on timeout or when ctx is done the whole group is killed with
// SIGKILL, and Run waits for it. A non-zero exit is an error wrapping
// ErrFailed ("build command failed: exit status 2"); a timeout wraps
// ErrTimeout ("build timed out after 5m0s"); a cancellation wraps ctx's error.
func Run(ctx context.Context, s Spec) error {
	if s.Command == "" {
		return errors.New("build: no command")
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("build canceled: %w", err)
	}
	out := s.Output
	if out == nil {
		out = io.Discard
	}
	if s.UID != 0 {
		if err := isolate.GiveTree(s.Dir, int(s.UID), int(s.GID)); err != nil {
			return fmt.Errorf("build: %w", err)
		}
	}
	runCtx := ctx
	if s.Timeout > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(ctx, s.Timeout)
		defer cancel()
	}

	// Our own pipe rather than exec's: cmd.Wait then returns when the shell
	// exits, not when the last process holding the pipe does, so the group
	// can be killed first and the output drained after.
	pr, pw, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("build: %w", err)
	}
	defer pr.Close()

	cmd := exec.Command("/bin/sh", "-c", s.Command)
	cmd.Dir = s.Dir
	cmd.Env = s.Env
	if cmd.Env == nil {
		cmd.Env = []string{} // nil would inherit os.Environ
	}
	cmd.Stdin = nil // /dev/null
	cmd.Stdout = pw
	cmd.Stderr = pw
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if s.UID != 0 {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: s.UID, Gid: s.GID, Groups: []uint32{}}
	}
	if s.Cgroup != "" {
		cg, err := isolate.Open(s.Cgroup)
		if err != nil {
			pw.Close()
			return fmt.Errorf("build: %w", err)
		}
		defer cg.Close()
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = int(cg.Fd())
	}
	err = cmd.Start()
	pw.Close()
	if err != nil {
		return fmt.Errorf("build: start: %w", err)
	}
	pgid := cmd.Process.Pid
	if s.Started != nil {
		s.Started(pgid)
	}

	copied := make(chan struct{})
	go func() {
		defer close(copied)
		_, _ = io.Copy(out, pr)
	}()

	// The killer stops before the group can be gone and its id reused.
	var (
		mu   sync.Mutex
		done bool
	)
	kill := func() {
		mu.Lock()
		defer mu.Unlock()
		if done {
			return
		}
		if s.Cgroup != "" {
			_ = isolate.Kill(s.Cgroup, 10*time.Second)
		} else {
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
		}
	}
	stop := context.AfterFunc(runCtx, kill)

	waitErr := cmd.Wait()
	killedByCtx := !stop()
	// Whatever the outcome, nothing of the build outlives it.
	kill()
	mu.Lock()
	done = true
	mu.Unlock()

	select {
	case <-copied:
	case <-time.After(outputDrain):
		pr.Close() // unblocks the copy
		<-copied
	}

	switch {
	case killedByCtx && ctx.Err() != nil:
		return fmt.Errorf("build canceled: %w", ctx.Err())
	case killedByCtx:
		return fmt.Errorf("%w after %s", ErrTimeout, s.Timeout)
	case waitErr != nil:
		var exitErr *exec.ExitError
		if errors.As(waitErr, &exitErr) {
			return fmt.Errorf("%w: %w", ErrFailed, exitErr)
		}
		return fmt.Errorf("build: %w", waitErr)
	}
	return nil
}
