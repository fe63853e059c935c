package metrics

import (
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"
)

// TestHandlerCompression: a scraper that takes gzip gets gzip, which
// decodes to the same exposition as the plain answer; one that refuses it
// or says nothing gets plain text.
func TestHandlerCompression(t *testing.T) {
	m := New()
	m.APIRequest("GET /v1/apps", 200, 0)
	h := m.Handler()
	get := func(accept string) *http.Response {
		req := httptest.NewRequest("GET", "/metrics", nil)
		if accept != "" {
			req.Header.Set("Accept-Encoding", accept)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Result()
	}
	plain := get("")
	body, _ := io.ReadAll(plain.Body)
	if plain.Header.Get("Content-Encoding") != "" || !strings.Contains(string(body), `paddock_api_requests_total{code="200",route="GET /v1/apps"} 1`) {
		t.Fatalf("plain answer (%q):\n%s", plain.Header.Get("Content-Encoding"), body)
	}
	for accept, gz := range map[string]bool{"gzip": true, "br, gzip;q=0.5": true, "gzip;q=0": false, "identity": false, "GZIP": true} {
		resp := get(accept)
		r := io.Reader(resp.Body)
		if got := resp.Header.Get("Content-Encoding") == "gzip"; got != gz {
			t.Errorf("Accept-Encoding %q: gzipped %v, want %v", accept, got, gz)
			continue
		}
		if gz {
			zr, err := gzip.NewReader(resp.Body)
			if err != nil {
				t.Fatalf("%q: %v", accept, err)
			}
			r = zr
		}
		b, err := io.ReadAll(r)
		if err != nil || !strings.Contains(string(b), `paddock_api_requests_total{code="200",route="GET /v1/apps"} 1`) {
			t.Errorf("Accept-Encoding %q: %v\n%.300s", accept, err, b)
		}
	}
}

// BenchmarkScrape times the exposition of 500 instances of 100 apps (their
// /proc and cgroup reads aside: this process stands for each), plain and
// gzipped as scrapers ask.
func BenchmarkScrape(b *testing.B) {
	m := New()
	pid := os.Getpid()
	insts := make([]Instance, 500)
	for i := range insts {
		insts[i] = Instance{App: fmt.Sprintf("app%03d", i/5), Process: "web", ID: fmt.Sprintf("app%03d.web.%d", i/5, i), State: "running",
			PID: pid, StartedAt: time.Now(), Healthy: true}
	}
	m.WatchInstances(func(context.Context) ([]Instance, error) { return insts, nil })
	h := m.Handler()
	for _, accept := range []string{"identity", "gzip"} {
		b.Run(accept, func(b *testing.B) {
			for b.Loop() {
				req := httptest.NewRequest("GET", "/metrics", nil)
				req.Header.Set("Accept-Encoding", accept)
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				b.SetBytes(int64(rec.Body.Len()))
			}
		})
	}
}
