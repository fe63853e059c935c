package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"paddock.dev/paddock/internal/secrets"
	"paddock.dev/paddock/internal/testenv"
)

// TestSecretsNeverLeak sets secrets with known random values, deploys an
// app that prints them in every form, then reads every surface a user or
// an operator can reach and finds no form of any value anywhere: logs,
// followed logs, deploy output, events, the audit trail, every API answer,
// error messages, the server's log, and every byte of the data folder on
// disk, the instances' folders and the store's WAL included.
func TestSecretsNeverLeak(t *testing.T) {
	p := testenv.Start(t)
	values := map[string]string{"API_TOKEN": randomValue("v-"), "TLS_KEY": randomValue("v-")}
	p.MustRun("apps", "create", "leak")
	// A config var is a setting, shown to those who may read the app, but
	// the store keeps it sealed too.
	setting := randomValue("c-")
	p.MustRun("config", "set", "leak", "SETTING="+setting)
	setSecret(t, p, "leak", "API_TOKEN", values["API_TOKEN"])
	setSecret(t, p, "leak", "TLS_KEY", values["TLS_KEY"], "--as-file")

	var surfaces []surface
	add := func(name, text string) { surfaces = append(surfaces, surface{name, text}) }

	// A follower of the logs from before the app prints anything.
	follow := exec.Command(p.Bin, "logs", "leak", "-f", "-n", "0")
	follow.Env = p.Env()
	var followed lockedBuffer
	follow.Stdout, follow.Stderr = &followed, &followed
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { follow.Process.Signal(syscall.SIGTERM); follow.Wait() }()

	out, errOut, err := p.Run("deploy", tenantApp(t, "[build]\ncommand = \"env; ls -la\"\n[processes.web]\ncommand = \"./tenant leak API_TOKEN TLS_KEY\"\n"), "--app", "leak")
	if err != nil {
		t.Fatalf("deploy: %v\n%s\n%s", err, out, errOut)
	}
	add("deploy output", out+errOut)
	serving(t, p, "leak.localhost", "leaked")
	var logs string
	testenv.Eventually(t, 20*time.Second, func() error {
		logs = p.MustRun("logs", "leak", "-n", "0")
		if strings.Count(logs, "[REDACTED:API_TOKEN]") < 27 || strings.Count(logs, "[REDACTED:TLS_KEY]") < 27 {
			return fmt.Errorf("the app has not printed every form yet:\n%s", logs)
		}
		return nil
	})
	add("logs", logs)
	testenv.Eventually(t, 10*time.Second, func() error {
		if !strings.Contains(followed.String(), "[REDACTED:TLS_KEY]") {
			return fmt.Errorf("the follower has not seen the output yet")
		}
		return nil
	})
	add("logs -f", followed.String())

	// A build runs as the app's user: it can read what the running
	// instance got, and print it.
	snoop := `for f in /proc/[0-9]*/environ; do tr '\0' '\n' < $f 2>/dev/null; d=$(tr '\0' '\n' < $f 2>/dev/null | sed -n 's/^PADDOCK_SECRETS_DIR=//p'); [ -n "$d" ] && cat $d/* 2>/dev/null; done; echo snooped`
	out, errOut, err = p.Run("deploy", tenantApp(t, fmt.Sprintf("[build]\ncommand = %q\n[processes.web]\ncommand = \"./tenant leak API_TOKEN TLS_KEY\"\n", snoop)), "--app", "leak")
	if err != nil || !strings.Contains(errOut, "snooped") || !strings.Contains(errOut, "[REDACTED:API_TOKEN]") || !strings.Contains(errOut, "[REDACTED:TLS_KEY]") {
		t.Errorf("a build that reads the instance's environment and secret files: %v; want both secrets scrubbed from its output:\n%s", err, errOut)
	}
	add("deploy output of a snooping build", out+errOut)

	// The value is revealed on purpose, once.
	if got := p.MustRun("secrets", "reveal", "leak", "API_TOKEN"); got != values["API_TOKEN"] {
		t.Errorf("reveal: got %q, want the value", got)
	}
	for _, args := range [][]string{
		{"apps", "info", "leak", "--json"}, {"releases", "leak", "--json"}, {"config", "leak", "--json"},
		{"secrets", "leak", "--json"}, {"secrets", "history", "leak", "API_TOKEN"}, {"ps", "leak", "--json"},
		{"audit", "export"}, {"audit", "list", "--json"}, {"apps", "--json"},
	} {
		o, e, _ := p.Run(args...)
		add(strings.Join(args, " "), o+e)
	}
	// Error paths: a value sent where it is refused.
	for _, args := range [][]string{
		{"secrets", "set", "leak", "API_TOKEN=" + values["API_TOKEN"]},
		{"secrets", "set", "leak", "API_TOKEN", values["API_TOKEN"]},
		{"secrets", "set", "leak", "bad name"},
		{"secrets", "set", "nosuchapp", "API_TOKEN"},
	} {
		o, e, err := p.RunIn("", strings.NewReader(values["API_TOKEN"]), args...)
		if err == nil {
			t.Errorf("paddock %s: accepted", strings.Join(args[:3], " "))
		}
		add("error of secrets set "+args[3], o+e)
	}
	for _, path := range []string{"/v1/apps/leak", "/v1/apps/leak/releases", "/v1/apps/leak/instances", "/v1/apps/leak/config",
		"/v1/apps/leak/secrets", "/v1/apps/leak/secrets/TLS_KEY/versions", "/v1/apps/leak/logs?tail=1000", "/v1/audit/export", "/v1/audit?limit=1000"} {
		add("GET "+path, apiGet(t, p, path))
	}
	add("server log", p.ServerLog())

	// Every byte of the data folder on disk; a tmpfs of an instance's
	// secrets is memory, not disk.
	mounts, _ := os.ReadFile("/proc/self/mounts")
	filepath.WalkDir(p.Data, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() && bytes.Contains(mounts, []byte(" "+path+" tmpfs ")) {
			return filepath.SkipDir
		}
		// The storage pool (a sparse image of gigabytes) holds only what
		// apps write into their volumes.
		if d.IsDir() && path == filepath.Join(p.Data, "volumes", "pool") {
			return filepath.SkipDir
		}
		if d.Type().IsRegular() {
			b, _ := os.ReadFile(path)
			add("file "+strings.TrimPrefix(path, p.Data), string(b))
		}
		return nil
	})

	for name, v := range values {
		for _, form := range secrets.Forms([]byte(v)) {
			for _, s := range surfaces {
				if n := strings.Count(s.text, string(form)); n > 0 {
					t.Errorf("%s: %d occurrences of a form of %s (%q)", s.name, n, name, form)
				}
			}
		}
	}
	for _, f := range []string{"paddock.db", "paddock.db-wal"} {
		if b, _ := os.ReadFile(filepath.Join(p.Data, f)); bytes.Contains(b, []byte(setting)) {
			t.Errorf("%s holds a config var's value in the clear", f)
		}
	}
	if len(surfaces) < 30 {
		t.Errorf("only %d surfaces were read", len(surfaces))
	}
}

type surface struct{ name, text string }

// setSecret sets a secret through the CLI, the value on stdin.
func setSecret(t *testing.T, p *testenv.Platform, app, name, value string, flags ...string) string {
	t.Helper()
	out, errOut, err := p.RunIn("", strings.NewReader(value), append([]string{"secrets", "set", app, name}, flags...)...)
	if err != nil {
		t.Fatalf("secrets set %s %s: %v\n%s\n%s", app, name, err, out, errOut)
	}
	return out + errOut
}

// apiGet returns an API answer's body as the admin gets it.
func apiGet(t *testing.T, p *testenv.Platform, path string) string {
	t.Helper()
	c := p.Client()
	req, err := http.NewRequestWithContext(context.Background(), "GET", p.API+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+p.Token)
	resp, err := c.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
