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
