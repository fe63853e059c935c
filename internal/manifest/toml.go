package manifest

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// The TOML shape. Tables are structs, so that MetaData.Undecoded finds
// unknown keys; values are any, so that a value of the wrong type is a
// problem to report beside the others rather than an error that stops
// decoding.
type tomlFile struct {
	Name      any                    `toml:"name"`
	Build     tomlBuild              `toml:"build"`
	Processes map[string]tomlProcess `toml:"processes"`
}

type tomlBuild struct {
	Command any `toml:"command"`
	Timeout any `toml:"timeout"`
}

type tomlProcess struct {
	Command     any        `toml:"command"`
	Instances   any        `toml:"instances"`
	Port        any        `toml:"port"`
	Memory      any        `toml:"memory"`
	StopTimeout any        `toml:"stop_timeout"`
	Health      tomlHealth `toml:"health"`
}

type tomlHealth struct {
	Path           any `toml:"path"`
	Command        any `toml:"command"`
	Interval       any `toml:"interval"`
	Timeout        any `toml:"timeout"`
	Grace          any `toml:"grace"`
	Status         any `toml:"status"`
	UnhealthyAfter any `toml:"unhealthy_after"`
	RestartAfter   any `toml:"restart_after"`
}

// Known keys, for the "unknown key" message.
var (
	topKeys     = []string{"name", "build", "processes"}
	buildKeys   = []string{"command", "timeout"}
	processKeys = []string{"command", "instances", "port", "memory", "stop_timeout", "health"}
	healthKeys  = []string{"path", "command", "interval", "timeout", "grace", "status", "unhealthy_after", "restart_after"}
)

// Parse parses and validates paddock.toml. Missing values get their
// defaults. A syntax error is reported alone, with its line and column;
// otherwise every problem is reported at once in an *Error.
func Parse(b []byte) (*Manifest, error) {
	s := string(b)
	var raw map[string]any
	if _, err := toml.Decode(s, &raw); err != nil {
		return nil, syntaxError(err, s)
	}
	var p problems
	checkShape(raw, &p)
	if len(p) > 0 {
		return nil, p.err(TOMLFile)
	}
	var f tomlFile
	md, err := toml.Decode(s, &f)
	if err != nil { // checkShape should have caught it
		return nil, &Error{File: TOMLFile, Problems: []string{strings.TrimPrefix(err.Error(), "toml: ")}}
	}
	unknownKeys(md.Undecoded(), &p)

	m := &Manifest{Processes: map[string]Process{}}
	m.Name = str(&p, "name", f.Name)
	m.Build.Command = str(&p, "build.command", f.Build.Command)
	m.Build.Timeout = duration(&p, "build.timeout", f.Build.Timeout, DefaultBuildTimeout)
	for _, name := range sortedKeys(f.Processes) {
		fp := f.Processes[name]
		key := "processes." + name
		if !nameRE.MatchString(name) {
			key = fmt.Sprintf("processes.%q", name)
		}
		pr := defaultProcess(str(&p, key+".command", fp.Command))
		if _, ok := fp.Command.(string); !ok && fp.Command != nil {
			pr.Command = "?" // reported above as the wrong type: not "missing" too
		}
		pr.Instances = integer(&p, key+".instances", fp.Instances, DefaultInstances)
		pr.Port = integer(&p, key+".port", fp.Port, 0)
		pr.Memory = size(&p, key+".memory", fp.Memory)
		pr.StopTimeout = duration(&p, key+".stop_timeout", fp.StopTimeout, DefaultStopTimeout)
		h := fp.Health
		pr.Health.Path = str(&p, key+".health.path", h.Path)
		pr.Health.Command = str(&p, key+".health.command", h.Command)
		pr.Health.Interval = duration(&p, key+".health.interval", h.Interval, DefaultHealthInterval)
		pr.Health.Timeout = duration(&p, key+".health.timeout", h.Timeout, DefaultHealthTimeout)
		pr.Health.Grace = duration(&p, key+".health.grace", h.Grace, DefaultHealthGrace)
		pr.Health.Status = integer(&p, key+".health.status", h.Status, 0)
		pr.Health.UnhealthyAfter = integer(&p, key+".health.unhealthy_after", h.UnhealthyAfter, 0)
		pr.Health.RestartAfter = integer(&p, key+".health.restart_after", h.RestartAfter, 0)
		m.Processes[name] = pr
	}
	m.validate(&p)
	if err := p.err(TOMLFile); err != nil {
		return nil, err
	}
	return m, nil
}

// syntaxError turns a TOML decoding error into an *Error with its position.
func syntaxError(err error, input string) error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		// The parser counts an unexpected newline as the start of the next
		// line; the byte offset says where the problem really is.
		line := pe.Position.Line
		if start := pe.Position.Start; start > 0 && start <= len(input) {
			line = 1 + strings.Count(input[:start], "\n")
		}
		return &Error{File: TOMLFile, Problems: []string{fmt.Sprintf(
			"line %d: %s: fix the TOML syntax (see https://toml.io)",
			line, strings.TrimSuffix(pe.Message, "."))}}
	}
	return &Error{File: TOMLFile, Problems: []string{strings.TrimPrefix(err.Error(), "toml: ") + ": fix the TOML syntax (see https://toml.io)"}}
}

// checkShape reports tables given as something else (build = "x",
// [[processes.web]]), which the typed decoding could not report together.
func checkShape(raw map[string]any, p *problems) {
	table := func(key string, v any) (map[string]any, bool) {
		if v == nil {
			return nil, false
		}
		t, ok := v.(map[string]any)
		if !ok {
			p.add("%s must be a table, e.g. [%s], not %s", key, key, describe(v))
		}
		return t, ok
	}
	table("build", raw["build"])
	procs, _ := table("processes", raw["processes"])
	for _, name := range sortedKeys(procs) {
		key := "processes." + name
		if !nameRE.MatchString(name) {
			key = fmt.Sprintf("processes.%q", name)
		}
		if pr, ok := table(key, procs[name]); ok {
			table(key+".health", pr["health"])
		}
	}
}

// unknownKeys reports keys the manifest does not know, each once: for a
// misspelt table, the table and not every key inside it.
func unknownKeys(keys []toml.Key, p *problems) {
	var reported []toml.Key
next:
	for _, k := range keys {
		for _, r := range reported {
			if len(k) > len(r) && slicesEqual(k[:len(r)], r) {
				continue next
			}
		}
		reported = append(reported, k)
		last := k[len(k)-1]
		var what string
		var known []string
		switch {
		case len(k) == 1:
			what, known = "top-level keys", topKeys
		case len(k) == 2 && k[0] == "build":
			what, known = "keys of build", buildKeys
		case len(k) == 3 && k[0] == "processes":
			what, known = "keys of a process", processKeys
		case len(k) == 4 && k[0] == "processes" && k[2] == "health":
			what, known = "keys of health", healthKeys
		default:
			// Below a value (command = {x = 1}): reported as the value's
			// wrong type, since checkShape has checked every table.
			continue
		}
		msg := fmt.Sprintf("unknown key %q; known %s: %s", k.String(), what, strings.Join(known, ", "))
		if s := closest(last, known); s != "" {
			msg += fmt.Sprintf("; did you mean %q?", s)
		}
		p.add("%s", msg)
	}
}

func slicesEqual(a, b toml.Key) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// closest returns the known key within edit distance 2 of s, if any.
func closest(s string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		if d := editDistance(s, k); d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return math.MaxInt
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// describe names the TOML type of v for messages.
func describe(v any) string {
	switch v := v.(type) {
	case string:
		return fmt.Sprintf("the string %q", v)
	case int64:
		return fmt.Sprintf("the integer %d", v)
	case float64:
		return fmt.Sprintf("the float %v", v)
	case bool:
		return fmt.Sprintf("the boolean %v", v)
	case map[string]any:
		return "a table"
	case []any, []map[string]any:
		return "an array"
	case time.Time:
		return "a date or time"
	}
	return fmt.Sprintf("a %T", v)
}

func str(p *problems, key string, v any) string {
	if v == nil {
		return ""
	}
	s, ok := v.(string)
	if !ok {
		p.add("%s must be a string, not %s", key, describe(v))
	}
	return s
}

func integer(p *problems, key string, v any, def int) int {
	if v == nil {
		return def
	}
	n, ok := v.(int64)
	if !ok {
		p.add("%s must be a whole number without quotes, e.g. %s = 1, not %s", key, lastElem(key), describe(v))
		return def
	}
	if n < math.MinInt32 || n > math.MaxInt32 {
		p.add("%s: %d is out of range", key, n)
		return def
	}
	return int(n)
}

func duration(p *problems, key string, v any, def time.Duration) time.Duration {
	if v == nil {
		return def
	}
	s, ok := v.(string)
	if !ok {
		p.add("%s must be a duration in quotes, e.g. %s = \"10s\" or \"2m\", not %s", key, lastElem(key), describe(v))
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		p.add("%s: %q is not a duration: use a number and a unit, e.g. \"10s\", \"2m\" or \"1h30m\"", key, s)
		return def
	}
	return d
}

func size(p *problems, key string, v any) int64 {
	switch v := v.(type) {
	case nil:
		return 0
	case int64:
		return v // bytes; Validate checks the range
	case string:
		n, err := ParseSize(v)
		if err != nil {
			p.add("%s: %v", key, err)
		}
		return n
	default:
		p.add("%s must be a size in quotes, e.g. %s = \"256MiB\", not %s", key, lastElem(key), describe(v))
		return 0
	}
}

func lastElem(key string) string { return key[strings.LastIndexByte(key, '.')+1:] }

var sizeRE = regexp.MustCompile(`^([0-9]+)\s*([a-zA-Z]*)$`)

// Size units. Single letters and "Ki", "KiB" … are powers of 1024, as in
// Docker and systemd ("512M" is 512MiB); "KB", "MB" … are powers of 1000.
var sizeUnits = map[string]int64{
	"": 1, "b": 1,
	"k": 1 << 10, "ki": 1 << 10, "kib": 1 << 10, "kb": 1e3,
	"m": 1 << 20, "mi": 1 << 20, "mib": 1 << 20, "mb": 1e6,
	"g": 1 << 30, "gi": 1 << 30, "gib": 1 << 30, "gb": 1e9,
	"t": 1 << 40, "ti": 1 << 40, "tib": 1 << 40, "tb": 1e12,
}

// ParseSize parses a byte size such as "256MiB", "1GiB", "512M" or "1048576".
// K, M, G, T, Ki, KiB … are powers of 1024; KB, MB, GB, TB powers of 1000.
func ParseSize(s string) (int64, error) {
	bad := fmt.Errorf("%q is not a size: use a whole number and a unit, e.g. \"256MiB\", \"1GiB\" or \"512M\"", s)
	m := sizeRE.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return 0, bad
	}
	unit, ok := sizeUnits[strings.ToLower(m[2])]
	if !ok {
		return 0, bad
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil || n > math.MaxInt64/unit {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return n * unit, nil
}
