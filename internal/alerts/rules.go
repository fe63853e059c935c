package alerts

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"paddock.dev/paddock/internal/manifest"
)

// ErrBadRule is a rule that cannot be evaluated.
var ErrBadRule = errors.New("invalid alert rule")

// Builtin is a rule the platform evaluates for every app from the start.
type Builtin struct {
	Name        string
	Description string
}

// Builtins are the rules on from the start, in the order `alerts rules`
// shows them.
var Builtins = []Builtin{
	{"crash_loop", "an instance restarted 3 times in 10 minutes, or its supervisor reports a crash loop"},
	{"no_healthy_instance", "an app has web instances and none has been healthy for a minute"},
	{"memory_near_limit", "an instance has used 90% of its memory limit for a minute"},
	{"error_rate", "more than 5% of at least 20 requests in 5 minutes were answered 5xx"},
	{"slow_responses", "the 95th percentile of response times in 5 minutes is over a second"},
	{"volume_nearly_full", "a volume holds 90% of its size"},
	{"backup_failed", "a volume's last scheduled backup failed"},
	{"certificate_expiring", "a certificate the platform serves expires within 14 days"},
}

// A Rule is a threshold on one of an app's metrics, which someone set: it
// holds while the metric's value over the last minute is past the
// threshold, and fires once it has held for For.
type Rule struct {
	ID        string
	App       string
	Metric    string // a name of Metrics
	Above     bool   // > when true, < when false
	Threshold float64
	For       time.Duration
}

// Metric is what a rule may watch: an app's series in the metrics history.
type Metric struct {
	Name        string
	Description string
	unit        unit
}

type unit int

const (
	perSecond unit = iota
	fraction       // 0.05 or "5%"
	seconds        // 0.5 or "500ms"
	cores          // 1.5 or "150%"
	byteSize       // "400MiB"
)

// Metrics are the metrics rules may watch.
var Metrics = []Metric{
	{"requests", "requests per second through the router", perSecond},
	{"errors", "5xx answers per second", perSecond},
	{"error_rate", "the share of answers that are 5xx, e.g. 2%", fraction},
	{"p50", "median response time, e.g. 200ms", seconds},
	{"p95", "95th percentile of response times, e.g. 500ms", seconds},
	{"p99", "99th percentile of response times, e.g. 1s", seconds},
	{"cpu", "CPU of all the app's instances, in cores or % of one, e.g. 150%", cores},
	{"memory", "memory of all the app's instances, e.g. 400MiB", byteSize},
}

func metricNames() string {
	names := make([]string, len(Metrics))
	for i, m := range Metrics {
		names[i] = m.Name
	}
	return strings.Join(names, ", ")
}

// ParseRule parses a rule's condition, "METRIC > THRESHOLD" or
// "METRIC < THRESHOLD", such as "p95 > 500ms" or "error_rate > 2%".
func ParseRule(when string, holdFor time.Duration) (Rule, error) {
	bad := func(format string, a ...any) (Rule, error) {
		return Rule{}, fmt.Errorf("%w: %s", ErrBadRule, fmt.Sprintf(format, a...))
	}
	i := strings.IndexAny(when, "<>")
	if i < 0 {
		return bad("%q: write METRIC > THRESHOLD or METRIC < THRESHOLD, e.g. \"p95 > 500ms\"", when)
	}
	name, value := strings.TrimSpace(when[:i]), strings.TrimSpace(when[i+1:])
	mi := slices.IndexFunc(Metrics, func(m Metric) bool { return m.Name == name })
	if mi < 0 {
		return bad("unknown metric %q: use one of %s", name, metricNames())
	}
	m := Metrics[mi]
	v, err := m.unit.parse(value)
	if err != nil {
		return bad("%s: %v", m.Name, err)
	}
	if holdFor < 0 || holdFor > 24*time.Hour {
		return bad("for %s: give a duration from 0 to 24h", holdFor)
	}
	return Rule{Metric: m.Name, Above: when[i] == '>', Threshold: v, For: holdFor}, nil
}

func (u unit) parse(s string) (float64, error) {
	percent := strings.HasSuffix(s, "%")
	var v float64
	var err error
	switch {
	case u == byteSize:
		var n int64
		n, err = manifest.ParseSize(s)
		v = float64(n)
	case u == seconds:
		if d, derr := time.ParseDuration(s); derr == nil {
			v = d.Seconds()
		} else if v, err = strconv.ParseFloat(s, 64); err != nil {
			err = fmt.Errorf("%q is not a duration: give one such as 500ms or 2s", s)
		}
	case percent && (u == fraction || u == cores):
		v, err = strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(s, "%")), 64)
		v /= 100
	default:
		v, err = strconv.ParseFloat(s, 64)
	}
	if err != nil {
		if _, ok := err.(*strconv.NumError); ok {
			err = fmt.Errorf("%q is not a number", s)
		}
		return 0, err
	}
	if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
		return 0, fmt.Errorf("%q: give a number of 0 or more", s)
	}
	if u == fraction && v > 1 {
		return 0, fmt.Errorf("%q is over 100%%: write a share such as 2%% or 0.02", s)
	}
	return v, nil
}

// format writes v in the metric's unit.
func (u unit) format(v float64) string {
	switch u {
	case fraction:
		return strconv.FormatFloat(v*100, 'g', 3, 64) + "%"
	case seconds:
		return time.Duration(v * float64(time.Second)).Round(time.Microsecond).String()
	case cores:
		return strconv.FormatFloat(v*100, 'g', 3, 64) + "%"
	case byteSize:
		return strconv.FormatFloat(v/(1<<20), 'f', 1, 64) + "MiB"
	}
	return strconv.FormatFloat(v, 'g', 4, 64) + "/s"
}

func (r Rule) unit() unit {
	if i := slices.IndexFunc(Metrics, func(m Metric) bool { return m.Name == r.Metric }); i >= 0 {
		return Metrics[i].unit
	}
	return perSecond
}

// When is the rule's condition as ParseRule reads it.
func (r Rule) When() string {
	op := "<"
	if r.Above {
		op = ">"
	}
	return r.Metric + " " + op + " " + r.unit().format(r.Threshold)
}

// Series are the values a rule reads: an app's history points of the last
// minute, each of the series metrics.Series names (requests and errors per
// second, p50, p95, p99, CPU cores, memory bytes), -1 or missing where
// unknown.
type Series [][]float64

// value returns the metric's value over the points: the mean of the known
// values, and for error_rate the errors over the requests; false when
// nothing is known.
func (r Rule) value(points Series) (float64, bool) {
	idx := map[string]int{"requests": 0, "errors": 1, "p50": 2, "p95": 3, "p99": 4, "cpu": 5, "memory": 6}
	if r.Metric == "error_rate" {
		var req, errs float64
		for _, p := range points {
			if len(p) > 1 && p[0] >= 0 && p[1] >= 0 {
				req, errs = req+p[0], errs+p[1]
			}
		}
		return errs / req, req > 0
	}
	i, ok := idx[r.Metric]
	if !ok {
		return 0, false
	}
	var sum float64
	var n int
	for _, p := range points {
		if len(p) > i && p[i] >= 0 {
			sum += p[i]
			n++
		}
	}
	return sum / float64(max(n, 1)), n > 0
}

// Condition returns the rule's condition when it holds over points.
func (r Rule) Condition(points Series) (Condition, bool) {
	v, ok := r.value(points)
	if !ok || (r.Above && v <= r.Threshold) || (!r.Above && v >= r.Threshold) {
		return Condition{}, false
	}
	return Condition{Rule: r.When(), App: r.App, Subject: r.ID, For: r.For,
		Message: fmt.Sprintf("%s of %s is %s over the last minute (rule %s: %s): see `paddock metrics %s`",
			r.Metric, r.App, r.unit().format(v), r.ID, r.When(), r.App)}, true
}
