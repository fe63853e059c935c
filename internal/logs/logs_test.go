package logs

import (
	"context"
	"os"
	"path/filepath"
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
	got, err := Read(dir, Query{})
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
	got, _ = Read(dir, Query{Source: "web.", Since: time.Date(2026, 1, 1, 0, 0, 2, 0, time.UTC)})
	if len(got) != 1 || got[0].Text != "three" {
		t.Errorf("web since :02: got %+v, want only three", got)
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
