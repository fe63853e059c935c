package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"paddock.dev/paddock/internal/testenv"
)

// BenchmarkMetricsScrape times GET /metrics on a platform of 100 apps of 5
// instances each (500 instances; PADDOCK_BENCH_APPS sets the number of
// apps), and reports the server's CPU while idle for 20 s: what
// collecting metrics and history, reconciling and health checks cost when
// nothing happens.
func BenchmarkMetricsScrape(b *testing.B) {
	apps := 100
	if v, err := strconv.Atoi(os.Getenv("PADDOCK_BENCH_APPS")); err == nil && v > 0 {
		apps = v
	}
	p := testenv.Start(b)
	ctx := context.Background()
	dir := prebuilt(b, 5)
	for i := 0; i < apps; i++ {
		app := fmt.Sprintf("m%03d", i)
		if _, err := p.Client().CreateApp(ctx, app); err != nil {
			b.Fatal(err)
		}
		deploy(b, p, app, dir)
	}
	scrape := func() int {
		req, _ := http.NewRequest("GET", p.API+"/metrics", nil)
		req.Header.Set("Authorization", "Bearer "+p.Token)
		resp, err := p.Client().HTTPClient().Do(req)
		if err != nil {
			b.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("GET /metrics: %d", resp.StatusCode)
		}
		return len(body)
	}
	size := scrape()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		scrape()
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/scrape")
	b.ReportMetric(float64(size)/1024, "KiB/scrape")

	ticks := func() int64 {
		f, _ := os.ReadFile("/proc/" + strconv.Itoa(p.PID()) + "/stat")
		s := string(f)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		u, _ := strconv.ParseInt(fields[11], 10, 64)
		k, _ := strconv.ParseInt(fields[12], 10, 64)
		return u + k
	}
	t0, start := ticks(), time.Now()
	time.Sleep(20 * time.Second)
	idle := float64(ticks()-t0) / 100 / time.Since(start).Seconds()
	b.ReportMetric(idle*100, "idle-cpu-%")
}
