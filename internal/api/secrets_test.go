package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"paddock.dev/paddock/internal/audit"
	"paddock.dev/paddock/internal/auth"
	"paddock.dev/paddock/internal/build"
	"paddock.dev/paddock/internal/client"
	"paddock.dev/paddock/internal/deploy"
	"paddock.dev/paddock/internal/router"
	"paddock.dev/paddock/internal/runtime"
	"paddock.dev/paddock/internal/store"
	"paddock.dev/paddock/internal/store/sqlite"
	"paddock.dev/paddock/internal/wire"
)

// These tests run the secrets and keys routes in-process, with the real
// store, policy, audit log and deploy service, and a stand-in keyring: the
// real one (internal/secrets) is wired by the daemon, and the e2e tests
// exercise the routes through it on the real binary.

// testKeyring seals by XOR with a pad, bound to the associated data by a
// hash of it: enough to keep plaintext out of the store and to fail on a
// moved ciphertext, which is all these tests need of it.
type testKeyring struct{}

// keyringOpens counts testKeyring.Open calls.
var keyringOpens atomic.Int64

func (testKeyring) Seal(_ context.Context, plaintext, aad []byte) ([]byte, error) {
	h := sha256.Sum256(aad)
	out := append([]byte{}, h[:8]...)
	for i, b := range plaintext {
		out = append(out, b^0xa5^byte(i))
	}
	return out, nil
}

func (testKeyring) Open(_ context.Context, sealed, aad []byte) ([]byte, error) {
	keyringOpens.Add(1)
	h := sha256.Sum256(aad)
	if len(sealed) < 8 || !bytes.Equal(sealed[:8], h[:8]) {
		return nil, errors.New("message authentication failed")
	}
	out := make([]byte, 0, len(sealed)-8)
	for i, b := range sealed[8:] {
		out = append(out, b^0xa5^byte(i))
	}
	return out, nil
}

func (testKeyring) Digest(_ context.Context, value []byte) (string, error) {
	h := sha256.Sum256(append([]byte("digest key\x00"), value...))
	return hex.EncodeToString(h[:6]), nil
}

// testKeys is a stand-in for the keyring's management.
type testKeys struct {
	mu  sync.Mutex
	kek int
}

func (k *testKeys) Status(context.Context) (KeyStatus, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	id := fmt.Sprintf("kek-%d", k.kek)
	return KeyStatus{KEK: id, KEKSource: "key file", DataKeys: []DataKeyStatus{
		{ID: 1, Kind: "seal", KEK: id, Seals: 3, Active: true, CreatedAt: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)},
	}}, nil
}

func (k *testKeys) Rotate(context.Context) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.kek++
	return nil
}

// A test backup is "BACKUP kek-N|PASSPHRASE".
func (k *testKeys) Export(_ context.Context, passphrase []byte) ([]byte, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return fmt.Appendf(nil, "BACKUP kek-%d|%s", k.kek, passphrase), nil
}

func (k *testKeys) Import(_ context.Context, backup, passphrase []byte) error {
	head, pass, ok := strings.Cut(string(backup), "|")
	var n int
	if _, err := fmt.Sscanf(head, "BACKUP kek-%d", &n); err != nil || !ok {
		return fmt.Errorf("%w: it does not start as a backup does", ErrBadBackup)
	}
	if pass != string(passphrase) {
		return fmt.Errorf("%w: wrong passphrase", ErrBadBackup)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.kek = n
	return nil
}

type nopRuntime struct{}

func (nopRuntime) Start(context.Context, runtime.Spec) (runtime.Instance, error) {
	return runtime.Instance{}, errors.New("no runtime in this test")
}
func (nopRuntime) Stop(context.Context, string) error               { return nil }
func (nopRuntime) List(context.Context) ([]runtime.Instance, error) { return nil, nil }
func (nopRuntime) LogFile(runtime.Spec) string                      { return "" }

type nopRouter struct{}

func (nopRouter) Push(context.Context, router.Table) error      { return nil }
func (nopRouter) Status(context.Context) (router.Status, error) { return router.Status{}, nil }

type testAuditor struct {
	*audit.Log
	dir string
}

func (a testAuditor) Verify(ctx context.Context) audit.Report {
	return audit.Verify(ctx, a.dir, a.PublicKey())
}

// secretsPlatform is the API with the real store, policy and audit log.
// Principals, as in e2e's route matrix: admin, who made apps shop and
// side; dev and view, members of a team that is developer on both (view's
// role caps it at viewer); other, a developer without access to them;
// scoped, dev's token limited to app side; capped, an admin's token capped
// at viewer.
type secretsPlatform struct {
	st      *sqlite.DB
	log     *audit.Log
	srv     *httptest.Server
	tokens  map[string]string
	clients map[string]*client.Client
	cfg     Config // the server's
}

func startSecrets(t *testing.T, keys Keys) *secretsPlatform {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "paddock.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	svc, err := deploy.New(deploy.Config{Store: st, Runtime: nopRuntime{}, Router: nopRouter{},
		Artifacts: &build.Artifacts{Dir: filepath.Join(dir, "artifacts")}, BuildDir: filepath.Join(dir, "builds"),
		BuildHome: filepath.Join(dir, "home"), Logs: filepath.Join(dir, "logs"), Keyring: testKeyring{}})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	for _, u := range []store.User{{Name: "admin", Role: "admin"}, {Name: "dev", Role: "developer"}, {Name: "view", Role: "viewer"}, {Name: "other", Role: "developer"}} {
		u.CreatedAt = now
		if err := st.CreateUser(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.CreateTeam(ctx, store.Team{Name: "t1", CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"dev", "view"} {
		if err := st.AddTeamMember(ctx, "t1", u); err != nil {
			t.Fatal(err)
		}
	}
	for _, app := range []string{"shop", "side"} {
		if _, err := svc.CreateApp(ctx, app, "admin", nil); err != nil {
			t.Fatal(err)
		}
		if err := st.SetGrant(ctx, store.Grant{App: app, Team: "t1", Role: "developer"}); err != nil {
			t.Fatal(err)
		}
	}
	authz := &auth.Authorizer{Store: st}
	if err := authz.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	principals := map[string]auth.Principal{
		"admin":  {User: "admin", Token: "cli", Role: auth.Admin},
		"dev":    {User: "dev", Token: "dev", Role: auth.Developer},
		"view":   {User: "view", Token: "view", Role: auth.Viewer},
		"other":  {User: "other", Token: "other", Role: auth.Developer},
		"scoped": {User: "dev", Token: "scoped", Role: auth.Developer, Apps: []string{"side"}},
		"capped": {User: "admin", Token: "capped", Role: auth.Viewer},
	}
	p := &secretsPlatform{st: st, tokens: map[string]string{}, clients: map[string]*client.Client{}}
	valid := map[string]auth.Principal{}
	id := byte('a')
	for who, pr := range principals {
		v := token(id, id)
		id++
		valid[v], p.tokens[who] = pr, v
	}
	auditDir := filepath.Join(dir, "audit")
	if p.log, err = audit.Open(ctx, audit.Config{Dir: auditDir}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.log.Close() })
	p.cfg = Config{Deploy: svc, Store: st, Auth: &fakeTokens{valid: valid}, Authz: authz,
		Audit: testAuditor{p.log, auditDir}, Keys: keys}
	s, err := New(p.cfg)
	if err != nil {
		t.Fatal(err)
	}
	p.srv = httptest.NewServer(s)
	t.Cleanup(p.srv.Close)
	for who, v := range p.tokens {
		c, err := client.New(client.Config{Server: p.srv.URL, Token: v})
		if err != nil {
			t.Fatal(err)
		}
		p.clients[who] = c
	}
	return p
}

func (p *secretsPlatform) as(who string) *client.Client { return p.clients[who] }

func (p *secretsPlatform) events(t *testing.T, f audit.Filter) []audit.Event {
	t.Helper()
	evs, err := p.log.List(context.Background(), f)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// raw sends a request with a token and returns the status and body.
func (p *secretsPlatform) raw(t *testing.T, who, method, path, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, p.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+p.tokens[who])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func code(err error) string {
	var ce *client.Error
	if errors.As(err, &ce) {
		return ce.Code
	}
	return ""
}

func TestSecretsLifecycle(t *testing.T) {
	p := startSecrets(t, nil)
	ctx := context.Background()
	dev := p.as("dev")
	value := []byte("sk_live_\x00\xff binary too\n")

	ch, err := dev.SetSecret(ctx, "shop", "STRIPE_KEY", []byte("sk_live_\xff\n"), client.SecretOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ch.Version != 1 || ch.Deleted || ch.Release == nil || ch.Release.Secrets["STRIPE_KEY"] != 1 {
		t.Fatalf("set: got %+v (release %+v), want version 1 and a release pinning STRIPE_KEY=1", ch, ch.Release)
	}
	if ch.Release.Description != "Secrets: set STRIPE_KEY" {
		t.Errorf("release description: got %q", ch.Release.Description)
	}

	// A second version, stored without a release.
	ch, err = dev.SetSecret(ctx, "shop", "STRIPE_KEY", []byte("v2"), client.SecretOptions{AsFile: true, NoRestart: true})
	if err != nil {
		t.Fatal(err)
	}
	if ch.Version != 2 || ch.Release != nil {
		t.Errorf("set --no-restart: got %+v, want version 2 and no release", ch)
	}
	rels, err := dev.Releases(ctx, "shop")
	if err != nil {
		t.Fatal(err)
	}
	if len(rels) != 1 || rels[0].Secrets["STRIPE_KEY"] != 1 {
		t.Errorf("releases after --no-restart: got %+v, want only v1 pinning STRIPE_KEY=1", rels)
	}

	list, err := p.as("view").Secrets(ctx, "shop")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Name != "STRIPE_KEY" || list[0].Version != 2 || !list[0].AsFile || list[0].UpdatedBy != "dev" || list[0].Digest == "" {
		t.Errorf("list as viewer: got %+v", list)
	}
	hist, err := p.as("view").SecretHistory(ctx, "shop", "STRIPE_KEY")
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != 2 || hist[0].Version != 1 || hist[1].Version != 2 || hist[0].Digest == hist[1].Digest || hist[0].CreatedBy != "dev" {
		t.Errorf("history: got %+v, want versions 1 and 2 with different digests", hist)
	}

	got, err := dev.RevealSecret(ctx, "shop", "STRIPE_KEY")
	if err != nil || string(got) != "v2" {
		t.Errorf("reveal: got %q, %v; want v2", got, err)
	}
	if _, err := p.as("view").RevealSecret(ctx, "shop", "STRIPE_KEY"); code(err) != "forbidden" {
		t.Errorf("reveal as viewer: got %v, want forbidden", err)
	}

	ch, err = dev.UnsetSecret(ctx, "shop", "STRIPE_KEY", false)
	if err != nil {
		t.Fatal(err)
	}
	if ch.Version != 3 || !ch.Deleted || ch.Release == nil || len(ch.Release.Secrets) != 0 {
		t.Errorf("unset: got %+v (release %+v), want version 3, deleted, a release without secrets", ch, ch.Release)
	}
	if list, _ := dev.Secrets(ctx, "shop"); len(list) != 0 {
		t.Errorf("list after unset: got %+v, want none", list)
	}
	if _, err := dev.RevealSecret(ctx, "shop", "STRIPE_KEY"); code(err) != "not_found" {
		t.Errorf("reveal after unset: got %v, want not_found", err)
	}
	if _, err := dev.UnsetSecret(ctx, "shop", "STRIPE_KEY", true); code(err) != "not_found" {
		t.Errorf("unset twice: got %v, want not_found", err)
	}
	// Any bytes survive the trip; a NUL byte only in a file.
	if _, err := dev.SetSecret(ctx, "shop", "BIN", value, client.SecretOptions{}); code(err) != "invalid" || !strings.Contains(err.Error(), "NUL byte") {
		t.Errorf("set of a value with a NUL byte as an environment variable: got %v, want invalid", err)
	}
	if _, err := dev.SetSecret(ctx, "shop", "BIN", value, client.SecretOptions{AsFile: true}); err != nil {
		t.Fatal(err)
	}
	if got, err := dev.RevealSecret(ctx, "shop", "BIN"); err != nil || !bytes.Equal(got, value) {
		t.Errorf("reveal of binary value: got %q, %v; want %q", got, err, value)
	}
}

func TestSecretsBadInput(t *testing.T) {
	p := startSecrets(t, nil)
	b64 := func(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
	tests := []struct {
		name, method, path, body string
		status                   int
		code, msg                string
	}{
		{"empty value", "PUT", "/v1/apps/shop/secrets/A", `{"value_base64":""}`, 422, "invalid", "empty"},
		{"NUL byte in a variable", "PUT", "/v1/apps/shop/secrets/A", `{"value_base64":"YQBi"}`, 422, "invalid", "NUL byte"},
		{"no value", "PUT", "/v1/apps/shop/secrets/A", `{}`, 422, "invalid", "empty"},
		{"over 64 KiB", "PUT", "/v1/apps/shop/secrets/A", `{"value_base64":"` + b64(make([]byte, 64<<10+1)) + `"}`, 422, "invalid", "over the limit of 65536"},
		{"name with a dash", "PUT", "/v1/apps/shop/secrets/BAD-NAME", `{"value_base64":"eA=="}`, 422, "invalid", `secret name "BAD-NAME"`},
		{"name starting with a digit", "PUT", "/v1/apps/shop/secrets/1A", `{"value_base64":"eA=="}`, 422, "invalid", "not starting with a digit"},
		{"name the platform sets", "PUT", "/v1/apps/shop/secrets/PORT", `{"value_base64":"eA=="}`, 422, "invalid", "set by the platform"},
		{"value as plain text", "PUT", "/v1/apps/shop/secrets/A", `{"value":"hunter2"}`, 400, "bad_json", `unknown field "value"`},
		{"value not base64", "PUT", "/v1/apps/shop/secrets/A", `{"value_base64":"hunter2!"}`, 400, "bad_json", "invalid base64"},
		{"value a number", "PUT", "/v1/apps/shop/secrets/A", `{"value_base64":5}`, 400, "bad_json", "a string of bytes in base64"},
		{"as_file a string", "PUT", "/v1/apps/shop/secrets/A", `{"value_base64":"eA==","as_file":"yes"}`, 400, "bad_json", `field "as_file"`},
		{"not JSON", "PUT", "/v1/apps/shop/secrets/A", `hunter2`, 400, "bad_json", "not valid JSON"},
		{"no app", "PUT", "/v1/apps/nope/secrets/A", `{"value_base64":"eA=="}`, 404, "not_found", "nope"},
		{"unset with a bad no_restart", "DELETE", "/v1/apps/shop/secrets/A?no_restart=maybe", ``, 422, "invalid", "no_restart"},
		{"unset of no secret", "DELETE", "/v1/apps/shop/secrets/A", ``, 404, "not_found", "secret A"},
		{"history of no secret", "GET", "/v1/apps/shop/secrets/A/versions", ``, 404, "not_found", "secret A"},
		{"reveal of no secret", "POST", "/v1/apps/shop/secrets/A/reveal", ``, 404, "not_found", "secret A"},
		{"list of no app", "GET", "/v1/apps/nope/secrets", ``, 404, "not_found", "nope"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, body := p.raw(t, "admin", tc.method, tc.path, tc.body)
			var e wire.ErrorBody
			if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error == nil {
				t.Fatalf("got %d %s: not an error answer", status, body)
			}
			if status != tc.status || e.Error.Code != tc.code || !strings.Contains(e.Error.Message, tc.msg) {
				t.Errorf("got %d %s; want %d %s with %q", status, body, tc.status, tc.code, tc.msg)
			}
			if strings.Contains(body, "hunter2") {
				t.Errorf("the answer holds the value sent: %s", body)
			}
		})
	}
	if list, _ := p.as("dev").Secrets(context.Background(), "shop"); len(list) != 0 {
		t.Errorf("after bad input: secrets %+v, want none", list)
	}
}

func TestSecretsPermissions(t *testing.T) {
	p := startSecrets(t, nil)
	ctx := context.Background()
	if _, err := p.as("dev").SetSecret(ctx, "shop", "A", []byte("x"), client.SecretOptions{NoRestart: true}); err != nil {
		t.Fatal(err)
	}
	type call struct {
		name string
		do   func(c *client.Client) error
	}
	calls := []call{
		{"list", func(c *client.Client) error { _, err := c.Secrets(ctx, "shop"); return err }},
		{"history", func(c *client.Client) error { _, err := c.SecretHistory(ctx, "shop", "A"); return err }},
		{"reveal", func(c *client.Client) error { _, err := c.RevealSecret(ctx, "shop", "A"); return err }},
		{"set", func(c *client.Client) error {
			_, err := c.SetSecret(ctx, "shop", "A", []byte("y"), client.SecretOptions{NoRestart: true})
			return err
		}},
		{"unset", func(c *client.Client) error { _, err := c.UnsetSecret(ctx, "shop", "NONE", true); return err }},
	}
	allowed := map[string][]string{
		"list":    {"admin", "dev", "view", "capped"},
		"history": {"admin", "dev", "view", "capped"},
		"reveal":  {"admin", "dev"},
		"set":     {"admin", "dev"},
		"unset":   {"admin", "dev"},
	}
	for _, c := range calls {
		for _, who := range []string{"admin", "dev", "view", "other", "scoped", "capped"} {
			err := c.do(p.as(who))
			want := false
			for _, a := range allowed[c.name] {
				want = want || a == who
			}
			if got := code(err) != "forbidden"; got != want {
				t.Errorf("%s as %s: got %v; want allowed=%v", c.name, who, err, want)
			}
		}
	}
}

// TestRevealIsAudited checks that every reveal, allowed, denied or failed,
// is an audit event naming the app and the secret, and that no event
// holds the value.
func TestRevealIsAudited(t *testing.T) {
	p := startSecrets(t, nil)
	ctx := context.Background()
	value := "tok_9f8e7d6c5b4a"
	if _, err := p.as("dev").SetSecret(ctx, "shop", "API_TOKEN", []byte(value), client.SecretOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.as("dev").RevealSecret(ctx, "shop", "API_TOKEN"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.as("view").RevealSecret(ctx, "shop", "API_TOKEN"); code(err) != "forbidden" {
		t.Fatalf("reveal as viewer: %v", err)
	}
	if _, err := p.as("other").RevealSecret(ctx, "shop", "API_TOKEN"); code(err) != "forbidden" {
		t.Fatalf("reveal as other: %v", err)
	}
	if _, err := p.as("dev").RevealSecret(ctx, "shop", "MISSING"); code(err) != "not_found" {
		t.Fatalf("reveal of a missing secret: %v", err)
	}
	bad := client.Config{Server: p.srv.URL, Token: token('z', 'z')}
	c, _ := client.New(bad)
	if _, err := c.RevealSecret(ctx, "shop", "API_TOKEN"); code(err) != "unauthenticated" {
		t.Fatalf("reveal with a bad token: %v", err)
	}

	type seen struct{ actor, action, target, outcome string }
	var got []seen
	for _, e := range p.events(t, audit.Filter{Target: "app/shop/secrets"}) {
		if e.Action == "apps.secrets.reveal" || e.Action == "auth.failed" {
			got = append(got, seen{e.Actor, e.Action, e.Target, e.Outcome})
		}
	}
	want := []seen{
		{"dev", "apps.secrets.reveal", "app/shop/secrets/API_TOKEN", audit.OutcomeAllowed},
		{"view", "apps.secrets.reveal", "app/shop/secrets/API_TOKEN", audit.OutcomeDenied},
		{"other", "apps.secrets.reveal", "app/shop/secrets/API_TOKEN", audit.OutcomeDenied},
		{"dev", "apps.secrets.reveal", "app/shop/secrets/MISSING", audit.OutcomeAllowed},
		{"dev", "apps.secrets.reveal", "app/shop/secrets/MISSING", audit.OutcomeFailed},
		{"", "auth.failed", "app/shop/secrets/API_TOKEN", audit.OutcomeDenied},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("reveal events:\n got %v\nwant %v", got, want)
	}
	var export bytes.Buffer
	if err := p.log.Export(ctx, &export); err != nil {
		t.Fatal(err)
	}
	for _, form := range []string{value, base64.StdEncoding.EncodeToString([]byte(value)), hex.EncodeToString([]byte(value))} {
		if strings.Contains(export.String(), form) {
			t.Errorf("the audit log holds the value (as %q)", form)
		}
	}
	if sets := p.events(t, audit.Filter{Target: "app/shop/secrets/API_TOKEN"}); len(sets) == 0 || sets[0].Action != "apps.secrets.set" {
		t.Errorf("the set is not audited under the secret's name: %+v", sets)
	}
}

// heldAuditor holds back reveal events until release is closed, and then
// writes them, or fails them with fail.
type heldAuditor struct {
	Auditor
	release chan struct{}
	fail    error
}

func (a heldAuditor) Append(ctx context.Context, e audit.Event) (audit.Event, error) {
	if e.Action == "apps.secrets.reveal" {
		<-a.release
		if a.fail != nil {
			return audit.Event{}, a.fail
		}
	}
	return a.Auditor.Append(ctx, e)
}

// TestRevealWaitsForItsEvent checks that a reveal, whose store read and
// decryption run while its audit event is written, answers nothing before
// the event is durable, and nothing of the value if it cannot be written.
func TestRevealWaitsForItsEvent(t *testing.T) {
	p := startSecrets(t, nil)
	ctx := context.Background()
	value := "tok_held_5e4d3c2b1a"
	if _, err := p.as("dev").SetSecret(ctx, "shop", "API_TOKEN", []byte(value), client.SecretOptions{}); err != nil {
		t.Fatal(err)
	}
	serve := func(a heldAuditor) *client.Client {
		cfg := p.cfg
		cfg.Audit = a
		s, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(s)
		t.Cleanup(srv.Close)
		c, err := client.New(client.Config{Server: srv.URL, Token: p.tokens["dev"]})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	type answer struct {
		value []byte
		err   error
	}
	reveal := func(c *client.Client) chan answer {
		ch := make(chan answer, 1)
		go func() {
			v, err := c.RevealSecret(ctx, "shop", "API_TOKEN")
			ch <- answer{v, err}
		}()
		return ch
	}

	held := heldAuditor{Auditor: p.cfg.Audit, release: make(chan struct{})}
	var once sync.Once
	release := func() { once.Do(func() { close(held.release) }) }
	c := serve(held)
	t.Cleanup(release) // runs before the server's Close, which waits for the request
	opens := keyringOpens.Load()
	got := reveal(c)
	// The value is read and decrypted while the event is being written…
	for deadline := time.Now().Add(5 * time.Second); keyringOpens.Load() == opens; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the reveal did not read its value while its audit event was being written")
		}
	}
	// …but not answered before it is written.
	select {
	case a := <-got:
		t.Fatalf("the reveal answered (%q, %v) before its audit event was written", a.value, a.err)
	case <-time.After(100 * time.Millisecond):
	}
	release()
	if a := <-got; a.err != nil || string(a.value) != value {
		t.Fatalf("reveal once its event is written: %q, %v", a.value, a.err)
	}
	if evs := p.events(t, audit.Filter{Target: "app/shop/secrets/API_TOKEN"}); evs[len(evs)-1].Action != "apps.secrets.reveal" {
		t.Errorf("the reveal's event is not in the log: %+v", evs[len(evs)-1])
	}

	failing := heldAuditor{Auditor: p.cfg.Audit, release: make(chan struct{}), fail: errors.New("no space left on device")}
	close(failing.release)
	a := <-reveal(serve(failing))
	if code(a.err) != "audit_unavailable" || a.value != nil {
		t.Fatalf("reveal with the audit log failing: %q, %v; want audit_unavailable and no value", a.value, a.err)
	}
	if strings.Contains(a.err.Error(), value) {
		t.Errorf("the refusal holds the value: %v", a.err)
	}
}

// TestSecretValuesStayOut checks every answer but reveal's for the value.
func TestSecretValuesStayOut(t *testing.T) {
	p := startSecrets(t, nil)
	ctx := context.Background()
	value := "pw_" + strings.Repeat("Zq7", 8)
	if _, err := p.as("dev").SetSecret(ctx, "shop", "DB_PASSWORD", []byte(value), client.SecretOptions{}); err != nil {
		t.Fatal(err)
	}
	forms := []string{value, base64.StdEncoding.EncodeToString([]byte(value)), hex.EncodeToString([]byte(value))}
	for _, path := range []string{"/v1/apps/shop", "/v1/apps/shop/releases", "/v1/apps/shop/releases/1", "/v1/apps/shop/config",
		"/v1/apps/shop/secrets", "/v1/apps/shop/secrets/DB_PASSWORD/versions", "/v1/apps/shop/logs", "/v1/audit"} {
		status, body := p.raw(t, "admin", "GET", path, "")
		if status != 200 {
			t.Errorf("GET %s: status %d %s", path, status, body)
		}
		for _, f := range forms {
			if strings.Contains(body, f) {
				t.Errorf("GET %s: the answer holds the value (as %q): %s", path, f, body)
			}
		}
	}
	raw, err := p.st.ListSecretVersions(ctx, "shop", "DB_PASSWORD")
	if err != nil || len(raw) != 1 || bytes.Contains(raw[0].Sealed, []byte(value)) {
		t.Errorf("the store holds %+v, %v: want one sealed version", raw, err)
	}
	status, body := p.raw(t, "dev", "POST", "/v1/apps/shop/secrets/DB_PASSWORD/reveal", "")
	if status != 200 || body != value {
		t.Errorf("reveal: got %d %q, want 200 and the value alone", status, body)
	}
}

func TestKeysRoutes(t *testing.T) {
	ctx := context.Background()
	t.Run("without a keyring", func(t *testing.T) {
		p := startSecrets(t, nil)
		for _, rt := range []struct{ method, path string }{{"GET", "/v1/keys"}, {"POST", "/v1/keys/rotate"}, {"POST", "/v1/keys/export"}, {"POST", "/v1/keys/import"}} {
			status, body := p.raw(t, "admin", rt.method, rt.path, "{}")
			if status != 503 || !strings.Contains(body, `"code":"secrets_unavailable"`) {
				t.Errorf("%s %s: got %d %s, want 503 secrets_unavailable", rt.method, rt.path, status, body)
			}
		}
	})
	keys := &testKeys{kek: 1}
	p := startSecrets(t, keys)
	admin := p.as("admin")
	st, err := admin.KeyStatus(ctx)
	if err != nil || st.KEK != "kek-1" || len(st.DataKeys) != 1 || st.DataKeys[0].Seals != 3 || !st.DataKeys[0].Active {
		t.Fatalf("status: got %+v, %v", st, err)
	}
	if st, err = admin.RotateKeys(ctx); err != nil || st.KEK != "kek-2" {
		t.Fatalf("rotate: got %+v, %v; want kek-2", st, err)
	}
	var backup bytes.Buffer
	if err := admin.ExportKeys(ctx, "", &backup); err != nil || backup.String() != "BACKUP kek-2|" {
		t.Fatalf("export: got %q, %v", backup.String(), err)
	}
	admin.RotateKeys(ctx)
	if st, err = admin.ImportKeys(ctx, backup.Bytes(), ""); err != nil || st.KEK != "kek-2" {
		t.Errorf("import: got %+v, %v; want kek-2 back", st, err)
	}
	var sealed bytes.Buffer
	if err := admin.ExportKeys(ctx, "correct horse", &sealed); err != nil || sealed.String() != "BACKUP kek-2|correct horse" {
		t.Fatalf("export with a passphrase: got %q, %v; want the passphrase passed on", sealed.String(), err)
	}
	if _, err := admin.ImportKeys(ctx, sealed.Bytes(), "wrong"); code(err) != "invalid" || !strings.Contains(err.Error(), "not a usable key backup: wrong passphrase") {
		t.Errorf("import with a wrong passphrase: got %v, want invalid saying so", err)
	}
	if _, err := admin.ImportKeys(ctx, []byte("garbage"), "x"); code(err) != "invalid" || !strings.Contains(err.Error(), "not a usable key backup") {
		t.Errorf("import of garbage: got %v, want invalid naming the backup", err)
	}
	if _, err := admin.ImportKeys(ctx, nil, ""); code(err) != "invalid" {
		t.Errorf("import of nothing: got %v, want invalid", err)
	}
	if status, body := p.raw(t, "admin", "POST", "/v1/keys/import", `{"backup":"x","extra":1}`); status != 400 || !strings.Contains(body, "bad_json") {
		t.Errorf("import with an unknown field: got %d %s, want bad_json", status, body)
	}
	for _, who := range []string{"dev", "view", "other", "scoped", "capped"} {
		if _, err := p.as(who).KeyStatus(ctx); code(err) != "forbidden" {
			t.Errorf("status as %s: got %v, want forbidden", who, err)
		}
		if err := p.as(who).ExportKeys(ctx, "", io.Discard); code(err) != "forbidden" {
			t.Errorf("export as %s: got %v, want forbidden", who, err)
		}
	}
	var actions []string
	for _, e := range p.events(t, audit.Filter{Target: "keys"}) {
		actions = append(actions, e.Actor+" "+e.Action+" "+e.Outcome)
	}
	want := []string{"admin keys.rotate allowed", "admin keys.export allowed", "admin keys.rotate allowed",
		"admin keys.import allowed", "admin keys.export allowed",
		"admin keys.import allowed", "admin keys.import failed", "admin keys.import allowed", "admin keys.import failed",
		"admin keys.import allowed", "admin keys.import failed", "admin keys.import allowed", "admin keys.import failed"}
	for _, who := range []string{"dev", "view", "other", "scoped", "capped"} {
		actor := map[string]string{"scoped": "dev", "capped": "admin"}[who]
		if actor == "" {
			actor = who
		}
		// The status is a read: only its denial is audited.
		want = append(want, actor+" read denied", actor+" keys.export denied")
	}
	if fmt.Sprint(actions) != fmt.Sprint(want) {
		t.Errorf("keys events:\n got %v\nwant %v", actions, want)
	}
}

// FuzzSecretRequest decodes secret bodies: anything accepted decodes to
// the bytes sent, and no error repeats what was in the value's field.
func FuzzSecretRequest(f *testing.F) {
	for _, s := range []string{"aHVudGVyMg==", "hunter2", "aHVudGVyMg", "aHVu dGVy", "====", "", "\u00e9t\u00e9"} {
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, v string, asFile bool) {
		if strings.ContainsAny(v, `"\`) || !utf8.ValidString(v) {
			return // the field's text itself, not JSON around it
		}
		body := fmt.Sprintf(`{"value_base64":"%s","as_file":%v}`, v, asFile)
		var req wire.SecretRequest
		err := readJSON(httptest.NewRecorder(), httptest.NewRequest("PUT", "/", strings.NewReader(body)), &req)
		if err == nil {
			want, derr := base64.StdEncoding.DecodeString(v)
			if derr != nil || !bytes.Equal(req.Value, want) || req.AsFile != asFile {
				t.Fatalf("%s: accepted as %q, as_file %v; want %q (%v)", body, req.Value, req.AsFile, want, derr)
			}
			return
		}
		var e *Error
		if !errors.As(err, &e) || e.Code != "bad_json" {
			t.Fatalf("%s: %v, want a bad_json error", body, err)
		}
		if len(v) >= 4 && strings.Contains(e.Message, v) {
			t.Errorf("%s: the message %q repeats the value's field", body, e.Message)
		}
	})
}
