package secrets

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"testing"

	"paddock.dev/paddock/internal/logs"
)

// userForms returns, independently of Forms, the forms a user expects
// redacted: the value, its hex, base64 and percent-encodings.
func userForms(v []byte) map[string]string {
	return map[string]string{
		"raw":                string(v),
		"hex":                hex.EncodeToString(v),
		"HEX":                strings.ToUpper(hex.EncodeToString(v)),
		"base64":             base64.StdEncoding.EncodeToString(v),
		"base64 unpadded":    base64.RawStdEncoding.EncodeToString(v),
		"base64url":          base64.URLEncoding.EncodeToString(v),
		"base64url unpadded": base64.RawURLEncoding.EncodeToString(v),
		"query escaped":      url.QueryEscape(string(v)),
		"path escaped":       url.PathEscape(string(v)),
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func TestRedactEveryForm(t *testing.T) {
	values := map[string][]byte{
		"RANDOM":   randomBytes(32),
		"PASSWORD": []byte("p@ss w/rd+&=?é~"),
		"FOUR":     []byte("a1b2"),
		"FIVE":     []byte("\xff\xfe\x00\x01\x02"),
	}
	r := NewRedactor(values)
	for name, v := range values {
		for form, f := range userForms(v) {
			t.Run(name+"/"+form, func(t *testing.T) {
				in := "before " + f + " after\n"
				want := "before [REDACTED:" + name + "] after\n"
				if got := r.RedactString(in); got != want {
					t.Errorf("got %q, want %q", got, want)
				}
			})
		}
	}
	if got := r.RedactString("nothing secret here\n"); got != "nothing secret here\n" {
		t.Errorf("text without secrets became %q", got)
	}
}

// TestRedactInsideBase64 checks a value base64-encoded inside a longer
// text, at each alignment, as in an Authorization: Basic header.
func TestRedactInsideBase64(t *testing.T) {
	v := randomBytes(20)
	r := NewRedactor(map[string][]byte{"TOKEN": v})
	for _, prefix := range []string{"", "u:", "user:", "a"} {
		for _, suffix := range []string{"", "x", "yz", "more text"} {
			for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
				plain := append(append([]byte(prefix), v...), suffix...)
				in := "Authorization: Basic " + enc.EncodeToString(plain)
				got := r.RedactString(in)
				if !strings.Contains(got, "[REDACTED:TOKEN]") {
					t.Errorf("prefix %q suffix %q: %q not redacted", prefix, suffix, in)
					continue
				}
				// What is left cannot give back more than 2 of the value's
				// bytes: decode the text on either side of the token.
				left, right, _ := strings.Cut(strings.TrimPrefix(got, "Authorization: Basic "), "[REDACTED:TOKEN]")
				if n := len(left)*6/8 - len(prefix); n > 1 {
					t.Errorf("prefix %q: %d characters before the token", prefix, len(left))
				}
				if n := len(strings.TrimRight(right, "=")) * 6 / 8; n > len(suffix)+1 {
					t.Errorf("suffix %q: %d characters after the token", suffix, len(right))
				}
			}
		}
	}
}

func TestRedactShortValues(t *testing.T) {
	r := NewRedactor(map[string][]byte{"PIN": []byte("42"), "CODE": []byte("xyzw"), "EMPTY": nil})
	tests := []struct{ in, want string }{
		{"pin 42.", "pin [REDACTED:PIN]."},
		{"hex 3432 stays", "hex 3432 stays"},       // a 2-byte value's hex is noise
		{"base64 NDI= stays", "base64 NDI= stays"}, // so is its base64
		{"code 78797a77", "code [REDACTED:CODE]"},  // 4 bytes: encodings too
		{"code eHl6dw==", "code [REDACTED:CODE]"},  //
		{"nothing empty", "nothing empty"},         // empty values are ignored
		{"4242", "[REDACTED:PIN][REDACTED:PIN]"},   // adjacent matches stay apart
		{"4", "4"},                                 //
		{"x42", "x[REDACTED:PIN]"},                 //
	}
	for _, tt := range tests {
		if got := r.RedactString(tt.in); got != tt.want {
			t.Errorf("RedactString(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestRedactOverlaps(t *testing.T) {
	r := NewRedactor(map[string][]byte{"A": []byte("abcdef"), "B": []byte("defghi"), "C": []byte("cdefgh12")})
	tests := []struct{ in, want string }{
		{"xxabcdefghixx", "xx[REDACTED:A]xx"},        // overlapping: one token
		{"abcdefdefghi", "[REDACTED:A][REDACTED:B]"}, // adjacent: two
		{"abcdefgh12", "[REDACTED:A]"},               // A, then C inside it, reaching further
		{"zcdefgh12", "z[REDACTED:C]"},               // the longest match at a position wins
		{"abcdeabcdef", "abcde[REDACTED:A]"},         // a false start
		{"ABCDEF", "ABCDEF"},                         // case matters for the value
		{"616263646566", "[REDACTED:A]"},             // hex of A
		{"6162636465666768", "[REDACTED:A]6768"},     // hex of A, then not a form
		{"xx" + hex.EncodeToString([]byte("defghi")), "xx[REDACTED:B]"},
	}
	for _, tt := range tests {
		if got := r.RedactString(tt.in); got != tt.want {
			t.Errorf("RedactString(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// writeAll writes pieces to a Writer and returns what came out after Flush.
func writeAll(t *testing.T, r *Redactor, pieces ...string) string {
	t.Helper()
	var out bytes.Buffer
	w := r.NewWriter(&out)
	for _, p := range pieces {
		if n, err := w.Write([]byte(p)); n != len(p) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
		if len(w.buf) > r.MaxHold() {
			t.Fatalf("holds %d bytes, more than MaxHold %d", len(w.buf), r.MaxHold())
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

// TestWriterSplits writes every form split at every point, and in
// three pieces, and byte by byte.
func TestWriterSplits(t *testing.T) {
	values := map[string][]byte{"RANDOM": randomBytes(24), "PASSWORD": []byte("correct horse/battery staple")}
	for i := range 30 { // company for them
		values[fmt.Sprint("OTHER_", i)] = randomBytes(32)
	}
	r := NewRedactor(values)
	for _, name := range []string{"RANDOM", "PASSWORD"} {
		for form, f := range userForms(values[name]) {
			in := "log line: " + f + " end\n"
			want := "log line: [REDACTED:" + name + "] end\n"
			for i := 0; i <= len(in); i++ {
				if got := writeAll(t, r, in[:i], in[i:]); got != want {
					t.Fatalf("%s %s split at %d: got %q, want %q", name, form, i, got, want)
				}
			}
			for i := 0; i <= len(in); i += 3 {
				for j := i; j <= len(in); j += 5 {
					if got := writeAll(t, r, in[:i], in[i:j], in[j:]); got != want {
						t.Fatalf("%s %s split at %d and %d: got %q, want %q", name, form, i, j, got, want)
					}
				}
			}
			if got := writeAll(t, r, strings.Split(in, "")...); got != want {
				t.Fatalf("%s %s byte by byte: got %q, want %q", name, form, got, want)
			}
		}
	}
}

// TestWriterPassesLinesOn: a Write of text that cannot start a secret
// comes out at once, without waiting for Flush, and a Write that ends in
// the start of one holds only that start.
func TestWriterPassesLinesOn(t *testing.T) {
	secret := []byte("sk_live_0123456789")
	r := NewRedactor(map[string][]byte{"KEY": secret})
	var out bytes.Buffer
	w := r.NewWriter(&out)
	w.Write([]byte("GET /health 200 0.3ms\n"))
	if got := out.String(); got != "GET /health 200 0.3ms\n" {
		t.Errorf("after a line, the writer passed on %q", got)
	}
	w.Write([]byte("using key sk_li"))
	if got := out.String(); !strings.HasSuffix(got, "using key ") {
		t.Errorf("passed on %q, want everything but the start of the key", got)
	}
	w.Write([]byte("ve_0123456789\n"))
	w.Flush()
	if got, want := out.String(), "GET /health 200 0.3ms\nusing key [REDACTED:KEY]\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	// A start that does not go on is passed on when that is known.
	out.Reset()
	w.Write([]byte("sk_li"))
	w.Write([]byte("ne\n"))
	if got := out.String(); got != "sk_line\n" {
		t.Errorf("got %q before Flush, want %q", got, "sk_line\n")
	}
}

// TestWriterBeforeLineCutting is the supervisor's set-up: the Writer on the
// raw stream, in front of the 16 KiB line cutter. A value across the cut,
// and one with newlines in it, are caught.
func TestWriterBeforeLineCutting(t *testing.T) {
	secret := randomBytes(32)
	pem := []byte("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----\n")
	r := NewRedactor(map[string][]byte{"S": secret, "TLS_KEY": pem})
	var lines []string
	w := r.NewWriter(logs.NewLines(func(line []byte) { lines = append(lines, string(line)) }))

	for form, f := range userForms(secret) {
		lines = lines[:0]
		// The form straddles the 16 KiB cut; written in pipe-sized pieces.
		pad := strings.Repeat("x", logs.MaxLine-len(f)/2)
		in := []byte(pad + f + strings.Repeat("y", 100) + "\n")
		for len(in) > 0 {
			n := min(len(in), 4096)
			w.Write(in[:n])
			in = in[n:]
		}
		w.Flush()
		joined := strings.Join(lines, "")
		if strings.Contains(joined, f) || !strings.Contains(joined, "[REDACTED:S]") {
			t.Errorf("%s: the value survives a line cut", form)
		}
		for _, l := range lines {
			if len(l) > logs.MaxLine {
				t.Errorf("a line of %d bytes", len(l))
			}
		}
	}

	lines = lines[:0]
	w.Write([]byte("loading key\n"))
	w.Write(pem[:40])
	w.Write(pem[40:])
	w.Write([]byte("loaded\n"))
	w.Flush()
	if got, want := strings.Join(lines, "|"), "loading key|[REDACTED:TLS_KEY]loaded"; got != want {
		t.Errorf("PEM value: lines %q, want %q", got, want)
	}
}

type failWriter struct{ n int }

func (f *failWriter) Write(p []byte) (int, error) {
	f.n++
	return 0, errors.New("disk full")
}

func TestWriterErrorSticks(t *testing.T) {
	r := NewRedactor(map[string][]byte{"A": []byte("abcd")})
	fw := &failWriter{}
	w := r.NewWriter(fw)
	if _, err := w.Write([]byte("hello\n")); err == nil {
		t.Fatal("Write succeeded over a failing writer")
	}
	if _, err := w.Write([]byte("again\n")); err == nil || fw.n != 1 {
		t.Errorf("second Write: %v after %d writes below; want the first error, no new write", err, fw.n)
	}
	if err := w.Flush(); err == nil {
		t.Error("Flush succeeded after an error")
	}
}

func TestRedactNoValues(t *testing.T) {
	r := NewRedactor(nil)
	in := "anything at all \x00\xff"
	if got := r.RedactString(in); got != in {
		t.Errorf("got %q", got)
	}
	if got := writeAll(t, r, in[:3], in[3:]); got != in {
		t.Errorf("Writer: got %q", got)
	}
}

// naiveRedact is the reference: leftmost-longest matching by trying every
// pattern at every position, overlapping matches merged.
func naiveRedact(values map[string][]byte, text []byte) []byte {
	type pat struct{ b, token []byte }
	var pats []pat
	seen := map[string]bool{}
	names := make([]string, 0, len(values))
	for n := range values {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		for _, f := range Forms(values[n]) {
			if !seen[string(f)] {
				seen[string(f)] = true
				pats = append(pats, pat{f, []byte("[REDACTED:" + n + "]")})
			}
		}
	}
	var out []byte
	done, open, end := 0, false, 0
	var token []byte
	for i := range text {
		var best *pat
		for j := range pats {
			if bytes.HasPrefix(text[i:], pats[j].b) && (best == nil || len(pats[j].b) > len(best.b)) {
				best = &pats[j]
			}
		}
		if best == nil {
			continue
		}
		if open && i < end {
			end = max(end, i+len(best.b))
			continue
		}
		if open {
			out = append(out, token...)
			done = end
		}
		out = append(out, text[done:i]...)
		open, end, token = true, i+len(best.b), best.token
	}
	if open {
		out = append(out, token...)
		done = end
	}
	return append(out, text[done:]...)
}

// TestRedactsMultilineValues: a key of several lines is caught as a JSON
// logger writes it, with CRLF line ends, and line by line.
func TestRedactsMultilineValues(t *testing.T) {
	key := "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n-----END PRIVATE KEY-----\n"
	r := NewRedactor(map[string][]byte{"TLS_KEY": []byte(key)})
	j, _ := json.Marshal(map[string]string{"config": key})
	for name, text := range map[string]string{
		"json":         string(j),
		"crlf":         strings.ReplaceAll(key, "\n", "\r\n"),
		"line by line": "key line: MIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nnext: BKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n",
	} {
		got := r.RedactString(text)
		for _, body := range []string{"MIIEvQIBADANBgkqhkiG9w0BAQEFAASC", "BKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj"} {
			if strings.Contains(got, body) {
				t.Errorf("%s: a line of the key survived: %q", name, got)
			}
		}
		if !strings.Contains(got, "[REDACTED:TLS_KEY]") {
			t.Errorf("%s: nothing redacted: %q", name, got)
		}
	}
}
