package e2e

// Hostile clients of the API: each test reproduces an attack on the real
// binary and checks what a user would see afterwards.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"paddock.dev/paddock/internal/client"
	"paddock.dev/paddock/internal/testenv"
	"paddock.dev/paddock/internal/tlsca"
	"paddock.dev/paddock/internal/wire"
)

// call sends one request to the API and returns its status, headers and
// body.
func call(t *testing.T, p *testenv.Platform, method, path, token, body string, header map[string]string) (int, http.Header, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, p.API+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := p.ClientWith("").HTTPClient().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, resp.Header, string(b)
}

// auditEvents lists the audit trail as the admin sees it.
func auditEvents(t *testing.T, p *testenv.Platform) []wire.AuditEvent {
	t.Helper()
	evs, err := p.Client().Audit(context.Background(), client.AuditQuery{Limit: 100000})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// TestFailedAuthNeverLocksOutAValidToken floods the API with bad tokens from
// the admin's own address (every app shares the host's loopback with the
// local CLI), then with bad tokens naming the admin's token id (it is in
// the value's prefix): failures are slowed down, the admin never is.
func TestFailedAuthNeverLocksOutAValidToken(t *testing.T) {
	p := testenv.Start(t)
	adminWorks := func(when string) {
		t.Helper()
		if code, _, body := call(t, p, "GET", "/v1/apps", p.Token, "", nil); code != 200 {
			t.Fatalf("the admin's valid token %s: got %d %s, want 200", when, code, body)
		}
	}
	bad := []string{"", "pdk_short", "Basic YWRtaW46YWRtaW4=", "pdk_" + strings.Repeat("b", 16) + "_" + strings.Repeat("a", 52)}
	refused := 0
	for i := 0; i < 150; i++ {
		tok := bad[i%len(bad)]
		hdr := map[string]string{}
		if strings.HasPrefix(tok, "Basic ") {
			hdr["Authorization"], tok = tok, ""
		}
		code, h, body := call(t, p, "GET", "/v1/apps", tok, "", hdr)
		switch {
		case code == 429:
			refused++
			if secs, err := strconv.Atoi(h.Get("Retry-After")); err != nil || secs < 1 {
				t.Fatalf("bad token %d: 429 with Retry-After %q, want a number of seconds", i, h.Get("Retry-After"))
			}
		case code != 401:
			t.Fatalf("bad token %d: got %d %s, want 401 or 429", i, code, body)
		}
	}
	if refused < 40 {
		t.Errorf("150 bad tokens from one address: %d refused with 429, want every one past the 100th", refused)
	}
	adminWorks("after 150 bad tokens from its address")

	// The admin's token id, with wrong secrets.
	id := strings.Split(p.Token, "_")[1]
	for i := 0; i < 150; i++ {
		wrong := fmt.Sprintf("pdk_%s_%052d", id, i)
		if code, _, body := call(t, p, "GET", "/v1/status", wrong, "", nil); code != 401 && code != 429 {
			t.Fatalf("wrong secret %d for the admin's id: got %d %s", i, code, body)
		}
		if i%50 == 0 {
			adminWorks("during a flood of wrong secrets for its id")
		}
	}
	adminWorks("after 150 wrong secrets for its id")
	if out, stderr, err := p.Run("whoami"); err != nil || !strings.Contains(out, "admin") {
		t.Errorf("paddock whoami after the floods: %v %s %s", err, out, stderr)
	}

	// Failures are audited up to the limit, then once per window and key.
	failed, limited := 0, map[string]int{}
	for _, e := range auditEvents(t, p) {
		switch e.Action {
		case "auth.failed":
			failed++
		case "auth.rate-limited":
			limited[e.Detail]++
		}
	}
	if failed < 100 || failed > 110 {
		t.Errorf("auth.failed events: %d, want the first 100 failures of the address (and a few the limit let through since)", failed)
	}
	if len(limited) == 0 {
		t.Errorf("no auth.rate-limited event after 300 failures")
	}
	for key, n := range limited {
		if n != 1 {
			t.Errorf("auth.rate-limited events for %q: %d, want one per window", key, n)
		}
	}
}

// TestTokensNeverOutgrowTheirMaker mints tokens with tokens: none outlives
// or outranks its maker, and an app-scoped token manages only itself.
func TestTokensNeverOutgrowTheirMaker(t *testing.T) {
	p := testenv.Start(t)
	ctx := context.Background()
	admin := p.Client()
	short, err := admin.CreateToken(ctx, client.TokenRequest{Name: "short", Expires: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	maker := p.ClientWith(short.Value)
	var ce *client.Error
	if _, err := maker.CreateToken(ctx, client.TokenRequest{Name: "longer", Expires: "30d"}); !errors.As(err, &ce) || ce.Code != "invalid" || !strings.Contains(ce.Message, "never outlives") {
		t.Errorf("a 1h token minting a 30d token: got %v, want refused as outliving its maker", err)
	}
	forever, err := maker.CreateToken(ctx, client.TokenRequest{Name: "forever"})
	if err != nil {
		t.Fatalf("a 1h token minting a token without --expires: %v", err)
	}
	if forever.ExpiresAt == nil || forever.ExpiresAt.After(*short.ExpiresAt) {
		t.Errorf("token made by a token expiring at %s: expires at %v, want no later", short.ExpiresAt, forever.ExpiresAt)
	}
	if _, err := maker.CreateToken(ctx, client.TokenRequest{Name: "shorter", Expires: "30m"}); err != nil {
		t.Errorf("a 1h token minting a 30m token: %v", err)
	}
	capped, err := admin.CreateToken(ctx, client.TokenRequest{Name: "capped", Role: "viewer"})
	if err != nil {
		t.Fatal(err)
	}
	if made, err := p.ClientWith(capped.Value).CreateToken(ctx, client.TokenRequest{Name: "from-capped"}); err != nil || made.Role != "viewer" {
		t.Errorf("token made by a viewer-capped token: role %q (%v), want viewer", made.Role, err)
	}

	// An app-scoped token and its user's other tokens.
	if _, err := admin.CreateApp(ctx, "shop", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CreateUser(ctx, "dev", "developer"); err != nil {
		t.Fatal(err)
	}
	devMain := mustToken(t, admin, client.TokenRequest{Name: "dev-main", User: "dev"})
	ci := p.ClientWith(mustToken(t, admin, client.TokenRequest{Name: "dev-ci", User: "dev", Apps: []string{"shop"}}))
	toks, err := ci.Tokens(ctx, false)
	if err != nil || len(toks) != 1 || toks[0].Name != "dev-ci" {
		t.Errorf("an app-scoped token's listing: got %v (%v), want itself alone", toks, err)
	}
	if err := ci.RevokeToken(ctx, "dev-main"); !errors.As(err, &ce) || ce.Status != 403 || !strings.Contains(ce.Message, "only itself") {
		t.Errorf("an app-scoped token revoking its user's other token: got %v, want 403", err)
	}
	if _, err := p.ClientWith(devMain).WhoAmI(ctx); err != nil {
		t.Errorf("dev-main after the scoped token tried to revoke it: %v", err)
	}
	if err := ci.RevokeToken(ctx, "dev-ci"); err != nil {
		t.Errorf("an app-scoped token revoking itself: %v", err)
	}
	if _, err := ci.WhoAmI(ctx); !errors.As(err, &ce) || ce.Status != 401 {
		t.Errorf("a revoked token: got %v, want 401", err)
	}

	// A stolen token mints a backdoor, then is revoked: the backdoor goes
	// with it, and so does what the backdoor made.
	stolen := p.ClientWith(mustToken(t, admin, client.TokenRequest{Name: "laptop"}))
	backdoor := p.ClientWith(mustToken(t, stolen, client.TokenRequest{Name: "backdoor"}))
	deeper := p.ClientWith(mustToken(t, backdoor, client.TokenRequest{Name: "deeper"}))
	if err := admin.RevokeToken(ctx, "laptop"); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]*client.Client{"backdoor": backdoor, "deeper": deeper} {
		if _, err := c.WhoAmI(ctx); !errors.As(err, &ce) || ce.Status != 401 {
			t.Errorf("%s, made by a revoked token: got %v, want 401", name, err)
		}
	}
	if _, err := p.ClientWith(devMain).WhoAmI(ctx); err != nil {
		t.Errorf("dev-main, which the admin made for dev, after the admin's other token was revoked: %v", err)
	}
}

// TestRequestIDsAreTheServers sends forged request ids: the audit trail and
// the answers carry the server's own, and the client's beside it only when
// it is well-formed.
func TestRequestIDsAreTheServers(t *testing.T) {
	p := testenv.Start(t)
	serverID := regexp.MustCompile(`^[0-9a-f]{16}$`)
	var ids []string
	for i, name := range []string{"one", "two"} {
		code, h, body := call(t, p, "POST", "/v1/apps", p.Token, `{"name":"`+name+`"}`, map[string]string{"X-Request-Id": "same-forged-id"})
		if code != 201 {
			t.Fatalf("create %s: %d %s", name, code, body)
		}
		id := h.Get("X-Request-Id")
		if !serverID.MatchString(id) {
			t.Errorf("request %d: answered X-Request-Id %q, want the server's own", i, id)
		}
		ids = append(ids, id)
	}
	code, h, _ := call(t, p, "POST", "/v1/apps", p.Token, `{"name":"three"}`, map[string]string{"X-Request-Id": "bad id\twith " + strings.Repeat("x", 80)})
	if code != 201 {
		t.Fatalf("create three: %d", code)
	}
	ids = append(ids, h.Get("X-Request-Id"))
	if ids[0] == ids[1] {
		t.Errorf("two requests with the same client id got the same server id %s", ids[0])
	}
	byID := map[string][]wire.AuditEvent{}
	for _, e := range auditEvents(t, p) {
		if e.Action == "apps.create" {
			byID[e.RequestID] = append(byID[e.RequestID], e)
		}
	}
	for i, id := range ids {
		evs := byID[id]
		if len(evs) != 1 {
			t.Errorf("request %d: %d apps.create events under its id %s, want 1", i, len(evs), id)
			continue
		}
		want := "same-forged-id"
		if i == 2 {
			want = "" // not well-formed: not recorded
		}
		if got := evs[0].ClientRequestID; got != want {
			t.Errorf("request %d: client_request_id %q, want %q", i, got, want)
		}
	}
	if evs := byID["same-forged-id"]; len(evs) != 0 {
		t.Errorf("%d audit events carry the client's id as their request id", len(evs))
	}
}

// serverPID finds the `paddock up` of p by its data folder.
func serverPID(t *testing.T, p *testenv.Platform) int {
	t.Helper()
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		environ, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		args := strings.Split(string(cmdline), "\x00")
		if len(args) > 1 && args[1] == "up" && bytes.Contains(environ, []byte("\x00PADDOCK_DATA="+p.Data+"\x00")) {
			return pid
		}
	}
	t.Fatalf("no `paddock up` process with PADDOCK_DATA=%s", p.Data)
	return 0
}

func openFiles(t *testing.T, pid int) int {
	t.Helper()
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// TestSlowUnauthenticatedRequestsAreCut opens 300 connections that send a
// request without a token and then stall, half in the head and half in
// the body: the server answers or cuts each of them, its open files go
// back to where they were, and the admin is served throughout.
func TestSlowUnauthenticatedRequestsAreCut(t *testing.T) {
	p := testenv.Start(t)
	pid := serverPID(t, p)
	before := openFiles(t, pid)
	pool, err := tlsca.Pool([]byte(p.CA))
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(p.API)
	heads := []string{
		"POST /v1/apps HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"na",
		"POST /v1/apps HTTP/1.1\r\nHost: x\r\nContent-Le",
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	answered := 0
	for i := 0; i < 300; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", u.Host, &tls.Config{RootCAs: pool, ServerName: u.Hostname()})
			if err != nil {
				t.Errorf("connection %d: %v", i, err)
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			c.Write([]byte(heads[i%2]))
			if i%2 == 1 {
				return // stalls in its head
			}
			// Stalls in its body: it is answered without its body being
			// waited for, and the connection is closed.
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Errorf("connection %d, stalled in its body: %v, want an answer", i, err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 401 && resp.StatusCode != 429 {
				t.Errorf("connection %d, stalled in its body: %s, want 401 or 429", i, resp.Status)
			}
			if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
				t.Errorf("connection %d after its answer: read %v, want it closed by the server", i, err)
			}
			mu.Lock()
			answered++
			mu.Unlock()
		}()
	}
	if code, _, body := call(t, p, "GET", "/v1/apps", p.Token, "", nil); code != 200 {
		t.Errorf("the admin during 300 slow requests: %d %s", code, body)
	}
	wg.Wait()
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	if answered != 150 {
		t.Errorf("requests stalled in their body answered and closed: %d, want 150", answered)
	}
	// Those stalled in their head are cut by the header timeout (10s).
	testenv.Eventually(t, 30*time.Second, func() error {
		if n := openFiles(t, pid); n > before+10 {
			return fmt.Errorf("the server holds %d open files, %d before the slow requests", n, before)
		}
		return nil
	})
	if code, _, body := call(t, p, "GET", "/v1/apps", p.Token, "", nil); code != 200 {
		t.Errorf("the admin after 300 slow requests: %d %s", code, body)
	}
}

// TestAPIRefusesBadInputUpFront sends bodies a careless or hostile client
// might: each is refused whole, in plain words, before anything changes.
func TestAPIRefusesBadInputUpFront(t *testing.T) {
	p := testenv.Start(t)
	if code, _, body := call(t, p, "POST", "/v1/apps", p.Token, `{"name":"shop"}`, nil); code != 201 {
		t.Fatalf("create shop: %d %s", code, body)
	}
	goNames := regexp.MustCompile(`\b(u?int(8|16|32|64)?|float64|struct|map\[|Go value|json: )`)
	cases := []struct {
		name, method, path, body string
		code                     int
		want                     string
	}{
		{"trailing JSON", "POST", "/v1/apps", `{"name":"a1"} {"name":"a2"}`, 400, "goes on after its JSON value"},
		{"trailing garbage", "POST", "/v1/teams", `{"name":"t1"}]`, 400, "goes on after its JSON value"},
		{"wrong type in a map", "PATCH", "/v1/apps/shop/formation", `{"web":"three"}`, 400, "must be a whole number"},
		{"wrong type in a field", "POST", "/v1/tokens", `{"name":5}`, 400, `field "name" is a number: it takes a string`},
		{"unknown field", "POST", "/v1/users", `{"name":"ann","rol":"viewer"}`, 400, `unknown field "rol": this route takes the fields "name", "role"`},
		{"NUL in a config value", "PATCH", "/v1/apps/shop/config", `{"K":"a\u0000b"}`, 422, "NUL byte"},
		{"NUL in a config key", "PATCH", "/v1/apps/shop/config", `{"K\u0000":"x"}`, 422, "config key"},
		{"not UTF-8", "POST", "/v1/apps", "{\"name\":\"\xff\"}", 400, "UTF-8"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, _, body := call(t, p, tc.method, tc.path, p.Token, tc.body, nil)
			var e wire.ErrorBody
			if json.Unmarshal([]byte(body), &e) != nil || e.Error == nil {
				t.Fatalf("got %d %s, want an error", code, body)
			}
			if code != tc.code || !strings.Contains(e.Error.Message, tc.want) {
				t.Errorf("got %d %q, want %d with %q", code, e.Error.Message, tc.code, tc.want)
			}
			if m := goNames.FindString(e.Error.Message); m != "" {
				t.Errorf("message %q shows Go's %q", e.Error.Message, m)
			}
		})
	}
	ctx := context.Background()
	apps, _ := p.Client().Apps(ctx)
	teams, _ := p.Client().Teams(ctx)
	rels, _ := p.Client().Releases(ctx, "shop")
	if len(apps) != 1 || len(teams) != 0 || len(rels) != 0 {
		t.Errorf("after refused bodies: %d apps, %d teams, %d releases of shop; want shop alone and nothing else", len(apps), len(teams), len(rels))
	}
}

// TestAnswersShowOnlyWhatUsersSee deploys an app and reads every listing:
// no internal ids, uids, environments or paths of the server's.
func TestAnswersShowOnlyWhatUsersSee(t *testing.T) {
	p := testenv.Start(t)
	code, _, body := call(t, p, "POST", "/v1/apps", p.Token, `{"name":"shop"}`, nil)
	var created map[string]any
	if code != 201 || json.Unmarshal([]byte(body), &created) != nil {
		t.Fatalf("create shop: %d %s", code, body)
	}
	if _, ok := created["id"]; ok {
		t.Errorf("POST /v1/apps answers an internal id: %s", body)
	}
	p.MustRun("users", "create", "ann", "--role", "developer")
	p.MustRun("teams", "create", "web")
	p.MustRun("tokens", "create", "--name", "ci", "--app", "shop")
	p.MustRun("deploy", exampleDir(t), "--app", "shop")
	p.MustRun("config", "set", "shop", "GREETING=hi")
	serving(t, p, "shop.localhost", "hi from shop")

	forbidden := regexp.MustCompile(`"(uid|gid|env|dir|log_file|cgroup|hash)"\s*:|"id"\s*:\s*0\b`)
	for _, path := range []string{"/v1/apps", "/v1/apps/shop", "/v1/apps/shop/releases", "/v1/apps/shop/releases/2",
		"/v1/apps/shop/instances", "/v1/apps/shop/domains", "/v1/apps/shop/formation", "/v1/tokens?all=true",
		"/v1/users", "/v1/teams", "/v1/whoami", "/v1/status"} {
		code, _, body := call(t, p, "GET", path, p.Token, "", nil)
		if code != 200 {
			t.Errorf("GET %s: %d %s", path, code, body)
			continue
		}
		if m := forbidden.FindString(body); m != "" {
			t.Errorf("GET %s shows %s:\n%s", path, m, body)
		}
		if strings.Contains(body, p.Data) || strings.Contains(body, p.Dir) {
			t.Errorf("GET %s shows a path of the server's (%s):\n%s", path, p.Data, body)
		}
		if path == "/v1/apps/shop/instances" && (!strings.Contains(body, `"state"`) || strings.Contains(body, "GREETING")) {
			t.Errorf("GET %s: want instances with their state and never their environment:\n%s", path, body)
		}
	}

	// What was created is named in the audit trail.
	targets := map[string]string{}
	for _, e := range auditEvents(t, p) {
		if strings.HasSuffix(e.Action, ".create") && e.Outcome == "allowed" {
			targets[e.Action] = e.Target
		}
	}
	for action, want := range map[string]string{"apps.create": "app/shop", "users.create": "user/ann", "teams.create": "team/web", "tokens.create": "token/ci"} {
		if targets[action] != want {
			t.Errorf("audit event %s: target %q, want %q", action, targets[action], want)
		}
	}
}
