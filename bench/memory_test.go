package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"paddock.dev/paddock/internal/router"
	"paddock.dev/paddock/internal/testenv"
)

// BenchmarkMemory500Instances runs 500 instances (5 apps of 100 workers)
// and reports the proportional set size of the server, the router and the
// instances' supervisors (one per app), in total and per instance; the
// apps' own processes are not counted. Run it once:
//
//	go test -run '^$' -bench Memory -benchtime 1x ./bench/
func BenchmarkMemory500Instances(b *testing.B) {
	const apps, per = 5, 100
	p := testenv.Start(b)
	ctx := context.Background()
	dir := b.TempDir()
	manifest := fmt.Sprintf("[processes.worker]\ncommand = \"exec sleep 100000\"\ninstances = %d\n", per)
	if err := os.WriteFile(filepath.Join(dir, "paddock.toml"), []byte(manifest), 0o644); err != nil {
		b.Fatal(err)
	}
	for a := 0; a < apps; a++ {
		name := fmt.Sprintf("m%d", a)
		if _, err := p.Client().CreateApp(ctx, name, nil); err != nil {
			b.Fatal(err)
		}
		deploy(b, p, name, dir)
	}
	for i := 0; i < b.N; i++ {
		// Let start-up settle: the supervisors' first garbage is collected.
		time.Sleep(5 * time.Second)
		shims, instances := shimPIDs(b, p.Data)
		if instances != apps*per {
			b.Fatalf("%d instances running, want %d", instances, apps*per)
		}
		if len(shims) != apps {
			b.Fatalf("%d supervisors running, want one per app (%d)", len(shims), apps)
		}
		var shimTotal int64
		for _, pid := range shims {
			shimTotal += pss(b, pid)
		}
		info, err := router.ReadInfo(filepath.Join(p.Data, "router"))
		if err != nil {
			b.Fatal(err)
		}
		server, rtr := pss(b, p.PID()), pss(b, info.PID)
		b.ReportMetric(float64(server)/(1<<20), "server-MiB")
		b.ReportMetric(float64(rtr)/(1<<20), "router-MiB")
		b.ReportMetric(float64(shimTotal)/(1<<20), "supervisors-MiB")
		b.ReportMetric(float64(shimTotal)/float64(len(shims))/(1<<20), "MiB/supervisor")
		b.ReportMetric(float64(shimTotal)/float64(instances)/(1<<20), "supervisor-MiB/instance")
		b.ReportMetric(float64(server+rtr+shimTotal)/(1<<20), "total-MiB")
	}
}

// shimPIDs lists the supervisors of the platform's running instances, and
// counts those instances.
func shimPIDs(b *testing.B, data string) (pids []int, instances int) {
	dirs, err := filepath.Glob(filepath.Join(data, "instances", "*", "state.json"))
	if err != nil {
		b.Fatal(err)
	}
	seen := map[int]bool{}
	for _, path := range dirs {
		var st struct {
			ShimPID int    `json:"shim_pid"`
			State   string `json:"state"`
		}
		if raw, err := os.ReadFile(path); err == nil && json.Unmarshal(raw, &st) == nil && st.ShimPID > 0 && st.State == "running" {
			instances++
			if !seen[st.ShimPID] {
				seen[st.ShimPID] = true
				pids = append(pids, st.ShimPID)
			}
		}
	}
	return pids, instances
}

// pss returns a process's proportional set size in bytes: its private
// memory and its share of what it shares with others.
func pss(b *testing.B, pid int) int64 {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/smaps_rollup")
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "Pss:"); ok {
			kb, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return kb << 10
		}
	}
	b.Fatalf("no Pss for pid %d", pid)
	return 0
}
