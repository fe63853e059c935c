// Command tenant is an app for the end-to-end tests, honest or hostile:
//
//	tenant serve        answer every request with $NAME on $PORT; exit 1 if the port is taken
//	tenant squat PORT   bind PORT as soon as it is free, and answer STOLEN there
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
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
		serve("127.0.0.1:"+os.Args[2], "STOLEN", true)
	}
	os.Exit(2)
}

func serve(addr, body string, retry bool) {
	for {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			if !retry {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
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
