package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSecretValueNeverFromArgs runs `paddock secrets set` with a value on
// the command line in every way a person might try: each is refused
// before any request, the error shows the stdin form, and nothing printed
// repeats the value.
func TestSecretValueNeverFromArgs(t *testing.T) {
	t.Setenv("PADDOCK_ADDR", "http://127.0.0.1:1") // nothing listens: a request would fail differently
	t.Setenv("PADDOCK_TOKEN", "pdk_x")
	const value = "hunter2secret"
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"NAME=value", []string{"shop", "STRIPE_KEY=" + value}, `echo -n "$VALUE" | paddock secrets set shop STRIPE_KEY`},
		{"value after the name", []string{"shop", "STRIPE_KEY", value}, `echo -n "$VALUE" | paddock secrets set shop STRIPE_KEY`},
		{"only NAME=value", []string{"STRIPE_KEY=" + value}, `echo -n "$VALUE" | paddock secrets set APP NAME`},
		{"value as a flag", []string{"shop", "STRIPE_KEY", "--value=" + value}, `echo -n "$VALUE" | paddock secrets set APP NAME`},
		{"value as short flags", []string{"shop", "STRIPE_KEY", "-" + value}, `echo -n "$VALUE" | paddock secrets set APP NAME`},
		{"bool flag with a value", []string{"shop", "STRIPE_KEY", "--as-file=" + value}, `echo -n "$VALUE" | paddock secrets set APP NAME`},
		{"no name", []string{"shop"}, `echo -n "$VALUE" | paddock secrets set shop NAME`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := Main(context.Background(), append([]string{"secrets", "set"}, tc.args...), strings.NewReader("from stdin"), &stdout, &stderr)
			if code == 0 {
				t.Fatalf("exit code 0; want a refusal")
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("stderr %q: want the stdin form %q", stderr.String(), tc.want)
			}
			if strings.Contains(stdout.String()+stderr.String(), value) {
				t.Errorf("the output repeats the value:\nstdout %q\nstderr %q", stdout.String(), stderr.String())
			}
			if strings.Contains(stderr.String(), "cannot reach") {
				t.Errorf("a request was tried: %s", stderr.String())
			}
		})
	}
}

func TestReadSecret(t *testing.T) {
	dir := t.TempDir()
	file := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pem := []byte("-----BEGIN KEY-----\nabc\n-----END KEY-----\n")
	tests := []struct {
		name     string
		stdin    []byte
		fromFile string
		want     []byte
		err      string // a piece of the error, or "" for none
		note     string // a piece of stderr
	}{
		{"stdin byte for byte", []byte("a\x00b\xff"), "", []byte("a\x00b\xff"), "", ""},
		{"stdin with a newline keeps it and says so", []byte("tok\n"), "", []byte("tok\n"), "", "ends with a newline"},
		{"stdin empty", nil, "", nil, `no value given for KEY: pipe it in, ` + "`" + `echo -n "$VALUE" | paddock secrets set shop KEY`, ""},
		{"stdin 64 KiB", bytes.Repeat([]byte("x"), 64<<10), "", bytes.Repeat([]byte("x"), 64<<10), "", ""},
		{"stdin over 64 KiB", bytes.Repeat([]byte("x"), 64<<10+1), "", nil, "over 65536 bytes", ""},
		{"file", nil, file("key.pem", pem), pem, "", ""},
		{"file wins over stdin", []byte("ignored"), file("key2.pem", pem), pem, "", ""},
		{"file empty", nil, file("empty", nil), nil, "is empty", ""},
		{"file over 64 KiB", nil, file("big", make([]byte, 64<<10+1)), nil, "over 65536 bytes", ""},
		{"file missing", nil, filepath.Join(dir, "nope"), nil, "no such file", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			e := &env{stdin: bytes.NewReader(tc.stdin), stdout: &bytes.Buffer{}, stderr: &stderr}
			got, err := e.readSecret("shop", "KEY", tc.fromFile)
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("got error %v", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("got %q, %v; want an error with %q", got, err, tc.err)
			}
			if !bytes.Equal(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
			if tc.note != "" && !strings.Contains(stderr.String(), tc.note) {
				t.Errorf("stderr %q: want %q", stderr.String(), tc.note)
			}
		})
	}
}

func TestSecretChanges(t *testing.T) {
	tests := []struct {
		name          string
		before, after map[string]int
		want          string
	}{
		{"none", nil, nil, "-"},
		{"same", map[string]int{"A": 1}, map[string]int{"A": 1}, "-"},
		{"first", nil, map[string]int{"B": 1, "A": 2}, "+A +B"},
		{"changed and removed", map[string]int{"A": 1, "B": 1, "C": 4}, map[string]int{"A": 2, "C": 4, "D": 1}, "~A -B +D"},
		{"rolled back", map[string]int{"A": 3}, map[string]int{"A": 1}, "~A"},
	}
	for _, tc := range tests {
		if got := secretChanges(tc.before, tc.after); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestLooksLikeCredential(t *testing.T) {
	for key, want := range map[string]bool{
		"STRIPE_KEY": true, "api_key": true, "GITHUB_TOKEN": true, "DB_PASSWORD": true, "PASSWORD_FILE": true,
		"CLIENT_SECRET": true, "SECRETS_PATH": true, "DATABASE_URL": true,
		"LOG_LEVEL": false, "KEY": false, "KEYBOARD": false, "TOKEN_TTL": false, "PORT_KEYS": false, "DATABASE_POOL": false,
	} {
		if got := looksLikeCredential(key); got != want {
			t.Errorf("looksLikeCredential(%q) = %v, want %v", key, got, want)
		}
	}
}

func TestPlaceKeepsAnExistingFile(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "key.backup")
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if err := place(write("t1", "first"), out, false); err != nil {
		t.Fatal(err)
	}
	if err := place(write("t2", "second"), out, false); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Errorf("place over an existing file without force: got %v, want a refusal naming --force", err)
	}
	if b, _ := os.ReadFile(out); string(b) != "first" {
		t.Errorf("after a refused place: %q, want the first file kept", b)
	}
	if err := place(write("t3", "third"), out, true); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(out); string(b) != "third" {
		t.Errorf("after a forced place: %q, want the new file", b)
	}
}

func TestReadPassphraseFromStdin(t *testing.T) {
	tests := []struct {
		stdin, want, err string
	}{
		{"correct horse\n", "correct horse", ""},
		{"with cr\r\nsecond line\n", "with cr", ""},
		{"no newline", "no newline", ""},
		{"", "", "no passphrase on stdin"},
		{"\n", "", "no passphrase on stdin"},
	}
	for _, tc := range tests {
		e := &env{stdin: strings.NewReader(tc.stdin), stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}}
		got, err := e.readPassphrase(true)
		if got != tc.want || (tc.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("stdin %q: got %q, %v; want %q, error %q", tc.stdin, got, err, tc.want, tc.err)
		}
	}
}
