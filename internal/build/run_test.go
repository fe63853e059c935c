package build

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"paddock.dev/paddock/internal/isolate"
)

// syncBuffer is a bytes.Buffer safe to read while Run writes to it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestRun(t *testing.T) {
	t.Setenv("PADDOCK_TEST_LEAK", "leaked")
	dir := t.TempDir()
	tests := []struct {
		name       string
		spec       Spec
		wantOutput string
		wantErr    error
		wantMsg    string
	}{
		{
			name:       "success with stdout and stderr",
			spec:       Spec{Command: "echo out; echo err >&2; echo out again"},
			wantOutput: "out\nerr\nout again\n",
		},
		{
			name:       "runs in Dir",
			spec:       Spec{Command: "pwd", Dir: dir},
			wantOutput: dir + "\n",
		},
		{
			name:       "only the given environment",
			spec:       Spec{Command: `echo "$FOO ${HOME:-no-home} ${PADDOCK_TEST_LEAK:-not-inherited}"`, Env: []string{"FOO=bar"}},
			wantOutput: "bar no-home not-inherited\n",
		},
		{
			name:       "nil environment is empty",
			spec:       Spec{Command: `echo "${HOME:-no-home}"`},
			wantOutput: "no-home\n",
		},
		{
			name:       "failure with its exit status",
			spec:       Spec{Command: "echo compiling; exit 2"},
			wantOutput: "compiling\n",
			wantErr:    ErrFailed,
			wantMsg:    "build command failed: exit status 2",
		},
		{
			name:    "command not found",
			spec:    Spec{Command: "no-such-command-anywhere"},
			wantErr: ErrFailed,
			wantMsg: "build command failed: exit status 127",
		},
		{
			name:       "leftover background process does not hold the build",
			spec:       Spec{Command: "sleep 100 & echo done", Timeout: time.Minute},
			wantOutput: "done\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out syncBuffer
			tt.spec.Output = &out
			start := time.Now()
			err := Run(t.Context(), tt.spec)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Run: got %v, want %v", err, tt.wantErr)
			}
			if tt.wantMsg != "" && err.Error() != tt.wantMsg {
				t.Errorf("Run error: got %q, want %q", err, tt.wantMsg)
			}
			if tt.wantOutput != "" || tt.wantErr == nil {
				if got := out.String(); got != tt.wantOutput {
					t.Errorf("output: got %q, want %q", got, tt.wantOutput)
				}
			}
			if d := time.Since(start); d > outputDrain {
				t.Errorf("Run took %v, want less than %v", d, outputDrain)
			}
		})
	}
}

// notifyWriter signals when the output contains a word.
type notifyWriter struct {
	syncBuffer
	word string
	once sync.Once
	seen chan struct{}
}

func (w *notifyWriter) Write(p []byte) (int, error) {
	n, err := w.syncBuffer.Write(p)
	if strings.Contains(w.String(), w.word) {
		w.once.Do(func() { close(w.seen) })
	}
	return n, err
}

func TestRunStreamsOutputAndCancels(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	w := &notifyWriter{word: "started", seen: make(chan struct{})}
	go func() {
		<-w.seen // streamed while the command still runs
		cancel()
	}()
	start := time.Now()
	err := Run(ctx, Spec{Command: "echo started; sleep 100", Output: w})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: got %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Run took %v after cancel, want it to kill the build at once", d)
	}
}

func TestRunTimeoutKillsTheGroup(t *testing.T) {
	dir := t.TempDir()
	start := time.Now()
	err := Run(t.Context(), Spec{
		Dir:     dir,
		Command: "sleep 100 & echo $! > grandchild.pid; sleep 100",
		Timeout: 300 * time.Millisecond,
	})
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("Run: got %v, want ErrTimeout", err)
	}
	if got, want := err.Error(), "build timed out after 300ms"; got != want {
		t.Errorf("Run error: got %q, want %q", got, want)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Run took %v, want it to return soon after the timeout", d)
	}
	pid := readPid(t, filepath.Join(dir, "grandchild.pid"))
	waitDead(t, pid)
}

func TestRunLeftoverIsKilled(t *testing.T) {
	dir := t.TempDir()
	if err := Run(t.Context(), Spec{Dir: dir, Command: "sleep 100 & echo $! > bg.pid"}); err != nil {
		t.Fatalf("Run: %v", err)
	}
	waitDead(t, readPid(t, filepath.Join(dir, "bg.pid")))
}

func TestRunEscapedProcessCannotHoldRun(t *testing.T) {
	dir := t.TempDir()
	start := time.Now()
	// setsid leaves the build's process group, keeping the output pipe open.
	err := Run(t.Context(), Spec{Dir: dir, Command: "command -v setsid >/dev/null || exit 99; setsid sh -c 'echo $$ > escaped.pid; exec sleep 100' & while [ ! -s escaped.pid ]; do sleep 0.01; done", Env: []string{"PATH=/usr/bin:/bin"}})
	if errors.Is(err, ErrFailed) && strings.Contains(err.Error(), "99") {
		t.Skip("no setsid")
	}
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	pid := readPid(t, filepath.Join(dir, "escaped.pid"))
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err != nil {
		t.Fatalf("the escaped process %d: got %v, want it still running (it left the group)", pid, err)
	}
	if d := time.Since(start); d > outputDrain+5*time.Second {
		t.Errorf("Run took %v, want at most about %v", d, outputDrain)
	}
}

func readPid(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// waitDead waits for pid to be gone (or a zombie nobody has reaped yet).
func waitDead(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return // gone
		}
		// The state follows the command name in parentheses.
		if i := bytes.LastIndexByte(stat, ')'); i > 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
			return
		}
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("process %d still runs after the build: got alive, want killed", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRunInCgroupEndsEverything: in a cgroup, a process that starts a
// session of its own ends with the build, on success and on timeout alike.
func TestRunInCgroupEndsEverything(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root (the tests run as root, as CI does): it makes cgroups")
	}
	tr, err := isolate.NewTracker("paddock-test-build-" + strconv.Itoa(os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { isolate.Kill(tr.Dir(), 5*time.Second); isolate.Remove(tr.Dir()) })
	for i, tc := range []struct {
		name    string
		command string
		timeout time.Duration
		want    error
	}{
		{"success", "setsid sleep 100 & echo $! > escaped.pid; while [ ! -s escaped.pid ]; do sleep 0.01; done", 0, nil},
		{"timeout", "setsid sleep 100 & echo $! > escaped.pid; sleep 100", 500 * time.Millisecond, ErrTimeout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cg, err := tr.Group(1, isolate.Builds, strconv.Itoa(i))
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			err = Run(t.Context(), Spec{Dir: dir, Command: tc.command, Timeout: tc.timeout, Cgroup: cg, Env: []string{"PATH=/usr/bin:/bin"}})
			if !errors.Is(err, tc.want) {
				t.Fatalf("Run: got %v, want %v", err, tc.want)
			}
			pid := readPid(t, filepath.Join(dir, "escaped.pid"))
			waitDead(t, pid)
			if d := time.Since(start); d > outputDrain {
				t.Errorf("Run took %v: it waited for the output of a process it could have killed", d)
			}
			if isolate.Populated(cg) {
				t.Errorf("processes are left in the build's cgroup")
			}
		})
	}
}
