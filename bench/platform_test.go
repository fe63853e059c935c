// Package bench measures the platform end to end on the real binary:
//
//	go test -run '^$' -bench . -benchtime 5x ./bench/
//
// The router's throughput against nginx is measured by router.sh beside this
// file.
package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"paddock.dev/paddock/internal/api"
	"paddock.dev/paddock/internal/archive"
	"paddock.dev/paddock/internal/testenv"
)

// prebuilt makes an app folder holding the example app's binary and a
// manifest without a build step: a deploy of it measures the platform, not
// the Go compiler.
func prebuilt(b *testing.B, instances int) string {
	b.Helper()
	_, file, _, _ := runtime.Caller(0)
	dir := b.TempDir()
	cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "hello"), ".")
	cmd.Dir = filepath.Join(filepath.Dir(file), "..", "examples", "hello")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("build example: %v\n%s", err, out)
	}
	manifest := fmt.Sprintf(`
[processes.web]
command = "./hello"
instances = %d
[processes.web.health]
path = "/healthz"
interval = "1s"
`, instances)
	if err := os.WriteFile(filepath.Join(dir, "paddock.toml"), []byte(manifest), 0o644); err != nil {
		b.Fatal(err)
	}
	return dir
}

// cpuTicks returns the CPU time of process pid, user and system, in clock
// ticks (USER_HZ, 100 a second).
func cpuTicks(pid int) int64 {
	f, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	s := string(f)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	u, _ := strconv.ParseInt(fields[11], 10, 64)
	k, _ := strconv.ParseInt(fields[12], 10, 64)
	return u + k
}

func deploy(b *testing.B, p *testenv.Platform, app, dir string) {
	b.Helper()
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(archive.Pack(context.Background(), dir, pw)) }()
	if _, err := p.Client().Deploy(context.Background(), app, pr, func(api.DeployEvent) {}); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkDeployToServing times a deploy of a prebuilt artifact to a new
// app, from the API call to the first 200 through the router.
func BenchmarkDeployToServing(b *testing.B) {
	p := testenv.Start(b)
	dir := prebuilt(b, 1)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		app := fmt.Sprintf("b%d", i)
		if _, err := p.Client().CreateApp(ctx, app, nil); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		deploy(b, p, app, dir)
		for {
			if code, _, err := p.Get(app+".localhost", "/"); err == nil && code == 200 {
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
}

// BenchmarkScaleToServing times an instance of an artifact already on the
// machine from the API call that asks for it (scale 0 → 1) to its first
// 200 through the router: start, first health check, router table.
func BenchmarkScaleToServing(b *testing.B) {
	p := testenv.Start(b)
	ctx := context.Background()
	c := p.Client()
	if _, err := c.CreateApp(ctx, "cold", nil); err != nil {
		b.Fatal(err)
	}
	deploy(b, p, "cold", prebuilt(b, 1))
	took := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		if _, err := c.Scale(ctx, "cold", map[string]int{"web": 0}); err != nil {
			b.Fatal(err)
		}
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			if insts, err := c.Instances(ctx, "cold"); err == nil && len(insts) == 0 {
				break
			}
			if time.Now().After(deadline) {
				b.Fatal("the instance did not stop")
			}
		}
		b.StartTimer()
		start := time.Now()
		if _, err := c.Scale(ctx, "cold", map[string]int{"web": 1}); err != nil {
			b.Fatal(err)
		}
		for {
			if code, _, err := p.Get("cold.localhost", "/"); err == nil && code == 200 {
				break
			}
			time.Sleep(time.Millisecond)
		}
		took = append(took, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(took[len(took)-1].Microseconds())/1000, "max-ms")
}

// BenchmarkRolloutUnderLoad rolls out a new release of 5 instances while 8
// clients send GETs through the router, and reports the failed requests.
func BenchmarkRolloutUnderLoad(b *testing.B) {
	p := testenv.Start(b)
	ctx := context.Background()
	if _, err := p.Client().CreateApp(ctx, "roll", nil); err != nil {
		b.Fatal(err)
	}
	deploy(b, p, "roll", prebuilt(b, 5))
	var ok, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if code, _, err := p.Get("roll.localhost", "/"); err != nil || code != 200 {
					failed.Add(1)
				} else {
					ok.Add(1)
				}
			}
		}()
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		v := fmt.Sprint(i)
		rel, err := p.Client().SetConfig(ctx, "roll", map[string]*string{"N": &v})
		if err != nil {
			b.Fatal(err)
		}
		if rel, err = p.Client().Release(ctx, "roll", rel.Version, 2*time.Minute); err != nil || rel.Status != "deployed" {
			b.Fatalf("rollout of v%d: %s %v", rel.Version, rel.Status, err)
		}
	}
	b.StopTimer()
	close(stop)
	wg.Wait()
	b.ReportMetric(float64(failed.Load())/float64(b.N), "failed/rollout")
	b.ReportMetric(float64(ok.Load())/float64(b.N), "ok/rollout")
}
