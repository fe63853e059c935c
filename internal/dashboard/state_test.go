package dashboard

import (
	"strings"
	"testing"

	"paddock.dev/paddock/internal/wire"
)

func TestAppState(t *testing.T) {
	app := func(release int, procs map[string]int) wire.AppInfo {
		return wire.AppInfo{App: wire.App{Name: "a", Release: release, Processes: procs}}
	}
	in := func(proc string, release int, state string, healthy bool) wire.Instance {
		return wire.Instance{Process: proc, Release: release, State: state, Healthy: healthy}
	}
	tests := []struct {
		name  string
		app   wire.AppInfo
		insts []wire.Instance
		want  string
	}{
		{"never released", app(0, nil), nil, stateNew},
		{"scaled to zero", app(1, map[string]int{"web": 0}), nil, stateStopped},
		{"all healthy", app(2, map[string]int{"web": 2}), []wire.Instance{in("web", 2, "running", true), in("web", 2, "running", true)}, stateHealthy},
		{"one missing", app(2, map[string]int{"web": 2}), []wire.Instance{in("web", 2, "running", true)}, stateDegraded},
		{"one unhealthy", app(2, map[string]int{"web": 2}), []wire.Instance{in("web", 2, "running", true), in("web", 2, "running", false)}, stateDegraded},
		{"rolling out", app(3, map[string]int{"web": 1}), []wire.Instance{in("web", 2, "running", true), in("web", 3, "starting", false)}, stateDeploying},
		{"crash loop", app(2, map[string]int{"web": 1}), []wire.Instance{in("web", 2, "crashloop", false)}, stateCrashed},
		{"one of two crashing", app(2, map[string]int{"web": 2}), []wire.Instance{in("web", 2, "running", true), in("web", 2, "backoff", false)}, stateDegraded},
	}
	for _, tc := range tests {
		if got := appState(tc.app, tc.insts); got != tc.want {
			t.Errorf("%s: got %s, want %s", tc.name, got, tc.want)
		}
	}
}

func TestLineChart(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	c := lineChart("x", 100, 20, perSecond, series{"a", "c", []*float64{f(0), f(1), nil, f(2), f(4)}})
	if c.Empty || len(c.Lines) != 1 {
		t.Fatalf("chart %+v", c)
	}
	// A missing point breaks the line into two.
	if got := strings.Count(c.Lines[0].D, "M"); got != 2 {
		t.Errorf("path %q: %d moves, want 2", c.Lines[0].D, got)
	}
	if c.Summary != "now 4.00/s, max 4.00/s" {
		t.Errorf("summary %q", c.Summary)
	}
	if e := lineChart("x", 100, 20, perSecond, series{"a", "c", []*float64{nil, nil}}); !e.Empty || e.Summary != "no data yet" {
		t.Errorf("empty chart %+v", e)
	}
	day := make([]*float64, 8640)
	for i := range day {
		day[i] = f(float64(i % 7))
	}
	if got := len(downsample(day, maxChartPoints)); got != maxChartPoints {
		t.Errorf("downsample: %d points, want %d", got, maxChartPoints)
	}
}

func TestDiff(t *testing.T) {
	got := diff("config", map[string]string{"A": "1", "B": "2"}, map[string]string{"B": "3", "C": "4"})
	want := []change{{"removed", "config", "A"}, {"changed", "config", "B"}, {"added", "config", "C"}}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("change %d: got %v, want %v", i, got[i], want[i])
		}
	}
}
