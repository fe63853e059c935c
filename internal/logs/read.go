package logs

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
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

// String is the line as a log file has it, "TIME STREAM TEXT".
func (l Line) String() string {
	return l.Time.UTC().Format(timeFormat) + " " + l.Stream + " " + l.Text
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
	Tail   int       // only the last Tail lines; 0 for all
	// Grep, when set, keeps only the lines whose text it matches; Tail
	// then counts matching lines. Files are read a line at a time, never
	// whole.
	Grep *regexp.Regexp
}

// Keep reports whether a line's text passes the query's Grep.
func (q Query) Keep(text string) bool { return q.Grep == nil || q.Grep.MatchString(text) }

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

// maxReadLine bounds a line read back: the writer cuts lines at MaxLine,
// so a longer one is damage, skipped rather than held.
const maxReadLine = 1 << 20

// Read calls emit with the lines of dir's files that q selects, merged in
// time order with extra (lines from elsewhere, in time order, which q does
// not filter). It holds one line and a small buffer per file at a time,
// or with q.Tail, the last Tail lines of each file, read from the end: a
// log of any size costs no more memory than that.
func Read(dir string, q Query, extra []Line, emit func(Line) error) error {
	entries, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	// Each source is its rotated file, then its current one.
	bySource := map[string][]string{}
	var order []string
	for _, e := range entries {
		if e.IsDir() || !q.match(e.Name()) {
			continue
		}
		base := strings.TrimSuffix(e.Name(), ".1")
		if _, ok := bySource[base]; !ok {
			order = append(order, base)
		}
		if strings.HasSuffix(e.Name(), ".1") {
			bySource[base] = append([]string{filepath.Join(dir, e.Name())}, bySource[base]...)
		} else {
			bySource[base] = append(bySource[base], filepath.Join(dir, e.Name()))
		}
	}
	sort.Strings(order)
	if q.Tail > 0 {
		var all []Line
		for _, base := range order {
			all = append(all, tail(bySource[base], source(base), q, q.Tail)...)
		}
		var kept []Line
		for _, l := range extra {
			if q.Keep(l.Text) {
				kept = append(kept, l)
			}
		}
		all = append(all, kept[max(0, len(kept)-q.Tail):]...)
		sort.SliceStable(all, func(i, j int) bool { return all[i].Time.Before(all[j].Time) })
		for _, l := range all[max(0, len(all)-q.Tail):] {
			if err := emit(l); err != nil {
				return err
			}
		}
		return nil
	}
	streams := make([]stream, 0, len(order)+1)
	for _, base := range order {
		st := &fileStream{files: bySource[base], src: source(base), q: q}
		defer st.close()
		streams = append(streams, st)
	}
	var kept []Line
	for _, l := range extra {
		if q.Keep(l.Text) {
			kept = append(kept, l)
		}
	}
	ex := sliceStream(kept)
	streams = append(streams, &ex)
	heads := make([]*Line, len(streams))
	for i, st := range streams {
		heads[i] = st.next()
	}
	for {
		min := -1
		for i, h := range heads {
			if h != nil && (min < 0 || h.Time.Before(heads[min].Time)) {
				min = i
			}
		}
		if min < 0 {
			return nil
		}
		if err := emit(*heads[min]); err != nil {
			return err
		}
		heads[min] = streams[min].next()
	}
}

// stream yields lines in time order, or nil at its end.
type stream interface{ next() *Line }

// sliceStream yields lines from a slice.
type sliceStream []Line

func (s *sliceStream) next() *Line {
	if len(*s) == 0 {
		return nil
	}
	l := (*s)[0]
	*s = (*s)[1:]
	return &l
}

// fileStream reads the lines of a source's files in order, one at a time.
type fileStream struct {
	files []string
	src   string
	q     Query
	f     *os.File
	br    *bufio.Reader
	line  []byte
}

func (s *fileStream) next() *Line {
	for {
		if s.br == nil {
			if len(s.files) == 0 {
				return nil
			}
			f, err := os.Open(s.files[0])
			s.files = s.files[1:]
			if err != nil {
				continue // removed meanwhile
			}
			s.f, s.br = f, bufio.NewReaderSize(f, 4<<10)
		}
		line, err := s.readLine()
		if err != nil {
			s.close()
			continue
		}
		l, ok := ParseLine(string(line))
		if !ok || l.Time.Before(s.q.Since) || !s.q.Keep(l.Text) {
			continue
		}
		l.Source = s.src
		return &l
	}
}

// readLine returns the next line without its newline; a line longer than
// maxReadLine, which the writer never writes, is damage and skipped.
func (s *fileStream) readLine() ([]byte, error) {
	s.line = s.line[:0]
	for {
		part, err := s.br.ReadSlice('\n')
		if len(s.line)+len(part) <= maxReadLine {
			s.line = append(s.line, part...)
		} else {
			s.line = s.line[:0]
			for errors.Is(err, bufio.ErrBufferFull) { // skip to its end
				_, err = s.br.ReadSlice('\n')
			}
			if err != nil {
				return nil, err
			}
			continue
		}
		switch {
		case err == nil:
			return bytes.TrimSuffix(s.line, []byte("\n")), nil
		case errors.Is(err, bufio.ErrBufferFull):
		case errors.Is(err, io.EOF) && len(s.line) > 0:
			return s.line, nil // a last line without its newline
		default:
			return nil, err
		}
	}
}

func (s *fileStream) close() {
	if s.f != nil {
		s.f.Close()
		s.f, s.br = nil, nil
	}
}

// tail returns the last n lines at or after since of files (older first),
// reading each from its end.
func tail(files []string, src string, q Query, n int) []Line {
	var out []Line
	for i := len(files) - 1; i >= 0 && len(out) < n; i-- {
		lines, done := tailFile(files[i], src, q, n-len(out))
		out = append(lines, out...)
		if done {
			break // reached a line before since
		}
	}
	return out
}

// tailFile returns the last n lines of path at or after since, and whether
// it met an older line (so older files need not be read).
func tailFile(path, src string, q Query, n int) (lines []Line, done bool) {
	f, err := os.Open(path)
	if err != nil {
		return nil, false
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, false
	}
	const block = 64 << 10
	pos := fi.Size()
	var rest []byte // the end of a line whose start is in a block not read yet
	skip := false   // rest is the end of a line too long to be one: drop it whole
	var rev []Line  // newest first
	for pos > 0 && len(rev) < n && !done {
		size := min(block, pos)
		pos -= size
		buf := make([]byte, size, size+int64(len(rest)))
		if _, err := f.ReadAt(buf, pos); err != nil {
			break
		}
		buf = append(buf, rest...)
		end := len(buf)
		for len(rev) < n {
			i := bytes.LastIndexByte(buf[:end], '\n')
			if i < 0 && pos > 0 {
				break // the line goes on in the block before
			}
			line := buf[i+1 : end]
			end = max(i, 0)
			if skip {
				skip = false
			} else if l, ok := ParseLine(string(line)); ok {
				if l.Time.Before(q.Since) {
					done = true
					break
				}
				if q.Keep(l.Text) {
					l.Source = src
					rev = append(rev, l)
				}
			}
			if i < 0 {
				break
			}
		}
		rest = buf[:end]
		if len(rest) > maxReadLine {
			rest, skip = nil, true
		}
	}
	for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
		rev[i], rev[j] = rev[j], rev[i]
	}
	return rev, done
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
		// At most a megabyte a file each time: the rest comes next time.
		b := make([]byte, min(fi.Size()-off, maxReadLine))
		n, _ := file.ReadAt(b, off)
		file.Close()
		b = b[:n]
		// Only whole lines: the rest is read next time.
		end := bytes.LastIndexByte(b, '\n') + 1
		if end == 0 && n == maxReadLine {
			end = n // damage: a line longer than any written, skipped
		}
		out = appendLines(out, b[:end], source(name), f.q)
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

func appendLines(out []Line, b []byte, src string, q Query) []Line {
	for len(b) > 0 {
		line, rest, _ := bytes.Cut(b, []byte("\n"))
		b = rest
		if l, ok := ParseLine(string(line)); ok && q.Keep(l.Text) {
			l.Source = src
			out = append(out, l)
		}
	}
	return out
}
