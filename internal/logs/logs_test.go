package logs

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

func write(t *testing.T, path string, lines ...string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, l := range lines {
		f.WriteString(l + "\n")
	}
}

func TestReadMergesInTimeOrder(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "a.web.x1.log"), "2026-01-01T00:00:01.000000Z out one", "2026-01-01T00:00:03.000000Z out three", "garbage line")
	write(t, filepath.Join(dir, "a.worker.y2.log"), "2026-01-01T00:00:02.000000Z err two")
	write(t, filepath.Join(dir, "a.build.log"), "2026-01-01T00:00:00.000000Z out zero")
	got, err := readAll(dir, Query{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var texts []string
	for _, l := range got {
		texts = append(texts, l.Source+":"+l.Text)
	}
	if want := "build:zero web.x1:one worker.y2:two web.x1:three"; strings.Join(texts, " ") != want {
		t.Errorf("got %q, want %q", strings.Join(texts, " "), want)
	}
	got, _ = readAll(dir, Query{Source: "web.", Since: time.Date(2026, 1, 1, 0, 0, 2, 0, time.UTC)}, nil)
	if len(got) != 1 || got[0].Text != "three" {
		t.Errorf("web since :02: got %+v, want only three", got)
	}
}

func readAll(dir string, q Query, extra []Line) ([]Line, error) {
	var out []Line
	err := Read(dir, q, extra, func(l Line) error { out = append(out, l); return nil })
	return out, err
}

func texts(lines []Line) string {
	var s []string
	for _, l := range lines {
		s = append(s, l.Source+":"+l.Text)
	}
	return strings.Join(s, " ")
}

// TestReadTail: the last lines come from the ends of the files, the
// rotated one too, merged with the extra lines; since still applies.
func TestReadTail(t *testing.T) {
	dir := t.TempDir()
	ts := func(s int) string { return time.Date(2026, 1, 1, 0, 0, s, 0, time.UTC).Format(timeFormat) }
	write(t, filepath.Join(dir, "a.web.x1.log.1"), ts(1)+" out w1", ts(3)+" out w3")
	write(t, filepath.Join(dir, "a.web.x1.log"), ts(5)+" out w5", "damaged", ts(8)+" out w8")
	write(t, filepath.Join(dir, "a.worker.y2.log"), ts(2)+" out k2", ts(6)+" out k6", ts(7)+" err k7")
	events := []Line{{Time: time.Date(2026, 1, 1, 0, 0, 4, 0, time.UTC), Source: "paddock", Text: "e4"}, {Time: time.Date(2026, 1, 1, 0, 0, 9, 0, time.UTC), Source: "paddock", Text: "e9"}}
	for _, tc := range []struct {
		q    Query
		want string
	}{
		{Query{Tail: 3}, "worker.y2:k7 web.x1:w8 paddock:e9"},
		{Query{Tail: 6}, "paddock:e4 web.x1:w5 worker.y2:k6 worker.y2:k7 web.x1:w8 paddock:e9"},
		{Query{Tail: 100}, "web.x1:w1 worker.y2:k2 web.x1:w3 paddock:e4 web.x1:w5 worker.y2:k6 worker.y2:k7 web.x1:w8 paddock:e9"},
		{Query{Tail: 100, Source: "web."}, "web.x1:w1 web.x1:w3 paddock:e4 web.x1:w5 web.x1:w8 paddock:e9"},
		// The extra lines are the caller's to filter.
		{Query{Tail: 100, Since: time.Date(2026, 1, 1, 0, 0, 5, 0, time.UTC)}, "paddock:e4 web.x1:w5 worker.y2:k6 worker.y2:k7 web.x1:w8 paddock:e9"},
		{Query{Since: time.Date(2026, 1, 1, 0, 0, 5, 0, time.UTC)}, "paddock:e4 web.x1:w5 worker.y2:k6 worker.y2:k7 web.x1:w8 paddock:e9"},
		{Query{}, "web.x1:w1 worker.y2:k2 web.x1:w3 paddock:e4 web.x1:w5 worker.y2:k6 worker.y2:k7 web.x1:w8 paddock:e9"},
		// Grep: the tail counts matching lines, across rotated files too.
		{Query{Grep: regexp.MustCompile(`^w[135]$`)}, "web.x1:w1 web.x1:w3 web.x1:w5"},
		{Query{Tail: 2, Grep: regexp.MustCompile(`^w[135]$`)}, "web.x1:w3 web.x1:w5"},
		{Query{Tail: 2, Grep: regexp.MustCompile(`[ke][79]`)}, "worker.y2:k7 paddock:e9"},
		{Query{Grep: regexp.MustCompile(`nothing`)}, ""},
	} {
		got, err := readAll(dir, tc.q, events)
		if err != nil {
			t.Fatal(err)
		}
		if texts(got) != tc.want {
			t.Errorf("%+v: got %q, want %q", tc.q, texts(got), tc.want)
		}
	}
}

// TestReadTailOfALargeLog: the tail of a log reads its end, not all of it.
func TestReadTailOfALargeLog(t *testing.T) {
	dir := t.TempDir()
	f, err := Open(filepath.Join(dir, "a.web.x1.log"), 0)
	if err != nil {
		t.Fatal(err)
	}
	line := strings.Repeat("x", 1000)
	for i := 0; i < 20000; i++ { // 20 MB
		f.Line("out", line)
	}
	f.Line("out", "last")
	f.Close()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	got, err := readAll(dir, Query{Tail: 2}, nil)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[1].Text != "last" {
		t.Fatalf("got %d lines ending %q, want 2 ending \"last\"", len(got), got[len(got)-1].Text)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 1<<20 {
		t.Errorf("reading the last 2 lines of a 20 MB log allocated %d bytes", alloc)
	}
}

// TestLinesAreBounded: output without newlines is cut into lines of at
// most MaxLine bytes as it comes, never held whole.
func TestLinesAreBounded(t *testing.T) {
	var got []int
	w := NewLines(func(line []byte) { got = append(got, len(line)) })
	chunk := []byte(strings.Repeat("y", 1000))
	for i := 0; i < 100; i++ {
		w.Write(chunk)
	}
	w.Write([]byte("tail\nnext"))
	w.Flush()
	total := 0
	for i, n := range got {
		if n > MaxLine {
			t.Fatalf("line %d: %d bytes, over MaxLine", i, n)
		}
		total += n
	}
	if total != 100*1000+4+4 || got[len(got)-1] != 4 {
		t.Errorf("got lines of %v bytes, want 100,008 bytes in all, the last 4", got)
	}
	if cap(w.partial) > 2*MaxLine {
		t.Errorf("the writer holds %d bytes", cap(w.partial))
	}
}

func TestFileRotatesAndFollowerFollows(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "a.web.x1.log")
	f, err := Open(path, 200)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fl := NewFollower(dir, Query{})
	w := f.Stream("out")
	w.Write([]byte("first line\npartial"))
	w.Write([]byte(" done\n"))
	got := fl.Poll(context.Background())
	if len(got) != 2 || got[0].Text != "first line" || got[1].Text != "partial done" || got[1].Stream != "out" {
		t.Fatalf("poll: got %+v", got)
	}
	for i := 0; i < 10; i++ {
		f.Line("paddock", strings.Repeat("x", 40))
	}
	if _, err := os.Stat(path + ".1"); err != nil {
		t.Errorf("no rotation past the limit: %v", err)
	}
	if fi, _ := os.Stat(path); fi.Size() > 200 {
		t.Errorf("log grew to %d bytes, past its limit of 200", fi.Size())
	}
	if got := fl.Poll(context.Background()); len(got) == 0 {
		t.Errorf("follower lost the lines after a rotation")
	}
}

func TestPruneKeepsRunningInstances(t *testing.T) {
	dir := t.TempDir()
	old := time.Now().Add(-time.Hour)
	for _, name := range []string{"a.web.old.log", "a.web.live.log", "a.web.new.log"} {
		os.WriteFile(filepath.Join(dir, name), make([]byte, 100), 0o644)
	}
	os.Chtimes(filepath.Join(dir, "a.web.old.log"), old, old)
	os.Chtimes(filepath.Join(dir, "a.web.live.log"), old.Add(-time.Hour), old.Add(-time.Hour))
	if err := Prune(dir, 200, map[string]bool{"a.web.live": true}); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "a.web.live.log a.web.new.log" {
		t.Errorf("after prune: %v, want the live and the newest file", names)
	}
}

func FuzzParseLine(f *testing.F) {
	f.Add("2026-01-01T00:00:01.000000Z out hello world")
	f.Add("2026-01-01T00:00:01.000000Z paddock")
	f.Add("not a line")
	f.Fuzz(func(t *testing.T, s string) {
		l, ok := ParseLine(s)
		if !ok {
			return
		}
		again := l.Time.Format(timeFormat) + " " + l.Stream + " " + l.Text
		if l2, ok := ParseLine(again); !ok || l2 != l {
			t.Errorf("round trip of %q: got %+v, want %+v", s, l2, l)
		}
	})
}

// TestReadSkipsDamage: a line longer than any the writer makes is damage:
// both ways of reading skip it whole and go on with the rest of the file.
func TestReadSkipsDamage(t *testing.T) {
	dir := t.TempDir()
	ts := func(s int) string { return time.Date(2026, 1, 1, 0, 0, s, 0, time.UTC).Format(timeFormat) }
	write(t, filepath.Join(dir, "a.web.x1.log"), ts(1)+" out first", ts(2)+" out "+strings.Repeat("z", 3*maxReadLine), ts(3)+" out last")
	for _, q := range []Query{{}, {Tail: 10}} {
		got, err := readAll(dir, q, nil)
		if err != nil {
			t.Fatal(err)
		}
		if texts(got) != "web.x1:first web.x1:last" {
			t.Errorf("%+v: got %.200q, want first and last", q, texts(got))
		}
	}
}

// TestRateLimit: an app that writes faster than the rate keeps a
// second's lines and the rest are said to be dropped; the platform's notes
// are never dropped.
func TestRateLimit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.web.x1.log")
	f, err := Open(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.SetRate(1000)
	for i := 0; i < 5000; i++ {
		f.Line("out", "spam")
	}
	f.Line("paddock", "a note")
	time.Sleep(20 * time.Millisecond) // some tokens come back
	f.Line("out", "after")
	f.Close()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	spam := strings.Count(text, " out spam\n")
	dropped := 0
	for _, m := range regexp.MustCompile(` paddock (\d+) lines dropped: the app wrote more than 1000 lines a second\n`).FindAllStringSubmatch(text, -1) {
		n, _ := strconv.Atoi(m[1])
		dropped += n
	}
	// A slow machine lets the bucket refill meanwhile: more lines kept,
	// never all, and every line either kept or counted.
	if spam < 1000 || spam >= 5000 || dropped == 0 || spam+dropped != 5000 {
		t.Errorf("%d kept and %d reported dropped of 5000 at 1000 a second", spam, dropped)
	}
	if !strings.Contains(text, " paddock a note\n") || !strings.Contains(text, " out after\n") {
		t.Errorf("a note or a later line is missing")
	}
}

// BenchmarkCapture measures an instance's output captured and stored: lines
// of 100 bytes written to a stream, split, timestamped and appended to the
// log file.
func BenchmarkCapture(b *testing.B) {
	f, err := Open(filepath.Join(b.TempDir(), "a.web.x1.log"), 1<<30)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	w := f.Stream("out")
	line := []byte(strings.Repeat("x", 99) + "\n")
	chunk := bytes.Repeat(line, 64)
	b.SetBytes(int64(len(chunk)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		w.Write(chunk)
	}
	b.ReportMetric(float64(b.N*64)/b.Elapsed().Seconds(), "lines/s")
}
