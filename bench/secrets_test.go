package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"paddock.dev/paddock/internal/client"
	"paddock.dev/paddock/internal/testenv"
)

// BenchmarkSecretReveal times `secrets reveal` through the API over HTTPS
// on loopback, with its audit event made durable before the answer, and
// reports the median and the 99th percentile. Beside it, interleaved so
// that both see the same neighbours, it times the cheapest authenticated
// call (`GET /v1/status`), and then an append and fsync of an audit-sized
// line in the data folder: what a reveal cannot go below on this machine.
func BenchmarkSecretReveal(b *testing.B) {
	p := testenv.Start(b)
	ctx := context.Background()
	c := p.Client()
	if _, err := c.CreateApp(ctx, "shop", nil); err != nil {
		b.Fatal(err)
	}
	if _, err := c.SetSecret(ctx, "shop", "KEY", []byte("a-secret-value-of-some-32-bytes!"), client.SecretOptions{}); err != nil {
		b.Fatal(err)
	}
	reveal := make([]time.Duration, 0, b.N)
	status := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if _, err := c.RevealSecret(ctx, "shop", "KEY"); err != nil {
			b.Fatal(err)
		}
		reveal = append(reveal, time.Since(start))
		b.StopTimer()
		start = time.Now()
		if _, err := c.Status(ctx); err != nil {
			b.Fatal(err)
		}
		status = append(status, time.Since(start))
		b.StartTimer()
	}
	b.StopTimer()
	report(b, "", reveal)
	report(b, "status-", status)

	f, err := os.OpenFile(filepath.Join(p.Data, "bench-fsync"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	line := []byte(strings.Repeat("x", 379) + "\n")
	var fsync []time.Duration
	for range min(b.N, 2000) {
		time.Sleep(500 * time.Microsecond) // as far apart as reveals come
		start := time.Now()
		if _, err := f.Write(line); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		fsync = append(fsync, time.Since(start))
	}
	report(b, "fsync-", fsync)
}

// report reports the median and the 99th percentile of took.
func report(b *testing.B, prefix string, took []time.Duration) {
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Microseconds()), prefix+"p50-µs")
	b.ReportMetric(float64(took[len(took)*99/100].Microseconds()), prefix+"p99-µs")
}

// BenchmarkReleaseWith100Secrets times a secret change that makes a release
// of an app with 100 secrets: sealing, storing, pinning every version.
func BenchmarkReleaseWith100Secrets(b *testing.B) {
	p := testenv.Start(b)
	ctx := context.Background()
	c := p.Client()
	if _, err := c.CreateApp(ctx, "many", nil); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		if _, err := c.SetSecret(ctx, "many", fmt.Sprintf("S%03d", i), []byte(fmt.Sprintf("value-%d", i)), client.SecretOptions{NoRestart: true}); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.SetSecret(ctx, "many", "S000", []byte(fmt.Sprintf("new-%d", i)), client.SecretOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}
