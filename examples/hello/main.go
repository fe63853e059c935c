// Command hello is Paddock's example app: a web process that greets, and a
// worker that logs a heartbeat. It reads $PORT and $GREETING, answers health
// checks at /healthz, and finishes in-flight requests when told to stop.
package main

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if len(os.Args) > 1 && os.Args[1] == "worker" {
		worker(ctx)
		return
	}
	web(ctx)
}

func web(ctx context.Context) {
	greeting := os.Getenv("GREETING")
	if greeting == "" {
		greeting = "hello"
	}
	instance := os.Getenv("PADDOCK_INSTANCE")
	release := os.Getenv("PADDOCK_RELEASE")
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s from %s (%s)\n", greeting, instance, release)
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	srv := &http.Server{Addr: ":" + os.Getenv("PORT"), Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		log.Print("stopping: finishing in-flight requests")
		shutdown, cancel := context.WithTimeout(context.Background(), 8*time.Second)
		defer cancel()
		srv.Shutdown(shutdown)
	}()
	log.Printf("listening on :%s", os.Getenv("PORT"))
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		log.Fatal(err)
	}
}

func worker(ctx context.Context) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		log.Print("worker: still here")
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
