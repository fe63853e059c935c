package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"testing"
	"time"

	"paddock.dev/paddock/internal/testenv"
)

// BenchmarkMetricsScrape reports the server's CPU while idle for 20 s on a
// platform of 100 apps of 5 instances each (500 instances;
// PADDOCK_BENCH_APPS sets the number of apps): what collecting metrics
// and history, reconciling and health checks cost when nothing happens;
// then 20 scrapes of GET /metrics, their time and the server CPU each
// takes. One run is the measurement: -benchtime 1x.
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
		if _, err := p.Client().CreateApp(ctx, app, nil); err != nil {
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
	ticks := func() int64 { return cpuTicks(p.PID()) }
	// The server's CPU at idle first, then what a scrape adds to it: a
	// figure the machine's other load does not stretch, as it does the
	// scrape's wall time.
	time.Sleep(10 * time.Second) // the last deploy's rollout settles
	t0, start := ticks(), time.Now()
	time.Sleep(20 * time.Second)
	idle := float64(ticks()-t0) / 100 / time.Since(start).Seconds()
	size := scrape()
	const scrapes = 20
	t0, start = ticks(), time.Now()
	b.ResetTimer()
	for range scrapes {
		scrape()
	}
	b.StopTimer()
	elapsed := time.Since(start)
	cpu := float64(ticks()-t0)/100 - idle*elapsed.Seconds()
	b.ReportMetric(float64(elapsed.Milliseconds())/scrapes, "ms/scrape")
	b.ReportMetric(cpu*1000/scrapes, "cpu-ms/scrape")
	b.ReportMetric(float64(size)/1024, "KiB/scrape")
	b.ReportMetric(idle*100, "idle-cpu-%")
}
