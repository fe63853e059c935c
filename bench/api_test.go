package bench

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"paddock.dev/paddock/internal/testenv"
)

// BenchmarkAPI measures, on one running platform over HTTPS on loopback,
// what authentication adds: an unauthenticated handler, an authenticated
// read (token check + policy), and an authenticated change that appends a
// durable audit event first.
func BenchmarkAPI(b *testing.B) {
	p := testenv.Start(b)
	hc := p.ClientWith("").HTTPClient()
	run := func(b *testing.B, method, path, token, body string) {
		for i := 0; i < b.N; i++ {
			req, _ := http.NewRequest(method, p.API+path, strings.NewReader(body))
			if token != "" {
				req.Header.Set("Authorization", "Bearer "+token)
			}
			resp, err := hc.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Fatalf("%s %s: %s", method, path, resp.Status)
			}
		}
	}
	b.Run("unauthenticated", func(b *testing.B) { run(b, "GET", "/healthz", "", "") })
	b.Run("authenticated-read", func(b *testing.B) { run(b, "GET", "/v1/whoami", p.Token, "") })
	b.Run("authenticated-audited-change", func(b *testing.B) { run(b, "POST", "/v1/login", p.Token, "{}") })
}
