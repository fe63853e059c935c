// Command etcd is the etcd server, built from the Go module proxy so that
// Paddock's Kubernetes tests run against a real etcd without installing
// anything. It lives in a module of its own so that the main module never
// depends on the etcd server.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
