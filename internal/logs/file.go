// Package logs keeps app output on disk, one file per source with one
// timestamped line per entry, and reads them back merged in time order.
//
// A line is "TIME STREAM TEXT": TIME in UTC with microseconds, STREAM one
// word ("out", "err", "paddock" for the platform's own notes).
package logs

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// File writes timestamped lines, "TIME STREAM TEXT", to one file and
// rotates it to FILE.1 when it grows past its limit, so an instance's log
// takes at most twice the limit on disk.
type File struct {
	mu    sync.Mutex
	path  string
	limit int64
	f     *os.File
	size  int64
	buf   []byte // the line being written

	// At most rate lines a second of the app's own streams are kept
	// (a token bucket of a second's lines); the others are counted and
	// said to be dropped.
	rate    float64
	tokens  float64
	last    time.Time
	dropped int64
}

// SetRate keeps at most n lines a second of the app's streams (not the
// platform's notes); 0 keeps all.
func (l *File) SetRate(n int) {
	l.mu.Lock()
	l.rate, l.tokens = float64(n), float64(n)
	l.mu.Unlock()
}

// Open opens path for appending, creating it and its folder as needed.
func Open(path string, limit int64) (*File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	l := &File{path: path, limit: limit}
	return l, l.open()
}

func (l *File) open() error {
	f, err := os.OpenFile(l.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	l.f, l.size = f, fi.Size()
	return nil
}

// Line writes one line from stream.
func (l *File) Line(stream, text string) {
	l.write(stream, []byte(text))
}

func (l *File) write(stream string, text []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return
	}
	if l.rate > 0 && stream != "paddock" {
		now := time.Now()
		l.tokens = min(l.rate, l.tokens+now.Sub(l.last).Seconds()*l.rate)
		l.last = now
		if l.tokens < 1 {
			l.dropped++
			return
		}
		l.tokens--
		if l.dropped > 0 {
			l.append("paddock", fmt.Appendf(nil, "%d lines dropped: the app wrote more than %d lines a second", l.dropped, int(l.rate)))
			l.dropped = 0
		}
	}
	l.append(stream, text)
}

// append writes a line; l.mu is held.
func (l *File) append(stream string, text []byte) {
	if l.f == nil {
		return
	}
	// One buffer, reused: a supervisor writes lines all its life and
	// should not make garbage doing it.
	buf := time.Now().UTC().AppendFormat(l.buf[:0], timeFormat)
	buf = append(buf, ' ')
	buf = append(buf, stream...)
	buf = append(buf, ' ')
	buf = append(buf, text...)
	buf = append(buf, '\n')
	if l.limit > 0 && l.size+int64(len(buf)) > l.limit {
		l.f.Close()
		os.Rename(l.path, l.path+".1")
		if err := l.open(); err != nil {
			l.f = nil
			return
		}
	}
	n, _ := l.f.Write(buf)
	l.size += int64(n)
	if cap(buf) <= 2*MaxLine {
		l.buf = buf
	}
}

// Close closes the file.
func (l *File) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

// Stream returns a writer that splits what it gets into lines of stream.
func (l *File) Stream(stream string) io.Writer {
	return NewLines(func(line []byte) { l.write(stream, line) })
}

// MaxLine is the longest line kept whole: a longer one is cut into pieces
// of MaxLine bytes, so that output without newlines costs bounded memory.
const MaxLine = 16 << 10

// Lines is a writer that calls a function with each line written to it,
// without its newline or a carriage return before it.
type Lines struct {
	fn      func(line []byte)
	partial []byte
}

// NewLines returns a Lines that calls fn, which must not keep the slice.
func NewLines(fn func(line []byte)) *Lines { return &Lines{fn: fn} }

// Write passes on the complete lines of p and holds the rest, at most
// MaxLine bytes, until its end arrives.
func (w *Lines) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			for len(w.partial)+len(p) > MaxLine {
				k := MaxLine - len(w.partial)
				w.partial = append(w.partial, p[:k]...)
				p = p[k:]
				w.fn(w.partial)
				w.partial = w.partial[:0]
			}
			w.partial = append(w.partial, p...)
			break
		}
		line := p[:i]
		if len(w.partial) > 0 {
			line = append(w.partial, line...)
			w.partial = w.partial[:0]
		}
		for len(line) > MaxLine {
			w.fn(line[:MaxLine])
			line = line[MaxLine:]
		}
		w.fn(bytes.TrimSuffix(line, []byte("\r")))
		p = p[i+1:]
	}
	return n, nil
}

// Flush passes on what is held of a line without its newline.
func (w *Lines) Flush() {
	if len(w.partial) > 0 {
		w.fn(w.partial)
		w.partial = w.partial[:0]
	}
}
