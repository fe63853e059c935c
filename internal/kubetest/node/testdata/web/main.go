// Command web is the app the node package's tests run in pods: an HTTP
// server on $PORT that answers with its environment and files.
package main

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
)

func main() {
	port := os.Getenv("PORT")
	host := os.Getenv("HOSTNAME")
	mux := http.NewServeMux()
	mux.HandleFunc("/{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s from %s\n", os.Getenv("MESSAGE"), host)
	})
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/env", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, os.Getenv(r.URL.Query().Get("name")))
	})
	// /secret?key=K reads $SECRETS_DIR/K.
	mux.HandleFunc("/secret", func(w http.ResponseWriter, r *http.Request) {
		b, err := os.ReadFile(filepath.Join(os.Getenv("SECRETS_DIR"), r.URL.Query().Get("key")))
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		w.Write(b)
	})
	// /spawn starts a long sleep in the app's process group and answers
	// its pid.
	mux.HandleFunc("/spawn", func(w http.ResponseWriter, r *http.Request) {
		cmd := exec.Command("sleep", "1000")
		if err := cmd.Start(); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		go cmd.Wait()
		fmt.Fprint(w, strconv.Itoa(cmd.Process.Pid))
	})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/health" {
			fmt.Printf("%s %s\n", r.Method, r.URL.Path)
		}
		mux.ServeHTTP(w, r)
	})
	fmt.Printf("listening on :%s\n", port)
	if err := http.ListenAndServe(":"+port, h); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
