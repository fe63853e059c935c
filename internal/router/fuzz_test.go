package router

import (
	"bytes"
	"io"
	"net"
	"net/http/httputil"
	"testing"
	"time"
)

// byteConn is a net.Conn that reads from a fixed input.
type byteConn struct {
	net.Conn
	r io.Reader
}

func (c *byteConn) Read(p []byte) (int, error) {
	if len(p) > 7 {
		p = p[:7] // small reads exercise buffer refills
	}
	return c.r.Read(p)
}
func (c *byteConn) SetReadDeadline(time.Time) error { return nil }

func FuzzParseFields(f *testing.F) {
	f.Add([]byte("Host: a\r\nX-A:  b \r\n\r\n"))
	f.Add([]byte("Host: a\n\n"))
	f.Add([]byte("Bad Name: x\r\n\r\n"))
	f.Fuzz(func(t *testing.T, head []byte) {
		fields, err := parseFields(head, nil)
		if err != nil {
			return
		}
		var out []byte
		for _, fl := range fields {
			out = append(out, fl.name...)
			out = append(out, ": "...)
			out = append(out, fl.value...)
			out = append(out, "\r\n"...)
		}
		out = append(out, "\r\n"...)
		again, err := parseFields(out, nil)
		if err != nil {
			t.Fatalf("re-serialized fields %q do not parse: %v", out, err)
		}
		if got, want := len(again), len(fields); got != want {
			t.Fatalf("fields after a round trip: got %d, want %d", got, want)
		}
		for i := range again {
			if !bytes.Equal(again[i].name, fields[i].name) || !bytes.Equal(again[i].value, fields[i].value) {
				t.Fatalf("field %d: got %q: %q, want %q: %q", i, again[i].name, again[i].value, fields[i].name, fields[i].value)
			}
		}
	})
}

func FuzzReadHead(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"))
	f.Add([]byte("\r\n\r\nGET / HTTP/1.1\nHost: a\n\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		br := bufReader{c: &byteConn{r: bytes.NewReader(in)}, buf: make([]byte, 16)}
		for i := 0; i < 4; i++ {
			head, err := br.readHead()
			if err != nil {
				return
			}
			if headEnd(head, 0) != len(head) {
				t.Fatalf("head %q does not end at its first blank line", head)
			}
			nl := bytes.IndexByte(head, '\n')
			parseFields(head[nl+1:], nil)
		}
	})
}

func FuzzCopyChunked(f *testing.F) {
	f.Add([]byte("5\r\nhello\r\n0\r\n\r\n"))
	f.Add([]byte("3;ext=1\r\nabc\r\na\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n"))
	f.Add([]byte("2\nab\n0\n\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		run := func(dechunk bool) ([]byte, error) {
			var out bytes.Buffer
			src := bufReader{c: &byteConn{r: bytes.NewReader(in)}, buf: make([]byte, 32)}
			cp := bodyCopier{dst: &out, src: &src}
			err := cp.copyChunked(dechunk)
			return out.Bytes(), err
		}
		data, err := run(true)
		if err != nil {
			return
		}
		encoded, err := run(false)
		if err != nil {
			t.Fatalf("decodes but does not re-encode: %v", err)
		}
		got, err := io.ReadAll(httputil.NewChunkedReader(bytes.NewReader(encoded)))
		if err != nil {
			t.Fatalf("re-encoded body %q: %v", encoded, err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("re-encoded body carries %q, want %q", got, data)
		}
	})
}
