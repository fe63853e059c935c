package secrets

import (
	"fmt"
	"io"
	"log/slog"
	"sync"
)

// writeChunk bounds the memory a Writer uses for one big Write.
const writeChunk = 64 << 10

// Writer redacts a stream on its way to another writer. A value split
// across writes is caught: a Write passes on all it can and holds back
// only a tail that may be the start of a form of a value (at most
// [Redactor.MaxHold] bytes, usually none), until the next Write or Flush
// shows whether it is. Flush at the end of the stream.
//
// Put it on the raw byte stream, before anything that cuts the stream into
// lines or pieces: the instance supervisor does
//
//	w := redactor.NewWriter(logFile.Stream("out"))
//	cmd.Stdout = w
//	... cmd.Wait() ...
//	w.Flush()
//
// so that a line cut at 16 KiB, or a value with a newline in it (a PEM
// key), is redacted whole before it is cut. A form split by a Flush in
// its middle is not caught: Flush only at the end of a stream.
//
// A Writer is safe for concurrent use, but each stream (stdout, stderr)
// needs its own. After an error from the underlying writer, every call
// returns that error.
type Writer struct {
	mu  sync.Mutex
	r   *Redactor
	w   io.Writer
	buf []byte // held back from the last write
	out []byte
	st  runState
	err error
}

// NewWriter returns a Writer that writes to w.
func (r *Redactor) NewWriter(w io.Writer) *Writer { return &Writer{r: r, w: w} }

// Write redacts p and writes all of it that is decided to the underlying
// writer. It returns len(p) unless the underlying writer fails.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return 0, w.err
	}
	n := len(p)
	for len(p) > 0 {
		chunk := p[:min(len(p), writeChunk)]
		p = p[len(chunk):]
		text := chunk
		if len(w.buf) > 0 {
			w.buf = append(w.buf, chunk...)
			text = w.buf
		}
		var hold int
		w.out, hold = w.r.scan(w.out[:0], text, &w.st, false)
		// text may be w.buf: move its tail down rather than alias it.
		w.buf = append(w.buf[:0], text[hold:]...)
		if err := w.emit(); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// Flush writes what is held back, redacted as the end of the stream. The
// next Write starts a new stream.
func (w *Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	w.out, _ = w.r.scan(w.out[:0], w.buf, &w.st, true)
	w.buf = w.buf[:0]
	return w.emit()
}

func (w *Writer) emit() error {
	if len(w.out) > 0 {
		if _, err := w.w.Write(w.out); err != nil {
			w.err = err
			return err
		}
	}
	if cap(w.out) > 2*writeChunk {
		w.out = nil
	}
	return nil
}

// String returns [REDACTED].
func (w *Writer) String() string { return redacted }

// GoString returns [REDACTED].
func (w *Writer) GoString() string { return redacted }

// Format prints [REDACTED] for every verb.
func (w *Writer) Format(f fmt.State, verb rune) { fmt.Fprint(f, redacted) }

// LogValue returns [REDACTED].
func (w *Writer) LogValue() slog.Value { return slog.StringValue(redacted) }
