// Command kube-scheduler is the Kubernetes scheduler, built from the Go
// module proxy so that Paddock's Kubernetes tests have pods bound to nodes,
// with their affinity honoured, by the real scheduler. Its main is the
// upstream cmd/kube-scheduler main.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // JSON log format
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric
	"k8s.io/kubernetes/cmd/kube-scheduler/app"
)

func main() {
	os.Exit(cli.Run(app.NewSchedulerCommand()))
}
