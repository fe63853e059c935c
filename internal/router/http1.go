package router

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"time"
)

// This file holds the HTTP/1.1 wire primitives of the forwarding path: a
// buffered reader that exposes its buffer, the head parser, and the body
// copiers. They work on byte slices that point into the read buffer, so a
// request or a response is parsed and re-serialized without allocating.
//
// The parser is strict where leniency would let a client and a backend
// disagree on where a message ends (request smuggling): no obs-fold, no
// whitespace before the colon, no bare CR, Transfer-Encoding must be exactly
// "chunked", Content-Length must be digits, and a message that carries both
// is refused.

const (
	maxHeadBytes   = 64 << 10 // request or response head, line and fields
	maxHeaderCount = 200
	maxChunkLine   = 4 << 10  // chunk-size line or trailer field
	maxPendingOut  = 32 << 10 // body bytes gathered before a write
)

var (
	errHeadTooLarge    = errors.New("message head too large")
	errMalformed       = errors.New("malformed message")
	errBadFraming      = errors.New("ambiguous or unsupported message framing")
	errUnexpectedEOF   = io.ErrUnexpectedEOF
	errTooManyHeaders  = errors.New("too many header fields")
	errChunkLineTooBig = errors.New("chunk line too long")
)

// bufReader is a minimal buffered reader over a connection. Unlike bufio it
// hands out slices of its buffer, which stay valid until the next fill.
type bufReader struct {
	c     net.Conn
	buf   []byte
	r, w  int
	nread int64 // bytes received since the last resetCount

	// partial, when set, is called by readHead before it waits for more
	// of a head that has begun to arrive (once per head): the client
	// connection arms its header timeout there.
	partial func() error
	// bodyTimeout, when not 0, bounds each read while a body is copied
	// from c (nanoseconds): fill and the body copiers re-arm the read
	// deadline before reading, lazily (see arm).
	bodyTimeout int64
	// rdl is the read deadline last set on c (unix nanoseconds); 0: none.
	rdl int64
	// raw, when set, reads c (see rawio.go).
	raw *rawIO
	// abort, when set and true, makes body reads fail: another goroutine
	// stops the body copy by setting it and then a read deadline in the
	// past, which a re-arming read could otherwise undo.
	abort *atomic.Bool
}

var errBodyAborted = errors.New("request body copy stopped")

// armBody re-arms the read deadline of a body read and reports whether the
// read may go on.
func (b *bufReader) armBody() error {
	b.arm(time.Now().UnixNano(), b.bodyTimeout)
	if b.abort != nil && b.abort.Load() {
		return errBodyAborted
	}
	return nil
}

// arm sets the read deadline of c to about now+d: unless the one set
// already ends between d minus a slack (a second, or a quarter of d) and
// d from now, so that most calls cost no more than the clock read.
func (b *bufReader) arm(now, d int64) {
	left := b.rdl - now
	if b.rdl != 0 && left <= d && left >= d-min(int64(time.Second), d/4) {
		return
	}
	b.rdl = now + d
	b.c.SetReadDeadline(time.Unix(0, b.rdl))
}

// disarm clears the read deadline of c.
func (b *bufReader) disarm() {
	if b.rdl != 0 {
		b.rdl = 0
		b.c.SetReadDeadline(time.Time{})
	}
}

func (b *bufReader) buffered() []byte { return b.buf[b.r:b.w] }

func (b *bufReader) discard(n int) {
	b.r += n
	if b.r == b.w {
		b.r, b.w = 0, 0
	}
}

// read reads from the connection, past the buffer.
func (b *bufReader) read(p []byte) (int, error) {
	if b.raw != nil {
		return b.raw.read(p)
	}
	return b.c.Read(p)
}

// fill reads once from the connection into the free part of the buffer,
// first compacting it, and growing it up to max if it is full.
func (b *bufReader) fill(max int) error {
	if b.r > 0 && b.w == len(b.buf) {
		b.w = copy(b.buf, b.buf[b.r:b.w])
		b.r = 0
	}
	if b.w == len(b.buf) {
		if len(b.buf) >= max {
			return errHeadTooLarge
		}
		n := 2 * len(b.buf)
		if n > max {
			n = max
		}
		nb := make([]byte, n)
		b.w = copy(nb, b.buf[b.r:b.w])
		b.r = 0
		b.buf = nb
	}
	if b.bodyTimeout != 0 {
		if err := b.armBody(); err != nil {
			return err
		}
	}
	n, err := b.read(b.buf[b.w:])
	b.w += n
	b.nread += int64(n)
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// readHead returns the next message head (start line and fields, including
// the blank line that ends it) and consumes it. Empty lines before a request
// line are skipped, as RFC 9112 asks. The slice is valid until the next fill.
func (b *bufReader) readHead() ([]byte, error) {
	scanned := 0
	partial := b.partial
	for {
		// Skip leading CRLFs (between pipelined requests).
		for b.r < b.w && (b.buf[b.r] == '\r' || b.buf[b.r] == '\n') && scanned == 0 {
			b.r++
		}
		data := b.buf[b.r:b.w]
		if end := headEnd(data, scanned); end >= 0 {
			b.discard(end)
			return data[:end], nil
		}
		if len(data) > 3 {
			scanned = len(data) - 3
		}
		if len(data) >= maxHeadBytes {
			return nil, errHeadTooLarge
		}
		if len(data) > 0 && partial != nil {
			if err := partial(); err != nil {
				return nil, err
			}
			partial = nil
		}
		if err := b.fill(maxHeadBytes); err != nil {
			if err == io.EOF && b.r < b.w {
				return nil, errUnexpectedEOF
			}
			return nil, err
		}
	}
}

// headEnd returns the length of the head in data (through the blank line),
// or -1. It accepts LF or CRLF line ends. from is where to resume scanning.
func headEnd(data []byte, from int) int {
	for i := from; ; {
		j := bytes.IndexByte(data[i:], '\n')
		if j < 0 {
			return -1
		}
		i += j + 1
		if i < len(data) && data[i] == '\n' {
			return i + 1
		}
		if i+1 < len(data) && data[i] == '\r' && data[i+1] == '\n' {
			return i + 2
		}
	}
}

// readLine returns the next line without its CRLF, for chunk framing (a
// bare LF or CR is refused: RFC 9112 7.1 allows no leniency there, and
// net/http has none). Before it has to block on the connection it calls
// flush, so that bytes already gathered reach the other side without delay
// (streaming).
func (b *bufReader) readLine(flush func() error) ([]byte, error) {
	for {
		data := b.buf[b.r:b.w]
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line := data[:i]
			b.discard(i + 1)
			if n := len(line); n > 0 && line[n-1] == '\r' {
				line = line[:n-1]
			} else {
				return nil, errMalformed
			}
			if bytes.IndexByte(line, '\r') >= 0 {
				return nil, errMalformed
			}
			return line, nil
		}
		if len(data) >= maxChunkLine {
			return nil, errChunkLineTooBig
		}
		if flush != nil {
			if err := flush(); err != nil {
				return nil, err
			}
		}
		if err := b.fill(maxHeadBytes); err != nil {
			if err == io.EOF {
				return nil, errUnexpectedEOF
			}
			return nil, err
		}
	}
}

// field is one header field; name and value point into the head.
type field struct {
	name, value []byte
}

// parseFields parses the header fields that follow the start line. head
// starts at the first field line and includes the final blank line.
func parseFields(head []byte, dst []field) ([]field, error) {
	for len(head) > 0 {
		i := bytes.IndexByte(head, '\n')
		if i < 0 {
			return dst, errMalformed
		}
		line := head[:i]
		head = head[i+1:]
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		if len(line) == 0 {
			if len(head) != 0 {
				return dst, errMalformed
			}
			return dst, nil
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !isToken(line[:colon]) {
			// Includes obs-fold (a line starting with a space) and a space
			// before the colon.
			return dst, errMalformed
		}
		v := trimOWS(line[colon+1:])
		if !validFieldValue(v) {
			return dst, errMalformed
		}
		if len(dst) >= maxHeaderCount {
			return dst, errTooManyHeaders
		}
		dst = append(dst, field{name: line[:colon], value: v})
	}
	return dst, errMalformed
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// tokenTable marks the characters allowed in a token (RFC 9110 5.6.2).
var tokenTable = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !tokenTable[c] {
			return false
		}
	}
	return true
}

func validFieldValue(b []byte) bool {
	for _, c := range b {
		if c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// lower returns c in ASCII lower case.
func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// eqFold reports whether b equals the lower-case ASCII string s, ignoring case.
func eqFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		if lower(b[i]) != s[i] {
			return false
		}
	}
	return true
}

func eqFoldBytes(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if lower(a[i]) != lower(b[i]) {
			return false
		}
	}
	return true
}

// parseContentLength parses a Content-Length value: digits only.
func parseContentLength(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// forEachToken calls f with each comma-separated token of a list value.
func forEachToken(v []byte, f func(tok []byte)) {
	for len(v) > 0 {
		i := bytes.IndexByte(v, ',')
		var tok []byte
		if i < 0 {
			tok, v = v, nil
		} else {
			tok, v = v[:i], v[i+1:]
		}
		if tok = trimOWS(tok); len(tok) > 0 {
			f(tok)
		}
	}
}

// connInfo is what the Connection, Transfer-Encoding and Content-Length
// fields of a message say. Any other name the Connection field lists is
// hop-by-hop too (see hopByHop).
type connInfo struct {
	close, keepAlive, upgrade bool
	chunked                   bool
	hasLength                 bool
	length                    int64
	listsNames                bool // Connection lists names besides close, keep-alive and upgrade
	upgradeValue              []byte
}

// scan fills ci from fields and validates the framing fields.
func (ci *connInfo) scan(fields []field) error {
	var te bool
	for i := range fields {
		f := &fields[i]
		switch len(f.name) {
		case 7:
			if eqFold(f.name, "upgrade") {
				ci.upgradeValue = f.value
			}
		case 10:
			if eqFold(f.name, "connection") {
				forEachToken(f.value, func(tok []byte) {
					switch {
					case eqFold(tok, "close"):
						ci.close = true
					case eqFold(tok, "keep-alive"):
						ci.keepAlive = true
					case eqFold(tok, "upgrade"):
						ci.upgrade = true
					default:
						ci.listsNames = true
					}
				})
			}
		case 14:
			if eqFold(f.name, "content-length") {
				n, ok := parseContentLength(f.value)
				if !ok || ci.hasLength && n != ci.length {
					return errBadFraming
				}
				ci.hasLength, ci.length = true, n
			}
		case 17:
			if eqFold(f.name, "transfer-encoding") {
				if te || !eqFold(f.value, "chunked") {
					return errBadFraming
				}
				te = true
			}
		}
	}
	if te {
		if ci.hasLength {
			return errBadFraming
		}
		ci.chunked = true
	}
	if ci.upgradeValue == nil {
		ci.upgrade = false
	}
	return nil
}

// hopByHop reports whether the field must not be forwarded: the fixed
// hop-by-hop set, the framing fields (re-emitted by the proxy), and any
// name listed in a Connection field of fields, except Host and the
// framing fields: those a Connection field cannot remove.
func (ci *connInfo) hopByHop(name []byte, fields []field) bool {
	switch len(name) {
	case 2:
		return eqFold(name, "te")
	case 4:
		if eqFold(name, "host") {
			return false
		}
	case 7:
		return eqFold(name, "upgrade")
	case 10:
		return eqFold(name, "connection") || eqFold(name, "keep-alive")
	case 14:
		return eqFold(name, "content-length")
	case 16:
		return eqFold(name, "proxy-connection")
	case 17:
		return eqFold(name, "transfer-encoding")
	case 18:
		return eqFold(name, "proxy-authenticate")
	case 19:
		return eqFold(name, "proxy-authorization")
	}
	if !ci.listsNames {
		return false
	}
	for i := range fields {
		if len(fields[i].name) == 10 && eqFold(fields[i].name, "connection") && listsToken(fields[i].value, name) {
			return true
		}
	}
	return false
}

// listsToken reports whether the comma-separated list v holds tok,
// ignoring case.
func listsToken(v, tok []byte) bool {
	for len(v) > 0 {
		i := bytes.IndexByte(v, ',')
		var t []byte
		if i < 0 {
			t, v = v, nil
		} else {
			t, v = v[:i], v[i+1:]
		}
		if eqFoldBytes(trimOWS(t), tok) {
			return true
		}
	}
	return false
}

// badTrailer reports whether a trailer field must be dropped: the fields
// that frame, route or control the message (Host, Content-Length,
// Transfer-Encoding, Trailer) and the hop-by-hop ones have no place in a
// trailer, where a recipient that merges trailers into the head could act
// on them.
func badTrailer(name []byte) bool {
	switch len(name) {
	case 2:
		return eqFold(name, "te")
	case 4:
		return eqFold(name, "host")
	case 7:
		return eqFold(name, "upgrade") || eqFold(name, "trailer")
	case 10:
		return eqFold(name, "connection") || eqFold(name, "keep-alive")
	case 14:
		return eqFold(name, "content-length")
	case 16:
		return eqFold(name, "proxy-connection")
	case 17:
		return eqFold(name, "transfer-encoding")
	case 18:
		return eqFold(name, "proxy-authenticate")
	case 19:
		return eqFold(name, "proxy-authorization")
	}
	return false
}

const hexDigits = "0123456789abcdef"

func appendHex(b []byte, n uint64) []byte {
	if n == 0 {
		return append(b, '0')
	}
	var tmp [16]byte
	i := len(tmp)
	for n > 0 {
		i--
		tmp[i] = hexDigits[n&0xf]
		n >>= 4
	}
	return append(b, tmp[i:]...)
}

// parseChunkSize reads a chunk-size line (without its CRLF): hex digits,
// then nothing, whitespace, or ";" and extensions (dropped). Leading
// whitespace and whitespace before ";" are refused, as net/http does.
func parseChunkSize(line []byte) (int64, bool) {
	end := 0
	for end < len(line) && (lower(line[end]) >= 'a' && lower(line[end]) <= 'f' || '0' <= line[end] && line[end] <= '9') {
		end++
	}
	rest := line[end:]
	if len(rest) > 0 && rest[0] != ';' && len(trimOWS(rest)) != 0 {
		return 0, false
	}
	return parseHex(line[:end])
}

func parseHex(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 15 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, false
		}
		n = n<<4 | int64(d)
	}
	return n, true
}

// bodyCopier forwards a message body from src to dst. out holds bytes not
// yet written to dst (for example the message head); the copier writes them
// together with the first body bytes so a small message costs one write.
type bodyCopier struct {
	dst             io.Writer
	src             *bufReader
	out             []byte
	dropUnderscores bool   // drop trailer fields whose name has an underscore (requests)
	scratch         []byte // with src.bodyTimeout: the buffer of reads past src's buffer
	werr            error  // the first error writing to dst; other errors came from src
}

func (bc *bodyCopier) write(b []byte) error {
	_, err := bc.dst.Write(b)
	if err != nil && bc.werr == nil {
		bc.werr = err
	}
	return err
}

func (bc *bodyCopier) flush() error {
	if len(bc.out) == 0 {
		return nil
	}
	err := bc.write(bc.out)
	bc.out = bc.out[:0]
	return err
}

// take forwards up to n bytes that are already buffered in src.
func (bc *bodyCopier) take(n int64) (int64, error) {
	avail := bc.src.buffered()
	if int64(len(avail)) > n {
		avail = avail[:n]
	}
	if len(bc.out)+len(avail) <= maxPendingOut {
		bc.out = append(bc.out, avail...)
	} else {
		if err := bc.flush(); err != nil {
			return 0, err
		}
		if err := bc.write(avail); err != nil {
			return 0, err
		}
	}
	bc.src.discard(len(avail))
	return int64(len(avail)), nil
}

// copyLength forwards exactly n body bytes, then flushes.
func (bc *bodyCopier) copyLength(n int64) error {
	k, err := bc.take(n)
	if err != nil {
		return err
	}
	n -= k
	if err := bc.flush(); err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	if bc.src.bodyTimeout != 0 && bc.scratch != nil {
		// Each read within the body timeout: through a buffer, since a
		// splice is one call that no deadline could re-arm.
		for n > 0 {
			if err := bc.src.armBody(); err != nil {
				return err
			}
			k, err := bc.src.read(bc.scratch[:min(int64(len(bc.scratch)), n)])
			bc.src.nread += int64(k)
			n -= int64(k)
			if k > 0 {
				if err := bc.write(bc.scratch[:k]); err != nil {
					return err
				}
			}
			if err == io.EOF && n > 0 {
				return errUnexpectedEOF
			}
			if err != nil && n > 0 {
				return err
			}
		}
		return nil
	}
	// The rest comes straight from the socket; between two TCP connections
	// io.CopyN splices in the kernel (a write error is then not told apart
	// from a read error).
	m, err := io.CopyN(bc.dst, bc.src.c, n)
	bc.src.nread += m
	if err == io.EOF {
		err = errUnexpectedEOF
	}
	return err
}

// copyUntilEOF forwards a close-delimited body.
func (bc *bodyCopier) copyUntilEOF() error {
	if _, err := bc.take(int64(len(bc.src.buffered()))); err != nil {
		return err
	}
	if err := bc.flush(); err != nil {
		return err
	}
	m, err := io.Copy(bc.dst, bc.src.c)
	bc.src.nread += m
	return err
}

// copyChunked forwards a chunked body, re-encoding each chunk (extensions
// dropped) and passing trailer fields on. With dechunk it writes only the
// data (for an HTTP/1.0 recipient, which then reads until close). Pending
// output is flushed whenever the copier would block, so each chunk reaches
// dst as soon as it is complete on src: streams are not buffered.
func (bc *bodyCopier) copyChunked(dechunk bool) error {
	for {
		line, err := bc.src.readLine(bc.flush)
		if err != nil {
			return err
		}
		size, ok := parseChunkSize(line)
		if !ok {
			return errMalformed
		}
		if size == 0 {
			if !dechunk {
				bc.out = append(bc.out, "0\r\n"...)
			}
			for {
				tl, err := bc.src.readLine(bc.flush)
				if err != nil {
					return err
				}
				if len(tl) == 0 {
					break
				}
				colon := bytes.IndexByte(tl, ':')
				if colon <= 0 || !isToken(tl[:colon]) || !validFieldValue(tl[colon+1:]) {
					return errMalformed
				}
				if badTrailer(tl[:colon]) || bc.dropUnderscores && bytes.IndexByte(tl[:colon], '_') >= 0 {
					continue
				}
				if !dechunk {
					bc.out = append(bc.out, tl...)
					bc.out = append(bc.out, "\r\n"...)
				}
			}
			if !dechunk {
				bc.out = append(bc.out, "\r\n"...)
			}
			return bc.flush()
		}
		if !dechunk {
			bc.out = appendHex(bc.out, uint64(size))
			bc.out = append(bc.out, "\r\n"...)
		}
		for size > 0 {
			if len(bc.src.buffered()) == 0 {
				if err := bc.flush(); err != nil {
					return err
				}
				if err := bc.src.fill(maxHeadBytes); err != nil {
					if err == io.EOF {
						err = errUnexpectedEOF
					}
					return err
				}
			}
			k, err := bc.take(size)
			if err != nil {
				return err
			}
			size -= k
		}
		crlf, err := bc.src.readLine(bc.flush)
		if err != nil {
			return err
		}
		if len(crlf) != 0 {
			return errMalformed
		}
		if !dechunk {
			bc.out = append(bc.out, "\r\n"...)
		}
		if len(bc.src.buffered()) == 0 {
			// Nothing more has arrived: send this chunk now.
			if err := bc.flush(); err != nil {
				return err
			}
		}
	}
}
