package bench

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"paddock.dev/paddock/internal/api"
	"paddock.dev/paddock/internal/kube"
	"paddock.dev/paddock/internal/kubetest"
	"paddock.dev/paddock/internal/kubetest/node"
	"paddock.dev/paddock/internal/manifest"
	"paddock.dev/paddock/internal/testenv"
)

// countingTransport counts the requests a client sends.
type countingTransport struct {
	next http.RoundTripper
	n    *atomic.Int64
}

func (t countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	t.n.Add(1)
	return t.next.RoundTrip(r)
}

// BenchmarkKubeApply1000Apps applies 1,000 apps of 3 process types each
// (web, worker, clock; one pod each) to a real API server, etcd,
// kube-controller-manager and kube-scheduler, as the reconciler would on
// its first pass after a start, from 8 goroutines. It reports the total
// time, the API requests per app (applies, collection lists and the
// informers' lists and watches), and the heap the informers hold once they
// have seen every Deployment, ReplicaSet and Pod. With no node, the pods
// stay Pending. Run it once:
//
//	go test -run '^$' -bench KubeApply -benchtime 1x -timeout 30m ./bench/
func BenchmarkKubeApply1000Apps(b *testing.B) {
	const apps, workers = 1000, 8
	c := kubetest.Start(b)
	var calls atomic.Int64
	cfg := c.Config()
	cfg.QPS, cfg.Burst = 1000, 2000
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { return countingTransport{rt, &calls} }
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		b.Fatal(err)
	}
	ctx := b.Context()
	m := &manifest.Manifest{Processes: map[string]manifest.Process{
		"web":    {Command: "./bin/web", Instances: 1, Health: manifest.Health{Path: "/healthz"}},
		"worker": {Command: "./bin/worker", Instances: 1},
		"clock":  {Command: "./bin/clock", Instances: 1},
	}}
	for i := 0; i < b.N; i++ {
		r := kube.New(kube.Config{Client: cs, NamespacePrefix: fmt.Sprintf("b%d-", i)})
		if err := r.Resume(ctx); err != nil {
			b.Fatal(err)
		}
		goruntime.GC()
		var before goruntime.MemStats
		goruntime.ReadMemStats(&before)
		calls.Store(0)

		start := time.Now()
		next := make(chan int)
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n := range next {
					a := &kube.App{
						Name: fmt.Sprintf("app%04d", n), ID: int64(n + 1), Release: 1,
						Image:     "127.0.0.1:5000/paddock/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
						Processes: kube.FromManifest(m, nil),
						Config:    map[string]string{"GREETING": "hello"},
					}
					if err := r.Apply(ctx, a); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		for n := range apps {
			select {
			case next <- n:
			case err := <-errs:
				b.Fatal(err)
			}
		}
		close(next)
		wg.Wait()
		elapsed := time.Since(start)
		applyCalls := calls.Load()

		// The informers have seen the cluster settle once every app's 3
		// pods are in their caches.
		deadline := time.Now().Add(10 * time.Minute)
		for {
			insts, _ := r.List(ctx)
			if len(insts) >= 3*apps {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("informers hold %d pods after 10 minutes, want %d", len(insts), 3*apps)
			}
			time.Sleep(time.Second)
		}
		settled := time.Since(start)
		goruntime.GC()
		var after goruntime.MemStats
		goruntime.ReadMemStats(&after)
		b.ReportMetric(elapsed.Seconds(), "s-apply")
		b.ReportMetric(settled.Seconds(), "s-pods-seen")
		b.ReportMetric(float64(applyCalls)/apps, "calls/app")
		b.ReportMetric(float64(after.HeapInuse-before.HeapInuse)/(1<<20), "MiB-informers")
		b.Logf("%d apps × 3 process types applied in %s (%d API requests, %.1f per app); every pod seen after %s; heap %+.1f MiB",
			apps, elapsed.Round(time.Millisecond), applyCalls, float64(applyCalls)/apps, settled.Round(time.Second),
			float64(after.HeapInuse-before.HeapInuse)/(1<<20))
		r.Close()
	}
}

// BenchmarkKubeDeployImage times a deploy of an image already in the
// registry to a new app on Kubernetes, from the API call to the first 200
// through Paddock's router from a ready pod: apply, the Deployment and
// ReplicaSet controllers, the scheduler, the node's pull and start, the
// readiness probe, the EndpointSlice, the router's table. A real control
// plane, a virtual-kubelet node running pods as local processes and a
// registry on loopback. Run it as root (the node adds a local route):
//
//	go test -run '^$' -bench KubeDeployImage -benchtime 10x ./bench/
func BenchmarkKubeDeployImage(b *testing.B) {
	c := kubetest.Start(b)
	node.Start(b, c, node.Options{})
	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	b.Cleanup(reg.Close)
	p := testenv.Start(b, "--runtime", "kubernetes", "--kubeconfig", c.Kubeconfig,
		"--registry", strings.TrimPrefix(reg.URL, "http://")+"/paddock", "--registry-insecure")
	ctx := context.Background()
	cl := p.Client()
	dir := prebuilt(b, 1)
	if _, err := cl.CreateApp(ctx, "source", nil); err != nil {
		b.Fatal(err)
	}
	deploy(b, p, "source", dir)
	cs, err := kubernetes.NewForConfig(c.Config())
	if err != nil {
		b.Fatal(err)
	}
	web, err := cs.AppsV1().Deployments("paddock-source").Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		b.Fatal(err)
	}
	ref := web.Spec.Template.Spec.Containers[0].Image
	manifest, err := os.ReadFile(filepath.Join(dir, "paddock.toml"))
	if err != nil {
		b.Fatal(err)
	}
	took := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		app := fmt.Sprintf("img%d", i)
		if _, err := cl.CreateApp(ctx, app, nil); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		if _, err := cl.DeployImage(ctx, app, ref, manifest, func(api.DeployEvent) {}); err != nil {
			b.Fatal(err)
		}
		for {
			if code, _, err := p.Get(app+".localhost", "/"); err == nil && code == 200 {
				break
			}
			time.Sleep(time.Millisecond)
		}
		took = append(took, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Milliseconds()), "ms-p50")
	b.ReportMetric(float64(took[len(took)-1].Milliseconds()), "ms-max")
}
