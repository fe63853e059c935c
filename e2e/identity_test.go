package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"paddock.dev/paddock/internal/client"
	"paddock.dev/paddock/internal/testenv"
)

func apiStatus(t *testing.T, p *testenv.Platform, method, path, token string, header map[string]string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, p.API+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := p.ClientWith("").HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	n, _ := resp.Body.Read(buf)
	b.Write(buf[:n])
	return resp.StatusCode, b.String()
}

func TestIdentity(t *testing.T) {
	p := testenv.Start(t)
	p.MustRun("apps", "create", "shop")
	p.MustRun("apps", "create", "side")

	t.Run("users", func(t *testing.T) {
		p.MustRun("users", "create", "ann", "--role", "developer")
		p.MustRun("teams", "create", "devs")
		p.MustRun("teams", "add-member", "devs", "ann")
		p.MustRun("apps", "grant", "shop", "devs", "developer")
		p.MustRun("apps", "grant", "side", "devs", "developer")
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"users", "create", "ann", "--role", "viewer"}, `user "ann": already exists`},
			{[]string{"users", "create", "bob", "--role", "root"}, `unknown role "root"`},
			{[]string{"users", "create", "Bad Name", "--role", "viewer"}, "user name"},
		} {
			_, stderr, err := p.Run(tc.args...)
			if err == nil || !strings.Contains(stderr, tc.want) {
				t.Errorf("%v: got %v %q, want an error with %q", tc.args, err, stderr, tc.want)
			}
		}
		if out := p.MustRun("users"); !strings.Contains(out, "ann") || !strings.Contains(out, "developer") {
			t.Errorf("users: got %q", out)
		}
	})

	var annToken string
	t.Run("tokens: value on stdout once, never listed", func(t *testing.T) {
		stdout, stderr, err := p.Run("tokens", "create", "--name", "ann-ci", "--user", "ann", "--app", "shop", "--expires", "30d")
		if err != nil {
			t.Fatalf("tokens create: %v %s", err, stderr)
		}
		annToken = strings.TrimSpace(stdout)
		if !strings.HasPrefix(annToken, "pdk_") || strings.Contains(annToken, " ") || !strings.Contains(stderr, "shown only this once") {
			t.Fatalf("tokens create: stdout %q stderr %q, want the token alone on stdout", stdout, stderr)
		}
		list := p.MustRun("tokens", "--all")
		if !strings.Contains(list, "ann-ci") || strings.Contains(list, annToken[4:20]) {
			t.Errorf("tokens list: %q, want the name and never the value", list)
		}
		_, stderr, err = p.Run("tokens", "create", "--name", "too-much", "--user", "ann", "--role", "admin")
		if err == nil || !strings.Contains(stderr, "never has more rights than its user") {
			t.Errorf("token above its user: got %v %q", err, stderr)
		}
		// A capped token makes no token with more rights than its own.
		ro := strings.TrimSpace(p.MustRun("tokens", "create", "--name", "ro", "--role", "viewer"))
		made, err := p.ClientWith(ro).CreateToken(context.Background(), client.TokenRequest{Name: "from-ro"})
		if err != nil || made.Role != "viewer" {
			t.Errorf("token made by a viewer-capped token: got role %q (%v), want viewer", made.Role, err)
		}
		if _, err := p.ClientWith(ro).CreateToken(context.Background(), client.TokenRequest{Name: "up", Role: "admin"}); err == nil {
			t.Errorf("a viewer-capped token made an admin token")
		}
	})

	ctx := context.Background()
	t.Run("scope, role and bad tokens", func(t *testing.T) {
		ann := p.ClientWith(annToken)
		if _, err := ann.Releases(ctx, "shop"); err != nil {
			t.Errorf("ann on shop: %v", err)
		}
		var ce *client.Error
		if _, err := ann.Releases(ctx, "side"); !errors.As(err, &ce) || ce.Status != 403 || !strings.Contains(ce.Message, "limited to the apps shop") {
			t.Errorf("scoped token on another app: got %v, want 403 naming the scope", err)
		}
		id := annToken[4:20]
		cases := []struct {
			name, token string
			header      map[string]string
			want        int
		}{
			{"missing", "", nil, 401},
			{"malformed", "pdk_short", nil, 401},
			{"wrong secret", "pdk_" + id + "_" + strings.Repeat("a", 52), nil, 401},
			{"oversize headers", p.Token, map[string]string{"X-Big": strings.Repeat("x", 100<<10)}, 431},
		}
		for _, tc := range cases {
			if code, body := apiStatus(t, p, "GET", "/v1/apps", tc.token, tc.header); code != tc.want {
				t.Errorf("%s: got %d %s, want %d", tc.name, code, body, tc.want)
			}
		}
		p.MustRun("tokens", "revoke", "ann-ci")
		if code, body := apiStatus(t, p, "GET", "/v1/apps/shop", annToken, nil); code != 401 || !strings.Contains(body, "revoked") {
			t.Errorf("revoked token: got %d %s, want 401", code, body)
		}
	})

	t.Run("teams and grants", func(t *testing.T) {
		p.MustRun("users", "create", "vic", "--role", "viewer")
		vic := strings.TrimSpace(p.MustRun("tokens", "create", "--name", "vic", "--user", "vic"))
		code, _ := apiStatus(t, p, "GET", "/v1/apps/side", vic, nil)
		if code != 403 {
			t.Errorf("viewer without grant: got %d, want 403", code)
		}
		p.MustRun("teams", "create", "ops")
		p.MustRun("teams", "add-member", "ops", "vic")
		p.MustRun("apps", "grant", "side", "ops", "developer")
		if code, body := apiStatus(t, p, "GET", "/v1/apps/side", vic, nil); code != 200 {
			t.Errorf("viewer with a grant: got %d %s, want 200", code, body)
		}
		if code, _ := apiStatus(t, p, "PATCH", "/v1/apps/side/formation", vic, nil); code != 403 {
			t.Errorf("viewer writing through a developer grant: got %d, want 403 (a user's role caps every grant)", code)
		}
		p.MustRun("users", "disable", "vic")
		if code, _ := apiStatus(t, p, "GET", "/v1/apps/side", vic, nil); code != 403 {
			t.Errorf("disabled user: got %d, want 403", code)
		}
	})

	t.Run("audit trail", func(t *testing.T) {
		out := p.MustRun("audit", "list")
		for _, want := range []string{"apps.create", "users.create", "tokens.create", "tokens.revoke", "auth.failed", "denied", "apps.grant"} {
			if !strings.Contains(out, want) {
				t.Errorf("audit list: missing %q in\n%s", want, out)
			}
		}
		if out := p.MustRun("audit", "list", "--app", "side", "--json"); strings.Contains(out, `"app/shop"`) {
			t.Errorf("audit list --app side shows shop's events")
		}
		exported := p.MustRun("audit", "export")
		if strings.Contains(exported, annToken) || strings.Contains(exported, p.Token) {
			t.Errorf("the audit log holds a token value")
		}
		if out := p.MustRun("audit", "verify"); !strings.Contains(out, "audit log intact") {
			t.Errorf("audit verify: got %q", out)
		}
		// Tamper with a stored event: verify must fail and name it.
		path := filepath.Join(p.Data, "audit", "audit.log")
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		tampered := strings.Replace(string(b), `"actor":"admin"`, `"actor":"eve00"`, 1)
		if err := os.WriteFile(path, []byte(tampered), 0o600); err != nil {
			t.Fatal(err)
		}
		_, stderr, err := p.Run("audit", "verify")
		if err == nil || !strings.Contains(stderr, "NOT intact") || !strings.Contains(stderr, "event ") {
			t.Errorf("audit verify of a tampered log: got %v %q, want a failure naming the event", err, stderr)
		}
		os.WriteFile(path, b, 0o600)
	})
}

// TestFailedAuthIsRateLimited fails 100 times with a token's id and a
// wrong secret: the next failure is refused with 429 and Retry-After, and
// the token itself still works.
func TestFailedAuthIsRateLimited(t *testing.T) {
	p := testenv.Start(t)
	tok := strings.TrimSpace(p.MustRun("tokens", "create", "--name", "ci"))
	id := tok[4:20]
	for i := 0; i < 100; i++ {
		wrong := fmt.Sprintf("pdk_%s_%052d", id, i)
		if code, _ := apiStatus(t, p, "GET", "/v1/apps", wrong, nil); code != 401 {
			t.Fatalf("attempt %d: got %d, want 401", i, code)
		}
	}
	do := func(token string) *http.Response {
		req, _ := http.NewRequest("GET", p.API+"/v1/apps", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := p.ClientWith("").HTTPClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if resp := do("pdk_" + id + "_" + strings.Repeat("z", 52)); resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
		t.Errorf("a failure after 100: got %d Retry-After %q, want 429 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if resp := do(tok); resp.StatusCode != 200 {
		t.Errorf("the valid token after 100 failures with its id: got %d, want 200", resp.StatusCode)
	}
}

// TestAuditFailsClosed fills the disk under the audit log: changes are
// refused with 503 and not made, reads keep working.
func TestAuditFailsClosed(t *testing.T) {
	p := testenv.Start(t)
	p.MustRun("apps", "create", "before")
	p.Stop()
	dir := filepath.Join(p.Data, "audit")
	saved := t.TempDir()
	if out, err := exec.Command("cp", "-a", dir+"/.", saved).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "paddock-audit-test", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount a small tmpfs for the audit log (the test needs root): %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	if out, err := exec.Command("cp", "-a", saved+"/.", dir).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	p.Up()
	// Fill the file system, leaving the log nothing to grow into.
	filler, _ := os.Create(filepath.Join(dir, "filler"))
	buf := make([]byte, 64<<10)
	for {
		if _, err := filler.Write(buf); err != nil {
			break
		}
	}
	for i := 0; i < 64; i++ {
		filler.Write(buf[:64])
	}
	filler.Close()

	// The log's last page may hold a few more events; then it is full.
	refused := ""
	for i := 0; i < 100 && refused == ""; i++ {
		name := fmt.Sprintf("after%d", i)
		_, stderr, err := p.Run("apps", "create", name)
		if err != nil {
			if !strings.Contains(stderr, "audit log cannot be written") {
				t.Fatalf("apps create with a full audit disk: got %q, want the audit refusal", stderr)
			}
			refused = name
		}
	}
	if refused == "" {
		t.Fatal("100 changes were accepted with the audit log's disk full")
	}
	out := p.MustRun("apps")
	if strings.Contains(out, refused+" ") || !strings.Contains(out, "before") {
		t.Errorf("apps after the refused change of %s: got %q, want before and not %s", refused, out, refused)
	}
}
