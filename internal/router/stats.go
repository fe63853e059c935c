package router

import (
	"sync/atomic"
	"time"
)

// DurationBounds are the upper bounds, in seconds, of the buckets of
// AppStats.Durations; a last bucket holds what is over the largest.
var DurationBounds = [...]float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// AppStats are what the router counted of an app's requests since it
// started: by status class, by duration, the response bytes and the
// requests in flight now.
type AppStats struct {
	Requests  map[string]uint64 `json:"requests"`  // "2xx" -> requests answered with such a status
	Durations []uint64          `json:"durations"` // requests per bucket of DurationBounds, then over the last
	Seconds   float64           `json:"seconds"`   // the sum of the durations
	BytesOut  uint64            `json:"bytes_out"` // response bytes sent to clients
	InFlight  int64             `json:"in_flight"`
}

// appStats counts an app's requests on the hot path: atomic adds, no lock,
// no allocation.
type appStats struct {
	classes  [6]atomic.Uint64 // 0: no answer (the client left), 1-5: 1xx-5xx
	buckets  [len(DurationBounds) + 1]atomic.Uint64
	nanos    atomic.Int64
	bytesOut atomic.Uint64
	inflight atomic.Int64
}

// bucketNanos are DurationBounds in nanoseconds.
var bucketNanos = func() (out [len(DurationBounds)]int64) {
	for i, b := range DurationBounds {
		out[i] = int64(b * float64(time.Second))
	}
	return out
}()

// done counts a request answered with status (0: none) after took
// nanoseconds, with bytes of response.
func (s *appStats) done(status int, took int64, bytes int64) {
	s.inflight.Add(-1)
	class := status / 100
	if class < 0 || class > 5 {
		class = 0
	}
	s.classes[class].Add(1)
	i := 0
	for i < len(bucketNanos) && took > bucketNanos[i] {
		i++
	}
	s.buckets[i].Add(1)
	s.nanos.Add(took)
	if bytes > 0 {
		s.bytesOut.Add(uint64(bytes))
	}
}

func (s *appStats) snapshot() AppStats {
	out := AppStats{Requests: map[string]uint64{}, Durations: make([]uint64, len(s.buckets)),
		Seconds: float64(s.nanos.Load()) / 1e9, BytesOut: s.bytesOut.Load(), InFlight: s.inflight.Load()}
	names := [6]string{"none", "1xx", "2xx", "3xx", "4xx", "5xx"}
	for i := range s.classes {
		if n := s.classes[i].Load(); n > 0 {
			out.Requests[names[i]] = n
		}
	}
	for i := range s.buckets {
		out.Durations[i] = s.buckets[i].Load()
	}
	return out
}

// statsFor returns app's counters, made on first use; s.mu is held.
func (s *backendSet) statsFor(app string) *appStats {
	if s.stats == nil {
		s.stats = map[string]*appStats{}
	}
	st := s.stats[app]
	if st == nil {
		st = &appStats{}
		s.stats[app] = st
	}
	return st
}

// appStats reports every app's counters.
func (s *backendSet) appStats() map[string]AppStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]AppStats, len(s.stats))
	for app, st := range s.stats {
		out[app] = st.snapshot()
	}
	return out
}
