package tlsca

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestEnsure(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	ca, err := Ensure(dir, []string{"127.0.0.1", "localhost"}, now)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := Pool(ca.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	leaf := ca.Server.Leaf
	for _, host := range []string{"127.0.0.1", "localhost"} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: host}); err != nil {
			t.Errorf("server certificate for %s: %v", host, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "evil.example"}); err == nil {
		t.Errorf("server certificate valid for a host it was not made for")
	}
	for _, name := range []string{"ca.key", "server.key"} {
		if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v (%v), want 0600", name, fi.Mode().Perm(), err)
		}
	}

	again, err := Ensure(dir, []string{"127.0.0.1"}, now)
	if err != nil {
		t.Fatal(err)
	}
	if again.Fingerprint() != ca.Fingerprint() || !again.Server.Leaf.Equal(leaf) {
		t.Errorf("a second start made a new CA or certificate for hosts already covered")
	}
	more, err := Ensure(dir, []string{"127.0.0.1", "10.0.0.5"}, now)
	if err != nil {
		t.Fatal(err)
	}
	if more.Fingerprint() != ca.Fingerprint() || more.Server.Leaf.Equal(leaf) {
		t.Errorf("a new host: want a new server certificate from the same CA")
	}
	late, err := Ensure(dir, []string{"127.0.0.1", "10.0.0.5"}, now.Add(380*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if late.Server.Leaf.Equal(more.Server.Leaf) {
		t.Errorf("a certificate within 30 days of expiry was not renewed")
	}

	cert, err := Sign(dir, []string{"shop.localhost"}, now)
	if err != nil {
		t.Fatal(err)
	}
	appLeaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := appLeaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "shop.localhost"}); err != nil {
		t.Errorf("app certificate: %v", err)
	}
}
