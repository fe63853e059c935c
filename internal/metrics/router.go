package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Traffic is what the router counted of one app's requests since it
// started.
type Traffic struct {
	Requests  map[string]uint64 // by status class: "2xx", "5xx", "none" (no answer)
	Bounds    []float64         // the duration buckets' upper bounds, in seconds
	Durations []uint64          // requests per bucket, then over the last bound
	Seconds   float64           // the sum of the durations
	BytesOut  uint64
	InFlight  int64
}

// WatchRouter reports, at each scrape, the router's counts per app that
// stats returns.
func (m *Metrics) WatchRouter(stats func(context.Context) (map[string]Traffic, error)) {
	m.Registry.MustRegister(&routerCollector{stats: stats})
}

var (
	descRouterRequests = prometheus.NewDesc("paddock_router_requests_total", "Requests the router answered for an app, by status class (none: the client left first).", []string{"app", "code"}, nil)
	descRouterDuration = prometheus.NewDesc("paddock_router_request_duration_seconds", "Time from a request's head to the end of its answer, through the router.", []string{"app"}, nil)
	descRouterBytes    = prometheus.NewDesc("paddock_router_response_bytes_total", "Bytes the router sent to clients for an app.", []string{"app"}, nil)
	descRouterInFlight = prometheus.NewDesc("paddock_router_requests_in_flight", "Requests of an app at the router now.", []string{"app"}, nil)
)

type routerCollector struct {
	stats func(context.Context) (map[string]Traffic, error)
}

func (c *routerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRouterRequests, descRouterDuration, descRouterBytes, descRouterInFlight} {
		ch <- d
	}
}

func (c *routerCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	all, err := c.stats(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(descRouterRequests, err)
		return
	}
	for app, t := range all {
		for class, n := range t.Requests {
			ch <- prometheus.MustNewConstMetric(descRouterRequests, prometheus.CounterValue, float64(n), app, class)
		}
		buckets := make(map[float64]uint64, len(t.Bounds))
		var count uint64
		for i, n := range t.Durations {
			count += n
			if i < len(t.Bounds) {
				buckets[t.Bounds[i]] = count
			}
		}
		ch <- prometheus.MustNewConstHistogram(descRouterDuration, count, t.Seconds, buckets, app)
		ch <- prometheus.MustNewConstMetric(descRouterBytes, prometheus.CounterValue, float64(t.BytesOut), app)
		ch <- prometheus.MustNewConstMetric(descRouterInFlight, prometheus.GaugeValue, float64(t.InFlight), app)
	}
}
