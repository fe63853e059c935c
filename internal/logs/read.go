package logs

import (
	"bufio"
	"context"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

const timeFormat = "2006-01-02T15:04:05.000000Z"

// Line is one entry of a log.
type Line struct {
	Time   time.Time `json:"time"`
	Source string    `json:"source"` // "web.x1y2z3", "build", "paddock"
	Stream string    `json:"stream"` // "out", "err", "paddock"
	Text   string    `json:"text"`
}

// ParseLine parses one line of a log file; ok is false for a line that is
// not in the format.
func ParseLine(s string) (l Line, ok bool) {
	ts, rest, ok := strings.Cut(s, " ")
	if !ok {
		return l, false
	}
	t, err := time.Parse(timeFormat, ts)
	if err != nil {
		return l, false
	}
	stream, text, _ := strings.Cut(rest, " ")
	return Line{Time: t, Stream: stream, Text: text}, true
}

// Query selects lines of one app's log folder.
type Query struct {
	Source string    // only files whose source starts with this ("web." for web instances); "" for all
	Since  time.Time // only lines at or after this; zero for all
}

// source names a file's lines: "web.x1y2z3" for APP.web.x1y2z3.log.
func source(name string) string {
	name = strings.TrimSuffix(strings.TrimSuffix(name, ".1"), ".log")
	if _, rest, ok := strings.Cut(name, "."); ok {
		return rest
	}
	return name
}

func (q Query) match(name string) bool {
	if !strings.HasSuffix(name, ".log") && !strings.HasSuffix(name, ".log.1") {
		return false
	}
	return strings.HasPrefix(source(name), q.Source)
}

// Read returns the lines of dir's files that q selects, in time order.
func Read(dir string, q Query) ([]Line, error) {
	entries, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Line
	for _, e := range entries {
		if e.IsDir() || !q.match(e.Name()) {
			continue
		}
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // removed meanwhile
		}
		out = appendLines(out, f, source(e.Name()), q.Since)
		f.Close()
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Time.Before(out[j].Time) })
	return out, nil
}

func appendLines(out []Line, r io.Reader, src string, since time.Time) []Line {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l, ok := ParseLine(sc.Text())
		if !ok || l.Time.Before(since) {
			continue
		}
		l.Source = src
		out = append(out, l)
	}
	return out
}

// Follower reads what is appended to a log folder's files after it starts.
type Follower struct {
	dir     string
	q       Query
	offsets map[string]int64
}

// NewFollower starts following dir from the files' current ends.
func NewFollower(dir string, q Query) *Follower {
	f := &Follower{dir: dir, q: q, offsets: map[string]int64{}}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if fi, err := e.Info(); err == nil && q.match(e.Name()) {
			f.offsets[e.Name()] = fi.Size()
		}
	}
	return f
}

// Poll returns the complete lines appended since the last call, in time
// order. A file that shrank was rotated: it is read again from its start.
func (f *Follower) Poll(ctx context.Context) []Line {
	entries, _ := os.ReadDir(f.dir)
	var out []Line
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !f.q.match(name) || strings.HasSuffix(name, ".1") {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue
		}
		off := f.offsets[name]
		if fi.Size() < off {
			off = 0
		}
		if fi.Size() == off {
			continue
		}
		file, err := os.Open(filepath.Join(f.dir, name))
		if err != nil {
			continue
		}
		b := make([]byte, fi.Size()-off)
		n, _ := file.ReadAt(b, off)
		file.Close()
		b = b[:n]
		// Only whole lines: the rest is read next time.
		end := strings.LastIndexByte(string(b), '\n') + 1
		out = appendLines(out, strings.NewReader(string(b[:end])), source(name), time.Time{})
		f.offsets[name] = off + int64(end)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Time.Before(out[j].Time) })
	return out
}

// Prune deletes the oldest files of dir, except those in keep, until the
// folder holds at most max bytes.
func Prune(dir string, max int64, keep map[string]bool) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	type file struct {
		name string
		size int64
		mod  time.Time
	}
	var files []file
	var total int64
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil || e.IsDir() {
			continue
		}
		files = append(files, file{e.Name(), fi.Size(), fi.ModTime()})
		total += fi.Size()
	}
	sort.Slice(files, func(i, j int) bool { return files[i].mod.Before(files[j].mod) })
	for _, f := range files {
		if total <= max {
			break
		}
		if keep[strings.TrimSuffix(strings.TrimSuffix(f.name, ".1"), ".log")] {
			continue
		}
		if err := os.Remove(filepath.Join(dir, f.name)); err == nil {
			total -= f.size
		}
	}
	return nil
}
