package e2e

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"paddock.dev/paddock/internal/api"
	"paddock.dev/paddock/internal/client"
	"paddock.dev/paddock/internal/testenv"
)

// writeApp writes files (name -> content) into a new folder.
func writeApp(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

type entry struct {
	name, link string
	typ        byte
	body       string
	size       int64 // of a body of zeros, when body is ""
}

// tarball builds a gzip-compressed tar by hand, as an attacker would.
func tarball(t *testing.T, entries []entry) io.Reader {
	t.Helper()
	pr, pw := io.Pipe()
	go func() {
		zw := gzip.NewWriter(pw)
		tw := tar.NewWriter(zw)
		for _, e := range entries {
			h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: 0o755}
			var body io.Reader = strings.NewReader(e.body)
			h.Size = int64(len(e.body))
			if e.size > 0 {
				h.Size, body = e.size, io.LimitReader(zeros{}, e.size)
			}
			if e.typ != tar.TypeReg {
				h.Size, body = 0, strings.NewReader("")
			}
			if err := tw.WriteHeader(h); err != nil {
				pw.CloseWithError(err)
				return
			}
			if _, err := io.Copy(tw, body); err != nil {
				pw.CloseWithError(err)
				return
			}
		}
		tw.Close()
		zw.Close()
		pw.Close()
	}()
	return pr
}

type zeros struct{}

func (zeros) Read(b []byte) (int, error) { clear(b); return len(b), nil }

const procfile = "web: ./server\n"

func TestBadInput(t *testing.T) {
	p := testenv.Start(t)
	ctx := context.Background()
	c := p.Client()
	p.MustRun("apps", "create", "bad")

	// A good release first: every bad input below must leave it running.
	p.MustRun("deploy", exampleDir(t), "--app", "bad")
	serving(t, p, "bad.localhost", "hello from")

	cli := []struct {
		name  string
		args  []string
		files map[string]string
		want  string
	}{
		{"unknown manifest key", nil, map[string]string{"paddock.toml": "[processes.web]\ncomand = \"x\"\n"}, `unknown key`},
		{"missing command", nil, map[string]string{"paddock.toml": "[processes.web]\ninstances = 1\n"}, "command"},
		{"malformed toml", nil, map[string]string{"paddock.toml": "[processes.web\n"}, "fix the TOML syntax"},
		{"no manifest", nil, map[string]string{"README": "hi"}, "no paddock.toml or Procfile"},
		{"port clash", nil, map[string]string{"paddock.toml": "[processes.web]\ncommand = \"a\"\nport = 9000\n[processes.api]\ncommand = \"b\"\nport = 9000\n"}, "9000"},
		{"unknown app", []string{"--app", "nope"}, map[string]string{"Procfile": procfile}, "paddock apps create nope"},
		{"invalid app name", []string{"--app", "Bad_Name"}, map[string]string{"Procfile": procfile}, "app name"},
		{"symlink out of the tree", nil, nil, `symlink "passwd" -> "/etc/passwd"`},
		{"build that fails", nil, map[string]string{"paddock.toml": "[build]\ncommand = \"echo compiling; exit 3\"\n[processes.web]\ncommand = \"true\"\n"}, "exit status 3"},
		{"build that hangs", nil, map[string]string{"paddock.toml": "[build]\ncommand = \"sleep 600\"\ntimeout = \"2s\"\n[processes.web]\ncommand = \"true\"\n"}, "timed out after 2s"},
	}
	for _, tc := range cli {
		t.Run(tc.name, func(t *testing.T) {
			var dir string
			if tc.files != nil {
				dir = writeApp(t, tc.files)
			} else {
				dir = writeApp(t, map[string]string{"Procfile": procfile})
				if err := os.Symlink("/etc/passwd", filepath.Join(dir, "passwd")); err != nil {
					t.Fatal(err)
				}
			}
			args := append([]string{"deploy", dir}, tc.args...)
			if tc.args == nil {
				args = append(args, "--app", "bad")
			}
			stdout, stderr, err := p.Run(args...)
			if err == nil {
				t.Fatalf("deploy succeeded, want an error with %q\n%s\n%s", tc.want, stdout, stderr)
			}
			if !strings.Contains(stderr, tc.want) {
				t.Errorf("error output: got %q, want it to mention %q", stderr, tc.want)
			}
		})
	}

	uploads := []struct {
		name    string
		entries []entry
		want    string
	}{
		{"dot-dot path", []entry{{name: "Procfile", typ: tar.TypeReg, body: procfile}, {name: "../escape", typ: tar.TypeReg, body: "x"}}, "escape"},
		{"absolute path", []entry{{name: "/tmp/abs-paddock", typ: tar.TypeReg, body: "x"}}, "abs-paddock"},
		{"symlink then write through it", []entry{{name: "Procfile", typ: tar.TypeReg, body: procfile}, {name: "link", link: "/tmp", typ: tar.TypeSymlink}, {name: "link/owned", typ: tar.TypeReg, body: "x"}}, "link"},
		{"hard link", []entry{{name: "Procfile", typ: tar.TypeReg, body: procfile}, {name: "hl", link: "/etc/passwd", typ: tar.TypeLink}}, "hl"},
		{"oversize", []entry{{name: "Procfile", typ: tar.TypeReg, body: procfile}, {name: "big", typ: tar.TypeReg, size: 600 << 20}}, "big"},
	}
	for _, tc := range uploads {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Deploy(ctx, "bad", tarball(t, tc.entries), func(api.DeployEvent) {})
			var ce *client.Error
			if !errors.As(err, &ce) {
				t.Fatalf("deploy: got %v, want an API error", err)
			}
			if ce.Code != "invalid" || !strings.Contains(ce.Message, tc.want) {
				t.Errorf("got %s %q, want code invalid naming %q", ce.Code, ce.Message, tc.want)
			}
		})
	}
	for _, path := range []string{"/tmp/abs-paddock", "/tmp/owned", filepath.Join(p.Data, "builds", "escape")} {
		if _, err := os.Stat(path); err == nil {
			t.Errorf("%s was written by a rejected upload", path)
			os.Remove(path)
		}
	}

	t.Run("unhealthy release rolls back", func(t *testing.T) {
		dir := writeApp(t, map[string]string{"paddock.toml": `
[processes.web]
command = "echo starting up; echo cannot bind >&2; exit 1"
[processes.web.health]
grace = "20s"
`})
		stdout, stderr, err := p.Run("deploy", dir, "--app", "bad")
		if err == nil {
			t.Fatalf("deploy of a crashing release succeeded\n%s\n%s", stdout, stderr)
		}
		for _, want := range []string{"crash-looping", "exited with code 1", "cannot bind"} {
			if !strings.Contains(stderr, want) {
				t.Errorf("deploy error: missing %q in\n%s", want, stderr)
			}
		}
		out := p.MustRun("releases", "bad")
		if !strings.Contains(out, "failed") || !strings.Contains(out, "v1 *") {
			t.Errorf("releases after a failed rollout: want the new one failed and v1 current:\n%s", out)
		}
	})

	serving(t, p, "bad.localhost", "hello from")
	if rels, err := c.Releases(ctx, "bad"); err != nil || rels[0].Version != 2 {
		t.Errorf("releases: got %d (%v), want only v1 and the failed v2", len(rels), err)
	}
}
