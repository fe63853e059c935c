package api

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"time"
)

// Time limits on reading a request. The http.Server bounds the request's
// head (ReadHeaderTimeout) and idle keep-alive connections (IdleTimeout);
// the body is bounded here, per route, because no single ReadTimeout suits
// both a 1 KiB JSON body and a 512 MiB upload over a slow link:
//
//   - Nothing reads a body before the guard admits its request
//     (authenticated and authorized); until then preAdmit bounds any read. The body of a request that is not admitted (no or a bad
//     token, denied, no such route) is never read: the connection is cut
//     after the answer instead of drained, so a client that sends a head
//     and then stalls holds nothing past its answer.
//   - An admitted JSON body must arrive whole within json.
//   - An admitted upload may take as long as it needs while it moves: each
//     read must return within uploadIdle.
//
// Once a body has been read to its end its deadline is lifted: net/http
// then reads in the background to notice a client that goes away, and a
// deadline would end a deploy or a log stream that is still wanted.
// (net/http lifts it too when it starts that read; deadlineBody does not
// rely on it.) Deadlines are the kernel's, in real time: they use
// time.Now, not the Server's injected clock.
type bodyLimits struct {
	preAdmit, json, uploadIdle time.Duration
}

var defaultBodyLimits = bodyLimits{preAdmit: 30 * time.Second, json: time.Minute, uploadIdle: time.Minute}

// reqInfo is what the API keeps of a request beside net/http's.
type reqInfo struct {
	id       string // the server's id of the request
	clientID string // the X-Request-Id the client sent, if well-formed
	rc       *http.ResponseController
	limits   bodyLimits
	body     bool // the request has a body
	admitted bool // the guard let it through: its body may be read
}

type reqInfoKey struct{}
type principalKey struct{}

// clientRequestID is the form of a client's X-Request-Id that is recorded.
// (Lengths are checked apart from the pattern: a counted repetition makes a
// large program, compiled at start in every process of this binary.)
var clientRequestID = regexp.MustCompile(`^[A-Za-z0-9._:-]+$`)

// ServeHTTP gives every request an id of the server's own (a client's
// X-Request-Id is kept beside it, never in its place), bounds the reading
// of its body, and serves it.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	info := &reqInfo{id: newRequestID(), rc: http.NewResponseController(w), limits: s.limits,
		body: r.Body != nil && r.Body != http.NoBody}
	if id := r.Header.Get("X-Request-Id"); len(id) <= 64 && clientRequestID.MatchString(id) {
		info.clientID = id
	}
	w.Header().Set("X-Request-Id", info.id)
	r = r.WithContext(context.WithValue(r.Context(), reqInfoKey{}, info))
	if info.body {
		info.rc.SetReadDeadline(time.Now().Add(info.limits.preAdmit))
	}
	s.mux.ServeHTTP(w, r)
	if info.body && !info.admitted {
		// net/http would read up to 256 KiB of the unread body to keep the
		// connection; a client that stalls would hold it. Cut it instead:
		// the read fails at once and the connection closes after the answer.
		info.rc.SetReadDeadline(time.Now())
	}
}

func newRequestID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func reqInfoOf(r *http.Request) *reqInfo {
	if info, ok := r.Context().Value(reqInfoKey{}).(*reqInfo); ok {
		return info
	}
	return &reqInfo{}
}

func requestID(r *http.Request) string { return reqInfoOf(r).id }

// admit lets an authorized request's body be read, within the route's time
// limits.
func admit(r *http.Request, rt route) {
	info := reqInfoOf(r)
	info.admitted = true
	if !info.body || info.rc == nil {
		return
	}
	b := &deadlineBody{ReadCloser: r.Body, rc: info.rc}
	if rt.Upload {
		b.idle = info.limits.uploadIdle
	} else {
		info.rc.SetReadDeadline(time.Now().Add(info.limits.json))
	}
	r.Body = b
}

// deadlineBody lifts the connection's read deadline once the body has been
// read to its end and, for uploads, moves it before each read.
type deadlineBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	idle time.Duration // > 0: each read may take this long
	done bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	if b.done {
		return b.ReadCloser.Read(p)
	}
	if b.idle > 0 {
		b.rc.SetReadDeadline(time.Now().Add(b.idle))
	}
	n, err := b.ReadCloser.Read(p)
	switch {
	case err == io.EOF:
		b.done = true
		b.rc.SetReadDeadline(time.Time{})
	case err != nil:
		// A broken or stalled body: whatever is left is not wanted.
		b.done = true
		b.rc.SetReadDeadline(time.Now())
	}
	return n, err
}

// createdTarget names what a creating route creates, KIND/NAME, from the
// "name" field of its JSON body, which it reads (bounded) and puts back for
// the handler. A body without a well-formed name names nothing: the
// handler refuses it.
func createdTarget(r *http.Request, kind string) string {
	b, _ := io.ReadAll(io.LimitReader(r.Body, maxJSON+1))
	r.Body = replayBody{Reader: io.MultiReader(bytes.NewReader(b), r.Body), Closer: r.Body}
	var v struct {
		Name string `json:"name"`
	}
	if json.Unmarshal(b, &v) != nil || !validIdentName(v.Name) {
		return ""
	}
	return kind + "/" + v.Name
}

type replayBody struct {
	io.Reader
	io.Closer
}
