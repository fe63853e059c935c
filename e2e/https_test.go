package e2e

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"paddock.dev/paddock/internal/router"
	"paddock.dev/paddock/internal/testenv"
	"paddock.dev/paddock/internal/tlsca"
)

// TestAppsOverHTTPS serves an app through the router's TLS listener with a
// certificate from the platform CA, which a client trusting only that CA
// accepts.
func TestAppsOverHTTPS(t *testing.T) {
	p := testenv.Start(t, "--https", "127.0.0.1:0")
	info, err := router.ReadInfo(filepath.Join(p.Data, "router"))
	if err != nil || info.TLSListen == "" {
		t.Fatalf("router info: %+v %v, want an HTTPS address", info, err)
	}
	p.MustRun("apps", "create", "hello")
	p.MustRun("deploy", exampleDir(t))
	pool, err := tlsca.Pool([]byte(p.CA))
	if err != nil {
		t.Fatal(err)
	}
	// Every name is dialled at the router's address: no resolver is asked.
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool},
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", info.TLSListen)
		},
	}}
	_, port, _ := net.SplitHostPort(info.TLSListen)
	testenv.Eventually(t, 30*time.Second, func() error {
		resp, err := client.Get("https://hello.localhost:" + port + "/")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || !strings.Contains(string(b), "hello from") {
			return &httpError{resp.StatusCode, string(b)}
		}
		return nil
	})
	if _, err := client.Get("https://unknown.localhost:" + port + "/"); err == nil {
		t.Errorf("an unrouted name got a certificate")
	}
}

type httpError struct {
	code int
	body string
}

func (e *httpError) Error() string { return http.StatusText(e.code) + ": " + e.body }
