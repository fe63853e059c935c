package dashboard_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"paddock.dev/paddock/internal/client"
	"paddock.dev/paddock/internal/dashboard"
	"paddock.dev/paddock/internal/testenv"
	"paddock.dev/paddock/internal/wire"
)

// browser is an HTTP client with a cookie jar that trusts the platform's CA
// and does not follow redirects, so that tests see them.
type browser struct {
	t    *testing.T
	base string
	c    *http.Client
}

func newBrowser(t *testing.T, p *testenv.Platform) *browser {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(p.CA)) {
		t.Fatal("the platform's CA is not PEM")
	}
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, base: p.API, c: &http.Client{
		Jar:       jar,
		Timeout:   30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}}
}

func (b *browser) do(method, path string, form url.Values, header map[string]string) (*http.Response, string) {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, b.base+path, body)
	if err != nil {
		b.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp, string(out)
}

func (b *browser) get(path string) (*http.Response, string) { return b.do("GET", path, nil, nil) }

// follow GETs the page a redirect points to.
func (b *browser) follow(resp *http.Response) (*http.Response, string) {
	b.t.Helper()
	if resp.StatusCode != http.StatusSeeOther {
		b.t.Fatalf("status %d, want a 303 redirect", resp.StatusCode)
	}
	return b.get(resp.Header.Get("Location"))
}

func (b *browser) login(token string) *http.Response {
	b.t.Helper()
	resp, body := b.do("POST", "/login", url.Values{"token": {token}}, nil)
	if resp.StatusCode != http.StatusSeeOther {
		b.t.Fatalf("login: status %d: %s", resp.StatusCode, body)
	}
	return resp
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func csrfOf(t *testing.T, page string) string {
	t.Helper()
	m := csrfRE.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no CSRF field in the page:\n%s", page)
	}
	return m[1]
}

func sessionCookie(t *testing.T, resp *http.Response) *http.Cookie {
	t.Helper()
	for _, c := range resp.Cookies() {
		if c.Name == dashboard.SessionCookie {
			return c
		}
	}
	t.Fatalf("no session cookie in %v", resp.Header["Set-Cookie"])
	return nil
}

// TestDashboard drives the dashboard of a real platform over HTTPS as a
// browser would, without one.
func TestDashboard(t *testing.T) {
	p := testenv.Start(t)
	ctx := context.Background()
	admin := p.Client()
	p.MustRun("apps", "create", "shop")
	script := `<script>alert("owned")</script>`
	dir := t.TempDir()
	manifest := "[processes.worker]\ncommand = '''while true; do echo '" + script + " tick'; sleep 0.2; done'''\n"
	if err := os.WriteFile(filepath.Join(dir, "paddock.toml"), []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	p.MustRun("deploy", dir, "--app", "shop")
	val := script
	if _, err := admin.SetConfig(ctx, "shop", wire.ConfigPatch{"BANNER": &val}); err != nil {
		t.Fatal(err)
	}
	viewTok := p.Viewer(t, "view", "shop")

	t.Run("headers", func(t *testing.T) {
		b := newBrowser(t, p)
		resp, _ := b.get("/login")
		for k, want := range map[string]string{
			"Content-Security-Policy": dashboard.ContentSecurityPolicy,
			"X-Content-Type-Options":  "nosniff",
			"Referrer-Policy":         "no-referrer",
			"Cache-Control":           "no-store",
			"Content-Type":            "text/html; charset=utf-8",
		} {
			if got := resp.Header.Get(k); got != want {
				t.Errorf("%s: got %q, want %q", k, got, want)
			}
		}
		for _, want := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'", "base-uri 'none'", "form-action 'self'"} {
			if !strings.Contains(dashboard.ContentSecurityPolicy, want) {
				t.Errorf("CSP %q lacks %q", dashboard.ContentSecurityPolicy, want)
			}
		}
		if resp, _ := b.get("/"); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login" {
			t.Errorf("GET / signed out: %d to %q, want 303 to /login", resp.StatusCode, resp.Header.Get("Location"))
		}
		// The API keeps its JSON answers, its 404 included.
		resp, body := b.get("/v1/nope")
		if resp.StatusCode != 404 || !strings.Contains(body, `"no_route"`) {
			t.Errorf("GET /v1/nope: %d %s, want the API's JSON 404", resp.StatusCode, body)
		}
		if resp, body := b.get("/healthz"); resp.StatusCode != 200 || body != "ok\n" {
			t.Errorf("GET /healthz: %d %q", resp.StatusCode, body)
		}
	})

	t.Run("login makes a session token and audits it", func(t *testing.T) {
		b := newBrowser(t, p)
		resp := b.login(p.Token)
		c := sessionCookie(t, resp)
		if !c.HttpOnly || !c.Secure || c.SameSite != http.SameSiteStrictMode || c.Path != "/" {
			t.Errorf("cookie: HttpOnly=%v Secure=%v SameSite=%v Path=%q; want HttpOnly, Secure, Strict, /", c.HttpOnly, c.Secure, c.SameSite, c.Path)
		}
		if c.MaxAge <= 11*3600 || c.MaxAge > 12*3600 {
			t.Errorf("cookie Max-Age %d, want about 12h", c.MaxAge)
		}
		if c.Value == p.Token {
			t.Error("the cookie holds the pasted token, not a session token of its own")
		}
		who, err := p.ClientWith(c.Value).WhoAmI(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(who.Token, "dashboard-session-") || who.ExpiresAt == nil || time.Until(*who.ExpiresAt) > 12*time.Hour {
			t.Errorf("session token %+v: want a dashboard-session-… token expiring within 12h", who)
		}
		evs, err := admin.Audit(ctx, client.AuditQuery{})
		if err != nil {
			t.Fatal(err)
		}
		var created, login bool
		for _, e := range evs {
			created = created || (e.Action == "tokens.create" && e.Target == "token/"+who.Token && e.Outcome == "allowed")
			login = login || (e.Action == "auth.login" && e.Token == who.Token)
		}
		if !created || !login {
			t.Errorf("audit: tokens.create %v, auth.login %v; want both for %s", created, login, who.Token)
		}
		_, page := b.follow(resp)
		if !strings.Contains(page, "Signed in as admin") || !strings.Contains(page, `href="/apps/shop"`) {
			t.Errorf("overview after login lacks the flash or the app:\n%s", page)
		}

		// Logging out revokes the session's token.
		resp, _ = b.do("POST", "/logout", url.Values{"csrf": {csrfOf(t, page)}}, nil)
		if resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("logout: %d", resp.StatusCode)
		}
		if _, err := p.ClientWith(c.Value).WhoAmI(ctx); err == nil {
			t.Error("the session's token still works after logout")
		}
		if resp, _ := b.get("/"); resp.StatusCode != http.StatusSeeOther {
			t.Errorf("GET / after logout: %d, want a redirect to login", resp.StatusCode)
		}
	})

	t.Run("a session never outlives the pasted token", func(t *testing.T) {
		short, err := admin.CreateToken(ctx, client.TokenRequest{Name: "short", Expires: "30m"})
		if err != nil {
			t.Fatal(err)
		}
		c := sessionCookie(t, newBrowser(t, p).login(short.Value))
		if c.MaxAge > 30*60 {
			t.Errorf("Max-Age %d outlives the 30m token", c.MaxAge)
		}
		if resp, body := newBrowser(t, p).do("POST", "/login", url.Values{"token": {"pdk_nonsense"}}, nil); resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "That token was refused") {
			t.Errorf("bad token: %d %s", resp.StatusCode, body)
		}
	})

	t.Run("app strings are escaped", func(t *testing.T) {
		b := newBrowser(t, p)
		b.login(p.Token)
		resp, page := b.get("/apps/shop")
		if resp.StatusCode != 200 {
			t.Fatalf("GET /apps/shop: %d\n%s", resp.StatusCode, page)
		}
		if strings.Contains(page, script) {
			t.Errorf("the page holds the raw %s", script)
		}
		if !strings.Contains(page, "&lt;script&gt;alert(&#34;owned&#34;)&lt;/script&gt;") {
			t.Errorf("the page lacks the escaped config value")
		}
		if strings.Contains(page, " style=") || regexp.MustCompile(`<script>`).MatchString(page) {
			t.Error("the page has an inline style or script")
		}
		// The log stream sends lines as JSON, which escapes < and >.
		req, _ := http.NewRequest("GET", p.API+"/apps/shop/logs/stream?process=worker", nil)
		req.Header.Set("Accept", "text/event-stream")
		sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		resp, err := b.c.Do(req.WithContext(sctx))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
			t.Fatalf("Content-Type %q", ct)
		}
		sc := bufio.NewScanner(resp.Body)
		var seen []string
		for sc.Scan() {
			line := sc.Text()
			seen = append(seen, line)
			if strings.HasPrefix(line, "data: ") && strings.Contains(line, `\u003cscript\u003e`) && strings.Contains(line, "tick") {
				if strings.Contains(line, "<script>") {
					t.Errorf("an SSE line holds a raw <script>: %s", line)
				}
				if seen[0] != "event: hello" {
					t.Errorf("the stream starts with %q, want event: hello", seen[0])
				}
				return
			}
		}
		t.Fatalf("no log line came through the stream: %v %q", sc.Err(), seen)
	})

	t.Run("CSRF", func(t *testing.T) {
		b := newBrowser(t, p)
		b.login(p.Token)
		_, page := b.get("/apps/shop")
		token := csrfOf(t, page)
		set := func(csrf string, header map[string]string) (*http.Response, string) {
			return b.do("POST", "/apps/shop/config", url.Values{"csrf": {csrf}, "key": {"FROM_CSRF"}, "value": {"x"}}, header)
		}
		for name, tc := range map[string]struct {
			csrf   string
			header map[string]string
		}{
			"no token":         {"", nil},
			"wrong token":      {strings.Repeat("A", len(token)), nil},
			"another origin":   {token, map[string]string{"Origin": "https://evil.example"}},
			"cross-site fetch": {token, map[string]string{"Sec-Fetch-Site": "cross-site"}},
			"same-site fetch":  {token, map[string]string{"Sec-Fetch-Site": "same-site"}},
			"null origin":      {token, map[string]string{"Origin": "null"}},
		} {
			if resp, body := set(tc.csrf, tc.header); resp.StatusCode != http.StatusForbidden {
				t.Errorf("%s: status %d, want 403\n%s", name, resp.StatusCode, body)
			}
		}
		cfg, err := admin.Config(ctx, "shop")
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := cfg["FROM_CSRF"]; ok {
			t.Fatal("a refused form changed the config")
		}
		u, _ := url.Parse(p.API)
		// What Chromium sends under Referrer-Policy: no-referrer.
		resp, _ := set(token, map[string]string{"Origin": "null", "Sec-Fetch-Site": "same-origin"})
		if resp.StatusCode != http.StatusSeeOther {
			t.Errorf("a same-origin form with Origin: null: %d, want 303", resp.StatusCode)
		}
		resp, _ = set(token, map[string]string{"Origin": u.Scheme + "://" + u.Host, "Sec-Fetch-Site": "same-origin"})
		_, page = b.follow(resp)
		if !strings.Contains(page, "Set FROM_CSRF") {
			t.Errorf("no flash after the form:\n%s", page)
		}
		if cfg, _ := admin.Config(ctx, "shop"); cfg["FROM_CSRF"] != "x" {
			t.Errorf("config after the form: %v", cfg)
		}
		// Another session's token is no good either.
		other := newBrowser(t, p)
		other.login(p.Token)
		if resp, _ := other.do("POST", "/apps/shop/config", url.Values{"csrf": {token}, "key": {"K"}, "value": {"v"}}, nil); resp.StatusCode != http.StatusForbidden {
			t.Errorf("another session's CSRF token: %d, want 403", resp.StatusCode)
		}
	})

	t.Run("actions go through the API", func(t *testing.T) {
		if _, err := admin.CreateVolume(ctx, "shop", "shop-data", "8MiB"); err != nil {
			t.Fatal(err)
		}
		b := newBrowser(t, p)
		b.login(p.Token)
		_, page := b.get("/apps/shop")
		csrf := csrfOf(t, page)
		post := func(path string, form url.Values, want string) string {
			t.Helper()
			form.Set("csrf", csrf)
			resp, body := b.do("POST", path, form, nil)
			if resp.StatusCode != http.StatusSeeOther {
				t.Fatalf("POST %s: %d\n%s", path, resp.StatusCode, body)
			}
			_, page := b.follow(resp)
			if !strings.Contains(page, want) {
				t.Errorf("POST %s: the page lacks %q:\n%s", path, want, page)
			}
			return page
		}
		const value = "s3cr3t-value-never-shown"
		page = post("/apps/shop/secrets", url.Values{"name": {"API_KEY"}, "value": {value}}, "Set secret API_KEY (version 1)")
		if strings.Contains(page, value) {
			t.Error("the page shows the secret's value")
		}
		if secs, err := admin.Secrets(ctx, "shop"); err != nil || len(secs) != 1 || secs[0].Name != "API_KEY" {
			t.Errorf("secrets after the form: %v %v", secs, err)
		}
		post("/apps/shop/secrets/unset", url.Values{"name": {"API_KEY"}}, "Unset secret API_KEY")
		post("/apps/shop/scale", url.Values{"process": {"worker"}, "count": {"2"}}, "Scaled worker to 2")
		if f, err := admin.Formation(ctx, "shop"); err != nil || f["worker"] != 2 {
			t.Errorf("formation after the form: %v %v", f, err)
		}
		insts, err := admin.Instances(ctx, "shop")
		if err != nil || len(insts) == 0 {
			t.Fatalf("instances: %v %v", insts, err)
		}
		victim := insts[0].ID
		post("/apps/shop/restart", url.Values{"instance": {victim}}, "Restarting "+victim)
		testenv.Eventually(t, 30*time.Second, func() error {
			insts, err := admin.Instances(ctx, "shop")
			for _, in := range insts {
				if in.ID == victim {
					return fmt.Errorf("instance %s is still there (%v)", victim, err)
				}
			}
			if len(insts) < 2 {
				return fmt.Errorf("%d instances, want its replacement too", len(insts))
			}
			return nil
		})
		post("/apps/shop/restart", url.Values{"instance": {"worker.nosuch"}}, "worker.nosuch")
		post("/apps/shop/volumes/shop-data/snapshots", url.Values{"name": {"before"}}, "Took snapshot")
		if snaps, err := admin.Snapshots(ctx, "shop", "shop-data"); err != nil || len(snaps) != 1 {
			t.Errorf("snapshots after the form: %v %v", snaps, err)
		}
		// An API refusal comes back as the API's message.
		post("/apps/shop/config", url.Values{"key": {"1BAD"}, "value": {"x"}}, "1BAD")
		post("/apps/shop/rollback", url.Values{"version": {"v99"}}, "v99")
	})

	t.Run("a viewer sees no forms and is refused by the API", func(t *testing.T) {
		b := newBrowser(t, p)
		b.login(viewTok)
		resp, page := b.get("/apps/shop")
		if resp.StatusCode != 200 {
			t.Fatalf("GET /apps/shop as viewer: %d", resp.StatusCode)
		}
		for _, action := range []string{"/rollback", "/scale", "/restart", "/config", "/secrets", "/snapshots"} {
			if strings.Contains(page, `action="/apps/shop`+action) {
				t.Errorf("the viewer's page has a %s form", action)
			}
		}
		resp, _ = b.do("POST", "/apps/shop/scale", url.Values{"csrf": {csrfOf(t, page)}, "process": {"worker"}, "count": {"3"}}, nil)
		_, page = b.follow(resp)
		if !strings.Contains(page, "needs the developer role") {
			t.Errorf("no refusal from the API in the page:\n%s", page)
		}
		if resp, _ := b.get("/audit"); resp.StatusCode != http.StatusForbidden {
			t.Errorf("the viewer's /audit: %d, want 403", resp.StatusCode)
		}
	})

	t.Run("platform health for admins only", func(t *testing.T) {
		b := newBrowser(t, p)
		b.login(p.Token)
		_, page := b.get("/")
		for _, want := range []string{"<dt>Store</dt>", "answering</span> in", "<dt>Runtime</dt>", "<dt>Disk</dt>", "free of"} {
			if !strings.Contains(page, want) {
				t.Errorf("the admin's overview lacks %q", want)
			}
		}
		if !regexp.MustCompile(`[1-9]\d* instances · [1-9]\d* running`).MatchString(page) {
			i := strings.Index(page, "<dt>Runtime</dt>")
			t.Errorf("the admin's overview does not count the running instances: %.300s", page[max(i, 0):])
		}
		v := newBrowser(t, p)
		v.login(viewTok)
		if _, page := v.get("/"); strings.Contains(page, "<dt>Store</dt>") || strings.Contains(page, "<dt>Disk</dt>") {
			t.Errorf("a viewer sees the platform's health")
		}
	})

	t.Run("audit page", func(t *testing.T) {
		b := newBrowser(t, p)
		b.login(p.Token)
		resp, page := b.get("/audit?q=auth.login")
		if resp.StatusCode != 200 || !strings.Contains(page, "intact") || !strings.Contains(page, "auth.login") {
			t.Errorf("GET /audit: %d\n%s", resp.StatusCode, page)
		}
	})

	t.Run("unknown page", func(t *testing.T) {
		b := newBrowser(t, p)
		if resp, _ := b.get("/nope"); resp.StatusCode != 404 {
			t.Errorf("GET /nope: %d", resp.StatusCode)
		}
		if resp, body := b.get(fmt.Sprintf("/static/app.css?v=%s", "x")); resp.StatusCode != 200 || !strings.Contains(body, "--fg") {
			t.Errorf("GET /static/app.css: %d", resp.StatusCode)
		}
	})
}

func TestAssetsAreSmall(t *testing.T) {
	n, err := dashboard.AssetBytes()
	if err != nil {
		t.Fatal(err)
	}
	if n > 100<<10 {
		t.Errorf("assets weigh %d bytes, over 100 KiB", n)
	}
}
