package metrics

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Instance is what a scrape reports of an instance.
type Instance struct {
	App, Process, ID, State string
	PID                     int
	Restarts                int
	StartedAt               time.Time
	MemoryUsed              int64  // its memory cgroup's, in bytes; 0 when unknown
	Cgroup                  string // its cgroup v2, for the CPU time and memory of all its processes
	Healthy                 bool
}

// WatchInstances reports the instances list returns at each scrape: their
// count by state, and each one's CPU, memory, open files, restarts, start
// time and health, read from /proc and its cgroup.
func (m *Metrics) WatchInstances(list func(context.Context) ([]Instance, error)) {
	m.Registry.MustRegister(&instanceCollector{list: list})
}

var (
	instanceLabels = []string{"app", "process", "instance"}
	descInstances  = prometheus.NewDesc("paddock_instances", "Instances, by app, process type and state.",
		[]string{"app", "process", "state"}, nil)
	descRestarts = prometheus.NewDesc("paddock_instance_restarts_total", "Times the instance's process was restarted by its supervisor.", instanceLabels, nil)
	descCPU      = prometheus.NewDesc("paddock_instance_cpu_seconds_total", "CPU time of the instance's processes (its main process's where it has no cgroup), user and system.", instanceLabels, nil)
	descRSS      = prometheus.NewDesc("paddock_instance_resident_memory_bytes", "Resident memory of the instance's main process.", instanceLabels, nil)
	descCgroup   = prometheus.NewDesc("paddock_instance_memory_usage_bytes", "Memory of every process of the instance, as its cgroup counts it.", instanceLabels, nil)
	descFDs      = prometheus.NewDesc("paddock_instance_open_fds", "Open file descriptors of the instance's main process.", instanceLabels, nil)
	descStart    = prometheus.NewDesc("paddock_instance_start_time_seconds", "When the instance's current process started, in seconds since the epoch.", instanceLabels, nil)
	descHealthy  = prometheus.NewDesc("paddock_instance_healthy", "1 when the instance passes its health check, else 0.", instanceLabels, nil)
)

type instanceCollector struct {
	list func(context.Context) ([]Instance, error)
}

func (c *instanceCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descInstances, descRestarts, descCPU, descRSS, descCgroup, descFDs, descStart, descHealthy} {
		ch <- d
	}
}

func (c *instanceCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	insts, err := c.list(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(descInstances, err)
		return
	}
	type key struct{ app, process, state string }
	counts := map[key]int{}
	for _, in := range insts {
		counts[key{in.App, in.Process, in.State}]++
		labels := []string{in.App, in.Process, in.ID}
		ch <- prometheus.MustNewConstMetric(descRestarts, prometheus.CounterValue, float64(in.Restarts), labels...)
		healthy := 0.0
		if in.Healthy {
			healthy = 1
		}
		ch <- prometheus.MustNewConstMetric(descHealthy, prometheus.GaugeValue, healthy, labels...)
		if !in.StartedAt.IsZero() {
			ch <- prometheus.MustNewConstMetric(descStart, prometheus.GaugeValue, float64(in.StartedAt.UnixNano())/1e9, labels...)
		}
		cgCPU, cgMem := cgroupUsage(in.Cgroup)
		if in.MemoryUsed == 0 {
			in.MemoryUsed = cgMem
		}
		if in.MemoryUsed > 0 {
			ch <- prometheus.MustNewConstMetric(descCgroup, prometheus.GaugeValue, float64(in.MemoryUsed), labels...)
		}
		if in.PID <= 0 {
			continue
		}
		cpu, ok := cgCPU, cgCPU > 0 // every process of it, not its shell's
		if !ok {
			cpu, ok = procCPU(in.PID)
		}
		if ok {
			ch <- prometheus.MustNewConstMetric(descCPU, prometheus.CounterValue, cpu, labels...)
		}
		if rss, ok := procRSS(in.PID); ok {
			ch <- prometheus.MustNewConstMetric(descRSS, prometheus.GaugeValue, rss, labels...)
		}
		if fds, err := os.ReadDir("/proc/" + strconv.Itoa(in.PID) + "/fd"); err == nil {
			ch <- prometheus.MustNewConstMetric(descFDs, prometheus.GaugeValue, float64(len(fds)), labels...)
		}
	}
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(descInstances, prometheus.GaugeValue, float64(n), k.app, k.process, k.state)
	}
}

// cgroupUsage reads the CPU seconds and memory bytes of every process a
// cgroup v2 holds (or held, for the CPU time); zeros when unknown. It is
// read at scrapes and samples only, not on every reconcile pass.
func cgroupUsage(dir string) (cpu float64, mem int64) {
	if dir == "" {
		return 0, 0
	}
	if b, err := os.ReadFile(filepath.Join(dir, "cpu.stat")); err == nil {
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(line, "usage_usec "); ok {
				n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				cpu = float64(n) / 1e6
			}
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "memory.current")); err == nil {
		mem, _ = strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	}
	return cpu, mem
}

// Linux's clock ticks a second for /proc/PID/stat (USER_HZ), 100 on every
// architecture Go supports.
const userHZ = 100

// procCPU reads a process's CPU seconds (user and system) from
// /proc/PID/stat, which costs more the more threads it has: read only
// where no cgroup counts them.
func procCPU(pid int) (float64, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	// The command's name, in parentheses, may hold spaces: fields start
	// after its last ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	// After the name: state(0) ... utime(11) stime(12).
	if len(f) < 13 {
		return 0, false
	}
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / userHZ, true
}

// procRSS reads a process's resident bytes from /proc/PID/statm.
func procRSS(pid int) (float64, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/statm")
	if err != nil {
		return 0, false
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0, false
	}
	pages, err := strconv.ParseFloat(f[1], 64)
	return pages * float64(os.Getpagesize()), err == nil
}
