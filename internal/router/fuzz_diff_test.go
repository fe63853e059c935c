package router

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"slices"
	"strings"
	"testing"
)

// FuzzRequestFraming compares the router's reading of a client's byte
// stream (pipelined requests) with net/http's, the reference a backend
// would use, and then checks that net/http reads what the router
// forwards exactly as the router meant it. A request smuggling bug is a
// disagreement on where a request ends, or on what it says.
//
// It fails when:
//   - the router accepts a request that net/http refuses (a backend could
//     frame it another way);
//   - both accept it but see a different method, target, Host, header
//     fields or body, or a different number of requests;
//   - net/http reads the router's forwarded stream differently from what
//     the router meant (its request count, method, target, Host, fields
//     or body);
//   - the router refuses a request net/http accepts, unless the router
//     refuses it on purpose (routerStricter lists those cases).
//
// The seed corpus in testdata/fuzz/FuzzRequestFraming holds smuggling
// shapes (CL+TE, odd Transfer-Encoding spellings, duplicate or signed
// Content-Length, obs-fold, NUL, bare CR, chunk-size tricks, pipelined
// requests); plain `go test` runs it.
func FuzzRequestFraming(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET /x HTTP/1.1\r\nHost: a\r\n\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		checkFraming(t, in)
	})
}

// maxFramed is how many pipelined requests of one input are compared.
const maxFramed = 4

// framed is one request as a parser understood it.
type framed struct {
	method string
	target string // origin form
	host   string
	fields []string // "Canonical-Name: value" of the end-to-end fields the router forwards, in order
	body   string
}

func (f framed) String() string {
	return fmt.Sprintf("%s %s host=%q fields=%q body=%q", f.method, f.target, f.host, f.fields, f.body)
}

// routerRead runs the router's parsing over in as a client connection's
// stream. It returns the requests read before the stream ended, was
// closed or refused; the bytes the router would forward; and the status
// of the refusal (0: none).
func routerRead(in []byte) (reqs []framed, forwarded []byte, refused int) {
	br := bufReader{c: &byteConn{r: bytes.NewReader(in)}, buf: make([]byte, 64)}
	newID := func(b []byte) []byte { return append(b, "id"...) }
	for len(reqs) < maxFramed {
		head, err := br.readHead()
		if err != nil {
			if err == io.EOF {
				return reqs, forwarded, 0
			}
			return reqs, forwarded, 400
		}
		var h reqHead
		if code, _ := parseRequestHead(head, &h); code != 0 {
			return reqs, forwarded, code
		}
		if _, ok := hostKey(nil, h.host); !ok {
			return reqs, forwarded, 400
		}
		// The head points into the read buffer, which the body reads
		// reuse: take what is compared and forward the head first.
		fr := framed{method: string(h.method), target: string(h.target), host: string(h.host)}
		if h.absolute && strings.HasPrefix(fr.target, "?") {
			fr.target = "/" + fr.target
		}
		fields := h.fields
		for i := range fields {
			if forwardedField(&h, fields[i].name, fields) {
				fr.fields = append(fr.fields, http.CanonicalHeaderKey(string(fields[i].name))+": "+string(fields[i].value))
			}
		}
		forwarded = appendForwardHead(forwarded, &h, forwardInfo{ip: []byte("127.0.0.1")}, newID)
		var fwdBody bytes.Buffer
		cp := bodyCopier{dst: &fwdBody, src: &br, dropUnderscores: true}
		var body []byte
		switch {
		case h.req.chunked:
			if err := cp.copyChunked(false); err != nil {
				return reqs, forwarded, 400
			}
			if body, err = io.ReadAll(httputil.NewChunkedReader(bytes.NewReader(fwdBody.Bytes()))); err != nil {
				panic(fmt.Sprintf("the router forwards a chunked body it cannot read back: %q: %v", fwdBody.Bytes(), err))
			}
		case h.req.length > 0:
			if err := cp.copyLength(h.req.length); err != nil {
				return reqs, forwarded, 400
			}
			body = fwdBody.Bytes()
		}
		fr.body = string(body)
		reqs = append(reqs, fr)
		forwarded = append(forwarded, fwdBody.Bytes()...)
		if !h.req.keepAlive || h.req.upgrade {
			return reqs, forwarded, 0
		}
	}
	return reqs, forwarded, 0
}

// forwardedField reports whether the router forwards the client's field
// as it is (appendForwardHead's rules).
func forwardedField(h *reqHead, name []byte, fields []field) bool {
	if h.ci.hopByHop(name, fields) || bytes.IndexByte(name, '_') >= 0 {
		return false
	}
	switch strings.ToLower(string(name)) {
	case "host", "x-request-id", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto":
		return false
	}
	return true
}

// stdRequest is one request as net/http read it.
type stdRequest struct {
	framed
	header    http.Header
	rawFields textproto.MIMEHeader // the fields as they came (ReadRequest takes some out)
	start     int                  // offset of its request line in the input
}

// stdRead reads in with net/http as a server does: ReadRequest, the
// server's Host checks, the whole body, until a request asks to close.
// Blank lines before a request line are skipped, as RFC 9112 2.2 allows
// and the router does. refused reports a request net/http refused.
func stdRead(in []byte, n int) (reqs []stdRequest, refused bool) {
	src := bytes.NewReader(in)
	br := bufio.NewReader(src)
	for len(reqs) < n {
		for {
			b, err := br.Peek(1)
			if err != nil {
				return reqs, false // end of stream
			}
			if b[0] != '\r' && b[0] != '\n' {
				break
			}
			br.ReadByte()
		}
		start := len(in) - src.Len() - br.Buffered()
		req, err := http.ReadRequest(br)
		if err != nil || req.ProtoMajor != 1 { // the server answers other versions 505
			return reqs, true
		}
		// ReadRequest takes Host out of the header; the server checks the
		// fields as they came.
		raw := in[start:]
		if end := headEnd(raw, 0); end >= 0 {
			raw = raw[:end]
		}
		tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(raw)))
		tp.ReadLine()
		fields, _ := tp.ReadMIMEHeader()
		if hosts := fields["Host"]; req.ProtoAtLeast(1, 1) && len(hosts) == 0 || len(hosts) > 1 {
			return reqs, true
		}
		for name, vs := range fields {
			if !isToken([]byte(name)) {
				return reqs, true
			}
			for _, v := range vs {
				if !validFieldValue([]byte(v)) {
					return reqs, true
				}
			}
		}
		body, err := io.ReadAll(req.Body)
		if err != nil {
			return reqs, true
		}
		fr := framed{method: req.Method, target: req.RequestURI, host: req.Host, body: string(body)}
		if t := req.RequestURI; !strings.HasPrefix(t, "/") && t != "*" {
			// Absolute form: what follows the authority.
			_, rest, _ := strings.Cut(t, "://")
			if i := strings.IndexAny(rest, "/?"); i >= 0 {
				fr.target = rest[i:]
			} else {
				fr.target = "/"
				if req.Method == "OPTIONS" {
					fr.target = "*"
				}
			}
			if strings.HasPrefix(fr.target, "?") {
				fr.target = "/" + fr.target
			}
		}
		reqs = append(reqs, stdRequest{framed: fr, header: req.Header, rawFields: fields, start: start})
		if req.Close {
			break
		}
	}
	return reqs, false
}

func checkFraming(t *testing.T, in []byte) {
	rreqs, forwarded, refused := routerRead(in)
	n := len(rreqs)
	if refused != 0 {
		n++ // the refused request is compared too
	}
	sreqs, srefused := stdRead(in, n)

	for i := 0; i < n; i++ {
		routerOK := i < len(rreqs)
		stdOK := i < len(sreqs)
		switch {
		case routerOK && !stdOK:
			if srefused {
				t.Fatalf("request %d: the router accepts %v, net/http refuses it", i, rreqs[i])
			}
			t.Fatalf("request %d: the router reads %v where net/http sees no more request", i, rreqs[i])
		case !routerOK && stdOK:
			if why := routerStricter(in, sreqs[i]); why == "" {
				t.Fatalf("request %d: the router refuses (%d) what net/http accepts: %v", i, refused, sreqs[i].framed)
			}
			return
		case !routerOK && !stdOK:
			return
		}
		r, s := rreqs[i], sreqs[i]
		if r.method != s.method || r.target != s.target || r.host != s.host || r.body != s.body {
			t.Fatalf("request %d:\n router   %v\n net/http %v", i, r, s.framed)
		}
		if got, want := r.fields, headerFields(s.header, r.fields); !slices.Equal(got, want) {
			t.Fatalf("request %d: fields: router %q, net/http %q", i, got, want)
		}
	}
	if len(sreqs) > len(rreqs) && refused == 0 {
		// The router stopped reading (a close, an upgrade) where net/http
		// read on.
		if !rreqsUpgraded(in, len(rreqs)) {
			t.Fatalf("net/http reads %d requests, the router %d", len(sreqs), len(rreqs))
		}
	}

	// What the router forwards must read back as it meant it.
	back, backRefused := stdRead(forwarded, maxFramed+1)
	if backRefused || len(back) != len(rreqs) {
		t.Fatalf("net/http reads %d requests (refused: %v) in what the router forwards for %d:\n%q", len(back), backRefused, len(rreqs), forwarded)
	}
	for i, r := range rreqs {
		b := back[i]
		if r.method != b.method || r.target != b.target || r.host != b.host || r.body != b.body {
			t.Fatalf("forwarded request %d:\n router meant %v\n net/http saw %v\nin %q", i, r, b.framed, forwarded)
		}
		if got, want := r.fields, headerFields(b.header, r.fields); !slices.Equal(got, want) {
			t.Fatalf("forwarded request %d: fields: router meant %q, net/http saw %q", i, got, want)
		}
	}
}

// headerFields lists hdr's values for the names in like, in like's form
// and order.
func headerFields(hdr http.Header, like []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, f := range like {
		name, _, _ := strings.Cut(f, ": ")
		if seen[name] {
			continue
		}
		seen[name] = true
		for _, v := range hdr[name] {
			out = append(out, name+": "+v)
		}
	}
	slices.SortStableFunc(out, func(a, b string) int {
		return slices.Index(like, a) - slices.Index(like, b)
	})
	return out
}

// rreqsUpgraded reports whether the last of the first n requests the
// router reads in asked for a protocol upgrade (after which the router
// tunnels bytes instead of reading requests).
func rreqsUpgraded(in []byte, n int) bool {
	br := bufReader{c: &byteConn{r: bytes.NewReader(in)}, buf: make([]byte, 64)}
	var h reqHead
	for i := 0; i < n; i++ {
		head, err := br.readHead()
		if err != nil {
			return false
		}
		if code, _ := parseRequestHead(head, &h); code != 0 {
			return false
		}
		cp := bodyCopier{dst: io.Discard, src: &br}
		if h.req.chunked {
			cp.copyChunked(false)
		} else if h.req.length > 0 {
			cp.copyLength(h.req.length)
		}
	}
	return n > 0 && h.req.upgrade
}

// routerStricter explains why the router refuses, on purpose, a request
// that net/http accepts; "" if it should not refuse it.
func routerStricter(in []byte, s stdRequest) string {
	raw := string(in[s.start:])
	if end := headEnd(in[s.start:], 0); end >= 0 {
		raw = raw[:end]
	}
	line, _, _ := strings.Cut(raw, "\n")
	line = strings.TrimSuffix(line, "\r")
	te := s.rawFields.Values("Transfer-Encoding")
	switch {
	case strings.Contains(raw, "\n ") || strings.Contains(raw, "\n\t"):
		return "obs-fold (RFC 9112 5.2: a proxy must refuse or replace it)"
	case len(te) > 0 && len(s.rawFields.Values("Content-Length")) > 0:
		return "both Transfer-Encoding and Content-Length (RFC 9112 6.1: a proxy must not forward it as is)"
	case len(te) > 0 && strings.HasSuffix(line, "HTTP/1.0"):
		return "Transfer-Encoding in HTTP/1.0"
	case len(te) > 1 || len(te) == 1 && te[0] != "chunked" && !strings.EqualFold(te[0], "chunked"):
		return "a Transfer-Encoding other than one chunked"
	}
	if len(te) > 0 && strings.Contains(strings.ReplaceAll(string(in[s.start+len(raw):]), "\r\n", ""), "\n") {
		return "a bare LF in the chunked body (RFC 9112 7.1: chunk and trailer lines end in CRLF)"
	}
	if m := strings.Fields(line); len(m) == 3 {
		if m[0] == "CONNECT" {
			return "CONNECT"
		}
		t := m[1]
		if !strings.HasPrefix(t, "/") && t != "*" {
			lt := strings.ToLower(t)
			_, rest, _ := strings.Cut(lt, "://")
			auth := rest
			if i := strings.IndexAny(rest, "/?"); i >= 0 {
				auth = rest[:i]
			}
			if !strings.HasPrefix(lt, "http://") && !strings.HasPrefix(lt, "https://") || strings.Contains(t, "#") || auth == "" || strings.Contains(auth, "@") {
				return "a request target neither origin-form, *, nor http(s) absolute-form with an authority and no userinfo"
			}
		}
	}
	if h := s.host; h != "" && !validHost([]byte(h)) {
		return "a Host outside RFC 3986 reg-name or IP literal"
	}
	for _, v := range s.rawFields.Values("Content-Length") {
		if strings.TrimLeft(v, "0123456789") != "" || len(v) > 18 {
			return "a Content-Length that is not digits"
		}
	}
	return ""
}
