package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"paddock.dev/paddock/internal/client"
	"paddock.dev/paddock/internal/testenv"
	"paddock.dev/paddock/internal/wire"
)

// The secrets and keys commands and routes on the real binary: what a user
// sees, who may do what, what the audit log says, and that no value shows
// anywhere but in a reveal.

// secretsTeam sets up app shop with the principals of the route matrix:
// dev and view in a team that is developer on shop (view's role caps it
// at viewer), and other, a developer without access to shop.
func secretsTeam(t *testing.T, p *testenv.Platform) map[string]string {
	t.Helper()
	for _, args := range [][]string{
		{"apps", "create", "shop"},
		{"users", "create", "dev", "--role", "developer"},
		{"users", "create", "view", "--role", "viewer"},
		{"users", "create", "other", "--role", "developer"},
		{"teams", "create", "t1"},
		{"teams", "add-member", "t1", "dev"},
		{"teams", "add-member", "t1", "view"},
		{"apps", "grant", "shop", "t1", "developer"},
	} {
		p.MustRun(args...)
	}
	admin := p.Client()
	return map[string]string{
		"admin": p.Token,
		"dev":   mustToken(t, admin, client.TokenRequest{Name: "dev", User: "dev"}),
		"view":  mustToken(t, admin, client.TokenRequest{Name: "view", User: "view"}),
		"other": mustToken(t, admin, client.TokenRequest{Name: "other", User: "other"}),
	}
}

// runAs runs the CLI with another token and stdin.
func runAs(p *testenv.Platform, token, stdin string, args ...string) (stdout, stderr string, err error) {
	cmd := exec.Command(p.Bin, args...)
	cmd.Env = append(p.Env(), "PADDOCK_TOKEN="+token)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

func mustRunAs(t *testing.T, p *testenv.Platform, token, stdin string, args ...string) string {
	t.Helper()
	out, errOut, err := runAs(p, token, stdin, args...)
	if err != nil {
		t.Fatalf("paddock %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// randomValue is a value no test output holds by chance.
func randomValue(prefix string) string {
	b := make([]byte, 16)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// forms are the ways a value may leak.
func forms(v string) []string {
	return []string{v, base64.StdEncoding.EncodeToString([]byte(v)), base64.RawURLEncoding.EncodeToString([]byte(v)),
		hex.EncodeToString([]byte(v)), url.QueryEscape(v)}
}

func assertNoValue(t *testing.T, where, text string, values ...string) {
	t.Helper()
	for _, v := range values {
		for _, f := range forms(v) {
			if strings.Contains(text, f) {
				t.Errorf("%s holds a secret value (as %q)", where, f)
			}
		}
	}
}

func TestSecretsCLI(t *testing.T) {
	p := testenv.Start(t)
	tok := secretsTeam(t, p)
	stripe := randomValue("sk_live_")
	stripe2 := randomValue("sk_live_")
	pem := "-----BEGIN PRIVATE KEY-----\n" + randomValue("MII") + "\n-----END PRIVATE KEY-----\n"
	pemFile := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(pemFile, []byte(pem), 0o600); err != nil {
		t.Fatal(err)
	}

	t.Run("set from stdin rolls out a release", func(t *testing.T) {
		out := mustRunAs(t, p, tok["dev"], stripe, "secrets", "set", "shop", "STRIPE_KEY")
		for _, want := range []string{"Set STRIPE_KEY of shop (version 1).", "v1 of shop is live."} {
			if !strings.Contains(out, want) {
				t.Errorf("secrets set: missing %q in %q", want, out)
			}
		}
	})
	t.Run("set from a file, as a file", func(t *testing.T) {
		out := mustRunAs(t, p, tok["dev"], "", "secrets", "set", "shop", "TLS_KEY", "--from-file", pemFile, "--as-file")
		if !strings.Contains(out, "Set TLS_KEY of shop (version 1).") || !strings.Contains(out, "v2 of shop is live.") {
			t.Errorf("secrets set --from-file: got %q", out)
		}
	})
	t.Run("set --no-restart makes no release", func(t *testing.T) {
		out := mustRunAs(t, p, tok["dev"], stripe2, "secrets", "set", "shop", "STRIPE_KEY", "--no-restart")
		if !strings.Contains(out, "Set STRIPE_KEY of shop (version 2). Not rolled out") {
			t.Errorf("secrets set --no-restart: got %q", out)
		}
		rels, err := p.Client().Releases(context.Background(), "shop")
		if err != nil || len(rels) != 2 || rels[0].Secrets["STRIPE_KEY"] != 1 {
			t.Errorf("releases after --no-restart: %+v, %v; want 2, the newest pinning STRIPE_KEY v1", rels, err)
		}
	})
	t.Run("viewers list names and versions", func(t *testing.T) {
		out := mustRunAs(t, p, tok["view"], "", "secrets", "shop")
		for _, want := range []string{"NAME", "STRIPE_KEY  v2", "TLS_KEY     v1", "file", "env", "dev"} {
			if !strings.Contains(out, want) {
				t.Errorf("secrets shop: missing %q in\n%s", want, out)
			}
		}
		var list []wire.Secret
		if err := jsonUnmarshal(mustRunAs(t, p, tok["view"], "", "secrets", "shop", "--json"), &list); err != nil {
			t.Fatal(err)
		}
		if len(list) != 2 || list[0].Name != "STRIPE_KEY" || list[0].Version != 2 || list[0].AsFile || !list[1].AsFile || list[0].Digest == "" || list[0].UpdatedBy != "dev" {
			t.Errorf("secrets shop --json: %+v", list)
		}
	})
	t.Run("history", func(t *testing.T) {
		var hist []wire.SecretVersion
		if err := jsonUnmarshal(mustRunAs(t, p, tok["view"], "", "secrets", "history", "shop", "STRIPE_KEY", "--json"), &hist); err != nil {
			t.Fatal(err)
		}
		if len(hist) != 2 || hist[0].Version != 1 || hist[1].Version != 2 || hist[0].Digest == hist[1].Digest || hist[1].CreatedBy != "dev" {
			t.Errorf("secrets history --json: %+v", hist)
		}
		out := mustRunAs(t, p, tok["view"], "", "secrets", "history", "shop", "STRIPE_KEY")
		if !strings.Contains(out, "v1") || !strings.Contains(out, "v2") || !strings.Contains(out, "set") {
			t.Errorf("secrets history: %q", out)
		}
	})
	t.Run("reveal prints the value alone", func(t *testing.T) {
		for _, who := range []string{"dev", "admin"} {
			if out := mustRunAs(t, p, tok[who], "", "secrets", "reveal", "shop", "STRIPE_KEY"); out != stripe2 {
				t.Errorf("reveal as %s: got %q, want the value alone, no newline", who, out)
			}
		}
		if out := mustRunAs(t, p, tok["dev"], "", "secrets", "reveal", "shop", "TLS_KEY"); out != pem {
			t.Errorf("reveal of the file's secret: got %q, want the file's bytes", out)
		}
	})
	t.Run("viewers and strangers may not reveal or change", func(t *testing.T) {
		for _, who := range []string{"view", "other"} {
			for _, args := range [][]string{
				{"secrets", "reveal", "shop", "STRIPE_KEY"},
				{"secrets", "set", "shop", "STRIPE_KEY"},
				{"secrets", "unset", "shop", "STRIPE_KEY"},
			} {
				stdout, stderr, err := runAs(p, tok[who], "x", args...)
				if err == nil || !strings.Contains(stderr, "permission denied") || stdout != "" {
					t.Errorf("%v as %s: got %v, stdout %q, stderr %q; want permission denied and nothing on stdout", args, who, err, stdout, stderr)
				}
			}
		}
		if _, stderr, err := runAs(p, tok["other"], "", "secrets", "shop"); err == nil || !strings.Contains(stderr, "no access to app shop") {
			t.Errorf("secrets shop as other: got %v %q; want no access", err, stderr)
		}
	})
	t.Run("releases name the secrets each changed", func(t *testing.T) {
		p.MustRun("config", "set", "shop", "LOG_LEVEL=debug") // v3 takes STRIPE_KEY v2, stored without a release
		mustRunAs(t, p, tok["dev"], "", "secrets", "unset", "shop", "TLS_KEY")
		out := p.MustRun("releases", "shop")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 5 || !strings.Contains(lines[0], "SECRETS") {
			t.Fatalf("releases: want a header and 4 releases:\n%s", out)
		}
		for i, want := range []string{"-TLS_KEY", "~STRIPE_KEY", "+TLS_KEY", "+STRIPE_KEY"} {
			if !strings.Contains(lines[i+1], want) {
				t.Errorf("releases line %d: missing %q in %q", i+1, want, lines[i+1])
			}
		}
		assertNoValue(t, "releases", out, stripe, stripe2, pem)
		var rels []wire.Release
		if err := jsonUnmarshal(p.MustRun("releases", "shop", "--json"), &rels); err != nil {
			t.Fatal(err)
		}
		if len(rels) != 4 || rels[0].Secrets["STRIPE_KEY"] != 2 || len(rels[0].Secrets) != 1 || rels[1].Secrets["TLS_KEY"] != 1 {
			t.Errorf("releases --json: pins %v, %v; want STRIPE_KEY v2 alone, then with TLS_KEY v1", rels[0].Secrets, rels[1].Secrets)
		}
	})
	t.Run("unset", func(t *testing.T) {
		if out := mustRunAs(t, p, tok["view"], "", "secrets", "shop"); strings.Contains(out, "TLS_KEY") {
			t.Errorf("secrets shop after unset: %q", out)
		}
		_, stderr, err := runAs(p, tok["dev"], "", "secrets", "reveal", "shop", "TLS_KEY")
		if err == nil || !strings.Contains(stderr, "not found") {
			t.Errorf("reveal after unset: got %v %q, want not found", err, stderr)
		}
		out := mustRunAs(t, p, tok["view"], "", "secrets", "history", "shop", "TLS_KEY")
		if !strings.Contains(out, "unset") {
			t.Errorf("history after unset: %q, want the unset version", out)
		}
	})
	t.Run("every reveal is audited, never the value", func(t *testing.T) {
		var evs []wire.AuditEvent
		if err := jsonUnmarshal(p.MustRun("audit", "list", "--app", "shop", "--json"), &evs); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range evs {
			if e.Action == "apps.secrets.reveal" {
				got = append(got, e.Actor+" "+e.Target+" "+e.Outcome)
			}
		}
		want := []string{
			"dev app/shop/secrets/STRIPE_KEY allowed", "admin app/shop/secrets/STRIPE_KEY allowed", "dev app/shop/secrets/TLS_KEY allowed",
			"view app/shop/secrets/STRIPE_KEY denied", "other app/shop/secrets/STRIPE_KEY denied",
			"dev app/shop/secrets/TLS_KEY allowed", "dev app/shop/secrets/TLS_KEY failed",
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("reveal events:\n got %q\nwant %q", got, want)
		}
		assertNoValue(t, "the audit log", p.MustRun("audit", "export"), stripe, stripe2, pem)
		assertNoValue(t, "the server log", p.ServerLog(), stripe, stripe2, pem)
		assertNoValue(t, "the app's logs", p.MustRun("logs", "shop", "-n", "0"), stripe, stripe2, pem)
	})
}

// TestSecretsBadInput sends what a secret must not be, through the CLI and
// the API: each is refused with a reason and nothing is stored.
func TestSecretsBadInput(t *testing.T) {
	p := testenv.Start(t)
	p.MustRun("apps", "create", "shop")
	value := randomValue("pw_")

	t.Run("CLI", func(t *testing.T) {
		for _, tc := range []struct {
			name, stdin string
			args        []string
			want        string
		}{
			{"value in NAME=value", "", []string{"shop", "DB_PASSWORD=" + value}, `echo -n "$VALUE" | paddock secrets set shop DB_PASSWORD`},
			{"value as an argument", "", []string{"shop", "DB_PASSWORD", value}, `echo -n "$VALUE" | paddock secrets set shop DB_PASSWORD`},
			{"empty", "", []string{"shop", "DB_PASSWORD"}, "no value given for DB_PASSWORD"},
			{"over 64 KiB", strings.Repeat("x", 64<<10+1), []string{"shop", "DB_PASSWORD"}, "over 65536 bytes"},
			{"NUL byte in a variable", value + "\x00", []string{"shop", "DB_PASSWORD"}, "NUL byte, which no environment variable can hold"},
			{"not a variable name", value, []string{"shop", "DB-PASSWORD"}, `secret name "DB-PASSWORD"`},
			{"set by the platform", value, []string{"shop", "PORT"}, "set by the platform"},
			{"no such app", value, []string{"nope", "DB_PASSWORD"}, "nope"},
		} {
			stdout, stderr, err := p.RunIn("", strings.NewReader(tc.stdin), append([]string{"secrets", "set"}, tc.args...)...)
			if err == nil || !strings.Contains(stderr, tc.want) {
				t.Errorf("%s: got %v, stderr %q; want a refusal with %q", tc.name, err, stderr, tc.want)
			}
			assertNoValue(t, tc.name+": the output", stdout+stderr, value)
		}
	})
	t.Run("API", func(t *testing.T) {
		b64 := base64.StdEncoding.EncodeToString
		for _, tc := range []struct {
			name, body string
			status     int
			code       string
		}{
			{"plain-text value", `{"value":"` + value + `"}`, 400, "bad_json"},
			{"not base64", `{"value_base64":"` + value + `!"}`, 400, "bad_json"},
			{"empty value", `{"value_base64":""}`, 422, "invalid"},
			{"no value", `{"as_file":true}`, 422, "invalid"},
			{"over 64 KiB", `{"value_base64":"` + b64(make([]byte, 64<<10+1)) + `"}`, 422, "invalid"},
			{"NUL byte in a variable", `{"value_base64":"` + b64([]byte(value+"\x00")) + `"}`, 422, "invalid"},
			{"no body", ``, 400, "bad_json"},
			{"a list", `["` + b64([]byte(value)) + `"]`, 400, "bad_json"},
			{"trailing data", `{"value_base64":"eA=="} {}`, 400, "bad_json"},
		} {
			req, _ := http.NewRequest("PUT", p.API+"/v1/apps/shop/secrets/DB_PASSWORD", strings.NewReader(tc.body))
			req.Header.Set("Authorization", "Bearer "+p.Token)
			resp, err := p.Client().HTTPClient().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var e wire.ErrorBody
			json.Unmarshal(b, &e)
			if resp.StatusCode != tc.status || e.Error == nil || e.Error.Code != tc.code {
				t.Errorf("%s: got %d %s; want %d %s", tc.name, resp.StatusCode, b, tc.status, tc.code)
			}
			assertNoValue(t, tc.name+": the answer", string(b), value)
		}
	})
	if list, err := p.Client().Secrets(context.Background(), "shop"); err != nil || len(list) != 0 {
		t.Errorf("after bad input: secrets %+v, %v; want none", list, err)
	}
	assertNoValue(t, "the server log", p.ServerLog(), value)
	assertNoValue(t, "the audit log", p.MustRun("audit", "export"), value)
}

func TestKeysCLI(t *testing.T) {
	p := testenv.Start(t)
	tok := secretsTeam(t, p)
	value := randomValue("tok_")
	mustRunAs(t, p, tok["dev"], value, "secrets", "set", "shop", "API_TOKEN")
	dir := t.TempDir()
	backup := filepath.Join(dir, "key.backup")

	status := func() wire.KeyStatus {
		t.Helper()
		var st wire.KeyStatus
		if err := jsonUnmarshal(p.MustRun("keys", "status", "--json"), &st); err != nil {
			t.Fatal(err)
		}
		return st
	}
	before := status()
	if before.KEK == "" || len(before.DataKeys) == 0 {
		t.Fatalf("keys status: %+v, want a KEK and data keys", before)
	}
	if out := p.MustRun("keys", "status"); !strings.Contains(out, "KEK: "+before.KEK) || !strings.Contains(out, "SEALS") {
		t.Errorf("keys status: %q", out)
	}

	t.Run("rotate", func(t *testing.T) {
		out := p.MustRun("keys", "rotate")
		after := status()
		if after.KEK == before.KEK || !strings.Contains(out, after.KEK) {
			t.Errorf("keys rotate: %q; KEK %s then %s, want a new one", out, before.KEK, after.KEK)
		}
		for _, k := range after.DataKeys {
			if k.KEK != after.KEK {
				t.Errorf("after rotate: data key %d is wrapped by %s, not the new KEK %s", k.ID, k.KEK, after.KEK)
			}
		}
		if got := mustRunAs(t, p, tok["dev"], "", "secrets", "reveal", "shop", "API_TOKEN"); got != value {
			t.Errorf("reveal after rotate: got %q", got)
		}
	})
	t.Run("export", func(t *testing.T) {
		p.MustRun("keys", "export", "--out", backup)
		fi, err := os.Stat(backup)
		if err != nil || fi.Mode().Perm() != 0o600 || fi.Size() == 0 {
			t.Fatalf("backup file: %v, %v; want a non-empty 0600 file", fi, err)
		}
		first, _ := os.ReadFile(backup)
		_, stderr, err := p.Run("keys", "export", "--out", backup)
		if err == nil || !strings.Contains(stderr, "refusing to overwrite") {
			t.Errorf("export over an existing file: got %v %q, want a refusal", err, stderr)
		}
		if again, _ := os.ReadFile(backup); !bytes.Equal(again, first) {
			t.Errorf("a refused export changed the file")
		}
		p.MustRun("keys", "export", "--out", backup, "--force")
		assertNoValue(t, "the key backup", string(first), value)
	})
	t.Run("import", func(t *testing.T) {
		out := p.MustRun("keys", "import", backup)
		if !strings.Contains(out, "Imported") {
			t.Errorf("keys import: %q", out)
		}
		b, _ := os.ReadFile(backup)
		corrupt := filepath.Join(dir, "corrupt.backup")
		b[len(b)/2] ^= 0x40
		os.WriteFile(corrupt, b, 0o600)
		empty := filepath.Join(dir, "empty.backup")
		os.WriteFile(empty, nil, 0o600)
		for _, f := range []string{corrupt, empty} {
			if _, stderr, err := p.Run("keys", "import", f); err == nil || stderr == "" {
				t.Errorf("keys import %s: got %v %q, want a refusal", filepath.Base(f), err, stderr)
			}
		}
		if got := mustRunAs(t, p, tok["dev"], "", "secrets", "reveal", "shop", "API_TOKEN"); got != value {
			t.Errorf("reveal after refused imports: got %q", got)
		}
	})
	t.Run("a backup under a passphrase", func(t *testing.T) {
		sealed := filepath.Join(dir, "sealed.backup")
		stdout, stderr, err := p.RunIn("", strings.NewReader("correct horse battery\n"), "keys", "export", "--out", sealed, "--passphrase")
		if err != nil {
			t.Fatalf("keys export --passphrase: %v %s %s", err, stdout, stderr)
		}
		if strings.Contains(stderr, "in the clear") {
			t.Errorf("keys export --passphrase says the key is in the clear: %q", stderr)
		}
		if b, _ := os.ReadFile(sealed); bytes.Contains(b, []byte("correct horse")) {
			t.Errorf("the backup holds its passphrase")
		}
		if _, stderr, err := p.Run("keys", "import", sealed); err == nil || !strings.Contains(stderr, "--passphrase") {
			t.Errorf("import without the passphrase: got %v %q, want a refusal pointing at --passphrase", err, stderr)
		}
		if _, stderr, err := p.RunIn("", strings.NewReader("wrong horse\n"), "keys", "import", sealed, "--passphrase"); err == nil || !strings.Contains(stderr, "passphrase") {
			t.Errorf("import with a wrong passphrase: got %v %q, want a refusal naming the passphrase", err, stderr)
		}
		if out, stderr, err := p.RunIn("", strings.NewReader("correct horse battery\n"), "keys", "import", sealed, "--passphrase"); err != nil || !strings.Contains(out, "Imported") {
			t.Errorf("import with the passphrase: %v %q %q", err, out, stderr)
		}
		if _, stderr, err := p.Run("keys", "export", "--out", filepath.Join(dir, "nopass.backup"), "--passphrase"); err == nil || !strings.Contains(stderr, "no passphrase") {
			t.Errorf("export --passphrase with nothing on stdin: got %v %q, want a refusal", err, stderr)
		}
	})
	t.Run("admins only", func(t *testing.T) {
		for _, who := range []string{"dev", "view", "other"} {
			for _, args := range [][]string{{"keys", "status"}, {"keys", "rotate"}, {"keys", "export", "--out", filepath.Join(dir, who)}, {"keys", "import", backup}} {
				if _, stderr, err := runAs(p, tok[who], "", args...); err == nil || !strings.Contains(stderr, "permission denied") {
					t.Errorf("%v as %s: got %v %q, want permission denied", args, who, err, stderr)
				}
			}
			if _, err := os.Stat(filepath.Join(dir, who)); err == nil {
				t.Errorf("a refused export as %s left a file", who)
			}
		}
	})
	t.Run("audited", func(t *testing.T) {
		out := p.MustRun("audit", "list", "--json")
		var evs []wire.AuditEvent
		if err := jsonUnmarshal(out, &evs); err != nil {
			t.Fatal(err)
		}
		count := map[string]int{}
		for _, e := range evs {
			if e.Target == "keys" {
				count[e.Action+" "+e.Outcome]++
			}
		}
		// The CLI refuses an export over an existing file and an empty
		// import before asking the server: those make no event.
		for action, want := range map[string]int{"keys.rotate allowed": 1, "keys.export allowed": 3, "keys.import allowed": 5,
			"keys.import failed": 3, "keys.export denied": 3, "keys.rotate denied": 3, "keys.import denied": 3, "read denied": 3} {
			if count[action] != want {
				t.Errorf("audit events %q: %d, want %d (all: %v)", action, count[action], want, count)
			}
		}
		assertNoValue(t, "the audit log", p.MustRun("audit", "export"), value)
	})
}
