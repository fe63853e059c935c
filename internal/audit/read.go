package audit

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// DefaultListLimit is how many events List returns when Filter.Limit is zero.
const DefaultListLimit = 1000

// Filter selects events for List. Zero fields select everything.
type Filter struct {
	Since  time.Time // events at or after Since
	Actor  string    // exact user name
	Target string    // path prefix: "app/shop" matches "app/shop" and "app/shop/secrets/KEY", not "app/shopping"
	Limit  int       // the newest Limit matches; zero means DefaultListLimit
}

func (f Filter) match(e *Event) bool {
	if !f.Since.IsZero() && e.Time.Before(f.Since) {
		return false
	}
	if f.Actor != "" && e.Actor != f.Actor {
		return false
	}
	return matchTarget(e.Target, f.Target)
}

func matchTarget(target, prefix string) bool {
	if !strings.HasPrefix(target, prefix) {
		return false
	}
	return len(target) == len(prefix) || prefix == "" || strings.HasSuffix(prefix, "/") || target[len(prefix)] == '/'
}

// List returns the newest Limit durable events that match f, oldest first
// (newest last). It streams audit.log: memory is bounded by the limit, time
// grows with the log.
func (l *Log) List(ctx context.Context, f Filter) ([]Event, error) {
	_, _, size, err := l.durable()
	if err != nil {
		return nil, err
	}
	limit := f.Limit
	if limit <= 0 {
		limit = DefaultListLimit
	}
	file, err := os.Open(filepath.Join(l.dir, LogFile))
	if err != nil {
		return nil, fmt.Errorf("list audit events: %w", err)
	}
	defer file.Close()
	r := newLineReader(io.NewSectionReader(file, 0, size))
	var out []Event
	for n := int64(1); ; n++ {
		if n%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		line, err := r.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("list audit events: %s line %d: %w", LogFile, n, err)
		}
		var e Event
		if err := parseEvent(line, &e); err != nil {
			return nil, fmt.Errorf("list audit events: %s line %d: %w", LogFile, n, err)
		}
		if !f.match(&e) {
			continue
		}
		if len(out) == 2*limit { // keep memory at most 2×limit events
			out = append(out[:0], out[limit:]...)
		}
		out = append(out, e)
	}
	if len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out, nil
}

// Export writes every durable event to w as JSON lines, exactly as stored.
func (l *Log) Export(ctx context.Context, w io.Writer) error {
	_, _, size, err := l.durable()
	if err != nil {
		return err
	}
	file, err := os.Open(filepath.Join(l.dir, LogFile))
	if err != nil {
		return fmt.Errorf("export audit events: %w", err)
	}
	defer file.Close()
	if _, err := io.Copy(w, ctxReader{ctx, io.NewSectionReader(file, 0, size)}); err != nil {
		return fmt.Errorf("export audit events: %w", err)
	}
	return nil
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// errTorn is a last line without its newline.
var errTorn = errors.New("torn last line")

// lineReader reads newline-terminated lines of at most maxLine bytes.
type lineReader struct{ br *bufio.Reader }

func newLineReader(r io.Reader) *lineReader {
	return &lineReader{br: bufio.NewReaderSize(r, maxLine+1)}
}

// next returns the next line without its newline, valid until the next
// call; io.EOF at the end, errTorn for trailing bytes without a newline.
func (r *lineReader) next() ([]byte, error) {
	line, err := r.br.ReadSlice('\n')
	switch {
	case err == nil:
		return line[:len(line)-1], nil
	case errors.Is(err, bufio.ErrBufferFull):
		return nil, fmt.Errorf("%w: longer than %d bytes", ErrMalformed, maxLine)
	case errors.Is(err, io.EOF) && len(line) > 0:
		return nil, errTorn
	default:
		return nil, err
	}
}
