package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"paddock.dev/paddock/internal/api"
	"paddock.dev/paddock/internal/archive"
	"paddock.dev/paddock/internal/dashboard"
	"paddock.dev/paddock/internal/testenv"
)

// dashboardClient is a signed-in browser without the browser: a cookie
// jar, the platform's CA, keep-alives.
func dashboardClient(b *testing.B, p *testenv.Platform) *http.Client {
	b.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(p.CA))
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, MaxIdleConnsPerHost: 4},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.PostForm(p.API+"/login", url.Values{"token": {p.Token}})
	if err != nil {
		b.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		b.Fatalf("login: %d", resp.StatusCode)
	}
	return c
}

// sleepers deploys n apps of k instances each that only sleep: cheap
// instances, so that the platform holds many.
func sleepers(b *testing.B, p *testenv.Platform, n, k int) {
	b.Helper()
	dir := b.TempDir()
	os.Chmod(dir, 0o755)
	manifest := fmt.Sprintf("[processes.worker]\ncommand = \"sleep 1000000\"\ninstances = %d\n", k)
	if err := os.WriteFile(filepath.Join(dir, "paddock.toml"), []byte(manifest), 0o644); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		app := fmt.Sprintf("app%03d", i)
		if _, err := p.Client().CreateApp(ctx, app, nil); err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			pr, pw := io.Pipe()
			go func() { pw.CloseWithError(archive.Pack(ctx, dir, pw)) }()
			if _, err := p.Client().Deploy(ctx, app, pr, func(api.DeployEvent) {}); err != nil {
				errs <- fmt.Errorf("deploy %s: %w", app, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}

// timePage GETs path b.N times and reports the median and the 99th
// percentile of the time to the last byte, and the page's size.
func timePage(b *testing.B, c *http.Client, base, path, must string) {
	b.Helper()
	get := func() (time.Duration, int) {
		start := time.Now()
		resp, err := c.Get(base + path)
		if err != nil {
			b.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		d := time.Since(start)
		if resp.StatusCode != 200 || !strings.Contains(string(body), must) {
			b.Fatalf("GET %s: %d, want 200 with %q", path, resp.StatusCode, must)
		}
		return d, len(body)
	}
	get() // warm the connection
	times := make([]time.Duration, 0, b.N)
	size := 0
	b.ResetTimer()
	for range b.N {
		d, n := get()
		times = append(times, d)
		size = n
	}
	b.StopTimer()
	slices.Sort(times)
	q := func(f float64) float64 {
		return float64(times[min(len(times)-1, int(f*float64(len(times))))].Microseconds()) / 1000
	}
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(float64(size)/1024, "html-KiB")
}

// BenchmarkDashboard times the dashboard's pages on a platform of 100
// apps of 5 instances each (500 instances): the overview and one app's
// page, from request to last byte over HTTPS on loopback (keep-alive), and
// the weight of its assets.
//
//	go test -run '^$' -bench Dashboard -benchtime 50x ./bench/
func BenchmarkDashboard(b *testing.B) { benchDashboard(b, 5) }

// BenchmarkDashboardSmall is BenchmarkDashboard with one instance per app
// (100 instances): what the pages cost apart from the instances' number.
func BenchmarkDashboardSmall(b *testing.B) { benchDashboard(b, 1) }

func benchDashboard(b *testing.B, perApp int) {
	p := testenv.Start(b)
	sleepers(b, p, 100, perApp)
	c := dashboardClient(b, p)
	// Let the history gather a few samples of every app.
	time.Sleep(25 * time.Second)
	// What the platform itself spends with 500 instances and nobody
	// asking: the dashboard's pages share the machine with it.
	b.Run("server-idle", func(b *testing.B) {
		t0, start := cpuTicks(p.PID()), time.Now()
		time.Sleep(10 * time.Second)
		for range b.N {
		}
		b.ReportMetric(float64(cpuTicks(p.PID())-t0)/time.Since(start).Seconds(), "server-cpu-%")
	})
	b.Run("overview", func(b *testing.B) { timePage(b, c, p.API, "/", `href="/apps/app099"`) })
	// What the overview asks the API for, one request each whatever the
	// number of apps: where its time goes.
	api := p.Client().HTTPClient()
	for _, route := range []string{"/v1/apps", "/v1/instances", "/v1/metrics/apps?since=30m&series=requests_per_second,errors_per_second"} {
		b.Run("api"+strings.NewReplacer("/", "-", "?", "-", "=", "-", "&", "-", ",", "-").Replace(route), func(b *testing.B) {
			for range b.N {
				req, _ := http.NewRequest("GET", p.API+route, nil)
				req.Header.Set("Authorization", "Bearer "+p.Token)
				resp, err := api.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
	b.Run("app", func(b *testing.B) { timePage(b, c, p.API, "/apps/app042", "app042.worker.") })
	b.Run("app-day", func(b *testing.B) { timePage(b, c, p.API, "/apps/app042?range=24h", "app042.worker.") })
	b.Run("assets", func(b *testing.B) {
		n, err := dashboard.AssetBytes()
		if err != nil {
			b.Fatal(err)
		}
		for range b.N {
		}
		b.ReportMetric(float64(n)/1024, "assets-KiB")
	})
}

// BenchmarkDashboardLogLatency measures the time from a log line written
// by an app to its arrival in an open log stream of the dashboard (the
// server-sent events a page reads): the app writes its clock's time in
// each line, 20 a second.
//
//	go test -run '^$' -bench DashboardLogLatency -benchtime 200x ./bench/
func BenchmarkDashboardLogLatency(b *testing.B) {
	p := testenv.Start(b)
	ctx := context.Background()
	if _, err := p.Client().CreateApp(ctx, "talk", nil); err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	os.Chmod(dir, 0o755)
	manifest := "[processes.worker]\ncommand = '''while true; do echo \"at $(date +%s%N)\"; sleep 0.05; done'''\n"
	if err := os.WriteFile(filepath.Join(dir, "paddock.toml"), []byte(manifest), 0o644); err != nil {
		b.Fatal(err)
	}
	deploy(b, p, "talk", dir)
	c := dashboardClient(b, p)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, _ := http.NewRequestWithContext(sctx, "GET", p.API+"/apps/talk/logs/stream?process=worker", nil)
	resp, err := c.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	// Skip the tail: only lines written after the stream opened count.
	opened := time.Now()
	var lat []time.Duration
	b.ResetTimer()
	for sc.Scan() && len(lat) < b.N {
		line := sc.Text()
		i := strings.Index(line, `"text":"at `)
		if !strings.HasPrefix(line, "data: ") || i < 0 {
			continue
		}
		now := time.Now()
		ns, err := strconv.ParseInt(strings.TrimRight(line[i+len(`"text":"at `):], `"}`), 10, 64)
		if err != nil {
			b.Fatalf("line %q: %v", line, err)
		}
		at := time.Unix(0, ns)
		if at.Before(opened) {
			continue
		}
		lat = append(lat, now.Sub(at))
	}
	b.StopTimer()
	if len(lat) < b.N {
		b.Fatalf("the stream ended after %d lines: %v", len(lat), sc.Err())
	}
	slices.Sort(lat)
	q := func(f float64) float64 {
		return float64(lat[min(len(lat)-1, int(f*float64(len(lat))))].Microseconds()) / 1000
	}
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(q(1), "max-ms")
}
