package e2e

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"paddock.dev/paddock/internal/router"
	"paddock.dev/paddock/internal/testenv"
	"paddock.dev/paddock/internal/tlsca"
)

// TestAppsOverHTTPS serves an app through the router's TLS listener with a
// certificate from the apps' CA, which a client trusting only that CA
// accepts, and which the CA the CLI pins for the API does not vouch for.
func TestAppsOverHTTPS(t *testing.T) {
	p := testenv.Start(t, "--https", "127.0.0.1:0")
	info, err := router.ReadInfo(filepath.Join(p.Data, "router"))
	if err != nil || info.TLSListen == "" {
		t.Fatalf("router info: %+v %v, want an HTTPS address", info, err)
	}
	p.MustRun("apps", "create", "hello")
	p.MustRun("config", "set", "hello", "NAME=hello over tls")
	p.MustRun("deploy", tenantApp(t, "[processes.web]\ncommand = \"./tenant serve\"\n"), "--app", "hello")
	appsCA, err := os.ReadFile(filepath.Join(p.Data, "router-ca", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	client := func(caPEM []byte) *http.Client {
		pool, err := tlsca.Pool(caPEM)
		if err != nil {
			t.Fatal(err)
		}
		// Every name is dialled at the router's address: no resolver is asked.
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool},
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "tcp", info.TLSListen)
			},
		}}
	}
	_, port, _ := net.SplitHostPort(info.TLSListen)
	testenv.Eventually(t, 30*time.Second, func() error {
		resp, err := client(appsCA).Get("https://hello.localhost:" + port + "/")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(b) != "hello over tls" {
			return &httpError{resp.StatusCode, string(b)}
		}
		return nil
	})
	if _, err := client(appsCA).Get("https://unknown.localhost:" + port + "/"); err == nil {
		t.Errorf("an unrouted name got a certificate")
	}
	if _, err := client([]byte(p.CA)).Get("https://hello.localhost:" + port + "/"); err == nil {
		t.Errorf("an app's certificate is signed by the CA the CLI pins for the API")
	}

	// No app may route the API's names or the machine's.
	host, _ := os.Hostname()
	for _, d := range []string{"localhost", "127.0.0.1", "127.1", "0x7f000001", "api.localhost", "::1", host} {
		if _, _, err := p.Run("domains", "add", "hello", d); err == nil {
			t.Errorf("domains add hello %s: accepted", d)
		}
	}
	p.MustRun("domains", "add", "hello", "shop.example.com")
}

type httpError struct {
	code int
	body string
}

func (e *httpError) Error() string { return http.StatusText(e.code) + ": " + e.body }
