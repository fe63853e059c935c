package audit

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// clock is an injected clock that advances one second a reading.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock {
	return &clock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Second)
	return c.t
}

// openLog opens a log on dir without background checkpoints and closes it
// at the end of the test.
func openLog(t *testing.T, dir string, c *clock) *Log {
	t.Helper()
	l, err := Open(t.Context(), Config{Dir: dir, Now: c.Now, CheckpointEvery: -1})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func mustAppend(t *testing.T, l *Log, e Event) Event {
	t.Helper()
	got, err := l.Append(t.Context(), e)
	if err != nil {
		t.Fatalf("Append %+v: %v", e, err)
	}
	return got
}

func ev(actor, action, target string) Event {
	return Event{Actor: actor, Token: "cli", Source: "127.0.0.1:5000", Action: action, Target: target, Outcome: OutcomeOK, RequestID: "req-" + actor}
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.TrimSuffix(string(b), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func writeLines(t *testing.T, path string, lines []string) {
	t.Helper()
	var b bytes.Buffer
	for _, l := range lines {
		b.WriteString(l + "\n")
	}
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

func decode(t *testing.T, line string) Event {
	t.Helper()
	var e Event
	if err := json.Unmarshal([]byte(line), &e); err != nil {
		t.Fatalf("decode %q: %v", line, err)
	}
	return e
}

func encode(t *testing.T, e Event) string {
	t.Helper()
	b, err := marshalEvent(e)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func logPath(dir string) string { return filepath.Join(dir, LogFile) }
func ckPath(dir string) string  { return filepath.Join(dir, CheckpointFile) }
func keyPath(dir string) string { return filepath.Join(dir, KeyFile) }
