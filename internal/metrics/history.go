package metrics

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

// The history keeps, per app, a point every Step for Span: request and
// error rates, latency percentiles, CPU and memory; and beyond, a point
// every CoarseStep for CoarseSpan, each summing up the fine points of its
// time. It is bounded (two rings per app) and written to a file, so that it
// survives restarts.
const (
	Step       = 10 * time.Second
	Span       = 24 * time.Hour
	CoarseStep = 5 * time.Minute
	CoarseSpan = 30 * 24 * time.Hour
	ring       = int(Span / Step)
	coarseRing = int(CoarseSpan / CoarseStep)
)

// Series are the names of an app's series, in the order Sample takes them.
var Series = []string{"requests_per_second", "errors_per_second", "p50_seconds", "p95_seconds", "p99_seconds", "cpu_cores", "memory_bytes"}

// Sample is one app's values at one time; NaN: not known then.
type Sample [7]float64

// History holds the apps' series.
type History struct {
	mu   sync.Mutex
	file string
	apps map[string]*appRing
}

type appRing struct {
	Start      int64       `json:"start,omitempty"` // unused; kept for files written before
	Last       int64       `json:"last"`            // unix seconds of the newest point
	Points     [][]float64 `json:"points"`
	CoarseLast int64       `json:"coarse_last"`
	Coarse     [][]float64 `json:"coarse"`
}

// NewHistory returns a history kept in file (gzip JSON), loaded from it if
// it is there.
func NewHistory(file string) (*History, error) {
	h := &History{file: file, apps: map[string]*appRing{}}
	f, err := os.Open(file)
	if os.IsNotExist(err) {
		return h, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return h, nil // damaged: start again rather than not start
	}
	if err := json.NewDecoder(zr).Decode(&h.apps); err != nil {
		h.apps = map[string]*appRing{}
	}
	for app, r := range h.apps {
		if r == nil || len(r.Points) != ring {
			delete(h.apps, app) // written with another step or span
			continue
		}
		if len(r.Coarse) != coarseRing {
			r.Coarse, r.CoarseLast = make([][]float64, coarseRing), 0
		}
	}
	return h, nil
}

func slot(t int64) int { return int((t / int64(Step/time.Second)) % int64(ring)) }

// put stores p at unix time t in a ring of points step seconds apart whose
// newest point is at *last, emptying the slots it skips.
func put(points [][]float64, last *int64, step, t int64, p []float64) {
	n := int64(len(points))
	k := t / step
	if *last != 0 {
		for j := *last/step + 1; j < k && j <= *last/step+n; j++ {
			points[j%n] = nil
		}
	}
	points[k%n] = p
	*last = k * step
}

// get returns the point at unix time t of a ring, nil if it holds none.
func get(points [][]float64, last, step, t int64) []float64 {
	n := int64(len(points))
	if t > last || last-t >= n*step {
		return nil
	}
	return points[(t/step)%n]
}

// Add records an app's sample at t.
func (h *History) Add(app string, t time.Time, s Sample) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.apps[app]
	if r == nil {
		r = &appRing{Points: make([][]float64, ring), Coarse: make([][]float64, coarseRing)}
		h.apps[app] = r
	}
	// JSON has no NaN: an unknown value is kept as -1 (no series is
	// negative). Five significant digits are plenty for charts and rules,
	// and keep the file small.
	p := make([]float64, len(s))
	for i, v := range s {
		if math.IsNaN(v) {
			v = -1
		}
		p[i] = round5(v)
	}
	step := int64(Step / time.Second)
	put(r.Points, &r.Last, step, t.Unix(), p)
	// The coarse point of t's time sums up the fine points so far.
	cstep := int64(CoarseStep / time.Second)
	from := t.Unix() / cstep * cstep
	var fine [][]float64
	for u := from; u <= r.Last; u += step {
		fine = append(fine, get(r.Points, r.Last, step, u))
	}
	put(r.Coarse, &r.CoarseLast, cstep, from, summary(fine))
}

// round5 rounds v to five significant digits.
func round5(v float64) float64 {
	if v == 0 || math.IsInf(v, 0) {
		return v
	}
	scale := math.Pow(10, 4-math.Floor(math.Log10(math.Abs(v))))
	return math.Round(v*scale) / scale
}

// summary sums up points into one: the mean of each series where known,
// the latency percentiles weighted by the requests.
func summary(points [][]float64) []float64 {
	out := make([]float64, len(Series))
	var sum, weight Sample
	var n [len(Sample{})]int
	for _, p := range points {
		for i := 0; i < len(p) && i < len(out); i++ {
			if p[i] < 0 {
				continue
			}
			w := 1.0
			if i >= 2 && i <= 4 { // p50, p95, p99
				w = max(p[0], 0)
			}
			sum[i] += p[i] * w
			weight[i] += w
			n[i]++
		}
	}
	for i := range out {
		switch {
		case n[i] == 0:
			out[i] = -1
		case weight[i] == 0:
			out[i] = 0
		default:
			out[i] = round5(sum[i] / weight[i])
		}
	}
	return out
}

// Forget drops an app's series.
func (h *History) Forget(app string) {
	h.mu.Lock()
	delete(h.apps, app)
	h.mu.Unlock()
}

// Range returns an app's points from since to now: one every Step when
// since is within Span, else one every CoarseStep (for at most CoarseSpan);
// a point of nothing is nil.
func (h *History) Range(app string, since, now time.Time) (start time.Time, step time.Duration, points [][]float64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	step, span := Step, Span
	if now.Sub(since) > Span {
		step, span = CoarseStep, CoarseSpan
	}
	st := int64(step / time.Second)
	from := max(since.Unix(), now.Unix()-int64(span/time.Second)+st) / st * st
	to := now.Unix() / st * st
	r := h.apps[app]
	for t := from; t <= to; t += st {
		var p []float64
		if r != nil && step == Step {
			p = get(r.Points, r.Last, st, t)
		} else if r != nil {
			p = get(r.Coarse, r.CoarseLast, st, t)
		}
		points = append(points, p)
	}
	return time.Unix(from, 0).UTC(), step, points
}

// Save writes the history to its file, atomically and durably. It copies
// the points under the lock and encodes them outside it.
func (h *History) Save() error {
	h.mu.Lock()
	apps := make(map[string]*appRing, len(h.apps))
	for app, r := range h.apps {
		apps[app] = &appRing{Last: r.Last, Points: slices.Clone(r.Points), CoarseLast: r.CoarseLast, Coarse: slices.Clone(r.Coarse)}
	}
	h.mu.Unlock()
	if err := os.MkdirAll(filepath.Dir(h.file), 0o700); err != nil {
		return err
	}
	tmp := h.file + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	zw := gzip.NewWriter(f)
	err = json.NewEncoder(zw).Encode(apps)
	if cerr := zw.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, h.file)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("save the metrics history: %w", err)
	}
	return nil
}

// quantile returns the q quantile, in seconds, of the requests counted
// between two histograms with upper bounds bounds (and one bucket past
// them), interpolating within the bucket; NaN without requests.
func quantile(bounds []float64, old, cur []uint64, q float64) float64 {
	d := make([]float64, len(cur))
	var total float64
	for i := range cur {
		v := cur[i]
		if i < len(old) && v >= old[i] {
			v -= old[i]
		}
		d[i] = float64(v)
		total += d[i]
	}
	if total == 0 {
		return math.NaN()
	}
	want := q * total
	var seen float64
	for i, n := range d {
		if seen+n >= want {
			lo := 0.0
			if i > 0 {
				lo = bounds[i-1]
			}
			if i >= len(bounds) {
				return bounds[len(bounds)-1]
			}
			return lo + (bounds[i]-lo)*(want-seen)/n
		}
		seen += n
	}
	return bounds[len(bounds)-1]
}

// Sampler adds a sample of every app to a history each Step.
type Sampler struct {
	History   *History
	Traffic   func(context.Context) (map[string]Traffic, error)
	Instances func(context.Context) ([]Instance, error)
	// Apps returns the apps there are: the series of others are dropped
	// (a new app of a destroyed one's name starts with none).
	Apps   func(context.Context) (map[string]bool, error)
	Logger *slog.Logger // nil: save failures go unsaid

	prevAt      time.Time
	prevTraffic map[string]Traffic
	prevCPU     map[string]float64 // by instance

	mu    sync.Mutex
	cores map[string]float64 // each instance's CPU over the last step
}

// CPU returns an instance's CPU, in cores, over the last step; false
// before two samples of it.
func (s *Sampler) CPU(id string) (float64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.cores[id]
	return c, ok
}

// Run samples every Step until ctx ends, saving the history every minute
// and at the end.
func (s *Sampler) Run(ctx context.Context) {
	t := time.NewTicker(Step)
	defer t.Stop()
	saved := time.Now()
	for {
		select {
		case <-ctx.Done():
			s.save()
			return
		case now := <-t.C:
			s.sample(ctx, now)
			if now.Sub(saved) >= time.Minute {
				s.save()
				saved = now
			}
		}
	}
}

func (s *Sampler) save() {
	if err := s.History.Save(); err != nil && s.Logger != nil {
		s.Logger.Warn("save the metrics history", "err", err)
	}
}

func (s *Sampler) sample(ctx context.Context, now time.Time) {
	traffic, err := s.Traffic(ctx)
	if err != nil {
		traffic = nil
	}
	insts, _ := s.Instances(ctx)
	secs := now.Sub(s.prevAt).Seconds()
	first := s.prevAt.IsZero()
	apps := map[string]*Sample{}
	get := func(app string) *Sample {
		a := apps[app]
		if a == nil {
			a = &Sample{math.NaN(), math.NaN(), math.NaN(), math.NaN(), math.NaN(), 0, 0}
			apps[app] = a
		}
		return a
	}
	for app, cur := range traffic {
		a := get(app)
		old, ok := s.prevTraffic[app]
		if first || !ok {
			continue
		}
		var total, errs float64
		for class, n := range cur.Requests {
			d := float64(n) - float64(old.Requests[class])
			if d < 0 { // the router restarted
				d = float64(n)
			}
			total += d
			if class == "5xx" {
				errs += d
			}
		}
		a[0], a[1] = total/secs, errs/secs
		for i, q := range []float64{.5, .95, .99} {
			a[2+i] = quantile(cur.Bounds, old.Durations, cur.Durations, q)
		}
	}
	cpu, cores := map[string]float64{}, map[string]float64{}
	for _, in := range insts {
		a := get(in.App)
		cgCPU, cgMem := cgroupUsage(in.Cgroup)
		if in.MemoryUsed == 0 {
			in.MemoryUsed = cgMem
		}
		if in.MemoryUsed > 0 {
			a[6] += float64(in.MemoryUsed)
		}
		if in.PID <= 0 {
			continue
		}
		if in.MemoryUsed == 0 {
			if rss, ok := procRSS(in.PID); ok {
				a[6] += rss
			}
		}
		c, ok := cgCPU, cgCPU > 0
		if !ok {
			c, ok = procCPU(in.PID)
		}
		if !ok {
			continue
		}
		cpu[in.ID] = c
		if prev, ok := s.prevCPU[in.ID]; ok && !first && c >= prev {
			a[5] += (c - prev) / secs
			cores[in.ID] = (c - prev) / secs
		}
	}
	known, err := s.Apps(ctx)
	if err != nil {
		return // nothing is known for sure: nothing is written
	}
	for app, a := range apps {
		if known[app] {
			s.History.Add(app, now, *a)
		}
	}
	s.History.mu.Lock()
	for app := range s.History.apps {
		if !known[app] {
			delete(s.History.apps, app)
		}
	}
	s.History.mu.Unlock()
	s.prevAt, s.prevTraffic, s.prevCPU = now, traffic, cpu
	s.mu.Lock()
	s.cores = cores
	s.mu.Unlock()
}
