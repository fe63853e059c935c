package daemon

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"paddock.dev/paddock/internal/router"
)

// TestTrafficRules: the error rate and the 95th percentile latency are
// read from the router's counters over the last minutes; a quiet app or a
// healthy one raises nothing.
func TestTrafficRules(t *testing.T) {
	buckets := func(fast, slow uint64) []uint64 {
		d := make([]uint64, len(router.DurationBounds)+1)
		d[0], d[len(router.DurationBounds)-1] = fast, slow // under 1 ms; 5-10 s
		return d
	}
	var w trafficWindow
	start := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	base := map[string]router.AppStats{
		"good":  {Requests: map[string]uint64{"2xx": 1000}, Durations: buckets(1000, 0)},
		"bad":   {Requests: map[string]uint64{"2xx": 1000, "5xx": 10}, Durations: buckets(1010, 0)},
		"slow":  {Requests: map[string]uint64{"2xx": 1000}, Durations: buckets(1000, 0)},
		"quiet": {Requests: map[string]uint64{"5xx": 1}, Durations: buckets(1, 0)},
	}
	if c := w.conditions(start, base); len(c) != 0 {
		t.Fatalf("one reading raised %v", c)
	}
	later := map[string]router.AppStats{
		"good":  {Requests: map[string]uint64{"2xx": 1100, "5xx": 1}, Durations: buckets(1101, 0)},
		"bad":   {Requests: map[string]uint64{"2xx": 1080, "5xx": 30}, Durations: buckets(1110, 0)},
		"slow":  {Requests: map[string]uint64{"2xx": 1100}, Durations: buckets(1090, 10)},
		"quiet": {Requests: map[string]uint64{"5xx": 5}, Durations: buckets(5, 0)},
	}
	got := map[string]string{}
	for _, c := range w.conditions(start.Add(time.Minute), later) {
		got[c.App] = c.Rule
		if !strings.Contains(c.Message, c.App) {
			t.Errorf("%s: the message does not name the app: %s", c.Rule, c.Message)
		}
	}
	want := map[string]string{"bad": "error_rate", "slow": "slow_responses"}
	if len(got) != len(want) || got["bad"] != want["bad"] || got["slow"] != want["slow"] {
		t.Errorf("conditions %v, want %v", got, want)
	}
	// Readings older than the window no longer count.
	if c := w.conditions(start.Add(10*time.Minute), later); len(c) != 0 {
		t.Errorf("nothing happened for 9 minutes, yet %v", c)
	}
}

// TestCertificateExpiry: a certificate that expires within two weeks, has
// expired or cannot be read raises certificate_expiring; one that has
// longer to live does not.
func TestCertificateExpiry(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	dir := t.TempDir()
	write := func(name string, notAfter time.Time) string {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: now.Add(-time.Hour), NotAfter: notAfter}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, name)
		os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
		return path
	}
	certs := []certFile{
		{"fine", write("fine.crt", now.Add(90*24*time.Hour)), "nothing"},
		{"soon", write("soon.crt", now.Add(3*24*time.Hour+time.Hour)), "renew it"},
		{"gone", write("gone.crt", now.Add(-24*time.Hour)), "renew it"},
		{"missing", filepath.Join(dir, "missing.crt"), "renew it"},
	}
	got := map[string]string{}
	for _, c := range expiring(certs, now) {
		if c.Rule != "certificate_expiring" || c.App != "" {
			t.Errorf("condition %+v", c)
		}
		got[c.Subject] = c.Message
	}
	for subject, want := range map[string]string{
		"soon":    "expires on 2026-12-04, in 4 days: renew it",
		"gone":    "expired on 2026-11-30: renew it",
		"missing": "cannot be read",
	} {
		if !strings.Contains(got[subject], want) {
			t.Errorf("%s: %q, want it to say %q", subject, got[subject], want)
		}
	}
	if _, ok := got["fine"]; ok || len(got) != 3 {
		t.Errorf("conditions: %v", got)
	}
}
