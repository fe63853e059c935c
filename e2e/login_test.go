package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"paddock.dev/paddock/internal/client"
	"paddock.dev/paddock/internal/testenv"
	"paddock.dev/paddock/internal/tlsca"
)

// TestLogin logs in from a fresh machine's CLI (an empty config folder):
// the CA is pinned by its fingerprint, the token stored 0600.
func TestLogin(t *testing.T) {
	p := testenv.Start(t)
	fp, err := tlsca.Fingerprint([]byte(p.CA))
	if err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimSpace(p.MustRun("tokens", "create", "--name", "laptop"))
	home := t.TempDir()
	run := func(args ...string) (string, string, error) {
		cmd := exec.Command(p.Bin, args...)
		cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+home, "PADDOCK_TOKEN=", "PADDOCK_ADDR=")
		var out, errOut strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		return out.String(), errOut.String(), err
	}

	wrong := strings.Repeat("ab", 32)
	if _, stderr, err := run("login", p.API, "--ca-fingerprint", wrong, "--token", tok); err == nil || !strings.Contains(stderr, "refusing to trust it") {
		t.Errorf("login with a wrong CA fingerprint: got %v %q, want a refusal", err, stderr)
	}
	if _, stderr, err := run("login", p.API, "--token", tok); err == nil || !strings.Contains(stderr, "no terminal") {
		t.Errorf("login without a fingerprint and without a terminal: got %v %q, want a refusal", err, stderr)
	}
	if _, stderr, err := run("login", p.API, "--ca-fingerprint", fp, "--token", "pdk_bad"); err == nil || !strings.Contains(stderr, "malformed token") {
		t.Errorf("login with a bad token: got %v %q", err, stderr)
	}
	out, stderr, err := run("login", p.API, "--ca-fingerprint", fp, "--token", tok)
	if err != nil || !strings.Contains(out, "Logged in") {
		t.Fatalf("login: %v %q %q", err, out, stderr)
	}
	path := filepath.Join(home, "paddock", "config.json")
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("config %s: %v mode %v, want 0600", path, err, fi.Mode().Perm())
	}
	var cfg client.Config
	b, _ := os.ReadFile(path)
	json.Unmarshal(b, &cfg)
	if cfg.CA != p.CA || cfg.Token != tok || cfg.Server != p.API {
		t.Errorf("config after login: %+v", cfg)
	}
	if out, _, err := run("whoami"); err != nil || !strings.Contains(out, "token: laptop") || !strings.Contains(out, "role:  admin") {
		t.Errorf("whoami: %v %q", err, out)
	}
	if out := p.MustRun("audit", "list"); !strings.Contains(out, "auth.login") {
		t.Errorf("audit list has no auth.login event:\n%s", out)
	}
	if _, _, err := run("logout"); err != nil {
		t.Fatal(err)
	}
	if _, stderr, err := run("apps"); err == nil || !strings.Contains(stderr, "no token") {
		t.Errorf("apps after logout: got %v %q, want an error asking for a token", err, stderr)
	}
}

// TestPlainHTTPOnlyOnLoopback: --insecure-http is refused elsewhere.
func TestPlainHTTPOnlyOnLoopback(t *testing.T) {
	bin := testenv.Binary(t)
	dir := t.TempDir()
	os.Chmod(dir, 0o711)
	os.Chmod(filepath.Dir(dir), 0o711)
	cmd := exec.Command(bin, "up", "--insecure-http", "--api", "0.0.0.0:0", "--http", "127.0.0.1:0", "--data", filepath.Join(dir, "data"))
	cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+filepath.Join(dir, "config"))
	out, err := cmd.CombinedOutput()
	testenv.KillLeftovers(filepath.Join(dir, "data"))
	if err == nil || !strings.Contains(string(out), "loopback address only") {
		t.Errorf("up --insecure-http on 0.0.0.0: got %v %q, want a refusal", err, out)
	}
}
