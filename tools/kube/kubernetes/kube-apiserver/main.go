// Command kube-apiserver is the Kubernetes API server, built from the Go module
// proxy so that Paddock's Kubernetes tests run against a real API server
// without installing anything. It lives in a module of its own so that the
// main module never depends on k8s.io/kubernetes. Its main is the upstream
// cmd/kube-apiserver main.
package main

import (
	"os"
	_ "time/tzdata" // for time zone support in CronJob

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // JSON log format
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}
