package alerts

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseRule(t *testing.T) {
	for _, tc := range []struct {
		when, want string
		threshold  float64
	}{
		{"p95 > 500ms", "p95 > 500ms", 0.5},
		{"error_rate>2%", "error_rate > 2%", 0.02},
		{"error_rate > 0.1", "error_rate > 10%", 0.1},
		{"memory > 400MiB", "memory > 400.0MiB", 400 << 20},
		{"cpu > 150%", "cpu > 150%", 1.5},
		{"requests < 1", "requests < 1/s", 1},
	} {
		r, err := ParseRule(tc.when, time.Minute)
		if err != nil {
			t.Errorf("%q: %v", tc.when, err)
			continue
		}
		if r.When() != tc.want || r.Threshold != tc.threshold {
			t.Errorf("%q: %q %v, want %q %v", tc.when, r.When(), r.Threshold, tc.want, tc.threshold)
		}
	}
	for when, msg := range map[string]string{
		"latency > 1s":        `unknown metric "latency": use one of requests, errors, error_rate, p50, p95, p99, cpu, memory`,
		"p95 = 1s":            `write METRIC > THRESHOLD`,
		"p95 > soon":          `"soon" is not a duration`,
		"error_rate > 120%":   `over 100%`,
		"memory > lots":       `"lots" is not a size`,
		"requests > -3":       `give a number of 0 or more`,
		"requests > NaN":      `give a number of 0 or more`,
		"error_rate > 5% 10%": `is not a number`,
	} {
		_, err := ParseRule(when, time.Minute)
		if !errors.Is(err, ErrBadRule) || !strings.Contains(err.Error(), msg) {
			t.Errorf("%q: %v, want an ErrBadRule saying %q", when, err, msg)
		}
	}
	if _, err := ParseRule("p95 > 1s", -time.Second); !errors.Is(err, ErrBadRule) {
		t.Errorf("a negative for: %v", err)
	}
}

func TestRuleCondition(t *testing.T) {
	points := Series{
		{10, 1, 0.1, 0.4, 0.9, 0.5, 100 << 20},
		nil, // a point of nothing
		{30, 1, 0.1, 0.8, 1.1, 1.5, 300 << 20},
		{-1, -1, -1, -1, -1, 1.0, 200 << 20}, // no traffic known
	}
	for when, holds := range map[string]bool{
		"p95 > 500ms":       true,  // mean of 0.4 and 0.8
		"p95 > 700ms":       false, // 0.6
		"error_rate > 4%":   true,  // 2 of 40
		"error_rate > 6%":   false,
		"cpu > 90%":         true, // 1.0
		"memory < 250MiB":   true, // 200 MiB
		"requests < 10":     false,
		"requests > 19.999": true,
	} {
		r, err := ParseRule(when, 0)
		if err != nil {
			t.Fatal(err)
		}
		r.ID, r.App = "rule-1", "shop"
		c, ok := r.Condition(points)
		if ok != holds {
			t.Errorf("%q holds: %v, want %v (%s)", when, ok, holds, c.Message)
		}
		if ok && (c.App != "shop" || c.Subject != "rule-1" || !strings.Contains(c.Message, r.When())) {
			t.Errorf("%q: %+v", when, c)
		}
	}
	r, _ := ParseRule("p95 > 1ms", 0)
	if _, ok := r.Condition(Series{nil, {-1, -1, -1, -1, -1, 0, 0}}); ok {
		t.Errorf("a rule holds with nothing known of its metric")
	}
}
