package e2e

import (
	"bufio"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"paddock.dev/paddock/internal/testenv"
)

// syslogReceiver collects the RFC 5424 messages of octet-counted syslog
// over TCP.
type syslogReceiver struct {
	mu   sync.Mutex
	msgs []string
	ln   net.Listener
}

func (s *syslogReceiver) serve(t *testing.T, addr string) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.ln = ln
	s.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					n, err := r.ReadString(' ')
					if err != nil {
						return
					}
					size, err := strconv.Atoi(strings.TrimSpace(n))
					if err != nil || size <= 0 || size > 1<<20 {
						t.Errorf("a frame of length %q", n)
						return
					}
					msg := make([]byte, size)
					if _, err := io.ReadFull(r, msg); err != nil {
						return
					}
					s.mu.Lock()
					s.msgs = append(s.msgs, string(msg))
					s.mu.Unlock()
				}
			}()
		}
	}()
}

// numbers returns the line numbers received so far.
func (s *syslogReceiver) numbers() map[int]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[int]bool{}
	for _, m := range s.msgs {
		if _, n, ok := strings.Cut(m, " - - line "); ok {
			if v, err := strconv.Atoi(n); err == nil {
				out[v] = true
			}
		}
	}
	return out
}

// TestDrains: an app's lines reach a syslog receiver over TCP and an HTTPS
// receiver with a private CA; while the syslog receiver is down the lines
// wait, and reach it once it is back.
func TestDrains(t *testing.T) {
	// The receivers are on this machine's loopback.
	p := testenv.Start(t, "--drains-local")
	p.MustRun("apps", "create", "shop")
	var sys syslogReceiver
	sys.serve(t, "127.0.0.1:0")
	addr := sys.ln.Addr().String()

	var hmu sync.Mutex
	var batches [][]map[string]any
	hs := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var batch []map[string]any
		if err := json.NewDecoder(r.Body).Decode(&batch); err != nil {
			t.Errorf("an HTTPS batch: %v", err)
		}
		hmu.Lock()
		batches = append(batches, batch)
		hmu.Unlock()
	}))
	defer hs.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: hs.Certificate().Raw}), 0o644)

	for _, bad := range []string{"ftp://example.test/x", "syslog://nohostport", "https://", "not a url at all"} {
		if _, errOut, err := p.Run("drains", "add", "shop", bad); err == nil || !strings.Contains(errOut, "drain") {
			t.Errorf("drains add %q: %v %q, want a refusal", bad, err, errOut)
		}
	}
	p.MustRun("drains", "add", "shop", "syslog://"+addr)
	p.MustRun("drains", "add", "shop", hs.URL+"/logs?token=s3cret", "--ca", ca)
	if out := p.MustRun("drains", "shop"); strings.Contains(out, "s3cret") || !strings.Contains(out, hs.URL+"/logs") {
		t.Errorf("drains shows the URL's token, or not the URL:\n%s", out)
	}
	if out, errOut, err := p.Run("deploy", tenantApp(t, "[processes.worker]\ncommand = \"i=0; while true; do i=$((i+1)); echo line $i; sleep 0.1; done\"\n"), "--app", "shop"); err != nil {
		t.Fatalf("deploy: %v\n%s\n%s", err, out, errOut)
	}
	// The app's output, and its supervisor's lines ("started pid …").
	rfc5424 := regexp.MustCompile(`^<1[14]>1 \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z \S+ shop worker\.\S+ - - \S.*$`)
	testenv.Eventually(t, 30*time.Second, func() error {
		if n := len(sys.numbers()); n < 5 {
			return fmt.Errorf("%d lines by syslog", n)
		}
		sys.mu.Lock()
		defer sys.mu.Unlock()
		for _, m := range sys.msgs {
			if !rfc5424.MatchString(m) {
				return fmt.Errorf("not an RFC 5424 message of the app: %q", m)
			}
		}
		return nil
	})
	testenv.Eventually(t, 30*time.Second, func() error {
		hmu.Lock()
		defer hmu.Unlock()
		for _, b := range batches {
			for _, l := range b {
				if l["app"] == "shop" && strings.HasPrefix(fmt.Sprint(l["text"]), "line ") {
					return nil
				}
			}
		}
		return fmt.Errorf("no line over HTTPS yet: %v", batches)
	})

	// The syslog receiver goes away for a while, then comes back.
	sys.ln.Close()
	before := sys.numbers()
	time.Sleep(3 * time.Second)
	sys.serve(t, addr)
	testenv.Eventually(t, 60*time.Second, func() error {
		got := sys.numbers()
		last := 0
		for n := range before {
			last = max(last, n)
		}
		// Lines written while it was down (some 30) arrive.
		missing := 0
		for n := last + 5; n < last+25; n++ {
			if !got[n] {
				missing++
			}
		}
		if missing > 0 {
			return fmt.Errorf("%d of the 20 lines written while the receiver was down have not arrived", missing)
		}
		return nil
	})
	if out := p.MustRun("drains", "shop", "--json"); !strings.Contains(out, `"sent"`) {
		t.Errorf("drains --json:\n%s", out)
	}
}

// TestDrainToRsyslog: a real syslog server, rsyslog, reads the drain's
// octet-counted RFC 5424 messages: the app's name, the instance and the
// line land in its fields.
func TestDrainToRsyslog(t *testing.T) {
	rsyslogd, err := exec.LookPath("rsyslogd")
	if err != nil {
		t.Fatal("rsyslogd is not installed (apt-get install rsyslog; .ci/run does)")
	}
	dir := t.TempDir()
	port := freePort(t)
	out := filepath.Join(dir, "received.log")
	conf := fmt.Sprintf(`global(workDirectory=%q)
module(load="imtcp")
input(type="imtcp" address="127.0.0.1" port="%d")
template(name="fields" type="string" string="app=%%app-name%% proc=%%procid%% sev=%%syslogseverity-text%% msg=%%msg%%\n")
*.* action(type="omfile" file=%q template="fields")
`, dir, port, out)
	confFile := filepath.Join(dir, "rsyslog.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(rsyslogd, "-n", "-f", confFile, "-i", filepath.Join(dir, "rsyslogd.pid"))
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	testenv.Eventually(t, 10*time.Second, func() error {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return fmt.Errorf("rsyslogd does not listen: %v\n%s", err, logs.String())
		}
		return c.Close()
	})

	p := testenv.Start(t, "--drains-local")
	p.MustRun("apps", "create", "shop")
	p.MustRun("drains", "add", "shop", "syslog://"+addr)
	if out, errOut, err := p.Run("deploy", tenantApp(t, "[processes.worker]\ncommand = \"i=0; while true; do i=$((i+1)); echo line $i; echo oops $i >&2; sleep 0.1; done\"\n"), "--app", "shop"); err != nil {
		t.Fatalf("deploy: %v\n%s\n%s", err, out, errOut)
	}
	line := regexp.MustCompile(`(?m)^app=shop proc=worker\.\S+ sev=info msg=line 5$`)
	errLine := regexp.MustCompile(`(?m)^app=shop proc=worker\.\S+ sev=err msg=oops 5$`)
	testenv.Eventually(t, 30*time.Second, func() error {
		b, _ := os.ReadFile(out)
		if !line.Match(b) || !errLine.Match(b) {
			return fmt.Errorf("rsyslog has not received lines 5 of stdout and stderr with their fields:\n%s\nrsyslogd:\n%s", b, logs.String())
		}
		return nil
	})
}

// freePort returns a port of 127.0.0.1 that nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
