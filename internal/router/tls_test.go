package router

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"paddock.dev/paddock/internal/tlsca"
)

// newCA makes a platform CA in a new folder (tlsca.Sign makes it on its
// first call) and returns the folder and a pool trusting only it.
func newCA(t testing.TB) (string, *x509.CertPool) {
	t.Helper()
	dir := t.TempDir()
	if _, err := tlsca.Sign(dir, []string{"bootstrap.invalid"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool, err := tlsca.Pool(caPEM)
	if err != nil {
		t.Fatal(err)
	}
	return dir, pool
}

// httpsClient sends every request to addr, whatever the URL's host, and
// trusts only pool.
func httpsClient(addr string, pool *x509.CertPool) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		},
		TLSClientConfig:   &tls.Config{RootCAs: pool},
		ForceAttemptHTTP2: true, // offer h2: the router must still pick http/1.1
	}}
}

func TestHTTPSWithCA(t *testing.T) {
	caDir, pool := newCA(t)
	r := startRouterConfig(t, Config{TLSListen: "127.0.0.1:0", CADir: caDir})
	e := echoBackend(t)
	r.push(t, Table{Version: 1, Routes: []Route{{Host: "app.localhost", App: "app", Backends: be(e.Listener.Addr().String())}}})
	client := httpsClient(r.tlsAddr, pool)

	for i := 0; i < 2; i++ { // the second time from the certificate cache
		resp, err := client.Get("https://app.localhost/p?q=1")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if got, want := resp.StatusCode, 200; got != want {
			t.Fatalf("status: got %d, want %d (%s)", got, want, body)
		}
		if got, want := resp.Proto, "HTTP/1.1"; got != want {
			t.Errorf("protocol: got %s, want %s", got, want)
		}
		if got, want := fmt.Sprint(resp.TLS.PeerCertificates[0].DNSNames), "[app.localhost]"; got != want {
			t.Errorf("certificate names: got %s, want %s", got, want)
		}
		var echo echoed
		if err := json.Unmarshal(body, &echo); err != nil {
			t.Fatalf("decode %q: %v", body, err)
		}
		if got, want := echo.Header.Values("X-Forwarded-Proto"), []string{"https"}; fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("X-Forwarded-Proto at the backend: got %q, want %q", got, want)
		}
		if got, want := echo.Header.Get("X-Forwarded-For"), "127.0.0.1"; got != want {
			t.Errorf("X-Forwarded-For at the backend: got %q, want %q", got, want)
		}
		if got, want := echo.URI, "/p?q=1"; got != want {
			t.Errorf("request URI: got %q, want %q", got, want)
		}
	}

	// Plain HTTP still says http.
	_, body := rawRequest(t, r.addr, "GET / HTTP/1.1\r\nHost: app.localhost\r\n\r\n")
	var echo echoed
	if err := json.Unmarshal([]byte(body), &echo); err != nil {
		t.Fatalf("decode %q: %v", body, err)
	}
	if got, want := echo.Header.Get("X-Forwarded-Proto"), "http"; got != want {
		t.Errorf("X-Forwarded-Proto over plain HTTP: got %q, want %q", got, want)
	}

	t.Run("handshakes", func(t *testing.T) {
		tests := []struct {
			name    string
			conf    *tls.Config
			wantErr bool
		}{
			{"routed host", &tls.Config{ServerName: "app.localhost", RootCAs: pool}, false},
			{"routed host, upper case", &tls.Config{ServerName: "APP.localhost", RootCAs: pool}, false},
			{"unknown host", &tls.Config{ServerName: "nope.localhost", InsecureSkipVerify: true}, true},
			{"no server name", &tls.Config{InsecureSkipVerify: true}, true},
			{"TLS 1.1", &tls.Config{ServerName: "app.localhost", RootCAs: pool, MaxVersion: tls.VersionTLS11}, true},
			{"h2 only", &tls.Config{ServerName: "app.localhost", RootCAs: pool, NextProtos: []string{"h2"}}, true},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", r.tlsAddr, tt.conf)
				if c != nil {
					defer c.Close()
				}
				if got, want := err != nil, tt.wantErr; got != want {
					t.Fatalf("handshake error: got %v, want an error: %v", err, want)
				}
			})
		}
	})

	t.Run("ALPN", func(t *testing.T) {
		c, err := tls.Dial("tcp", r.tlsAddr, &tls.Config{ServerName: "app.localhost", RootCAs: pool, NextProtos: []string{"h2", "http/1.1"}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if got, want := c.ConnectionState().NegotiatedProtocol, "http/1.1"; got != want {
			t.Errorf("negotiated protocol: got %q, want %q", got, want)
		}
	})

	t.Run("status and router.json", func(t *testing.T) {
		if got := r.status(t).TLSListen; got != r.tlsAddr || got == "" {
			t.Errorf("Status.TLSListen: got %q, want the HTTPS address", got)
		}
		info, err := ReadInfo(r.dir)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := info.TLSListen, r.tlsAddr; got != want {
			t.Errorf("router.json tls_listen: got %q, want %q", got, want)
		}
	})
}

// writeCertFiles signs a certificate for hosts with the CA in caDir and
// writes it (with the CA) and its key as PEM files.
func writeCertFiles(t *testing.T, caDir string, hosts ...string) (certFile, keyFile string) {
	t.Helper()
	cert, err := tlsca.Sign(caDir, hosts, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var certPEM []byte
	for _, der := range cert.Certificate {
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func TestHTTPSWithCertFiles(t *testing.T) {
	caDir, pool := newCA(t)
	certFile, keyFile := writeCertFiles(t, caDir, "*.example.test")
	// CADir is given too: the files win.
	r := startRouterConfig(t, Config{TLSListen: "127.0.0.1:0", TLSCert: certFile, TLSKey: keyFile, CADir: caDir})
	shop := newNamedBackend(t, "shop")
	r.push(t, Table{Version: 1, Routes: []Route{{Host: "shop.example.test", App: "shop", Backends: be(shop.addr())}}})
	client := httpsClient(r.tlsAddr, pool)
	tests := []struct {
		url        string
		wantStatus int
		wantBody   string
	}{
		{"https://shop.example.test/", 200, "shop"},
		{"https://other.example.test/", 404, `no app is routed at host "other.example.test"`}, // the certificate serves every host
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			resp, err := client.Get(tt.url)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if got, want := resp.StatusCode, tt.wantStatus; got != want {
				t.Errorf("status: got %d, want %d", got, want)
			}
			if !strings.Contains(string(body), tt.wantBody) {
				t.Errorf("body: got %q, want it to contain %q", body, tt.wantBody)
			}
			if got, want := fmt.Sprint(resp.TLS.PeerCertificates[0].DNSNames), "[*.example.test]"; got != want {
				t.Errorf("certificate names: got %s, want %s", got, want)
			}
		})
	}
}

func TestWebSocketOverTLS(t *testing.T) {
	caDir, pool := newCA(t)
	r := startRouterConfig(t, Config{TLSListen: "127.0.0.1:0", CADir: caDir})
	r.push(t, Table{Version: 1, Routes: []Route{{Host: "ws.localhost", App: "ws", Backends: be(newWSBackend(t))}}})
	c, err := tls.Dial("tcp", r.tlsAddr, &tls.Config{ServerName: "ws.localhost", RootCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	checkWebSocket(t, c, "ws.localhost")
}

func TestTLSConfigErrors(t *testing.T) {
	caDir, _ := newCA(t)
	certFile, keyFile := writeCertFiles(t, caDir, "a.test")
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"nothing to serve", Config{}, "needs TLSCert and TLSKey, or CADir"},
		{"cert without key", Config{TLSCert: certFile}, "TLSCert and TLSKey go together"},
		{"missing cert file", Config{TLSCert: certFile + ".nope", TLSKey: keyFile}, "load certificate"},
		{"folder without a CA", Config{CADir: t.TempDir()}, "load CA"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.Listen, cfg.TLSListen, cfg.StateDir = "127.0.0.1:0", "127.0.0.1:0", t.TempDir()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err := Run(ctx, cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Run: got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestCertSignerCacheAndRenewal(t *testing.T) {
	caDir, _ := newCA(t)
	clock := &fakeClock{t: time.Now()}
	var table atomic.Pointer[routes]
	table.Store(&routes{byHost: map[string]*route{"app.localhost": {}}})
	tc, err := tlsConfig(Config{CADir: caDir, Now: clock.Now}, &table)
	if err != nil {
		t.Fatal(err)
	}
	get := func(name string) (*tls.Certificate, error) {
		return tc.GetCertificate(&tls.ClientHelloInfo{ServerName: name})
	}

	first, err := get("app.localhost")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fmt.Sprint(first.Leaf.DNSNames), "[app.localhost]"; got != want {
		t.Errorf("names: got %s, want %s", got, want)
	}
	steps := []struct {
		name    string
		advance func()
		wantNew bool
	}{
		{"cached", func() {}, false},
		{"31 days before expiry", func() { clock.Set(first.Leaf.NotAfter.Add(-31 * 24 * time.Hour)) }, false},
		{"29 days before expiry", func() { clock.Set(first.Leaf.NotAfter.Add(-29 * 24 * time.Hour)) }, true},
	}
	for _, st := range steps {
		st.advance()
		got, err := get("App.Localhost.")
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if isNew := got != first; isNew != st.wantNew {
			t.Errorf("%s: new certificate: got %v, want %v", st.name, isNew, st.wantNew)
		}
		if st.wantNew && !got.Leaf.NotAfter.After(first.Leaf.NotAfter) {
			t.Errorf("%s: renewed certificate expires %v, want after %v", st.name, got.Leaf.NotAfter, first.Leaf.NotAfter)
		}
	}

	for _, name := range []string{"", "other.localhost", "*.localhost"} {
		if _, err := get(name); !errors.Is(err, errNoRoute) {
			t.Errorf("server name %q: got %v, want %v", name, err, errNoRoute)
		}
	}
}
