// Package manifest reads what an app declares about itself: its build
// command and its process types, from a paddock.toml or, for apps coming
// from Heroku, a Procfile. Parse and Validate report every problem at once,
// each saying what is wrong and what to do, so a person can fix a manifest in
// one go.
//
// The Manifest type is also what the server stores (as JSON) with a build;
// its JSON form round-trips, with durations in nanoseconds.
package manifest

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Manifest is an app's declaration of how to build and run it.
type Manifest struct {
	Name      string             `json:"name,omitempty"` // optional app name
	Build     Build              `json:"build"`
	Processes map[string]Process `json:"processes"` // key: process type, e.g. "web", "worker"
}

// Build is the optional build step.
type Build struct {
	Command string        `json:"command,omitempty"` // run with /bin/sh -c in the source folder; empty: no build step
	Timeout time.Duration `json:"timeout_ns"`        // default 10m
}

// Process is one process type.
type Process struct {
	Command     string        `json:"command"`                // required; run with /bin/sh -c
	Instances   int           `json:"instances"`              // default 1; >= 0
	Port        int           `json:"port,omitempty"`         // 0: the platform assigns $PORT; else the fixed port the process listens on
	Memory      int64         `json:"memory_bytes,omitempty"` // bytes; 0: no limit
	StopTimeout time.Duration `json:"stop_timeout_ns"`        // default 10s: SIGTERM, then SIGKILL after this
	Health      Health        `json:"health"`
}

// Health is how the platform decides that an instance is ready and alive.
type Health struct {
	Path string `json:"path,omitempty"` // HTTP GET path, e.g. "/healthz"; empty: a TCP connect to the port
	// Command is a check run inside the instance, as its user and with
	// its environment, instead of a request: exit status 0 is healthy.
	Command  string        `json:"command,omitempty"`
	Interval time.Duration `json:"interval_ns"` // default 2s
	Timeout  time.Duration `json:"timeout_ns"`  // default 2s
	Grace    time.Duration `json:"grace_ns"`    // how long a new instance may take to become healthy; default 60s
	// Status is the HTTP status the check wants; 0: any under 400.
	Status int `json:"status,omitempty"`
	// UnhealthyAfter takes a healthy instance out of the router once it
	// fails this many checks in a row (one pass puts it back); 0: 3.
	UnhealthyAfter int `json:"unhealthy_after,omitempty"`
	// RestartAfter replaces an instance that was healthy once it fails
	// this many checks in a row; 0: never (it only leaves the router).
	RestartAfter int `json:"restart_after,omitempty"`
}

// Defaults.
const (
	DefaultBuildTimeout   = 10 * time.Minute
	DefaultInstances      = 1
	DefaultStopTimeout    = 10 * time.Second
	DefaultHealthInterval = 2 * time.Second
	DefaultHealthTimeout  = 2 * time.Second
	DefaultHealthGrace    = 60 * time.Second

	// MinMemory is the smallest memory limit accepted: below it a value is
	// almost surely a missing unit ("256" meaning 256MiB).
	MinMemory = 4 << 20
)

// File names Load looks for, in order.
const (
	TOMLFile     = "paddock.toml"
	ProcfileFile = "Procfile"
)

// ErrNotFound: the folder has neither a paddock.toml nor a Procfile.
var ErrNotFound = errors.New("no manifest")

// ErrInvalid is matched (errors.Is) by every *Error.
var ErrInvalid = errors.New("invalid manifest")

// Error lists every problem found in a manifest.
type Error struct {
	File     string   // "paddock.toml", "Procfile", or "" for a Manifest checked by Validate
	Problems []string // each says what is wrong and what to do
}

func (e *Error) Error() string {
	prefix := "manifest"
	if e.File != "" {
		prefix = e.File
	}
	switch len(e.Problems) {
	case 0:
		return prefix + ": invalid"
	case 1:
		return prefix + ": " + e.Problems[0]
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d problems:", prefix, len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  - ")
		b.WriteString(p)
	}
	return b.String()
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *Error) Is(target error) bool { return target == ErrInvalid }

// problems collects messages for an *Error.
type problems []string

func (p *problems) add(format string, args ...any) { *p = append(*p, fmt.Sprintf(format, args...)) }

func (p problems) err(file string) error {
	if len(p) == 0 {
		return nil
	}
	return &Error{File: file, Problems: p}
}

// Load reads dir/paddock.toml, else dir/Procfile.
func Load(dir string) (*Manifest, error) {
	b, err := os.ReadFile(filepath.Join(dir, TOMLFile))
	if err == nil {
		return Parse(b)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("load manifest: %w", err)
	}
	b, err = os.ReadFile(filepath.Join(dir, ProcfileFile))
	if err == nil {
		return ParseProcfile(b)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("load manifest: %w", err)
	}
	return nil, fmt.Errorf("no %s or %s in %s: add one (see examples/hello): %w", TOMLFile, ProcfileFile, dir, ErrNotFound)
}

// nameRE is the rule for process type and app names.
var nameRE = regexp.MustCompile(`^[a-z][a-z0-9-]*$`) // and at most 30 bytes

// ValidProcessName reports whether s may name a process type.
func ValidProcessName(s string) bool { return len(s) <= 30 && nameRE.MatchString(s) }

// Validate checks a manifest, defaults already applied, and reports every
// problem at once as an *Error.
func (m *Manifest) Validate() error {
	var p problems
	m.validate(&p)
	return p.err("")
}

func (m *Manifest) validate(p *problems) {
	if m.Name != "" && !ValidProcessName(m.Name) { // the same rule as the API's for app names
		p.add("name %q is not a valid app name: use 1 to 30 lowercase letters, digits and hyphens, starting with a letter (e.g. \"shop\")", m.Name)
	}
	checkText(p, "build.command", m.Build.Command)
	if m.Build.Timeout <= 0 {
		p.add("build.timeout must be positive, e.g. \"10m\"")
	}
	if len(m.Processes) == 0 {
		p.add("no process types: declare at least one, e.g. [processes.web] with command = \"./server\"")
	}
	ports := map[int][]string{}
	for _, name := range sortedKeys(m.Processes) {
		pr := m.Processes[name]
		where := "processes." + name
		if !ValidProcessName(name) {
			p.add("process type %q is not a valid name: use 1 to 30 lowercase letters, digits and hyphens, starting with a letter (e.g. \"web\", \"worker\")", name)
			where = fmt.Sprintf("processes.%q", name)
		}
		if strings.TrimSpace(pr.Command) == "" {
			p.add("%s: command is missing: set the command that starts it, e.g. command = \"./bin/server\"", where)
		}
		checkText(p, where+".command", pr.Command)
		checkText(p, where+".health.path", pr.Health.Path)
		checkText(p, where+".health.command", pr.Health.Command)
		if pr.Instances < 0 {
			p.add("%s: instances is %d: use 0 or more", where, pr.Instances)
		}
		switch {
		case pr.Port < 0 || pr.Port > 65535:
			p.add("%s: port %d is out of range: use 1 to 65535, or leave it out to listen on $PORT", where, pr.Port)
		case pr.Port > 0:
			ports[pr.Port] = append(ports[pr.Port], name)
			if pr.Instances > 1 {
				p.add("%s: a fixed port (%d) cannot serve %d instances on one machine: leave port out so each instance gets its own $PORT, or set instances = 1", where, pr.Port, pr.Instances)
			}
		}
		if pr.Memory < 0 {
			p.add("%s: memory must not be negative", where)
		} else if pr.Memory > 0 && pr.Memory < MinMemory {
			p.add("%s: memory of %d bytes is too small: the minimum is 4MiB; add a unit, e.g. \"256MiB\"", where, pr.Memory)
		}
		if pr.StopTimeout <= 0 {
			p.add("%s: stop_timeout must be positive, e.g. \"10s\"", where)
		}
		h := pr.Health
		if h.Path != "" && (!strings.HasPrefix(h.Path, "/") || strings.ContainsAny(h.Path, " \t\r\n")) {
			p.add("%s.health: path %q must be an absolute URL path without spaces, e.g. \"/healthz\"", where, h.Path)
		}
		if h.Status != 0 && (h.Status < 100 || h.Status > 599) {
			p.add("%s.health: status %d is not an HTTP status: give one such as 200", where, h.Status)
		}
		if h.Path != "" && h.Command != "" {
			p.add("%s.health: give a path or a command to check, not both", where)
		}
		if h.Command != "" && strings.TrimSpace(h.Command) == "" {
			p.add("%s.health: command is blank: give the command to run, e.g. command = \"./bin/check\"", where)
		}
		if h.Status != 0 && h.Path == "" {
			p.add("%s.health: status needs a path to GET, e.g. path = \"/healthz\"", where)
		}
		if h.UnhealthyAfter < 0 || h.UnhealthyAfter > 1000 {
			p.add("%s.health: unhealthy_after %d: give a number of failed checks in a row, 1 to 1000 (0: 3)", where, h.UnhealthyAfter)
		}
		if h.RestartAfter < 0 || h.RestartAfter > 1000 {
			p.add("%s.health: restart_after %d: give a number of failed checks in a row, 1 to 1000 (0: never)", where, h.RestartAfter)
		}
		for _, d := range []struct {
			key string
			v   time.Duration
		}{{"interval", h.Interval}, {"timeout", h.Timeout}, {"grace", h.Grace}} {
			if d.v <= 0 {
				p.add("%s.health: %s must be positive, e.g. \"2s\"", where, d.key)
			}
		}
	}
	for _, port := range sortedKeys(ports) {
		if names := ports[port]; len(names) > 1 {
			quoted := make([]string, len(names))
			for i, n := range names {
				quoted[i] = strconv.Quote(n)
			}
			all := "all"
			if len(names) == 2 {
				all = "both"
			}
			p.add("process types %s and %s %s listen on port %d: give each its own port, or leave port out to use $PORT",
				strings.Join(quoted[:len(quoted)-1], ", "), quoted[len(quoted)-1], all, port)
		}
	}
}

// checkText reports text that cannot be run or stored: a NUL byte (not
// allowed in a command line) or invalid UTF-8 (not kept by JSON).
func checkText(p *problems, key, s string) {
	switch {
	case strings.ContainsRune(s, 0):
		p.add("%s contains a NUL byte: remove it", key)
	case !utf8.ValidString(s):
		p.add("%s is not valid UTF-8: save the file as UTF-8", key)
	}
}

// ImageWeb is the manifest of an image deployed without one: a web
// process that runs the image's own command.
func ImageWeb() *Manifest {
	return &Manifest{Processes: map[string]Process{"web": defaultProcess("")}}
}

// defaultProcess is a process type with every default set.
func defaultProcess(command string) Process {
	return Process{
		Command:     command,
		Instances:   DefaultInstances,
		StopTimeout: DefaultStopTimeout,
		Health: Health{
			Interval: DefaultHealthInterval,
			Timeout:  DefaultHealthTimeout,
			Grace:    DefaultHealthGrace,
		},
	}
}

func sortedKeys[K interface{ ~int | ~string }, V any](m map[K]V) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
