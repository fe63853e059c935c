package daemon

import (
	"strings"
	"testing"
	"time"

	"paddock.dev/paddock/internal/router"
)

// TestTrafficRules: the error rate and the 95th percentile latency are
// read from the router's counters over the last minutes; a quiet app or a
// healthy one raises nothing.
func TestTrafficRules(t *testing.T) {
	buckets := func(fast, slow uint64) []uint64 {
		d := make([]uint64, len(router.DurationBounds)+1)
		d[0], d[len(router.DurationBounds)-1] = fast, slow // under 1 ms; 5-10 s
		return d
	}
	var w trafficWindow
	start := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	base := map[string]router.AppStats{
		"good":  {Requests: map[string]uint64{"2xx": 1000}, Durations: buckets(1000, 0)},
		"bad":   {Requests: map[string]uint64{"2xx": 1000, "5xx": 10}, Durations: buckets(1010, 0)},
		"slow":  {Requests: map[string]uint64{"2xx": 1000}, Durations: buckets(1000, 0)},
		"quiet": {Requests: map[string]uint64{"5xx": 1}, Durations: buckets(1, 0)},
	}
	if c := w.conditions(start, base); len(c) != 0 {
		t.Fatalf("one reading raised %v", c)
	}
	later := map[string]router.AppStats{
		"good":  {Requests: map[string]uint64{"2xx": 1100, "5xx": 1}, Durations: buckets(1101, 0)},
		"bad":   {Requests: map[string]uint64{"2xx": 1080, "5xx": 30}, Durations: buckets(1110, 0)},
		"slow":  {Requests: map[string]uint64{"2xx": 1100}, Durations: buckets(1090, 10)},
		"quiet": {Requests: map[string]uint64{"5xx": 5}, Durations: buckets(5, 0)},
	}
	got := map[string]string{}
	for _, c := range w.conditions(start.Add(time.Minute), later) {
		got[c.App] = c.Rule
		if !strings.Contains(c.Message, c.App) {
			t.Errorf("%s: the message does not name the app: %s", c.Rule, c.Message)
		}
	}
	want := map[string]string{"bad": "error_rate", "slow": "slow_responses"}
	if len(got) != len(want) || got["bad"] != want["bad"] || got["slow"] != want["slow"] {
		t.Errorf("conditions %v, want %v", got, want)
	}
	// Readings older than the window no longer count.
	if c := w.conditions(start.Add(10*time.Minute), later); len(c) != 0 {
		t.Errorf("nothing happened for 9 minutes, yet %v", c)
	}
}
