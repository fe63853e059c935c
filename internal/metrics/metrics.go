// Package metrics holds the platform's own Prometheus metrics: what the
// API, the reconciler, builds and the audit log count and time as they
// work, and what is read from the instances at each scrape. Names follow
// the Prometheus conventions: a paddock_ prefix, base units (seconds,
// bytes), _total for counters.
package metrics

import (
	"compress/gzip"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics is the platform's registry and the metrics its parts update.
// The zero value is not usable; a nil *Metrics records nothing.
type Metrics struct {
	Registry *prometheus.Registry

	apiRequests       *prometheus.CounterVec
	apiDuration       *prometheus.HistogramVec
	reconcilePasses   prometheus.Counter
	reconcileDuration prometheus.Histogram
	builds            *prometheus.CounterVec
	buildDuration     prometheus.Histogram
	auditAppend       prometheus.Histogram
}

// New returns the platform's metrics, with the Go runtime's and the
// server process's own.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		apiRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "paddock_api_requests_total", Help: "API requests answered, by route and HTTP status code.",
		}, []string{"route", "code"}),
		apiDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "paddock_api_request_duration_seconds", Help: "Time to answer an API request, by route.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10, 60},
		}, []string{"route"}),
		reconcilePasses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "paddock_reconcile_passes_total", Help: "Passes of the reconciler over every app.",
		}),
		reconcileDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "paddock_reconcile_duration_seconds", Help: "Time of a pass of the reconciler.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5},
		}),
		builds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "paddock_builds_total", Help: "Builds, by result (succeeded or failed).",
		}, []string{"result"}),
		buildDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "paddock_build_duration_seconds", Help: "Time from an upload's arrival to its artifact.",
			Buckets: []float64{.1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900},
		}),
		auditAppend: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "paddock_audit_append_duration_seconds", Help: "Time to make an audit event durable.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .1, 1},
		}),
	}
	m.Registry.MustRegister(m.apiRequests, m.apiDuration, m.reconcilePasses, m.reconcileDuration,
		m.builds, m.buildDuration, m.auditAppend,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the registry in the exposition format, gzipped at the
// fastest level for a scraper that takes it: the library's default level
// spends half a scrape's CPU compressing, for a few per cent of size.
func (m *Metrics) Handler() http.Handler {
	h := promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError,
		OfferedCompressions: []promhttp.Compression{promhttp.Identity}})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Add("Vary", "Accept-Encoding")
		if !acceptsGzip(r.Header.Get("Accept-Encoding")) {
			h.ServeHTTP(w, r)
			return
		}
		zw := gzipWriters.Get().(*gzip.Writer)
		defer gzipWriters.Put(zw)
		zw.Reset(w)
		w.Header().Set("Content-Encoding", "gzip")
		h.ServeHTTP(gzipResponse{w, zw}, r)
		zw.Close()
	})
}

var gzipWriters = sync.Pool{New: func() any {
	zw, _ := gzip.NewWriterLevel(nil, gzip.BestSpeed)
	return zw
}}

// acceptsGzip reports whether an Accept-Encoding header takes gzip.
func acceptsGzip(header string) bool {
	for part := range strings.SplitSeq(header, ",") {
		coding, params, _ := strings.Cut(part, ";")
		if strings.EqualFold(strings.TrimSpace(coding), "gzip") {
			q := strings.ReplaceAll(params, " ", "")
			return q != "q=0" && q != "q=0.0" && q != "q=0.00" && q != "q=0.000"
		}
	}
	return false
}

// gzipResponse writes a response's body through a gzip writer.
type gzipResponse struct {
	http.ResponseWriter
	zw *gzip.Writer
}

func (g gzipResponse) Write(b []byte) (int, error) { return g.zw.Write(b) }

// APIRequest counts an answered request of route with its status code.
func (m *Metrics) APIRequest(route string, code int, took time.Duration) {
	if m == nil {
		return
	}
	m.apiRequests.WithLabelValues(route, strconv.Itoa(code)).Inc()
	m.apiDuration.WithLabelValues(route).Observe(took.Seconds())
}

// ReconcilePass counts a pass of the reconciler.
func (m *Metrics) ReconcilePass(took time.Duration) {
	if m == nil {
		return
	}
	m.reconcilePasses.Inc()
	m.reconcileDuration.Observe(took.Seconds())
}

// Build counts a build.
func (m *Metrics) Build(ok bool, took time.Duration) {
	if m == nil {
		return
	}
	result := "failed"
	if ok {
		result = "succeeded"
	}
	m.builds.WithLabelValues(result).Inc()
	m.buildDuration.Observe(took.Seconds())
}

// AuditAppend times an audit event made durable.
func (m *Metrics) AuditAppend(took time.Duration) {
	if m == nil {
		return
	}
	m.auditAppend.Observe(took.Seconds())
}
