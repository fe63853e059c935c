package manifest

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

const helloTOML = `
name = "hello"
[build]
command = "go build -o bin/hello ."
timeout = "5m"
[processes.web]
command = "./bin/hello"
instances = 2
memory = "128MiB"
stop_timeout = "10s"
[processes.web.health]
path = "/healthz"
interval = "2s"
timeout = "1s"
grace = "30s"
[processes.worker]
command = "./bin/hello -worker"
instances = 0
port = 9000
memory = 536870912
`

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		toml string
		want *Manifest
	}{
		{
			name: "every key",
			toml: helloTOML,
			want: &Manifest{
				Name:  "hello",
				Build: Build{Command: "go build -o bin/hello .", Timeout: 5 * time.Minute},
				Processes: map[string]Process{
					"web": {
						Command: "./bin/hello", Instances: 2, Memory: 128 << 20, StopTimeout: 10 * time.Second,
						Health: Health{Path: "/healthz", Interval: 2 * time.Second, Timeout: time.Second, Grace: 30 * time.Second},
					},
					"worker": {
						Command: "./bin/hello -worker", Instances: 0, Port: 9000, Memory: 512 << 20, StopTimeout: 10 * time.Second,
						Health: Health{Interval: 2 * time.Second, Timeout: 2 * time.Second, Grace: 60 * time.Second},
					},
				},
			},
		},
		{
			name: "defaults",
			toml: "[processes.web]\ncommand = \"./server\"\n",
			want: &Manifest{
				Build: Build{Timeout: 10 * time.Minute},
				Processes: map[string]Process{"web": {
					Command: "./server", Instances: 1, StopTimeout: 10 * time.Second,
					Health: Health{Interval: 2 * time.Second, Timeout: 2 * time.Second, Grace: 60 * time.Second},
				}},
			},
		},
		{
			name: "dotted keys and inline tables",
			toml: "processes.web = { command = \"./server\", health = { path = \"/up\" } }\n",
			want: &Manifest{
				Build: Build{Timeout: 10 * time.Minute},
				Processes: map[string]Process{"web": {
					Command: "./server", Instances: 1, StopTimeout: 10 * time.Second,
					Health: Health{Path: "/up", Interval: 2 * time.Second, Timeout: 2 * time.Second, Grace: 60 * time.Second},
				}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.toml))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Parse:\ngot  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	const web = "[processes.web]\ncommand = \"./server\"\n"
	tests := []struct {
		name string
		toml string
		want []string // one entry per problem, each a substring of its message
	}{
		{
			name: "unknown process key",
			toml: "[processes.web]\ncomand = \"./server\"\n",
			want: []string{
				`unknown key "processes.web.comand"; known keys of a process: command, instances, port, memory, stop_timeout, health; did you mean "command"?`,
				`processes.web: command is missing: set the command that starts it`,
			},
		},
		{
			name: "unknown keys at every level, each table once",
			toml: "nmae = \"x\"\n[buld]\ncommand = \"x\"\nmore = 1\n[build]\ntimeuot = \"1m\"\n" + web + "[processes.web.health]\npth = \"/\"\n[processes.web.helth]\npath = \"/\"\n",
			want: []string{
				`unknown key "nmae"; known top-level keys: name, build, processes; did you mean "name"?`,
				`unknown key "buld"; known top-level keys: name, build, processes; did you mean "build"?`,
				`unknown key "build.timeuot"; known keys of build: command, timeout; did you mean "timeout"?`,
				`unknown key "processes.web.health.pth"; known keys of health: path, command, interval, timeout, grace, status, unhealthy_after, restart_after; did you mean "path"?`,
				`unknown key "processes.web.helth"; known keys of a process: command, instances, port, memory, stop_timeout, health; did you mean "health"?`,
			},
		},
		{
			name: "a health check by path and by command",
			toml: web + "[processes.web.health]\npath = \"/healthz\"\ncommand = \"./check\"\n",
			want: []string{`processes.web.health: give a path or a command to check, not both`},
		},
		{
			name: "unknown key far from any known one",
			toml: web + "color = \"red\"\n",
			want: []string{`unknown key "processes.web.color"; known keys of a process: command, instances, port, memory, stop_timeout, health`},
		},
		{
			name: "syntax error with its line",
			toml: "[processes.web]\ncommand = \"./server\n",
			want: []string{`line 2: strings cannot contain newlines: fix the TOML syntax (see https://toml.io)`},
		},
		{
			name: "unclosed table header, on its own line",
			toml: "[processes.web\ncommand = \"x\"\n",
			want: []string{`line 1: expected '.' or ']' to end table name, but got '\n' instead: fix the TOML syntax`},
		},
		{
			name: "duplicate key",
			toml: web + "command = \"again\"\n",
			want: []string{`line 3: Key 'processes.web.command' has already been defined: fix the TOML syntax`},
		},
		{
			name: "missing command",
			toml: "[processes.web]\ninstances = 2\n",
			want: []string{`processes.web: command is missing`},
		},
		{
			name: "blank command",
			toml: "[processes.web]\ncommand = \"  \"\n",
			want: []string{`processes.web: command is missing`},
		},
		{
			name: "invalid process names",
			toml: "[processes.Web]\ncommand = \"x\"\n[processes.\"9lives\"]\ncommand = \"x\"\n[processes.a_b]\ncommand = \"x\"\n[processes.abcdefghijabcdefghijabcdefghijk]\ncommand = \"x\"\n",
			want: []string{
				`process type "9lives" is not a valid name: use 1 to 30 lowercase letters, digits and hyphens, starting with a letter`,
				`process type "Web" is not a valid name`,
				`process type "a_b" is not a valid name`,
				`process type "abcdefghijabcdefghijabcdefghijk" is not a valid name`,
			},
		},
		{
			name: "invalid durations",
			toml: "[build]\ntimeout = \"ten minutes\"\n[processes.web]\ncommand = \"x\"\nstop_timeout = \"10\"\n[processes.web.health]\ninterval = 2\ntimeout = \"-1s\"\ngrace = \"0s\"\n",
			want: []string{
				`build.timeout: "ten minutes" is not a duration: use a number and a unit, e.g. "10s", "2m" or "1h30m"`,
				`processes.web.stop_timeout: "10" is not a duration`,
				`processes.web.health.interval must be a duration in quotes, e.g. interval = "10s" or "2m", not the integer 2`,
				`processes.web.health: timeout must be positive, e.g. "2s"`,
				`processes.web.health: grace must be positive`,
			},
		},
		{
			name: "zero build timeout",
			toml: "[build]\ntimeout = \"0s\"\n" + web,
			want: []string{`build.timeout must be positive, e.g. "10m"`},
		},
		{
			name: "invalid sizes",
			toml: "[processes.web]\ncommand = \"x\"\nmemory = \"12XB\"\n[processes.api]\ncommand = \"x\"\nmemory = \"256\"\n[processes.db]\ncommand = \"x\"\nmemory = -5\n[processes.big]\ncommand = \"x\"\nmemory = \"99999999999T\"\n[processes.f]\ncommand = \"x\"\nmemory = 1.5\n",
			want: []string{
				`processes.big.memory: "99999999999T" is too large`,
				`processes.f.memory must be a size in quotes, e.g. memory = "256MiB", not the float 1.5`,
				`processes.web.memory: "12XB" is not a size: use a whole number and a unit, e.g. "256MiB", "1GiB" or "512M"`,
				`processes.api: memory of 256 bytes is too small: the minimum is 4MiB; add a unit, e.g. "256MiB"`,
				`processes.db: memory must not be negative`,
			},
		},
		{
			name: "negative instances and wrong types",
			toml: "name = 3\n[build]\ncommand = [\"make\"]\n[processes.web]\ncommand = \"x\"\ninstances = -1\n[processes.api]\ncommand = \"x\"\ninstances = \"2\"\n",
			want: []string{
				`name must be a string, not the integer 3`,
				`build.command must be a string, not an array`,
				`processes.api.instances must be a whole number without quotes, e.g. instances = 1, not the string "2"`,
				`processes.web: instances is -1: use 0 or more`,
			},
		},
		{
			name: "a command of the wrong type is not also missing",
			toml: "[processes.web]\ncommand = { run = \"x\" }\n",
			want: []string{`processes.web.command must be a string, not a table`},
		},
		{
			name: "port out of range",
			toml: "[processes.web]\ncommand = \"x\"\nport = 70000\n[processes.api]\ncommand = \"x\"\nport = -1\n",
			want: []string{
				`processes.api: port -1 is out of range: use 1 to 65535, or leave it out to listen on $PORT`,
				`processes.web: port 70000 is out of range`,
			},
		},
		{
			name: "port clash",
			toml: "[processes.web]\ncommand = \"x\"\nport = 8080\n[processes.api]\ncommand = \"x\"\nport = 8080\n[processes.admin]\ncommand = \"x\"\nport = 8080\n",
			want: []string{`process types "admin", "api" and "web" all listen on port 8080: give each its own port, or leave port out to use $PORT`},
		},
		{
			name: "fixed port with several instances",
			toml: "[processes.web]\ncommand = \"x\"\nport = 8080\ninstances = 3\n",
			want: []string{`processes.web: a fixed port (8080) cannot serve 3 instances on one machine: leave port out so each instance gets its own $PORT, or set instances = 1`},
		},
		{
			name: "no process types",
			toml: "name = \"hello\"\n",
			want: []string{`no process types: declare at least one, e.g. [processes.web] with command = "./server"`},
		},
		{
			name: "empty processes table",
			toml: "[processes]\n",
			want: []string{`no process types`},
		},
		{
			name: "tables of the wrong shape",
			toml: "build = \"make\"\nprocesses = { web = \"./server\", api = { command = \"x\", health = \"/healthz\" } }\n",
			want: []string{
				`build must be a table, e.g. [build], not the string "make"`,
				`processes.api.health must be a table, e.g. [processes.api.health], not the string "/healthz"`,
				`processes.web must be a table, e.g. [processes.web], not the string "./server"`,
			},
		},
		{
			name: "array of tables",
			toml: "[[processes.web]]\ncommand = \"x\"\n",
			want: []string{`processes.web must be a table, e.g. [processes.web], not an array`},
		},
		{
			name: "NUL bytes",
			toml: "[build]\ncommand = \"make\\u0000\"\n[processes.web]\ncommand = \"./a\\u0000b\"\n",
			want: []string{
				`build.command contains a NUL byte: remove it`,
				`processes.web.command contains a NUL byte: remove it`,
			},
		},
		{
			name: "bad health path and app name",
			toml: "name = \"My App\"\n" + web + "[processes.web.health]\npath = \"healthz\"\n",
			want: []string{
				`name "My App" is not a valid app name: use 1 to 30 lowercase letters, digits and hyphens, starting with a letter`,
				`processes.web.health: path "healthz" must be an absolute URL path without spaces, e.g. "/healthz"`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Parse([]byte(tt.toml))
			if err == nil {
				t.Fatalf("Parse: got %+v, want an error", m)
			}
			checkProblems(t, err, TOMLFile, tt.want)
		})
	}
}

// checkProblems checks that err is an *Error for file with one problem per
// entry of want, in order, each containing it.
func checkProblems(t *testing.T, err error, file string, want []string) {
	t.Helper()
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("errors.Is(%v, ErrInvalid): got false, want true", err)
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error: got %T %v, want *Error", err, err)
	}
	if e.File != file {
		t.Errorf("Error.File: got %q, want %q", e.File, file)
	}
	if len(e.Problems) != len(want) {
		t.Fatalf("problems: got %d:\n%v\nwant %d: %q", len(e.Problems), err, len(want), want)
	}
	for i, w := range want {
		if !strings.Contains(e.Problems[i], w) {
			t.Errorf("problem %d:\ngot  %s\nwant it to contain %s", i, e.Problems[i], w)
		}
	}
	prefix := file
	if prefix == "" {
		prefix = "manifest"
	}
	if !strings.HasPrefix(err.Error(), prefix+": ") {
		t.Errorf("message: got %q, want it to start with %q", err, prefix+": ")
	}
}

func TestErrorMessage(t *testing.T) {
	tests := []struct {
		name string
		err  *Error
		want string
	}{
		{"one", &Error{File: "paddock.toml", Problems: []string{"a"}}, "paddock.toml: a"},
		{"several", &Error{File: "Procfile", Problems: []string{"a", "b"}}, "Procfile: 2 problems:\n  - a\n  - b"},
		{"no file", &Error{Problems: []string{"a"}}, "manifest: a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.Error(); got != tt.want {
				t.Errorf("Error(): got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParseProcfile(t *testing.T) {
	def := func(cmd string) Process { return defaultProcess(cmd) }
	tests := []struct {
		name     string
		procfile string
		want     map[string]Process
	}{
		{"one", "web: ./server", map[string]Process{"web": def("./server")}},
		{
			"comments, blank lines, spaces, CRLF and colons in commands",
			"\ufeff# Procfile\r\n\r\nweb:   bundle exec puma -b tcp://0.0.0.0:$PORT  \r\n  worker:bin/worker --queue=a:b\r\n",
			map[string]Process{"web": def("bundle exec puma -b tcp://0.0.0.0:$PORT"), "worker": scaledToZero(def("bin/worker --queue=a:b"))},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseProcfile([]byte(tt.procfile))
			if err != nil {
				t.Fatalf("ParseProcfile: %v", err)
			}
			want := &Manifest{Build: Build{Timeout: DefaultBuildTimeout}, Processes: tt.want}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("ParseProcfile:\ngot  %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestParseProcfileErrors(t *testing.T) {
	tests := []struct {
		name     string
		procfile string
		want     []string
	}{
		{"empty", "", []string{"no process types"}},
		{"only comments", "# web: ./server\n\n", []string{"no process types"}},
		{
			"every problem with its line",
			"web: ./server\nthis is not a process\nWeb_2: ./x\nworker:\nweb: ./other\n",
			[]string{
				`line 2: "this is not a process" is not a process line: write "type: command", e.g. "web: ./server"`,
				`line 3: process type "Web_2" is not a valid name: use 1 to 30 lowercase letters`,
				`line 4: process type "worker" has no command: write it after the colon, e.g. "worker: ./server"`,
				`line 5: process type "web" is declared twice (first on line 1): keep one`,
			},
		},
		{"invalid UTF-8", "web: ./a\xff\n", []string{`processes.web.command is not valid UTF-8: save the file as UTF-8`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := ParseProcfile([]byte(tt.procfile))
			if err == nil {
				t.Fatalf("ParseProcfile: got %+v, want an error", m)
			}
			checkProblems(t, err, ProcfileFile, tt.want)
		})
	}
}

func TestLoad(t *testing.T) {
	tests := []struct {
		name    string
		files   map[string]string
		want    string // the web command
		wantErr string
	}{
		{"paddock.toml", map[string]string{"paddock.toml": "[processes.web]\ncommand = \"toml\"\n"}, "toml", ""},
		{"Procfile", map[string]string{"Procfile": "web: procfile\n"}, "procfile", ""},
		{"paddock.toml wins", map[string]string{"paddock.toml": "[processes.web]\ncommand = \"toml\"\n", "Procfile": "web: procfile\n"}, "toml", ""},
		{"invalid paddock.toml does not fall back", map[string]string{"paddock.toml": "[processes.web]\n", "Procfile": "web: procfile\n"}, "", "paddock.toml: processes.web: command is missing"},
		{"neither", map[string]string{"README": "hi"}, "", "no paddock.toml or Procfile in DIR: add one (see examples/hello)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, content := range tt.files {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			m, err := Load(dir)
			if tt.wantErr != "" {
				want := strings.ReplaceAll(tt.wantErr, "DIR", dir)
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("Load: got %v, want an error containing %q", err, want)
				}
				return
			}
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if got := m.Processes["web"].Command; got != tt.want {
				t.Errorf("web command: got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestLoadNotFound(t *testing.T) {
	_, err := Load(t.TempDir())
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("Load of an empty folder: got %v, want ErrNotFound", err)
	}
}

func TestValidate(t *testing.T) {
	good := func() *Manifest {
		return &Manifest{Build: Build{Timeout: time.Minute}, Processes: map[string]Process{"web": defaultProcess("./server")}}
	}
	tests := []struct {
		name   string
		modify func(m *Manifest)
		want   []string
	}{
		{"valid", func(*Manifest) {}, nil},
		{"zero durations are not defaulted", func(m *Manifest) { m.Processes["web"] = Process{Command: "x", Instances: 1} }, []string{
			"processes.web: stop_timeout must be positive",
			"processes.web.health: interval must be positive",
			"processes.web.health: timeout must be positive",
			"processes.web.health: grace must be positive",
		}},
		{"nil processes", func(m *Manifest) { m.Processes = nil }, []string{"no process types"}},
		{"fixed port scaled up", func(m *Manifest) {
			p := m.Processes["web"]
			p.Port, p.Instances = 8080, 2
			m.Processes["web"] = p
		}, []string{"a fixed port (8080) cannot serve 2 instances"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := good()
			tt.modify(m)
			err := m.Validate()
			if tt.want == nil {
				if err != nil {
					t.Errorf("Validate: got %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate: got nil, want an error")
			}
			checkProblems(t, err, "", tt.want)
		})
	}
}

func TestJSONRoundTrip(t *testing.T) {
	m, err := Parse([]byte(helloTOML))
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var got Manifest
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&got, m) {
		t.Errorf("JSON round trip:\ngot  %+v\nwant %+v\njson %s", &got, m, b)
	}
	if want := `"stop_timeout_ns":10000000000`; !strings.Contains(string(b), want) {
		t.Errorf("JSON: got %s, want it to contain %s", b, want)
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{"0", 0, false},
		{"1048576", 1 << 20, false},
		{"512B", 512, false},
		{"256MiB", 256 << 20, false},
		{"256Mi", 256 << 20, false},
		{"512M", 512 << 20, false},
		{"512m", 512 << 20, false},
		{"1GiB", 1 << 30, false},
		{"1G", 1 << 30, false},
		{"2TiB", 2 << 40, false},
		{"64KiB", 64 << 10, false},
		{"500MB", 500e6, false},
		{"1GB", 1e9, false},
		{" 1 GiB ", 1 << 30, false},
		{"", 0, true},
		{"GiB", 0, true},
		{"1.5GiB", 0, true},
		{"-1GiB", 0, true},
		{"1PiB", 0, true},
		{"9223372036854775807K", 0, true},
		{"99999999999999999999", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSize(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseSize(%q): got error %v, want error %v", tt.in, err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("ParseSize(%q): got %d, want %d", tt.in, got, tt.want)
			}
		})
	}
}

func scaledToZero(p Process) Process {
	p.Instances = 0
	return p
}
