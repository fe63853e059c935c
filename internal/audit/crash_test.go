package audit

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

func appendBytes(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

func TestOpenRecoversTornLastLine(t *testing.T) {
	tests := []struct {
		name   string
		events int
		file   func(dir string) string
		torn   func(t *testing.T, dir string) string
	}{
		{"partial event", 3, logPath, func(*testing.T, string) string { return `{"seq":4,"time":"2025-01-0` }},
		{"whole event without its newline", 3, logPath, func(t *testing.T, dir string) string {
			last := decode(t, readLines(t, logPath(dir))[2])
			e := Event{Seq: 4, Time: last.Time.Add(time.Second), Action: "apps.create", Outcome: OutcomeOK, Prev: last.Hash}
			e.Hash = HashEvent(e)
			return encode(t, e)
		}},
		{"zeros from a crash", 3, logPath, func(*testing.T, string) string { return strings.Repeat("\x00", 4096) }},
		{"only a torn line", 0, logPath, func(*testing.T, string) string { return `{"seq":1,` }},
		{"partial checkpoint", 3, ckPath, func(*testing.T, string) string { return `{"seq":3,"hash":"ab` }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			c := newClock()
			l := openLog(t, dir, c)
			var acked []Event
			for range tt.events {
				acked = append(acked, mustAppend(t, l, ev("alice", "apps.create", "app/shop")))
			}
			l.Close()
			appendBytes(t, tt.file(dir), tt.torn(t, dir))

			l = openLog(t, dir, c)
			got, err := l.List(t.Context(), Filter{})
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(acked) {
				t.Fatalf("events after recovery = %d, want %d", len(got), len(acked))
			}
			for i := range got {
				if got[i].Hash != acked[i].Hash {
					t.Errorf("event %d hash = %s, want %s", i+1, got[i].Hash, acked[i].Hash)
				}
			}
			next := mustAppend(t, l, ev("bob", "apps.create", "app/shop"))
			if got, want := next.Seq, uint64(tt.events+1); got != want {
				t.Errorf("next Seq = %d, want %d", got, want)
			}
			l.Close()
			if rep := Verify(t.Context(), dir, nil); rep.Err != nil || rep.Events != uint64(tt.events+1) {
				t.Errorf("Verify = %d events, err %v; want %d, nil", rep.Events, rep.Err, tt.events+1)
			}
		})
	}
}

func TestOpenRefusesDamage(t *testing.T) {
	tests := []struct {
		name    string
		tamper  func(t *testing.T, dir string)
		wantErr error
		wantMsg string
	}{
		{"malformed last line", func(t *testing.T, dir string) { appendBytes(t, logPath(dir), "garbage\n") }, ErrMalformed, "line 11"},
		{"edited last event", func(t *testing.T, dir string) {
			editLines(t, logPath(dir), func(l []string) []string {
				l[9] = strings.Replace(l[9], `"actor":"bob"`, `"actor":"bot"`, 1)
				return l
			})
		}, ErrHash, "line 10"},
		{"truncated below the last checkpoint", func(t *testing.T, dir string) {
			editLines(t, logPath(dir), func(l []string) []string { return l[:7] })
		}, ErrTruncated, "seq 10"},
		{"key removed", func(t *testing.T, dir string) { os.Remove(keyPath(dir)) }, ErrMissing, KeyFile},
		{"key replaced", func(t *testing.T, dir string) {
			if err := os.WriteFile(keyPath(dir), newKey(t).Seed(), 0o600); err != nil {
				t.Fatal(err)
			}
		}, ErrSignature, CheckpointFile},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, _ := fixture(t)
			tt.tamper(t, dir)
			l, err := Open(t.Context(), Config{Dir: dir})
			if err == nil {
				l.Close()
			}
			if !errors.Is(err, tt.wantErr) || !strings.Contains(fmt.Sprint(err), tt.wantMsg) {
				t.Errorf("Open err = %v, want %v naming %q", err, tt.wantErr, tt.wantMsg)
			}
		})
	}
}

// TestAcknowledgedEventsSurviveKill appends from a child process, kills it
// with SIGKILL in the middle of its appends and checks that every event whose
// Append returned is in the reopened log and that the chain verifies.
func TestAcknowledgedEventsSurviveKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$")
	cmd.Env = append(os.Environ(), "AUDIT_CRASH_DIR="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := make(map[uint64]string)
	sc := bufio.NewScanner(out)
	for sc.Scan() && len(acked) < 300 {
		var seq uint64
		var id string
		if _, err := fmt.Sscanf(sc.Text(), "ack %d %s", &seq, &id); err == nil {
			acked[seq] = id
		}
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	if len(acked) < 300 {
		t.Fatalf("child acknowledged %d events before it stopped, want 300", len(acked))
	}

	l := openLog(t, dir, newClock())
	got, err := l.List(t.Context(), Filter{Limit: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	found := make(map[uint64]string, len(got))
	for _, e := range got {
		found[e.Seq] = e.RequestID
	}
	for seq, id := range acked {
		if found[seq] != id {
			t.Errorf("acknowledged event %d: request id %q after reopen, want %q", seq, found[seq], id)
		}
	}
	t.Logf("%d acknowledged, %d on disk", len(acked), len(got))
	l.Close()
	if rep := Verify(t.Context(), dir, nil); rep.Err != nil {
		t.Errorf("Verify after kill: %v", rep.Err)
	}
}

// TestCrashChild is the child of TestAcknowledgedEventsSurviveKill: it
// appends until killed and prints each acknowledged seq.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv("AUDIT_CRASH_DIR")
	if dir == "" {
		t.Skip("child of TestAcknowledgedEventsSurviveKill")
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	l, err := Open(ctx, Config{Dir: dir, CheckpointEvery: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				e := ev("alice", "apps.create", "app/shop")
				e.RequestID = fmt.Sprintf("w%d-%d", w, i)
				got, err := l.Append(ctx, e)
				if err != nil {
					return
				}
				mu.Lock()
				fmt.Printf("ack %d %s\n", got.Seq, got.RequestID)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
}
