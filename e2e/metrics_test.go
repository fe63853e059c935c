package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"paddock.dev/paddock/internal/alerts"
	"paddock.dev/paddock/internal/client"
	"paddock.dev/paddock/internal/testenv"
)

// TestMetrics: the platform's metrics are in the Prometheus exposition
// format, pass promtool's checks, are served to admins on the API and to
// anyone on the --metrics listener, and a real Prometheus scrapes them.
func TestMetrics(t *testing.T) {
	p := testenv.Start(t, "--metrics", "127.0.0.1:0")
	p.MustRun("apps", "create", "shop")
	if out, errOut, err := p.Run("deploy", tenantApp(t, "[processes.web]\ncommand = \"./tenant serve\"\n"), "--app", "shop"); err != nil {
		t.Fatalf("deploy: %v\n%s\n%s", err, out, errOut)
	}
	p.MustRun("apps")
	for i := 0; i < 5; i++ {
		testenv.Eventually(t, 20*time.Second, func() error {
			if code, body, err := p.Get("shop.localhost", "/"); err != nil || code != 200 {
				return fmt.Errorf("GET shop: %d %v %s", code, err, body)
			}
			return nil
		})
	}
	p.Get("nothere.localhost", "/")

	get := func(url, token string) (int, string) {
		req, _ := http.NewRequest("GET", url, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := p.ClientWith("").HTTPClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := get(p.API+"/metrics", p.Token)
	if code != http.StatusOK {
		t.Fatalf("GET /metrics as admin: %d %s", code, body)
	}
	for _, want := range []string{
		`paddock_api_requests_total{code="200",route="GET /v1/apps"} `,
		`paddock_api_request_duration_seconds_bucket{route="GET /v1/apps",le=`,
		`paddock_instances{app="shop",process="web",state="running"} 1`,
		`paddock_instance_cpu_seconds_total{app="shop",instance="shop.web.`,
		`paddock_instance_resident_memory_bytes{app="shop"`,
		`paddock_instance_open_fds{app="shop"`,
		`paddock_instance_healthy{app="shop"`,
		`paddock_instance_restarts_total{app="shop"`,
		`paddock_builds_total{result="succeeded"} 1`,
		`paddock_reconcile_passes_total `,
		`paddock_audit_append_duration_seconds_count `,
		`paddock_router_requests_total{app="shop",code="2xx"} 5`,
		`paddock_router_request_duration_seconds_count{app="shop"} 5`,
		`paddock_router_response_bytes_total{app="shop"} `,
		`paddock_router_requests_in_flight{app="shop"} 0`,
		`go_goroutines `,
		`process_resident_memory_bytes `,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", body)
	}

	// promtool checks names, help, units and conventions.
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool is missing: apt-get install prometheus (.ci/run does)")
	}
	check := exec.Command(promtool, "check", "metrics")
	check.Stdin = strings.NewReader(body)
	if out, err := check.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}

	// Not to developers: the metrics are every app's.
	if _, err := p.Client().CreateUser(context.Background(), "dev", "developer"); err != nil {
		t.Fatal(err)
	}
	tok, err := p.Client().CreateToken(context.Background(), client.TokenRequest{Name: "dev", User: "dev"})
	if err != nil {
		t.Fatal(err)
	}
	if code, body := get(p.API+"/metrics", tok.Value); code != http.StatusForbidden {
		t.Errorf("GET /metrics as a developer: %d %s", code, body)
	}

	// The listener of --metrics, scraped by a real Prometheus.
	m := regexp.MustCompile(`metrics: http://(\S+)/metrics`).FindStringSubmatch(p.ServerLog())
	if m == nil {
		t.Fatalf("the server did not say where its metrics listener is:\n%s", p.ServerLog())
	}
	if resp, err := http.Get("http://" + m[1] + "/metrics"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics on the listener: %v %v", resp, err)
	}
	// The history: a point every 10 s of the app's request rate, among
	// others, while requests come in.
	keepRequesting(t, p, "shop.localhost")
	testenv.Eventually(t, 60*time.Second, func() error {
		var hist struct {
			Step   int `json:"step_seconds"`
			Series map[string][]*float64
		}
		if err := json.Unmarshal([]byte(p.MustRun("metrics", "shop", "--json")), &hist); err != nil {
			return err
		}
		for _, v := range hist.Series["requests_per_second"] {
			if v != nil && *v > 1 && hist.Step == 10 {
				return nil
			}
		}
		return fmt.Errorf("no request rate in the history yet: %+v", hist.Series["requests_per_second"])
	})
	if out := p.MustRun("metrics", "shop"); !strings.Contains(out, "requests ") || !strings.Contains(out, "/s (") {
		t.Errorf("paddock metrics:\n%s", out)
	}

	prom := startPrometheus(t, m[1])
	testenv.Eventually(t, 60*time.Second, func() error {
		resp, err := http.Get("http://" + prom + "/api/v1/query?query=" + url.QueryEscape(`paddock_instances{app="shop"}`))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var out struct {
			Data struct {
				Result []struct {
					Metric map[string]string
					Value  []any
				}
			}
		}
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			return err
		}
		if len(out.Data.Result) != 1 || out.Data.Result[0].Metric["state"] != "running" {
			return fmt.Errorf("Prometheus has %+v for paddock_instances of shop", out.Data.Result)
		}
		return nil
	})
}

// startPrometheus runs a Prometheus that scrapes target every second and
// returns its address; it is stopped at the test's end.
func startPrometheus(t *testing.T, target string) string {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatal("prometheus is missing: apt-get install prometheus (.ci/run does)")
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "prometheus.yml")
	cfg := fmt.Sprintf("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: paddock\n    static_configs:\n      - targets: [%q]\n", target)
	if err := os.WriteFile(conf, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	var log bytes.Buffer
	cmd := exec.Command(bin, "--config.file="+conf, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr)
	cmd.Stdout, cmd.Stderr = &log, &log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
		if t.Failed() {
			t.Logf("prometheus:\n%s", log.String())
		}
	})
	return addr
}

// TestEvents: the platform's events of an app, in order, as text and JSON,
// and of every app one may read.
func TestEvents(t *testing.T) {
	p := testenv.Start(t)
	p.MustRun("apps", "create", "shop")
	p.MustRun("apps", "create", "side")
	if out, errOut, err := p.Run("deploy", tenantApp(t, "[processes.web]\ncommand = \"./tenant serve\"\n"), "--app", "shop"); err != nil {
		t.Fatalf("deploy: %v\n%s\n%s", err, out, errOut)
	}
	p.MustRun("config", "set", "shop", "A=1")
	testenv.Eventually(t, 30*time.Second, func() error {
		out := p.MustRun("events", "shop")
		for _, want := range []string{"app created by admin", "release v1 created by admin", "started on port", "is healthy", "release v2 created by admin: Config: set A"} {
			if !strings.Contains(out, want) {
				return fmt.Errorf("events lack %q:\n%s", want, out)
			}
		}
		return nil
	})
	var evs []struct {
		App, Message string
		Time         time.Time
	}
	dec := json.NewDecoder(strings.NewReader(p.MustRun("events", "shop", "--json")))
	for dec.More() {
		var e struct {
			App, Message string
			Time         time.Time
		}
		if err := dec.Decode(&e); err != nil {
			t.Fatalf("events --json: %v", err)
		}
		evs = append(evs, e)
	}
	if len(evs) < 5 {
		t.Errorf("events --json: %d events", len(evs))
	}
	for i := 1; i < len(evs); i++ {
		if evs[i].Time.Before(evs[i-1].Time) || evs[i].App != "shop" {
			t.Errorf("events out of order or of another app: %+v then %+v", evs[i-1], evs[i])
		}
	}
	if out := p.MustRun("events"); !strings.Contains(out, "side: app created") || !strings.Contains(out, "shop: app created") {
		t.Errorf("events of every app:\n%s", out)
	}
	if _, errOut, err := p.Run("events", "nope"); err == nil || !strings.Contains(errOut, "nope") {
		t.Errorf("events of a missing app: %v %q", err, errOut)
	}
}

// TestAlerts: an app in a crash loop fires an alert once, as an event and
// a signed notification to a webhook, and resolves it once the app is
// fixed.
func TestAlerts(t *testing.T) {
	p := testenv.Start(t)
	var mu sync.Mutex
	var got []alerts.Notification
	var secret string
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		if want := "sha256=" + alerts.Sign([]byte(secret), r.Header.Get("X-Paddock-Timestamp"), body); r.Header.Get("X-Paddock-Signature") != want {
			t.Errorf("a notification's signature %q, want %q", r.Header.Get("X-Paddock-Signature"), want)
		}
		var n alerts.Notification
		if err := json.Unmarshal(body, &n); err != nil {
			t.Errorf("a notification: %v: %s", err, body)
		}
		got = append(got, n)
	}))
	defer hook.Close()
	out := p.MustRun("alerts", "add", "--webhook", hook.URL)
	mu.Lock()
	secret = strings.TrimSpace(out)
	mu.Unlock()
	if len(secret) != 64 {
		t.Fatalf("alerts add printed %q, want the secret", out)
	}
	if list := p.MustRun("alerts", "webhooks"); !strings.Contains(list, hook.URL) || strings.Contains(list, secret) {
		t.Errorf("alerts webhooks (the URL, never the secret):\n%s", list)
	}

	p.MustRun("apps", "create", "crash")
	// A worker that runs two seconds, then exits: the release rolls out,
	// then the worker keeps crashing.
	if out, errOut, err := p.Run("deploy", tenantApp(t, "[processes.worker]\ncommand = \"sleep 2; echo dying; exit 1\"\n"), "--app", "crash"); err != nil {
		t.Fatalf("deploy: %v\n%s\n%s", err, out, errOut)
	}
	notified := func(status string) alerts.Notification {
		var n alerts.Notification
		testenv.Eventually(t, 60*time.Second, func() error {
			mu.Lock()
			defer mu.Unlock()
			for _, g := range got {
				if g.Status == status && g.Alert.Rule == "crash_loop" && g.Alert.App == "crash" {
					n = g
					return nil
				}
			}
			return fmt.Errorf("no %s crash_loop notification yet: %+v", status, got)
		})
		return n
	}
	notified("firing")
	if list := p.MustRun("alerts"); !strings.Contains(list, "crash_loop") || !strings.Contains(list, "crash") {
		t.Errorf("alerts:\n%s", list)
	}
	if out, errOut, err := p.Run("deploy", tenantApp(t, "[processes.worker]\ncommand = \"exec sleep 1000\"\n"), "--app", "crash"); err != nil {
		t.Fatalf("deploy the fix: %v\n%s\n%s", err, out, errOut)
	}
	notified("resolved")
	mu.Lock()
	firing := 0
	for _, g := range got {
		if g.Status == "firing" && g.Alert.Rule == "crash_loop" {
			firing++
		}
	}
	mu.Unlock()
	if firing != 1 {
		t.Errorf("%d firing notifications for one crash loop, want 1", firing)
	}
	if evs := p.MustRun("events", "crash"); !strings.Contains(evs, "alert crash_loop FIRING") || !strings.Contains(evs, "alert crash_loop resolved") {
		t.Errorf("events:\n%s", evs)
	}
}

// TestLivenessRestart: an instance that was healthy and then fails its
// checks leaves the router after unhealthy_after failures in a row and is
// replaced after restart_after; a wrong status counts as a failure.
func TestLivenessRestart(t *testing.T) {
	p := testenv.Start(t)
	p.MustRun("apps", "create", "sick")
	p.MustRun("config", "set", "sick", "SICK_AFTER=3s")
	manifest := "[processes.web]\ncommand = \"./tenant serve\"\n[processes.web.health]\npath = \"/healthz\"\nstatus = 200\ninterval = \"200ms\"\nunhealthy_after = 2\nrestart_after = 4\n"
	if out, errOut, err := p.Run("deploy", tenantApp(t, manifest), "--app", "sick"); err != nil {
		t.Fatalf("deploy: %v\n%s\n%s", err, out, errOut)
	}
	first := ps(t, p, "sick")
	if len(first) != 1 {
		t.Fatalf("instances: %+v", first)
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		rows := ps(t, p, "sick")
		if len(rows) == 0 || rows[0].ID == first[0].ID {
			return fmt.Errorf("the sick instance %s is still there: %+v", first[0].ID, rows)
		}
		return nil
	})
	if evs := p.MustRun("events", "sick"); !strings.Contains(evs, "failed 2 health checks: GET /healthz: 503 Service Unavailable, want 200") || !strings.Contains(evs, "failed 4 health checks in a row: replacing it") {
		t.Errorf("events:\n%s", evs)
	}
	if _, errOut, err := p.Run("deploy", tenantApp(t, "[processes.web]\ncommand = \"./tenant serve\"\n[processes.web.health]\nstatus = 200\nrestart_after = -1\n"), "--app", "sick"); err == nil || !strings.Contains(errOut, "status needs a path") || !strings.Contains(errOut, "restart_after") {
		t.Errorf("a bad health table: %v %q", err, errOut)
	}
}

// TestCommandHealthCheck: a health check command runs inside the instance
// with its secrets; the instance joins the router when it first passes,
// and a release whose check never passes fails with the check's reason,
// its secrets redacted.
func TestCommandHealthCheck(t *testing.T) {
	p := testenv.Start(t)
	p.MustRun("apps", "create", "chk")
	const secret = "s3cr3t-db-password-31c9"
	if _, errOut, err := p.RunIn("", strings.NewReader(secret), "secrets", "set", "chk", "DB_PASSWORD"); err != nil {
		t.Fatalf("secrets set: %v\n%s", err, errOut)
	}
	manifest := func(check string) string {
		return "[processes.web]\ncommand = \"(sleep 1; touch ready) & exec ./tenant serve\"\n" +
			"[processes.web.health]\ninterval = \"200ms\"\ngrace = \"4s\"\ncommand = " + strconv.Quote(check) + "\n"
	}
	start := time.Now()
	if out, errOut, err := p.Run("deploy", tenantApp(t, manifest(`test -f ready || { echo "no db at $DB_PASSWORD"; exit 4; }`)), "--app", "chk"); err != nil {
		t.Fatalf("deploy: %v\n%s\n%s", err, out, errOut)
	}
	if took := time.Since(start); took < time.Second {
		t.Errorf("the deploy took %s: it did not wait for the check, which fails for a second", took)
	}
	if rows := ps(t, p, "chk"); len(rows) != 1 || !rows[0].Healthy {
		t.Errorf("ps: %+v", rows)
	}
	out, errOut, err := p.Run("deploy", tenantApp(t, manifest(`echo "no db at $DB_PASSWORD"; exit 4`)), "--app", "chk")
	if err == nil {
		t.Fatalf("a release whose check never passes was deployed:\n%s", out)
	}
	if want := "health check command exited with code 4: no db at [REDACTED:DB_PASSWORD]"; !strings.Contains(errOut, want) {
		t.Errorf("deploy's error does not say %q:\n%s", want, errOut)
	}
	for _, s := range []string{out, errOut, p.MustRun("events", "chk"), p.MustRun("ps", "chk", "--json"), p.ServerLog()} {
		if strings.Contains(s, secret) {
			t.Errorf("the secret leaked:\n%s", s)
		}
	}
	serving(t, p, "chk.localhost", "")
}

// TestAlertRules: a rule set on an app's metrics fires when the metric
// passes its threshold and is seen by who may read the app only; a rule on
// an unknown metric is refused with the metrics there are; a certificate
// the platform serves that expires soon raises an alert for admins.
func TestAlertRules(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "apps.crt"), filepath.Join(dir, "apps.key")
	writeCert(t, certFile, keyFile, time.Now().Add(3*24*time.Hour))
	p := testenv.Start(t, "--https", "127.0.0.1:0", "--https-cert", certFile, "--https-key", keyFile)
	tok := secretsTeam(t, p) // app shop: dev may write it, other may not
	if out, errOut, err := p.Run("deploy", tenantApp(t, "[processes.web]\ncommand = \"./tenant serve\"\n"), "--app", "shop"); err != nil {
		t.Fatalf("deploy: %v\n%s\n%s", err, out, errOut)
	}

	if _, errOut, err := runAs(p, tok["dev"], "", "alerts", "add", "shop", "--when", "latency > 1s"); err == nil ||
		!strings.Contains(errOut, `unknown metric "latency": use one of requests, errors, error_rate, p50, p95, p99, cpu, memory`) {
		t.Errorf("a rule on an unknown metric: %v %q", err, errOut)
	}
	if _, errOut, err := runAs(p, tok["other"], "", "alerts", "add", "shop", "--when", "requests > 0"); err == nil {
		t.Errorf("a developer without access to shop set a rule on it: %q", errOut)
	}
	out := mustRunAs(t, p, tok["dev"], "", "alerts", "add", "shop", "--when", "requests > 0.5", "--for", "0s")
	id := regexp.MustCompile(`rule-[0-9a-f]+`).FindString(out)
	if id == "" {
		t.Fatalf("alerts add: %q", out)
	}
	if list := mustRunAs(t, p, tok["dev"], "", "alerts", "rules"); !strings.Contains(list, id) || !strings.Contains(list, "requests > 0.5/s") || !strings.Contains(list, "crash_loop") {
		t.Errorf("alerts rules:\n%s", list)
	}
	if list := mustRunAs(t, p, tok["other"], "", "alerts", "rules", "shop"); strings.Contains(list, id) {
		t.Errorf("another developer sees shop's rule:\n%s", list)
	}

	// Traffic past the threshold: the next sample of the history (every
	// 10 s) and evaluation (every 5 s) fire it.
	keepRequesting(t, p, "shop.localhost")
	testenv.Eventually(t, 45*time.Second, func() error {
		if list := mustRunAs(t, p, tok["dev"], "", "alerts"); !strings.Contains(list, "requests > 0.5/s") || !strings.Contains(list, id) {
			return fmt.Errorf("the rule has not fired:\n%s", list)
		}
		return nil
	})
	if list := mustRunAs(t, p, tok["other"], "", "alerts"); strings.Contains(list, "shop") || strings.Contains(list, "certificate") {
		t.Errorf("another developer sees shop's or the platform's alerts:\n%s", list)
	}
	if list := p.MustRun("alerts"); !strings.Contains(list, "certificate_expiring") || !strings.Contains(list, "apps' HTTPS certificate ("+certFile+") expires on") {
		t.Errorf("no alert of the certificate that expires in 3 days:\n%s", list)
	}
	mustRunAs(t, p, tok["dev"], "", "alerts", "remove", "shop", id)
	if list := mustRunAs(t, p, tok["dev"], "", "alerts", "rules", "shop"); strings.Contains(list, id) {
		t.Errorf("a removed rule is listed:\n%s", list)
	}
}

// writeCert writes a self-signed certificate for localhost that expires at
// notAfter, and its key.
func writeCert(t *testing.T, certFile, keyFile string, notAfter time.Time) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"}, DNSNames: []string{"localhost", "*.localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestEveryAppInOneRequest: GET /v1/instances and GET /v1/metrics/apps
// answer for the apps the caller may read, and no other; instances come
// with their recent CPU.
func TestEveryAppInOneRequest(t *testing.T) {
	p := testenv.Start(t)
	tok := secretsTeam(t, p) // shop: dev may read it, other may not
	p.MustRun("apps", "create", "side")
	for _, app := range []string{"shop", "side"} {
		if out, errOut, err := p.Run("deploy", tenantApp(t, "[processes.web]\ncommand = \"./tenant serve\"\n"), "--app", app); err != nil {
			t.Fatalf("deploy %s: %v\n%s\n%s", app, err, out, errOut)
		}
	}
	get := func(token, path string, v any) int {
		t.Helper()
		req, _ := http.NewRequest("GET", p.API+path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := p.Client().HTTPClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if v != nil && resp.StatusCode == 200 {
			if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
				t.Fatal(err)
			}
		}
		return resp.StatusCode
	}
	apps := func(token string) (inst, met []string) {
		var insts []struct{ App, ID string }
		var ms []struct{ App string }
		if code := get(token, "/v1/instances", &insts); code != 200 {
			t.Fatalf("GET /v1/instances: %d", code)
		}
		if code := get(token, "/v1/metrics/apps?since=1h&series=requests_per_second", &ms); code != 200 {
			t.Fatalf("GET /v1/metrics/apps: %d", code)
		}
		for _, in := range insts {
			inst = append(inst, in.App)
		}
		for _, m := range ms {
			met = append(met, m.App)
		}
		return inst, met
	}
	for who, want := range map[string]string{"admin": "shop side", "dev": "shop", "other": ""} {
		inst, met := apps(tok[who])
		if got := strings.Join(inst, " "); got != want {
			t.Errorf("%s: instances of %q, want %q", who, got, want)
		}
		if got := strings.Join(met, " "); got != want {
			t.Errorf("%s: metrics of %q, want %q", who, got, want)
		}
	}
	// Each instance's CPU, once the server has sampled it twice (10 s apart).
	testenv.Eventually(t, 40*time.Second, func() error {
		var insts []struct {
			ID       string
			CPUCores *float64 `json:"cpu_cores"`
		}
		get(p.Token, "/v1/instances", &insts)
		for _, in := range insts {
			if in.CPUCores == nil || *in.CPUCores < 0 || *in.CPUCores > 2 {
				return fmt.Errorf("instance %s: cpu_cores %v", in.ID, in.CPUCores)
			}
		}
		return nil
	})
	if code := get(p.Token, "/v1/metrics/apps?series=passwords", nil); code != 422 {
		t.Errorf("an unknown series: %d, want 422", code)
	}

	// Restart: the instance goes, another takes its place; a developer
	// without access to the app cannot.
	old := ps(t, p, "shop")[0].ID
	if _, errOut, err := runAs(p, tok["other"], "", "restart", "shop", old); err == nil {
		t.Errorf("a developer without access restarted shop's instance: %q", errOut)
	}
	short := strings.TrimPrefix(old, "shop.")
	if out := mustRunAs(t, p, tok["dev"], "", "restart", "shop", short); !strings.Contains(out, "Restarting "+short) {
		t.Errorf("restart: %q", out)
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		rows := ps(t, p, "shop")
		if len(rows) != 1 || rows[0].ID == old || !rows[0].Healthy {
			return fmt.Errorf("instances %+v, want one healthy other than %s", rows, old)
		}
		return nil
	})
	if evs := p.MustRun("events", "shop"); !strings.Contains(evs, "restarted by dev") {
		t.Errorf("events:\n%s", evs)
	}
}

// keepRequesting sends a request to host every 50 ms until the test ends.
func keepRequesting(t *testing.T, p *testenv.Platform, host string) {
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
				p.Get(host, "/")
			}
		}
	}()
}
