package bench

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"paddock.dev/paddock/internal/client"
	"paddock.dev/paddock/internal/testenv"
)

// BenchmarkSecretReveal times `secrets reveal` through the API over HTTPS
// on loopback, with its audit event made durable before the answer, and
// reports the median and the 99th percentile.
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
	took := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if _, err := c.RevealSecret(ctx, "shop", "KEY"); err != nil {
			b.Fatal(err)
		}
		took = append(took, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(took[len(took)*99/100].Microseconds()), "p99-µs")
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
