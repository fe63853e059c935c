package router

import (
	"bytes"
	"strconv"
)

// This file turns a request head as a client sent it into the head the
// router forwards. Both steps are pure functions of their input so that
// the fuzz tests can compare them with net/http (fuzz_test.go).

// reqHead is a request head as the router understands it.
type reqHead struct {
	line     []byte // the request line, without its line end
	method   []byte
	target   []byte // the target to forward: as received, or the origin form of an absolute-form target
	absolute bool   // the target was in absolute form: Host becomes its authority
	host     []byte // the authority the request is routed by
	fields   []field
	ci       connInfo
	req      request
}

// request is what the proxy keeps of a request head once it has been
// turned into the forwarded head.
type request struct {
	http10     bool
	head       bool // HEAD: the response has no body
	keepAlive  bool // the client wants the connection kept
	replayable bool // may be sent again if no response byte came back
	upgrade    bool
	chunked    bool
	length     int64 // body length unless chunked
	bodyLeft   bool  // body bytes still to copy from the client after the head write
}

func (req *request) hasBody() bool { return req.chunked || req.length > 0 }

// parseRequestHead parses head (request line, fields, blank line) into h,
// reusing h.fields. It returns 0, or the status of the error answer with
// its message.
func parseRequestHead(head []byte, h *reqHead) (int, string) {
	nl := bytes.IndexByte(head, '\n')
	line := head[:nl]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	h.line = line
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 <= 0 {
		return 400, "malformed request line\n"
	}
	method := line[:sp1]
	rest := line[sp1+1:]
	sp2 := bytes.IndexByte(rest, ' ')
	if sp2 <= 0 {
		return 400, "malformed request line\n"
	}
	target, version := rest[:sp2], rest[sp2+1:]
	h.req = request{}
	req := &h.req
	switch {
	case string(version) == "HTTP/1.1":
	case string(version) == "HTTP/1.0":
		req.http10 = true
	case len(version) == 8 && string(version[:7]) == "HTTP/1." && '2' <= version[7] && version[7] <= '9':
		// A later minor version is read as the highest one known (RFC
		// 9112 2.3), and forwarded as HTTP/1.1.
	default:
		if len(version) == 8 && bytes.HasPrefix(version, []byte("HTTP/")) && '0' <= version[5] && version[5] <= '9' &&
			version[6] == '.' && '0' <= version[7] && version[7] <= '9' {
			return 505, "HTTP version not supported\n"
		}
		return 400, "malformed request line\n"
	}
	if !isToken(method) || !validTarget(target) {
		return 400, "malformed request line\n"
	}
	h.method = method
	fields, err := parseFields(head[nl+1:], h.fields[:0])
	h.fields = fields
	if err == errTooManyHeaders {
		return 431, "too many header fields\n"
	}
	if err != nil {
		return 400, "malformed header field\n"
	}
	h.ci = connInfo{}
	if err := h.ci.scan(fields); err != nil || req.http10 && h.ci.chunked {
		return 400, "invalid message framing\n"
	}
	req.head = string(method) == "HEAD"
	req.chunked, req.length = h.ci.chunked, h.ci.length
	req.keepAlive = !h.ci.close && (!req.http10 || h.ci.keepAlive)
	req.upgrade = h.ci.upgrade && !req.http10
	switch string(method) {
	case "GET", "HEAD", "OPTIONS", "TRACE":
		req.replayable = !req.hasBody()
	case "CONNECT":
		return 405, "CONNECT is not supported\n"
	}

	// Host: the authority of an absolute-form target replaces the field
	// (RFC 9112 3.2.2), for routing and for the backend.
	h.host = nil
	nhost := 0
	for i := range fields {
		if len(fields[i].name) == 4 && eqFold(fields[i].name, "host") {
			h.host = fields[i].value
			nhost++
		}
	}
	if nhost > 1 || nhost == 0 && !req.http10 {
		return 400, "missing or repeated Host field\n"
	}
	h.target, h.absolute = target, false
	switch {
	case target[0] == '/':
	case len(target) == 1 && target[0] == '*':
	default:
		auth, path, ok := splitAbsolute(target)
		if !ok {
			return 400, "malformed request target\n"
		}
		h.host, h.target, h.absolute = auth, path, true
		if len(path) == 0 {
			h.target = slash
			if string(method) == "OPTIONS" {
				h.target = asterisk
			}
		}
	}
	if len(h.host) > 0 && !validHost(h.host) {
		return 400, "invalid Host\n"
	}
	return 0, ""
}

var (
	slash    = []byte("/")
	asterisk = []byte("*")
)

// splitAbsolute splits an absolute-form target ("http://authority/path?q"
// or https) into its authority and the rest: a path and query, a query
// alone (forwarded after a "/"), or nothing (forwarded as "/"). Other
// schemes, fragments, userinfo and empty authorities are refused.
func splitAbsolute(t []byte) (auth, rest []byte, ok bool) {
	switch {
	case len(t) > 7 && eqFold(t[:7], "http://"):
		rest = t[7:]
	case len(t) > 8 && eqFold(t[:8], "https://"):
		rest = t[8:]
	default:
		return nil, nil, false
	}
	if bytes.IndexByte(rest, '#') >= 0 {
		return nil, nil, false
	}
	auth = rest
	if i := bytes.IndexAny(rest, "/?"); i >= 0 {
		auth, rest = rest[:i], rest[i:]
	} else {
		rest = nil
	}
	if len(auth) == 0 || bytes.IndexByte(auth, '@') >= 0 {
		// Userinfo in a request target is an error (RFC 9110 4.2.4).
		return nil, nil, false
	}
	return auth, rest, true
}

// validHost accepts a host, an optional port: a registered name of
// letters, digits and -._~!$&'()*+,;= (RFC 3986 reg-name, without
// percent-encoding, which net/http refuses in an absolute-form target),
// or an IPv6 literal in brackets; a port of digits.
func validHost(h []byte) bool {
	if h[0] == '[' {
		end := bytes.IndexByte(h, ']')
		if end < 0 {
			return false
		}
		for _, c := range h[1:end] {
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' || c == ':' || c == '.') {
				return false
			}
		}
		h = h[end+1:]
		if len(h) == 0 {
			return true
		}
		if h[0] != ':' {
			return false
		}
		return allDigits(h[1:])
	}
	if i := bytes.IndexByte(h, ':'); i >= 0 {
		if !allDigits(h[i+1:]) {
			return false
		}
		h = h[:i]
	}
	for _, c := range h {
		if !hostTable[c] {
			return false
		}
	}
	return true
}

func allDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

var hostTable = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "-._~!$&'()*+,;=" {
		t[c] = true
	}
	return t
}()

// forwardInfo is what the forwarded head adds about the client.
type forwardInfo struct {
	ip    []byte // the client's address
	https bool   // it came over TLS
}

// appendForwardHead appends the head the router sends to the backend: the
// request line with an origin-form target; Host (the authority of an
// absolute-form target); the client's fields without hop-by-hop fields,
// names with an underscore, and the X-Forwarded-* and X-Request-Id fields,
// which the router sets itself (appending the client's address to
// X-Forwarded-For); the framing fields. newID appends a new request id
// when the client sent no valid one.
func appendForwardHead(out []byte, h *reqHead, fi forwardInfo, newID func([]byte) []byte) []byte {
	req := &h.req
	out = append(out, h.method...)
	out = append(out, ' ')
	if h.absolute && len(h.target) > 0 && h.target[0] == '?' {
		out = append(out, '/')
	}
	out = append(out, h.target...)
	if req.http10 {
		out = append(out, " HTTP/1.0\r\n"...)
	} else {
		out = append(out, " HTTP/1.1\r\n"...)
	}
	if h.absolute {
		out = append(out, "Host: "...)
		out = append(out, h.host...)
		out = append(out, "\r\n"...)
	}
	var reqID []byte
	nxff := 0
	fields := h.fields
	for i := range fields {
		f := &fields[i]
		if h.ci.hopByHop(f.name, fields) || bytes.IndexByte(f.name, '_') >= 0 {
			continue
		}
		switch len(f.name) {
		case 4:
			if h.absolute && eqFold(f.name, "host") {
				continue
			}
		case 12:
			if eqFold(f.name, "x-request-id") {
				if validRequestID(f.value) {
					reqID = f.value
				}
				continue
			}
		case 15:
			if eqFold(f.name, "x-forwarded-for") {
				nxff++
				continue
			}
		case 16:
			if eqFold(f.name, "x-forwarded-host") {
				continue
			}
		case 17:
			if eqFold(f.name, "x-forwarded-proto") {
				continue
			}
		}
		out = append(out, f.name...)
		out = append(out, ": "...)
		out = append(out, f.value...)
		out = append(out, "\r\n"...)
	}
	if req.chunked {
		out = append(out, "Transfer-Encoding: chunked\r\n"...)
	} else if h.ci.hasLength {
		out = append(out, "Content-Length: "...)
		out = strconv.AppendInt(out, h.ci.length, 10)
		out = append(out, "\r\n"...)
	}
	if req.upgrade {
		out = append(out, "Connection: Upgrade\r\nUpgrade: "...)
		out = append(out, h.ci.upgradeValue...)
		out = append(out, "\r\n"...)
	} else if req.http10 && req.keepAlive {
		out = append(out, "Connection: keep-alive\r\n"...)
	}
	out = append(out, "X-Forwarded-For: "...)
	if nxff > 0 {
		for i := range fields {
			if len(fields[i].name) == 15 && eqFold(fields[i].name, "x-forwarded-for") && len(fields[i].value) > 0 {
				out = append(out, fields[i].value...)
				out = append(out, ", "...)
			}
		}
	}
	out = append(out, fi.ip...)
	if fi.https {
		out = append(out, "\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: "...)
	} else {
		out = append(out, "\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: "...)
	}
	out = append(out, h.host...)
	out = append(out, "\r\nX-Request-Id: "...)
	if reqID != nil {
		out = append(out, reqID...)
	} else {
		out = newID(out)
	}
	return append(out, "\r\n\r\n"...)
}

// validTarget checks a request target: visible ASCII and obs-text only,
// and in its path (before any "?") a "%" only as a percent-encoded byte,
// as net/http requires.
func validTarget(t []byte) bool {
	if len(t) == 0 {
		return false
	}
	inPath := true
	for i, c := range t {
		switch {
		case c <= ' ' || c == 0x7f:
			return false
		case c == '?':
			inPath = false
		case c == '%' && inPath:
			if i+2 >= len(t) || !isHex(t[i+1]) || !isHex(t[i+2]) {
				return false
			}
		}
	}
	return true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= lower(c) && lower(c) <= 'f'
}

// hostKey turns a Host value into the table key: port stripped, lower
// case, no trailing dot.
func hostKey(dst, host []byte) ([]byte, bool) {
	if len(host) > 0 && host[0] == '[' {
		end := bytes.IndexByte(host, ']')
		if end < 0 {
			return nil, false
		}
		host = host[:end+1]
	} else if i := bytes.LastIndexByte(host, ':'); i >= 0 {
		for _, d := range host[i+1:] {
			if d < '0' || d > '9' {
				return nil, false
			}
		}
		host = host[:i]
	}
	if n := len(host); n > 0 && host[n-1] == '.' {
		host = host[:n-1]
	}
	for _, ch := range host {
		if ch <= ' ' || ch == 0x7f || ch == '/' || ch == '\\' || ch == '@' {
			return nil, false
		}
		dst = append(dst, lower(ch))
	}
	return dst, true
}

// validRequestID accepts 1 to 200 characters of letters, digits and -_.:+/=@.
func validRequestID(v []byte) bool {
	if len(v) == 0 || len(v) > 200 {
		return false
	}
	for _, c := range v {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '-' || c == '_' || c == '.' || c == ':' || c == '+' || c == '/' || c == '=' || c == '@':
		default:
			return false
		}
	}
	return true
}
