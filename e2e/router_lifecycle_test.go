package e2e

import (
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"paddock.dev/paddock/internal/router"
	"paddock.dev/paddock/internal/testenv"
)

// TestRouterLifecycle: the server recovers from a router that holds its
// folder but no longer answers, and `paddock down` ends the router it runs.
func TestRouterLifecycle(t *testing.T) {
	p := testenv.Start(t)
	state := filepath.Join(p.Data, "router")
	hung, err := router.ReadInfo(state)
	if err != nil {
		t.Fatal(err)
	}
	p.Stop()
	syscall.Kill(hung.PID, syscall.SIGSTOP)
	t.Cleanup(func() { syscall.Kill(hung.PID, syscall.SIGKILL) })
	p.Up()
	info, err := router.ReadInfo(state)
	if err != nil || info.PID == hung.PID || info.Listen != hung.Listen {
		t.Fatalf("router after a hung one: %+v (%v), want a new process on %s", info, err, hung.Listen)
	}
	if !waitGone(hung.PID, 10*time.Second) {
		t.Errorf("the hung router (pid %d) is still there", hung.PID)
	}
	if code, _, err := p.Get("nothing.localhost", "/"); err != nil || code != 404 {
		t.Errorf("GET through the new router: %d, %v; want 404", code, err)
	}

	p.MustRun("down", "--yes")
	p.WaitExit(30 * time.Second)
	if !waitGone(info.PID, 20*time.Second) {
		t.Errorf("the router (pid %d) outlived paddock down", info.PID)
	}
}

func waitGone(pid int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for pidAlive(pid) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}
