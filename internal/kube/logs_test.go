package kube

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"paddock.dev/paddock/internal/logs"
)

// TestCopyLines: a stream that starts again after a container restart
// repeats nothing written already, and a pod that prints without newlines
// is copied in pieces, never held whole.
func TestCopyLines(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	stamp := func(d time.Duration, text string) string {
		return t0.Add(d).Format(time.RFC3339Nano) + " " + text + "\n"
	}

	var out bytes.Buffer
	last := copyLines(strings.NewReader(stamp(0, "one")+stamp(time.Millisecond, "two")), &out, time.Time{})
	if got, want := out.String(), "one\ntwo\n"; got != want {
		t.Fatalf("first stream wrote %q, want %q", got, want)
	}
	if !last.Equal(t0.Add(time.Millisecond)) {
		t.Fatalf("last = %v, want the second line's time", last)
	}
	// The next stream starts at the second: it repeats both lines.
	out.Reset()
	copyLines(strings.NewReader(stamp(0, "one")+stamp(time.Millisecond, "two")+stamp(2*time.Millisecond, "three")), &out, last)
	if got, want := out.String(), "three\n"; got != want {
		t.Errorf("the stream after a restart wrote %q, want only %q", got, want)
	}

	// 1 MiB without a newline goes through in pieces of at most a line's
	// buffer.
	flood := strings.Repeat("x", 1<<20)
	w := &maxWrite{}
	copyLines(strings.NewReader(stamp(time.Second, flood)), w, time.Time{})
	if w.total != len(flood)+1 || w.max > logs.MaxLine {
		t.Errorf("a line of %d bytes: %d written, largest write %d; want all of it in writes of at most %d", len(flood), w.total, w.max, logs.MaxLine)
	}
}

type maxWrite struct{ total, max int }

func (m *maxWrite) Write(p []byte) (int, error) {
	m.total += len(p)
	m.max = max(m.max, len(p))
	return len(p), nil
}
