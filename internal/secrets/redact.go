package secrets

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"sort"
)

// MinEncodedLen is the shortest value whose encodings are redacted. A
// shorter value (1 to 3 bytes) is redacted only as itself: its hex or
// base64 would be 2 to 4 characters that ordinary output is full of, and a
// value that short is not kept secret by redaction anyway.
const MinEncodedLen = 4

// Redactor replaces secret values in output with [REDACTED:NAME]. It is
// built once for a set of values and is safe for concurrent use; it never
// prints the values (every fmt verb and slog print [REDACTED]).
//
// # What is redacted
//
// For each value of at least MinEncodedLen bytes, these forms, each with
// the value's name:
//
//   - the value itself
//   - hex, lower and upper case
//   - base64, standard and URL alphabets, padded and not
//   - base64 of the value inside a longer encoded text (such as the
//     "user:password" of an Authorization header): for each alphabet and
//     each of the 3 alignments, the characters that depend on the value's
//     bytes alone
//   - percent-encoding as url.QueryEscape and url.PathEscape write it
//
// A value of 1 to 3 bytes is redacted as itself only. Empty values are
// ignored.
//
// Matching is leftmost-longest over all forms of all values at once, and
// overlapping matches merge into one [REDACTED:NAME] with the name of the
// first; so every occurrence of every form in the input is covered, and
// text without any form passes through unchanged. A value that is itself a
// piece of the replacement text (such as "REDACTED") will reappear in it.
// Where two values share a form, the form carries the name that sorts
// first.
//
// # Cost
//
// Patterns are indexed by their first 4 bytes (a bit filter, then a map), so
// the cost per byte of output barely grows with the number of values: each
// position costs one hashed filter lookup, and only the rare hits are
// compared with the patterns they index.
type Redactor struct {
	pats   []pattern           // id → pattern
	grams  map[uint32][]int32  // first 4 bytes → ids of patterns of ≥ 4 bytes, longest first
	filter [filterWords]uint64 // bits set for the hashes of the keys of grams
	maxLen int

	// Patterns of 1 to 3 bytes (values that short): their first bytes and
	// the patterns themselves.
	hasShort bool
	short    [256]bool
	shorts   map[string]int32

	// Proper prefixes of 1, 2 and 3 bytes of all patterns, to tell at the
	// end of a write whether a pattern may continue in the next.
	pre1 [256]bool
	pre2 [1 << 16 / 64]uint64
	pre3 map[uint32]struct{}
}

type pattern struct {
	b     []byte
	token []byte // [REDACTED:NAME]
}

const (
	filterBits  = 18
	filterWords = 1 << filterBits / 64
)

func gramHash(g uint32) uint32 { return (g * 0x9E3779B1) >> (32 - filterBits) }

// NewRedactor returns a Redactor of values, by name. Names should be what
// users call the values (environment variable names); they appear in the
// output. Values are copied.
func NewRedactor(values map[string][]byte) *Redactor {
	r := &Redactor{grams: make(map[uint32][]int32), shorts: make(map[string]int32), pre3: make(map[uint32]struct{})}
	names := make([]string, 0, len(values))
	for name := range values {
		names = append(names, name)
	}
	sort.Strings(names)
	seen := make(map[string]bool)
	for _, name := range names {
		token := []byte("[REDACTED:" + name + "]")
		for _, f := range Forms(values[name]) {
			if seen[string(f)] {
				continue
			}
			seen[string(f)] = true
			r.pats = append(r.pats, pattern{b: f, token: token})
		}
	}
	for id, p := range r.pats {
		b := p.b
		r.maxLen = max(r.maxLen, len(b))
		if len(b) >= 4 {
			g := binary.LittleEndian.Uint32(b)
			r.grams[g] = append(r.grams[g], int32(id))
			h := gramHash(g)
			r.filter[h/64] |= 1 << (h % 64)
		} else {
			r.hasShort = true
			r.short[b[0]] = true
			r.shorts[string(b)] = int32(id)
		}
		if len(b) > 1 {
			r.pre1[b[0]] = true
		}
		if len(b) > 2 {
			h := uint32(b[0]) | uint32(b[1])<<8
			r.pre2[h/64] |= 1 << (h % 64)
		}
		if len(b) > 3 {
			r.pre3[uint32(b[0])|uint32(b[1])<<8|uint32(b[2])<<16] = struct{}{}
		}
	}
	for g, ids := range r.grams {
		slices.SortStableFunc(ids, func(a, b int32) int { return len(r.pats[b].b) - len(r.pats[a].b) })
		r.grams[g] = ids
	}
	return r
}

// Forms returns the forms of value that a Redactor redacts (see
// [Redactor]), without duplicates. The result holds secrets: do not print it.
func Forms(value []byte) [][]byte {
	if len(value) == 0 {
		return nil
	}
	var out [][]byte
	add := func(b []byte) {
		if len(b) == 0 {
			return
		}
		for _, o := range out {
			if bytes.Equal(o, b) {
				return
			}
		}
		out = append(out, b)
	}
	add(bytes.Clone(value))
	if len(value) < MinEncodedLen {
		return out
	}
	h := hex.EncodeToString(value)
	add([]byte(h))
	add(bytes.ToUpper([]byte(h)))
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		add([]byte(enc.EncodeToString(value)))
	}
	for _, enc := range []*base64.Encoding{base64.RawStdEncoding, base64.RawURLEncoding} {
		for k := range 3 {
			// Encode the value after k bytes of anything and keep the
			// characters made of the value's bits alone.
			e := enc.EncodeToString(append(make([]byte, k), value...))
			start, end := (8*k+5)/6, 8*(k+len(value))/6
			add([]byte(e[start:end]))
		}
	}
	add([]byte(url.QueryEscape(string(value))))
	add([]byte(url.PathEscape(string(value))))
	// As a JSON string holds it (a structured logger's output), and with
	// CRLF line ends.
	if j, err := json.Marshal(string(value)); err == nil && len(j) > 2 {
		add(j[1 : len(j)-1])
	}
	add(bytes.ReplaceAll(value, []byte("\n"), []byte("\r\n")))
	// A value of several lines (a PEM key) printed line by line, or
	// rewrapped: each long enough line on its own.
	if bytes.Count(value, []byte("\n")) > 0 {
		for _, line := range bytes.Split(value, []byte("\n")) {
			if line = bytes.TrimSuffix(line, []byte("\r")); len(line) >= minLineLen {
				add(line)
			}
		}
	}
	return out
}

// minLineLen is the shortest line of a multi-line value redacted on its
// own: shorter ones ("-----END KEY-----" aside) would match ordinary text.
const minLineLen = 16

// runState is what a scan carries to the next: a replacement begun and
// not yet written, because a match starting before its end may extend it.
type runState struct {
	open bool
	pat  int32 // whose token the run writes
	end  int   // the run covers the text up to here (relative to the next text)
}

// Append appends src to dst with every form of every value replaced, and
// returns the extended slice.
func (r *Redactor) Append(dst, src []byte) []byte {
	var st runState
	dst, _ = r.scan(dst, src, &st, true)
	return dst
}

// RedactString returns s with every form of every value replaced.
func (r *Redactor) RedactString(s string) string {
	if len(r.pats) == 0 {
		return s
	}
	return string(r.Append(nil, []byte(s)))
}

// scan appends text, redacted, to dst. Unless final, it stops at the first
// position where a pattern may start and not end within text, and returns
// that position: the caller keeps text[hold:] for the next scan, which
// gets st. When final, hold is len(text) and st is closed.
func (r *Redactor) scan(dst, text []byte, st *runState, final bool) (out []byte, hold int) {
	n := len(text)
	if len(r.pats) == 0 {
		return append(dst, text...), n
	}
	done := 0 // text[:done] is written or covered by the open run
	if st.open {
		done = st.end
	}
	hold = n
	for i := 0; i < n; i++ {
		// The fast path: skip positions where no pattern can start.
		for i+4 <= n {
			h := gramHash(binary.LittleEndian.Uint32(text[i:]))
			if r.filter[h/64]&(1<<(h%64)) != 0 || (r.hasShort && r.short[text[i]]) {
				break
			}
			i++
		}
		if i >= n {
			break
		}
		id, partial := r.match(text, i, final)
		if partial {
			hold = i
			break
		}
		if id < 0 {
			continue
		}
		end := i + len(r.pats[id].b)
		if st.open && i < st.end {
			st.end = max(st.end, end)
			continue
		}
		if st.open {
			dst = append(dst, r.pats[st.pat].token...)
			done = st.end
		}
		dst = append(dst, text[done:i]...)
		*st = runState{open: true, pat: id, end: end}
		done = i
	}
	if st.open && st.end > hold {
		// The run reaches into what is held: it may grow yet.
		st.end -= hold
		return dst, hold
	}
	if st.open {
		dst = append(dst, r.pats[st.pat].token...)
		done = st.end
		*st = runState{}
	}
	return append(dst, text[done:hold]...), hold
}

// match returns the longest pattern starting at text[i], or -1, or that a
// pattern may start there and go on past the end of text (never when final).
func (r *Redactor) match(text []byte, i int, final bool) (id int32, partial bool) {
	rest := text[i:]
	if len(rest) >= 4 {
		for _, id := range r.grams[binary.LittleEndian.Uint32(rest)] {
			p := r.pats[id].b
			if len(p) > len(rest) {
				if !final && bytes.HasPrefix(p, rest) {
					return -1, true
				}
				continue
			}
			if bytes.HasPrefix(rest, p) {
				return id, false
			}
		}
	} else if !final && r.isPrefix(rest) {
		return -1, true
	}
	if r.hasShort && r.short[rest[0]] {
		for l := min(3, len(rest)); l >= 1; l-- {
			if id, ok := r.shorts[string(rest[:l])]; ok {
				return id, false
			}
		}
	}
	return -1, false
}

// isPrefix reports whether b, of 1 to 3 bytes, is a proper prefix of a pattern.
func (r *Redactor) isPrefix(b []byte) bool {
	switch len(b) {
	case 1:
		return r.pre1[b[0]]
	case 2:
		h := uint32(b[0]) | uint32(b[1])<<8
		return r.pre2[h/64]&(1<<(h%64)) != 0
	case 3:
		_, ok := r.pre3[uint32(b[0])|uint32(b[1])<<8|uint32(b[2])<<16]
		return ok
	}
	return false
}

// MaxHold is the most bytes a [Writer] holds back: one less than the
// longest pattern.
func (r *Redactor) MaxHold() int { return max(r.maxLen-1, 0) }

// String returns [REDACTED].
func (r *Redactor) String() string { return redacted }

// GoString returns [REDACTED].
func (r *Redactor) GoString() string { return redacted }

// Format prints [REDACTED] for every verb.
func (r *Redactor) Format(f fmt.State, verb rune) { fmt.Fprint(f, redacted) }

// LogValue returns [REDACTED].
func (r *Redactor) LogValue() slog.Value { return slog.StringValue(redacted) }
