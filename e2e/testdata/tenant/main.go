// Command tenant is an app for the end-to-end tests, honest or hostile:
//
//	tenant serve        answer every request with $NAME on $PORT; exit 1 if the port is taken
//	tenant squat [ADDR:]PORT   bind it (127.0.0.1 by default) as soon as it can, and answer STOLEN there
//	tenant get ADDR HOST   GET / from ADDR with Host HOST, directly, and print "get ADDR: " and the body or the error
package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
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
		http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
