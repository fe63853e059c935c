// Command routerbench runs the Paddock router for bench/router.sh: it starts
// router.Run on a free loopback port, pushes a table that sends
// bench.localhost (and localhost, the name HTTPS clients connect to) to the
// given backend, and writes the router's address to a file; with -ca-dir,
// it serves HTTPS too, with certificates from that CA, and writes that
// address to -tls-addr-file.
//
// "routerbench freeport N" prints N free loopback ports instead;
// "routerbench cert CADIR OUTDIR HOST..." makes the CA in CADIR if there is
// none and writes OUTDIR/cert.pem (with the CA) and OUTDIR/key.pem, a
// certificate it signs for the hosts (for nginx).
package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"syscall"
	"time"

	"paddock.dev/paddock/internal/router"
	"paddock.dev/paddock/internal/tlsca"
)

func main() {
	if len(os.Args) == 3 && os.Args[1] == "freeport" {
		var n int
		fmt.Sscan(os.Args[2], &n)
		var lns []net.Listener
		for i := 0; i < n; i++ {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			lns = append(lns, ln)
			fmt.Println(ln.Addr().(*net.TCPAddr).Port)
		}
		for _, ln := range lns {
			ln.Close()
		}
		return
	}
	if len(os.Args) >= 5 && os.Args[1] == "cert" {
		if err := writeCert(os.Args[2], os.Args[3], os.Args[4:]); err != nil {
			fmt.Fprintln(os.Stderr, "routerbench cert:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "routerbench:", err)
		os.Exit(1)
	}
}

func run() error {
	backend := flag.String("backend", "", "backend address host:port (required)")
	backendUID := flag.Int("backend-uid", os.Geteuid(), "the user that runs the backend (the router checks it owns the listener)")
	stateDir := flag.String("state", "", "router state folder (required)")
	addrFile := flag.String("addr-file", "", "write the router's listen address to this file")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the router to this file")
	caDir := flag.String("ca-dir", "", "serve HTTPS on a free loopback port with certificates from the CA in this folder")
	tlsAddrFile := flag.String("tls-addr-file", "", "write the router's HTTPS address to this file")
	flag.Parse()
	if *backend == "" || *stateDir == "" {
		return fmt.Errorf("-backend and -state are required")
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	cfg := router.Config{Listen: "127.0.0.1:0", StateDir: *stateDir}
	if *caDir != "" {
		cfg.TLSListen, cfg.CADir = "127.0.0.1:0", *caDir
	}
	go func() { errc <- router.Run(ctx, cfg) }()

	c := &router.Client{StateDir: *stateDir}
	deadline := time.Now().Add(10 * time.Second)
	for {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		err := c.Push(pctx, router.Table{Version: 1, Routes: []router.Route{
			{Host: "bench.localhost", App: "bench", Backends: []router.Backend{{Addr: *backend, UID: uint32(*backendUID)}}},
			{Host: "localhost", App: "bench", Backends: []router.Backend{{Addr: *backend, UID: uint32(*backendUID)}}},
		}})
		cancel()
		if err == nil {
			break
		}
		select {
		case err := <-errc:
			return err
		default:
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
	st, err := c.Status(ctx)
	if err != nil {
		return err
	}
	if *tlsAddrFile != "" {
		if err := os.WriteFile(*tlsAddrFile, []byte(st.TLSListen), 0o644); err != nil {
			return err
		}
	}
	if *addrFile != "" {
		if err := os.WriteFile(*addrFile, []byte(st.Listen), 0o644); err != nil {
			return err
		}
	}
	return <-errc
}

// writeCert signs a certificate for hosts with the CA in caDir (making the
// CA if there is none) and writes it with its key as PEM files in outDir.
func writeCert(caDir, outDir string, hosts []string) error {
	if err := os.MkdirAll(caDir, 0o700); err != nil {
		return err
	}
	cert, err := tlsca.Sign(caDir, hosts, time.Now())
	if err != nil {
		return err
	}
	var certPEM []byte
	for _, der := range cert.Certificate {
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(outDir, "cert.pem"), certPEM, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(outDir, "key.pem"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
}
