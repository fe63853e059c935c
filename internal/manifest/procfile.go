package manifest

import (
	"bufio"
	"bytes"
	"strings"
)

// ParseProcfile parses a Heroku Procfile: one "type: command" per line;
// blank lines and lines starting with "#" are skipped. Every process type
// gets the defaults of paddock.toml (one instance, $PORT, no build step).
// Every problem is reported at once, with its line number, in an *Error.
func ParseProcfile(b []byte) (*Manifest, error) {
	b = bytes.TrimPrefix(b, []byte("\ufeff"))
	m := &Manifest{
		Build:     Build{Timeout: DefaultBuildTimeout},
		Processes: map[string]Process{},
	}
	var p problems
	firstLine := map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, command, ok := strings.Cut(line, ":")
		name, command = strings.TrimSpace(name), strings.TrimSpace(command)
		switch {
		case !ok:
			p.add("line %d: %q is not a process line: write \"type: command\", e.g. \"web: ./server\"", n, line)
		case !nameRE.MatchString(name):
			p.add("line %d: process type %q is not a valid name: use 1 to 30 lowercase letters, digits and hyphens, starting with a letter (e.g. \"web\", \"worker\")", n, name)
		case command == "":
			p.add("line %d: process type %q has no command: write it after the colon, e.g. \"%s: ./server\"", n, name, name)
		case firstLine[name] > 0:
			p.add("line %d: process type %q is declared twice (first on line %d): keep one", n, name, firstLine[name])
		default:
			firstLine[name] = n
			proc := defaultProcess(command)
			if name != "web" {
				// As on Heroku: a Procfile's other process types start
				// scaled to zero, until `paddock scale` says otherwise.
				proc.Instances = 0
			}
			m.Processes[name] = proc
		}
	}
	if err := sc.Err(); err != nil {
		p.add("%v", err)
	}
	if len(p) == 0 {
		m.validate(&p)
	}
	if err := p.err(ProcfileFile); err != nil {
		return nil, err
	}
	return m, nil
}
