package e2e

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"paddock.dev/paddock/internal/testenv"
)

// screenshotDir is where the browser tests keep their screenshots: the
// folder $PADDOCK_ARTIFACTS names, else paddock-screenshots in the
// temporary folder. They are test artifacts, not committed.
func screenshotDir(t *testing.T) string {
	dir := os.Getenv("PADDOCK_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "paddock-screenshots")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// spkiHash is the base64 SHA-256 of the public key of the certificate the
// API serves: Chromium trusts that key, and only it, for the test.
func spkiHash(t *testing.T, api string) string {
	u, err := url.Parse(api)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", u.Host, &tls.Config{InsecureSkipVerify: true}) // read the key, trust nothing
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sum := sha256.Sum256(conn.ConnectionState().PeerCertificates[0].RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// browserTab starts Debian's Chromium, headless, on a fresh profile, and
// returns a tab's context and what its console reported. Cancelling the
// context (at the test's end) stops the browser and its children.
func browserTab(t *testing.T, p *testenv.Platform) (context.Context, *consoleLog) {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium is not installed (apt-get install chromium; .ci/run installs it): %v", err)
	}
	profile := t.TempDir()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("ignore-certificate-errors-spki-list", spkiHash(t, p.API)),
		chromedp.UserDataDir(profile),
		chromedp.WindowSize(1366, 900),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[int]("1")); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	cl := &consoleLog{}
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			cl.add(m)
		}
	}()
	return ctx, cl
}

// consoleLog keeps the console's errors, exceptions and CSP reports.
type consoleLog struct {
	mu   sync.Mutex
	bad  []string
	seen int
}

func (c *consoleLog) add(m chromedp.ConsoleMessage) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seen++
	if m.Type == chromedp.ConsoleError || m.IsException() || m.Type == chromedp.ConsoleWarning ||
		strings.Contains(m.Text, "Content Security Policy") || strings.Contains(m.Text, "Refused to") {
		c.bad = append(c.bad, fmt.Sprintf("%s %s (%s %s:%d)", m.Type, m.Text, m.Source, m.URL, m.Line))
	}
}

func (c *consoleLog) problems() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.bad...)
}

// prebuiltHello builds the example app here and returns a folder with its
// binary and a manifest: a web process with a health check, and a worker
// that logs a numbered heartbeat and a line with a <script> tag.
func prebuiltHello(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "hello"), ".")
	cmd.Dir = exampleDir(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the example: %v\n%s", err, out)
	}
	manifest := `
[processes.web]
command = "./hello"
instances = 1
[processes.web.health]
path = "/healthz"
interval = "1s"

[processes.worker]
command = '''i=0; while true; do i=$((i+1)); echo "<script>document.title='owned'</script> pwn"; echo "beat $i"; sleep 0.3; done'''
instances = 1
`
	if err := os.WriteFile(filepath.Join(dir, "paddock.toml"), []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestDashboardInBrowser drives the dashboard in a real headless Chromium:
// log in with a token, see the app become healthy, watch a log line come
// live, see a <script> log line as text, roll back from the releases list,
// see a viewer refused, and see no console error or CSP violation.
func TestDashboardInBrowser(t *testing.T) {
	p := testenv.Start(t)
	ctx := context.Background()
	admin := p.Client()
	p.MustRun("apps", "create", "shop")
	p.MustRun("deploy", prebuiltHello(t), "--app", "shop")
	p.MustRun("config", "set", "shop", "GREETING=howdy") // v2, to roll back from
	viewer := p.Viewer(t, "view", "shop")

	tab, console := browserTab(t, p)
	shots := screenshotDir(t)
	run := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		c, cancel := context.WithTimeout(tab, 60*time.Second)
		defer cancel()
		if err := chromedp.Do(c, steps...); err != nil {
			html, _ := chromedp.Run(tab, chromedp.Evaluate[string]("document.body ? document.body.innerText : ''"))
			t.Fatalf("%s: %v\npage text:\n%s\nconsole: %v", what, err, html, console.problems())
		}
	}
	text := func(expr string) string {
		t.Helper()
		s, err := chromedp.Run(tab, chromedp.Evaluate[string](expr))
		if err != nil {
			t.Fatalf("evaluate %s: %v", expr, err)
		}
		return s
	}
	// waitFor polls a JavaScript condition in the page.
	waitFor := func(what, cond string, d time.Duration) {
		t.Helper()
		run(what, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := chromedp.Poll[bool](cond, chromedp.WithPollingTimeout(d), chromedp.WithPollingInterval(100*time.Millisecond))(ctx, tg)
			return err
		}))
	}
	shot := func(name string) {
		t.Helper()
		b, err := chromedp.Run(tab, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(shots, name+".png"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	login := func(token string) {
		t.Helper()
		run("log in",
			chromedp.Navigate(p.API+"/login"),
			chromedp.WaitVisible(chromedp.ID("token")),
			chromedp.SendKeys(chromedp.ID("token"), token),
			chromedp.Submit(chromedp.ID("token")),
			chromedp.WaitVisible(chromedp.CSS(".flash-ok")),
		)
	}

	// Log in; the overview shows the app, healthy once its instances are.
	run("open the login page", chromedp.Navigate(p.API+"/"), chromedp.WaitVisible(chromedp.ID("token")))
	shot("login")
	login(p.Token)
	if got := text("document.querySelector('h1').textContent"); got != "Overview" {
		t.Fatalf("after login: h1 %q", got)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		state := text(`(function(){var a=document.querySelector('a[href="/apps/shop"]');if(!a)return '';return a.closest('tr').querySelector('.state').textContent})()`)
		if state == "healthy" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("shop is %q on the overview, not healthy", state)
		}
		time.Sleep(500 * time.Millisecond)
		run("reload the overview", chromedp.Reload())
	}
	shot("overview")

	// The app's page: live logs, with the <script> line as text.
	run("open the app", chromedp.Click(chromedp.CSS(`a[href="/apps/shop"]`)), chromedp.WaitVisible(chromedp.ID("log-lines")))
	waitFor("the log stream goes live", `document.getElementById('log-status').textContent === 'live'`, 20*time.Second)
	waitFor("a heartbeat appears", `Array.from(document.querySelectorAll('#log-lines li')).some(function(li){return /beat \d+/.test(li.textContent)})`, 20*time.Second)
	beats := func() int {
		s := text(`(function(){var n=0;document.querySelectorAll('#log-lines li .x').forEach(function(x){var m=/^beat (\d+)$/.exec(x.textContent);if(m&&+m[1]>n)n=+m[1]});return String(n)})()`)
		n, _ := strconv.Atoi(s)
		return n
	}
	first := beats()
	waitFor("a new heartbeat arrives live", fmt.Sprintf(`Array.from(document.querySelectorAll('#log-lines li .x')).some(function(x){var m=/^beat (\d+)$/.exec(x.textContent);return m&&+m[1]>%d})`, first+2), 20*time.Second)
	waitFor("the <script> line shows as text", `Array.from(document.querySelectorAll('#log-lines li .x')).some(function(x){return x.textContent.indexOf("<script>document.title='owned'</script>") === 0})`, 10*time.Second)
	if n := text(`String(document.querySelectorAll('script').length)`); n != "1" {
		t.Errorf("the page has %s script elements, want only its own", n)
	}
	if title := text("document.title"); title == "owned" {
		t.Error("a log line ran as script")
	}
	// Only the worker's lines when filtered by process.
	run("filter the logs by process", chromedp.SetValue(chromedp.ID("log-process"), "worker"),
		chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := chromedp.Evaluate[bool](`document.getElementById('log-process').dispatchEvent(new Event('change'))`)(ctx, tg)
			return err
		}))
	waitFor("the worker's lines come alone", `(function(){var l=document.querySelectorAll('#log-lines li .s');return l.length>3&&Array.from(l).every(function(s){return s.textContent.indexOf('worker.')===0})})()`, 20*time.Second)
	shot("app")

	// Roll back to v1 from the releases list.
	run("roll back", chromedp.Click(chromedp.CSS(`form[action="/apps/shop/rollback"] input[value="v1"] ~ button`)),
		chromedp.WaitVisible(chromedp.CSS(".flash-ok")))
	if flash := text(`document.querySelector('.flash').textContent`); !strings.Contains(flash, "Rolled back to v1") {
		t.Errorf("flash after rollback: %q", flash)
	}
	info, err := admin.App(ctx, "shop")
	if err != nil {
		t.Fatal(err)
	}
	if info.Release != 3 || info.Current == nil || info.Current.Config["GREETING"] != "" {
		t.Errorf("after the rollback: release v%d, current %+v; want v3 with v1's config", info.Release, info.Current)
	}
	if cur := text(`document.querySelector('#releases tr.current th').textContent`); !strings.HasPrefix(cur, "v3") {
		t.Errorf("the releases list marks %q current, want v3", cur)
	}

	// The audit page shows the login and the rollback.
	run("open the audit log", chromedp.Navigate(p.API+"/audit"), chromedp.WaitVisible(chromedp.CSS("table.audit")))
	body := text("document.body.innerText")
	for _, want := range []string{"auth.login", "apps.rollback", "intact"} {
		if !strings.Contains(body, want) {
			t.Errorf("the audit page lacks %q", want)
		}
	}
	shot("audit")

	// Sign out; sign in as a viewer: no action forms, and an action the
	// viewer forces anyway is refused by the API.
	run("sign out", chromedp.Click(chromedp.CSS(`form[action="/logout"] button`)), chromedp.WaitVisible(chromedp.ID("token")))
	login(viewer)
	run("open the app as a viewer", chromedp.Navigate(p.API+"/apps/shop"), chromedp.WaitVisible(chromedp.ID("releases")))
	if n := text(`String(document.querySelectorAll('form[action^="/apps/"]').length)`); n != "0" {
		t.Errorf("the viewer's page has %s action forms", n)
	}
	// What a viewer could forge with the page's own CSRF token.
	run("force a rollback as the viewer", chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := chromedp.Evaluate[bool](`(function(){
			var f=document.createElement('form');f.method='post';f.action='/apps/shop/rollback';
			[['csrf',document.querySelector('input[name=csrf]').value],['version','v2']].forEach(function(kv){
				var i=document.createElement('input');i.type='hidden';i.name=kv[0];i.value=kv[1];f.appendChild(i)});
			document.body.appendChild(f);f.submit();return true})()`)(ctx, tg)
		return err
	}), chromedp.WaitVisible(chromedp.CSS(".flash-error")))
	if flash := text(`document.querySelector('.flash').textContent`); !regexp.MustCompile(`needs the developer role`).MatchString(flash) {
		t.Errorf("the viewer's forced rollback: flash %q, want the API's refusal", flash)
	}
	shot("viewer-denied")
	if info, _ := admin.App(ctx, "shop"); info.Release != 3 {
		t.Errorf("the viewer's rollback went through: release v%d", info.Release)
	}

	if bad := console.problems(); len(bad) > 0 {
		t.Errorf("the browser's console reported problems:\n%s", strings.Join(bad, "\n"))
	}
	t.Logf("screenshots in %s", shots)
}
