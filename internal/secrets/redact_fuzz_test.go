package secrets

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// FuzzRedact builds a Redactor of two values, puts forms of them into the
// text, and checks that
//   - no form of either value is left in the output, except inside a
//     [REDACTED:NAME] (a value may be a piece of that text);
//   - text without any form comes out unchanged;
//   - the output is the reference implementation's;
//   - writing the text in random pieces gives the same output, holding
//     back no more than MaxHold bytes.
func FuzzRedact(f *testing.F) {
	f.Add([]byte("plain log line\n"), []byte("secret"), []byte("abc"), uint64(1))
	f.Add([]byte("token=c2VjcmV0 hex=736563726574"), []byte("secret"), []byte("x"), uint64(2))
	f.Add([]byte("aaaaaaaaaaaaaaaa"), []byte("aaaa"), []byte("aaaaaa"), uint64(3))
	f.Add([]byte("ab%20cd ab+cd"), []byte("ab cd"), []byte("\n\n\n\n"), uint64(4))
	f.Add([]byte("[REDACTED:A]"), []byte("TED:"), []byte("]"), uint64(5))
	f.Add([]byte{}, []byte("\xff\x00\xfe\x01"), []byte("/+/+"), uint64(6))
	f.Fuzz(func(t *testing.T, text, a, b []byte, seed uint64) {
		if len(text) > 4096 || len(a) > 64 || len(b) > 64 {
			return
		}
		values := map[string][]byte{"A": a, "B": b}
		rng := rand.New(rand.NewPCG(seed, seed>>32))
		in := inject(rng, text, values)
		r := NewRedactor(values)
		got := r.Append(nil, in)

		var forms [][]byte
		for _, v := range values {
			forms = append(forms, Forms(v)...)
		}
		if !containsAny(in, forms) && !bytes.Equal(got, in) {
			t.Fatalf("text without secrets changed:\nin  %q\nout %q", in, got)
		}
		if len(in) <= 512 {
			if want := naiveRedact(values, in); !bytes.Equal(got, want) {
				t.Fatalf("in %q:\ngot  %q\nwant %q", in, got, want)
			}
		}
		checkNoneLeft(t, got, forms, [][]byte{[]byte("[REDACTED:A]"), []byte("[REDACTED:B]")})

		var out bytes.Buffer
		w := r.NewWriter(&out)
		for rest := in; len(rest) > 0; {
			n := min(len(rest), 1+rng.IntN(16))
			w.Write(rest[:n])
			rest = rest[n:]
			if len(w.buf) > r.MaxHold() {
				t.Fatalf("holds %d bytes, MaxHold %d", len(w.buf), r.MaxHold())
			}
		}
		w.Flush()
		if !bytes.Equal(out.Bytes(), got) {
			t.Fatalf("in %q:\nin pieces %q\nat once   %q", in, out.Bytes(), got)
		}
	})
}

// inject puts up to 4 forms of the values at random places in text.
func inject(rng *rand.Rand, text []byte, values map[string][]byte) []byte {
	var forms [][]byte
	for _, v := range values {
		forms = append(forms, Forms(v)...)
	}
	in := bytes.Clone(text)
	if len(forms) == 0 {
		return in
	}
	for range rng.IntN(5) {
		f := forms[rng.IntN(len(forms))]
		at := rng.IntN(len(in) + 1)
		in = append(in[:at], append(bytes.Clone(f), in[at:]...)...)
	}
	return in
}

func containsAny(b []byte, forms [][]byte) bool {
	for _, f := range forms {
		if bytes.Contains(b, f) {
			return true
		}
	}
	return false
}

// checkNoneLeft fails if a form occurs in out other than overlapping one
// of the tokens.
func checkNoneLeft(t *testing.T, out []byte, forms, tokens [][]byte) {
	t.Helper()
	inToken := make([]bool, len(out))
	for _, tok := range tokens {
		for i := 0; ; {
			j := bytes.Index(out[i:], tok)
			if j < 0 {
				break
			}
			for k := i + j; k < i+j+len(tok); k++ {
				inToken[k] = true
			}
			i += j + 1
		}
	}
	for _, f := range forms {
		for i := 0; ; {
			j := bytes.Index(out[i:], f)
			if j < 0 {
				break
			}
			overlaps := false
			for k := i + j; k < i+j+len(f); k++ {
				overlaps = overlaps || inToken[k]
			}
			if !overlaps {
				t.Fatalf("form %q survives at %d in %q", f, i+j, out)
			}
			i += j + 1
		}
	}
}
