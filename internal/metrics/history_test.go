package metrics

import (
	"math"
	"path/filepath"
	"testing"
	"time"
)

// TestHistory: points land a step apart, gaps read as nothing, what is
// older than the span is gone, and the history survives a restart.
func TestHistory(t *testing.T) {
	file := filepath.Join(t.TempDir(), "history.json.gz")
	h, err := NewHistory(file)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	h.Add("shop", t0, Sample{1, 0, .01, .05, .09, .5, 100})
	h.Add("shop", t0.Add(Step), Sample{2, 1, math.NaN(), math.NaN(), math.NaN(), .25, 200})
	h.Add("shop", t0.Add(4*Step), Sample{4, 0, .01, .02, .03, 1, 400})
	start, step, pts := h.Range("shop", t0, t0.Add(4*Step))
	if !start.Equal(t0) || step != Step || len(pts) != 5 {
		t.Fatalf("range from %v, step %s, %d points", start, step, len(pts))
	}
	if pts[0][0] != 1 || pts[1][0] != 2 || pts[1][2] != -1 || pts[2] != nil || pts[3] != nil || pts[4][6] != 400 {
		t.Errorf("points %v", pts)
	}
	if err := h.Save(); err != nil {
		t.Fatal(err)
	}
	again, err := NewHistory(file)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, pts := again.Range("shop", t0, t0.Add(4*Step)); len(pts) != 5 || pts[4] == nil || pts[4][0] != 4 {
		t.Errorf("after a restart: %v", pts)
	}
	// A day later the old points are gone, though their slots come round.
	later := t0.Add(Span + 2*Step)
	h.Add("shop", later, Sample{9})
	if _, _, pts := h.Range("shop", later.Add(-Span+Step), later); pts[len(pts)-1][0] != 9 || pts[0] != nil && pts[0][0] == 2 {
		t.Errorf("a day later: first %v, last %v", pts[0], pts[len(pts)-1])
	}
}

// TestHistoryGapsAtAnyPhase: a gap between points taken at any second of
// their steps reads as nothing, never as a day-old point in that slot.
func TestHistoryGapsAtAnyPhase(t *testing.T) {
	h, err := NewHistory(filepath.Join(t.TempDir(), "h.json.gz"))
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	h.Add("a", t0.Add(-Span+10*time.Second), Sample{7}) // a day ago, the slot of t0+10s
	h.Add("a", t0.Add(9*time.Second), Sample{1})
	h.Add("a", t0.Add(21*time.Second), Sample{2})
	_, _, pts := h.Range("a", t0, t0.Add(21*time.Second))
	if len(pts) != 3 || pts[0] == nil || pts[0][0] != 1 || pts[1] != nil || pts[2] == nil || pts[2][0] != 2 {
		t.Errorf("points %v, want 1, nothing, 2", pts)
	}
}

// TestHistoryDownsampled: beyond a day the history reads a point every five
// minutes, each the mean of its fine points (latencies weighted by
// requests), kept for thirty days and across a restart; a month later it
// is gone.
func TestHistoryDownsampled(t *testing.T) {
	file := filepath.Join(t.TempDir(), "history.json.gz")
	h, err := NewHistory(file)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	for i := range 30 { // five minutes of points: 10 and 30 requests/s in turn
		req, p95 := 10.0, 0.1
		if i%2 == 1 {
			req, p95 = 30, 0.5
		}
		h.Add("shop", t0.Add(time.Duration(i)*Step), Sample{req, 1, math.NaN(), p95, math.NaN(), 0.5, 100 << 20})
	}
	h.Add("shop", t0.Add(10*time.Minute), Sample{5, 0, 0, 0, 0, 0, 0})
	now := t0.Add(3 * 24 * time.Hour)
	check := func(h *History, when string) {
		t.Helper()
		start, step, pts := h.Range("shop", now.Add(-3*24*time.Hour), now)
		if step != CoarseStep || !start.Equal(t0) || len(pts) != 3*24*12+1 {
			t.Fatalf("%s: from %v, step %s, %d points", when, start, step, len(pts))
		}
		want := []float64{20, 1, -1, 0.4, -1, 0.5, 100 << 20} // p95: (10*.1+30*.5)/40
		for i, v := range want {
			if math.Abs(pts[0][i]-v) > 1e-4*max(1, v) { // five significant digits
				t.Errorf("%s: the first five minutes: %v, want %v", when, pts[0], want)
				break
			}
		}
		if pts[1] != nil || pts[2] == nil || pts[2][0] != 5 || pts[3] != nil {
			t.Errorf("%s: points 1-3: %v %v %v", when, pts[1], pts[2], pts[3])
		}
	}
	check(h, "before a restart")
	if err := h.Save(); err != nil {
		t.Fatal(err)
	}
	again, err := NewHistory(file)
	if err != nil {
		t.Fatal(err)
	}
	check(again, "after a restart")
	h.Add("shop", t0.Add(CoarseSpan+time.Hour), Sample{1})
	if _, _, pts := h.Range("shop", t0, t0.Add(CoarseSpan+time.Hour)); pts[0] != nil && pts[0][0] == 20 {
		t.Errorf("a point 30 days old is still there: %v", pts[0])
	}
}

func TestQuantile(t *testing.T) {
	bounds := []float64{.01, .1, 1}
	old := []uint64{0, 0, 0, 0}
	cur := []uint64{50, 40, 9, 1}
	if q := quantile(bounds, old, cur, .5); q != .01 {
		t.Errorf("p50 %v, want .01", q)
	}
	if q := quantile(bounds, old, cur, .95); q <= .1 || q > 1 {
		t.Errorf("p95 %v, want in (.1, 1]", q)
	}
	if q := quantile(bounds, cur, cur, .5); !math.IsNaN(q) {
		t.Errorf("no requests: %v, want NaN", q)
	}
}
