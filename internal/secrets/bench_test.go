package secrets

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
)

func reportOps(b *testing.B) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

// BenchmarkOpen opens 64-byte values whose data key is cached.
func BenchmarkOpen(b *testing.B) {
	ctx := context.Background()
	kr := newKeyring(b, Config{})
	aad := AAD("app-0123", "STRIPE_KEY", "12")
	s, err := kr.Seal(ctx, bytes.Repeat([]byte("v"), 64), aad)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(64)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := kr.Open(ctx, s, aad); err != nil {
			b.Fatal(err)
		}
	}
	reportOps(b)
}

// BenchmarkSeal seals 64-byte values (one store write per SealBatch seals).
func BenchmarkSeal(b *testing.B) {
	ctx := context.Background()
	kr := newKeyring(b, Config{})
	aad := AAD("app-0123", "STRIPE_KEY", "12")
	v := bytes.Repeat([]byte("v"), 64)
	b.SetBytes(64)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := kr.Seal(ctx, v, aad); err != nil {
			b.Fatal(err)
		}
	}
	reportOps(b)
}

// logText returns about n bytes of typical app output: access logs and
// JSON lines full of hex ids, base64 tokens and numbers, none a secret.
func logText(n int) []byte {
	rng := rand.New(rand.NewPCG(1, 2))
	var b bytes.Buffer
	paths := []string{"/api/v1/orders", "/health", "/api/v1/users/me", "/static/app.js", "/checkout"}
	for b.Len() < n {
		id := make([]byte, 8)
		for i := range id {
			id[i] = byte(rng.Uint32())
		}
		tok := make([]byte, 18)
		for i := range tok {
			tok[i] = byte(rng.Uint32())
		}
		switch rng.IntN(3) {
		case 0:
			fmt.Fprintf(&b, "2025-03-01T12:%02d:%02d.%03dZ INFO request method=GET path=%s/%d status=200 dur=%d.%dms req_id=%s ip=10.0.%d.%d\n",
				rng.IntN(60), rng.IntN(60), rng.IntN(1000), paths[rng.IntN(len(paths))], rng.IntN(100000),
				rng.IntN(50), rng.IntN(10), hex.EncodeToString(id), rng.IntN(256), rng.IntN(256))
		case 1:
			fmt.Fprintf(&b, `{"level":"info","ts":17408%05d.%03d,"msg":"charge created","amount":%d,"currency":"usd","trace":"%s","session":"%s"}`+"\n",
				rng.IntN(100000), rng.IntN(1000), rng.IntN(100000), hex.EncodeToString(id), base64.RawURLEncoding.EncodeToString(tok))
		default:
			fmt.Fprintf(&b, "worker %d: processed job %d in %d ms (queue=default, attempts=%d)\n",
				rng.IntN(8), rng.IntN(1000000), rng.IntN(5000), 1+rng.IntN(3))
		}
	}
	return b.Bytes()
}

func benchRedactor(n int) *Redactor {
	values := make(map[string][]byte, n)
	for i := range n {
		values[fmt.Sprint("SECRET_", i)] = randomBytes(32)
	}
	return NewRedactor(values)
}

// BenchmarkRedact redacts 1 MiB of typical output with 100 secrets of 32
// random bytes (about 1,500 patterns): at once, and through a Writer in
// pipe-sized and in line-sized writes.
func BenchmarkRedact(b *testing.B) {
	text := logText(1 << 20)
	r := benchRedactor(100)
	b.Run("append", func(b *testing.B) {
		b.SetBytes(int64(len(text)))
		var out []byte
		for b.Loop() {
			out = r.Append(out[:0], text)
		}
		if !bytes.Equal(out, text) {
			b.Fatal("redacted text without secrets")
		}
	})
	for _, size := range []int{4096, 100} {
		b.Run(fmt.Sprintf("writer-%dB", size), func(b *testing.B) {
			b.SetBytes(int64(len(text)))
			w := r.NewWriter(io.Discard)
			for b.Loop() {
				for p := text; len(p) > 0; {
					n := min(len(p), size)
					w.Write(p[:n])
					p = p[n:]
				}
				w.Flush()
			}
		})
	}
}

// BenchmarkRedactSecrets shows how the cost grows with the number of
// secrets.
func BenchmarkRedactSecrets(b *testing.B) {
	text := logText(1 << 20)
	for _, n := range []int{0, 1, 10, 100, 1000} {
		r := benchRedactor(n)
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			b.SetBytes(int64(len(text)))
			var out []byte
			for b.Loop() {
				out = r.Append(out[:0], text)
			}
		})
	}
}
