package dashboard

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"paddock.dev/paddock/internal/wire"
)

// APIError is an error answer of the API, as the API worded it.
type APIError struct {
	Status  int
	Code    string
	Message string
}

func (e *APIError) Error() string { return e.Message }

// request builds an in-process API request on behalf of the browser's
// request r: the same client address (the audit log's source, the failure
// limits' key) and the session's token as the bearer.
func request(ctx context.Context, r *http.Request, token, method, path string, body any) (*http.Request, error) {
	var rd io.Reader = http.NoBody
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("encode the API request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, path, rd)
	if err != nil {
		return nil, err
	}
	req.RemoteAddr = r.RemoteAddr
	req.Host = r.Host
	req.TLS = r.TLS
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("User-Agent", "paddock-dashboard")
	return req, nil
}

// call serves one API request in process and decodes its JSON answer into
// out (nil: the body is dropped). An error answer comes back as *APIError.
func (h *Handler) call(r *http.Request, token, method, path string, body, out any) error {
	req, err := request(r.Context(), r, token, method, path, body)
	if err != nil {
		return err
	}
	w := &recorder{header: http.Header{}}
	h.api.ServeHTTP(w, req)
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if w.status >= 400 {
		return decodeError(w.status, w.body.Bytes())
	}
	if out == nil || w.status == http.StatusNoContent {
		return nil
	}
	if err := json.Unmarshal(w.body.Bytes(), out); err != nil {
		return fmt.Errorf("decode the API's answer to %s %s: %w", method, path, err)
	}
	return nil
}

// callLines serves one API request whose answer is newline-delimited JSON
// and decodes each line with each.
func (h *Handler) callLines(r *http.Request, token, path string, each func(line []byte) error) error {
	req, err := request(r.Context(), r, token, http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	w := &recorder{header: http.Header{}}
	h.api.ServeHTTP(w, req)
	if w.status >= 400 {
		return decodeError(w.status, w.body.Bytes())
	}
	sc := bufio.NewScanner(&w.body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		if err := each(sc.Bytes()); err != nil {
			return err
		}
	}
	return sc.Err()
}

func decodeError(status int, body []byte) *APIError {
	var eb wire.ErrorBody
	if err := json.Unmarshal(body, &eb); err != nil || eb.Error == nil {
		msg := strings.TrimSpace(string(body))
		if msg == "" {
			msg = http.StatusText(status)
		}
		return &APIError{Status: status, Code: "unknown", Message: msg}
	}
	return &APIError{Status: status, Code: eb.Error.Code, Message: eb.Error.Message}
}

// recorder is the http.ResponseWriter of an in-process API call: it keeps
// the status and the body in memory.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (w *recorder) Header() http.Header { return w.header }
func (w *recorder) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}
func (w *recorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.body.Write(b)
}
func (w *recorder) Flush() {}

// stream serves one API request whose answer is a long stream of
// newline-delimited JSON (a log follow) and hands its lines to each as
// they come, until the answer ends, ctx ends or each fails. An error
// answer comes back as *APIError before any line.
func (h *Handler) stream(ctx context.Context, r *http.Request, token, path string, started func(), each func(line []byte) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, err := request(ctx, r, token, http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	pr, pw := io.Pipe()
	w := &pipeWriter{header: http.Header{}, pw: pw, ready: make(chan struct{})}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		h.api.ServeHTTP(w, req)
		w.markReady()
		pw.Close()
	}()
	defer wg.Wait()
	defer pr.Close() // unblocks the API's writes once we stop reading
	defer cancel()   // ends the API's follow
	select {
	case <-w.ready:
	case <-ctx.Done():
		return nil
	}
	if w.status >= 400 {
		body, _ := io.ReadAll(io.LimitReader(pr, 64<<10))
		return decodeError(w.status, body)
	}
	started()
	sc := bufio.NewScanner(pr)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if err := each(sc.Bytes()); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	return sc.Err()
}

// pipeWriter is the http.ResponseWriter of a streamed in-process API call:
// the body goes through a pipe to the reader, and ready closes when the
// status is known.
type pipeWriter struct {
	header http.Header
	pw     *io.PipeWriter
	once   sync.Once
	ready  chan struct{}
	status int
}

func (w *pipeWriter) markReady() {
	w.once.Do(func() {
		if w.status == 0 {
			w.status = http.StatusOK
		}
		close(w.ready)
	})
}

func (w *pipeWriter) Header() http.Header { return w.header }
func (w *pipeWriter) WriteHeader(code int) {
	w.once.Do(func() {
		w.status = code
		close(w.ready)
	})
}
func (w *pipeWriter) Write(b []byte) (int, error) {
	w.markReady()
	return w.pw.Write(b)
}
func (w *pipeWriter) Flush() {}
