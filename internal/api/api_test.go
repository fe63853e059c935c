package api

import (
	"testing"
	"time"
)

func TestParseExpiry(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"30d", 30 * 24 * time.Hour, true},
		{"12h", 12 * time.Hour, true},
		{"90m", 90 * time.Minute, true},
		{"0d", 0, false},
		{"-1h", 0, false},
		{"3651d", 0, false},
		{"soon", 0, false},
		{"d", 0, false},
	}
	for _, tc := range tests {
		got, err := parseExpiry(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseExpiry(%q): got %s, %v; want %s, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestParseVersion(t *testing.T) {
	for in, want := range map[string]int{"v3": 3, "3": 3, "v0": 0, "x": 0, "": 0, "v-1": 0} {
		got, err := parseVersion(in)
		if got != want || (want == 0) != (err != nil) {
			t.Errorf("parseVersion(%q): got %d, %v; want %d", in, got, err, want)
		}
	}
}

func FuzzParseExpiry(f *testing.F) {
	for _, s := range []string{"30d", "1h", "", "9999999999999999999d", "1e9h"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := parseExpiry(s)
		if err == nil && (d <= 0 || d > 3650*24*time.Hour && s[len(s)-1] == 'd') {
			t.Errorf("parseExpiry(%q) = %s: accepted out of range", s, d)
		}
	})
}
