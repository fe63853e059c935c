package router

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// This file serves app domains over TLS: the tls.Config of the HTTPS
// listener and, without certificate files, the certificates the platform
// CA signs for the hosts in the table.

// renewBefore is how long before its expiry a signed certificate is
// replaced (as tlsca renews the API server's), and leafLifetime how long
// one is valid.
const (
	renewBefore  = 30 * 24 * time.Hour
	leafLifetime = 397 * 24 * time.Hour
)

// errNoRoute is the handshake error for a server name the table does not
// route (or none): the router signs certificates only for its app hosts.
var errNoRoute = errors.New("no app is routed at this server name")

// tlsConfig returns the configuration of the HTTPS listener: HTTP/1.1 over
// TLS 1.2 or later, with cfg's certificate files or, failing those,
// certificates signed by the CA in cfg.CADir for the hosts of table.
func tlsConfig(cfg Config, table *atomic.Pointer[routes]) (*tls.Config, error) {
	tc := &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1"},
	}
	switch {
	case cfg.TLSCert != "" || cfg.TLSKey != "":
		if cfg.TLSCert == "" || cfg.TLSKey == "" {
			return nil, errors.New("TLSCert and TLSKey go together")
		}
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("load certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	case cfg.CADir != "":
		// The CA must exist already: the router does not make one (two
		// processes making it at once could leave a mismatched pair). It
		// is loaded once, here: the router may not be able to read it
		// after it drops root.
		ca, err := tls.LoadX509KeyPair(filepath.Join(cfg.CADir, "ca.crt"), filepath.Join(cfg.CADir, "ca.key"))
		if err != nil {
			return nil, fmt.Errorf("load CA: %w", err)
		}
		if ca.Leaf == nil {
			if ca.Leaf, err = x509.ParseCertificate(ca.Certificate[0]); err != nil {
				return nil, fmt.Errorf("load CA: %w", err)
			}
		}
		key, ok := ca.PrivateKey.(crypto.Signer)
		if !ok {
			return nil, errors.New("load CA: the key cannot sign")
		}
		cs := &certSigner{caCert: ca.Leaf, caKey: key, now: cfg.Now, table: table, cache: make(map[string]*tls.Certificate)}
		tc.GetCertificate = cs.getCertificate
	default:
		return nil, errors.New("TLSListen needs TLSCert and TLSKey, or CADir")
	}
	return tc, nil
}

// certSigner hands out a certificate per routed host, signed by the
// platform CA on first use and kept in memory until 30 days before it
// expires.
type certSigner struct {
	caCert *x509.Certificate
	caKey  crypto.Signer
	now    func() time.Time
	table  *atomic.Pointer[routes]

	mu    sync.Mutex // held while signing, so a host is signed once
	cache map[string]*tls.Certificate
}

func (s *certSigner) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	name := strings.TrimSuffix(strings.ToLower(hello.ServerName), ".")
	rs := s.table.Load()
	if name == "" || rs.byHost[name] == nil {
		return nil, fmt.Errorf("%w: %q", errNoRoute, name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if c := s.cache[name]; c != nil && now.Add(renewBefore).Before(c.Leaf.NotAfter) {
		return c, nil
	}
	cert, err := s.sign(name, now)
	if err != nil {
		return nil, fmt.Errorf("sign a certificate for %s: %w", name, err)
	}
	if len(s.cache) >= len(rs.byHost)+16 {
		// Forget the hosts the table no longer routes.
		for h := range s.cache {
			if rs.byHost[h] == nil {
				delete(s.cache, h)
			}
		}
	}
	s.cache[name] = &cert
	return &cert, nil
}

// sign makes an ECDSA P-256 certificate for name, valid for 397 days
// (the longest that browsers accept, as tlsca's), signed by the CA.
func (s *certSigner) sign(name string, now time.Time) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(leafLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, s.caCert, &key.PublicKey, s.caKey)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der, s.caCert.Raw}, PrivateKey: key, Leaf: leaf}, nil
}
