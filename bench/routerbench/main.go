// Command routerbench runs the Paddock router for bench/router.sh: it starts
// router.Run on a free loopback port, pushes a table that sends
// bench.localhost to the given backend, and writes the router's address to
// a file. "routerbench freeport N" prints N free loopback ports instead.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"paddock.dev/paddock/internal/router"
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
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "routerbench:", err)
		os.Exit(1)
	}
}

func run() error {
	backend := flag.String("backend", "", "backend address host:port (required)")
	stateDir := flag.String("state", "", "router state folder (required)")
	addrFile := flag.String("addr-file", "", "write the router's listen address to this file")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the router to this file")
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
	go func() { errc <- router.Run(ctx, router.Config{Listen: "127.0.0.1:0", StateDir: *stateDir}) }()

	c := &router.Client{StateDir: *stateDir}
	deadline := time.Now().Add(10 * time.Second)
	for {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		err := c.Push(pctx, router.Table{Version: 1, Routes: []router.Route{{Host: "bench.localhost", App: "bench", Backends: []string{*backend}}}})
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
	if *addrFile != "" {
		if err := os.WriteFile(*addrFile, []byte(st.Listen), 0o644); err != nil {
			return err
		}
	}
	return <-errc
}
