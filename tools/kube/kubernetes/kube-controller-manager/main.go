// Command kube-controller-manager is the Kubernetes controller manager, built
// from the Go module proxy so that Paddock's Kubernetes tests see Deployments
// become ReplicaSets and Pods, and Services get EndpointSlices. Its main is
// the upstream cmd/kube-controller-manager main.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // JSON log format
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric
	"k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

func main() {
	os.Exit(cli.Run(app.NewControllerManagerCommand()))
}
