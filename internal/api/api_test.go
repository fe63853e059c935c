package api

import (
	"errors"
	"net/http/httptest"
	"regexp"
	"strings"
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

func TestAgo(t *testing.T) {
	for in, want := range map[string]time.Duration{"1d": 24 * time.Hour, "7d": 7 * 24 * time.Hour, "0d": 0, "90m": 90 * time.Minute, "1h30m": 90 * time.Minute} {
		if got, ok := ago(in); !ok || got != want {
			t.Errorf("ago(%q): %s, %v; want %s", in, got, ok, want)
		}
	}
	for _, in := range []string{"-1d", "-1h", "d", "1w", "3651d", "soon", ""} {
		if got, ok := ago(in); ok {
			t.Errorf("ago(%q): %s, want refused", in, got)
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

// goNames are what a message about JSON must not show: Go's names for types.
var goNames = regexp.MustCompile(`\b(u?int(8|16|32|64)?|float(32|64)|struct|map\[|\*?string\b.*\bGo\b|Go (value|struct)|json: )`)

func TestReadJSON(t *testing.T) {
	type body struct {
		Name  string         `json:"name"`
		Count int            `json:"count"`
		Apps  []string       `json:"apps"`
		Vars  map[string]int `json:"vars"`
	}
	tests := []struct {
		name, in string
		want     string // "" accepted, else a piece of the bad_json message
	}{
		{"object", `{"name":"shop","count":2}`, ""},
		{"trailing space", "{\"name\":\"shop\"}\n  ", ""},
		{"trailing object", `{"name":"a"} {"name":"b"}`, "goes on after its JSON value"},
		{"trailing garbage", `{"name":"a"}x`, "goes on after its JSON value"},
		{"empty", ``, "empty"},
		{"cut short", `{"name":"a"`, "ends in the middle"},
		{"syntax", `{"name":}`, "not valid JSON at byte"},
		{"string for number", `{"count":"two"}`, `field "count" is a string: it takes a whole number`},
		{"float for int", `{"count":1.5}`, `field "count" is the number 1.5: it takes a whole number`},
		{"number for string", `{"name":5}`, `field "name" is a number: it takes a string`},
		{"object for list", `{"apps":{}}`, `field "apps" is an object: it takes a list of strings`},
		{"wrong map value", `{"vars":{"web":true}}`, `a value in field "vars" is true or false: each must be a whole number`},
		{"wrong list item", `{"apps":["a",1]}`, `a value in field "apps" is a number: each must be a string`},
		{"list for object", `[1]`, `the request body is a list: send an object with the fields "apps", "count", "name", "vars"`},
		{"unknown field", `{"nmae":"x"}`, `unknown field "nmae": this route takes the fields "apps", "count", "name", "vars"`},
		{"invalid utf-8", "{\"name\":\"\xff\"}", "not valid UTF-8"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/", strings.NewReader(tc.in))
			var v body
			err := readJSON(httptest.NewRecorder(), r, &v)
			if tc.want == "" {
				if err != nil {
					t.Errorf("got %v, want accepted", err)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) || e.Code != "bad_json" || !strings.Contains(e.Message, tc.want) {
				t.Fatalf("got %v, want bad_json with %q", err, tc.want)
			}
			if m := goNames.FindString(e.Message); m != "" {
				t.Errorf("message %q shows Go's %q", e.Message, m)
			}
		})
	}
}

func TestReadJSONTopLevelMap(t *testing.T) {
	var counts map[string]int
	err := readJSON(httptest.NewRecorder(), httptest.NewRequest("PATCH", "/", strings.NewReader(`{"web":"three"}`)), &counts)
	var e *Error
	if want := "a value in the request body is a string: each must be a whole number"; !errors.As(err, &e) || e.Message != want {
		t.Errorf("got %v, want %q", err, want)
	}
}

func FuzzReadJSON(f *testing.F) {
	for _, s := range []string{`{"name":"a"}`, `{"name":"a"} x`, `{"role":1}`, `[]`, `{"apps":[1]}`, "\xff", `{"vars":{"a":null}}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		var v struct {
			Name string             `json:"name"`
			Role string             `json:"role"`
			Apps []string           `json:"apps"`
			Vars map[string]*string `json:"vars"`
		}
		err := readJSON(httptest.NewRecorder(), httptest.NewRequest("POST", "/", strings.NewReader(in)), &v)
		if err == nil {
			return
		}
		var e *Error
		if !errors.As(err, &e) || e.Code != "bad_json" {
			t.Fatalf("readJSON(%q) = %v, want a bad_json error", in, err)
		}
		if m := goNames.FindString(e.Message); m != "" {
			t.Errorf("readJSON(%q): message %q shows Go's %q", in, e.Message, m)
		}
	})
}

func TestCheckConfig(t *testing.T) {
	s := func(v string) *string { return &v }
	tests := []struct {
		name string
		in   map[string]*string
		want string
	}{
		{"fine", map[string]*string{"LOG_LEVEL": s("debug"), "PEM": s("a\nb"), "OLD": nil}, ""},
		{"NUL in a value", map[string]*string{"K": s("a\x00b")}, "NUL byte"},
		{"NUL in a key", map[string]*string{"K\x00": s("x")}, `config key "K\x00"`},
		{"equals in a key", map[string]*string{"A=B": s("x")}, "config key"},
		{"empty key", map[string]*string{"": s("x")}, "config key"},
	}
	for _, tc := range tests {
		err := checkConfig(tc.in)
		var e *Error
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: got %v, want accepted", tc.name, err)
		case tc.want != "" && (!errors.As(err, &e) || e.Code != "invalid" || !strings.Contains(e.Message, tc.want)):
			t.Errorf("%s: got %v, want invalid with %q", tc.name, err, tc.want)
		}
	}
}

func TestLimitKey(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1":            "127.0.0.1",
		"2001:db8:1:2:3:4:5:6": "2001:db8:1:2::/64",
		"2001:db8:1:2:ffff::1": "2001:db8:1:2::/64",
		"::ffff:10.0.0.1":      "::ffff:10.0.0.1",
		"not an address":       "not an address",
		"fe80::1":              "fe80::/64",
	} {
		if got := limitKey(in); got != want {
			t.Errorf("limitKey(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestShortDuration(t *testing.T) {
	for in, want := range map[time.Duration]string{
		30 * 24 * time.Hour: "30d",
		29*24*time.Hour + 23*time.Hour + 59*time.Minute + 30*time.Second: "29d23h59m",
		90 * time.Minute: "1h30m",
		time.Hour:        "1h",
		59 * time.Second: "0m (it has expired)",
	} {
		if got := shortDuration(in); got != want {
			t.Errorf("shortDuration(%s) = %q, want %q", in, got, want)
		}
	}
}
