// Command tenant is an app for the end-to-end tests, honest or hostile:
//
//	tenant serve        answer every request with $NAME on $PORT; exit 1 if the port is taken
//	tenant squat [ADDR:]PORT   bind it (127.0.0.1 by default) as soon as it can, and answer STOLEN there
//	tenant get ADDR HOST   GET / from ADDR with Host HOST, directly, and print "get ADDR: " and the body or the error
//	tenant leak NAME...    print every secret named (an environment variable, else a file in $PADDOCK_SECRETS_DIR) in every encoding, some split across two writes, then serve on $PORT
package main

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: tenant serve | tenant squat PORT")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "serve":
		serve("127.0.0.1:"+os.Getenv("PORT"), os.Getenv("NAME"), false)
	case "squat":
		addr := os.Args[2]
		if !strings.Contains(addr, ":") {
			addr = "127.0.0.1:" + addr
		}
		serve(addr, "STOLEN", true)
	case "leak":
		leak(os.Args[2:])
		serve("127.0.0.1:"+os.Getenv("PORT"), "leaked", false)
	case "get":
		get(os.Args[2], os.Args[3])
		os.Exit(0)
	}
	os.Exit(2)
}

func serve(addr, body string, retry bool) {
	var said string
	for {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			if !retry {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			if err.Error() != said {
				said = err.Error()
				fmt.Fprintln(os.Stderr, said)
			}
			time.Sleep(2 * time.Millisecond)
			continue
		}
		fmt.Println("listening on", addr)
		// SICK_AFTER=3s: /healthz answers 503 from then on.
		sickAfter, _ := time.ParseDuration(os.Getenv("SICK_AFTER"))
		start := time.Now()
		http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/healthz" && sickAfter > 0 && time.Since(start) > sickAfter {
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			fmt.Fprint(w, body)
		}))
	}
}

func get(addr, host string) {
	req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
	req.Host = host
	req.Header.Set("X-Forwarded-For", "10.9.8.7")
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		fmt.Printf("get %s: %v\n", addr, err)
		return
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	fmt.Printf("get %s: %s\n", addr, b)
}

// leak prints secrets as a careless or hostile app would.
func leak(names []string) {
	for _, name := range names {
		v, ok := os.LookupEnv(name)
		if !ok {
			b, err := os.ReadFile(filepath.Join(os.Getenv("PADDOCK_SECRETS_DIR"), name))
			if err != nil {
				fmt.Println("no secret", name, err)
				continue
			}
			v = string(b)
		}
		for _, form := range []string{v, base64.StdEncoding.EncodeToString([]byte(v)), base64.RawStdEncoding.EncodeToString([]byte(v)),
			base64.URLEncoding.EncodeToString([]byte(v)), base64.RawURLEncoding.EncodeToString([]byte(v)),
			hex.EncodeToString([]byte(v)), strings.ToUpper(hex.EncodeToString([]byte(v))), url.QueryEscape(v), url.PathEscape(v)} {
			fmt.Printf("%s is %s\n", name, form)
			fmt.Fprintf(os.Stderr, "%s on stderr: %s\n", name, form)
			// The same, split across two writes.
			half := len(form) / 2
			os.Stdout.WriteString(name + " split: " + form[:half])
			time.Sleep(20 * time.Millisecond)
			os.Stdout.WriteString(form[half:] + "\n")
		}
	}
}
