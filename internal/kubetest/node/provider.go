package node

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"sync"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/errdefs"
	vknode "github.com/virtual-kubelet/virtual-kubelet/node"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
)

// provider is the node's virtual-kubelet provider: it runs pods as local
// processes and reports their status through NotifyPods.
type provider struct {
	cfg    providerConfig
	images *imageStore
	ips    *ipPool

	mu     sync.Mutex
	pods   map[string]*pod // by namespace/name
	notify func(*corev1.Pod)
	closed bool
	wg     sync.WaitGroup // one per pod, until it is gone
}

var (
	_ vknode.PodLifecycleHandler = (*provider)(nil)
	_ vknode.PodNotifier         = (*provider)(nil)
)

type providerConfig struct {
	nodeName string
	dir      string
	client   kubernetes.Interface
	log      *slog.Logger
	backoff  backoff
	csi      map[string]string // CSI plugins' endpoints by driver name
}

// backoff is the restart policy's timing.
type backoff struct {
	initial, max, reset time.Duration
}

func newProvider(cfg providerConfig) *provider {
	return &provider{
		cfg:    cfg,
		images: newImageStore(filepath.Join(cfg.dir, "images")),
		ips:    newIPPool(),
		pods:   make(map[string]*pod),
	}
}

func podKey(namespace, name string) string { return namespace + "/" + name }

// NotifyPods registers the callback that receives every status change.
func (p *provider) NotifyPods(_ context.Context, f func(*corev1.Pod)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.notify = f
}

func (p *provider) send(pod *corev1.Pod) {
	p.mu.Lock()
	f := p.notify
	p.mu.Unlock()
	if f != nil {
		f(pod)
	}
}

// CreatePod gives the pod an address, binds its ports and starts its
// containers in the background; their progress arrives through NotifyPods.
func (p *provider) CreatePod(_ context.Context, spec *corev1.Pod) error {
	key := podKey(spec.Namespace, spec.Name)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errdefs.InvalidInput("node is stopping")
	}
	if _, ok := p.pods[key]; ok {
		return nil
	}
	pd, err := newPod(p, spec.DeepCopy())
	if err != nil {
		p.cfg.log.Error("create pod", "pod", key, "err", err)
		return fmt.Errorf("create pod %s: %w", key, err)
	}
	p.pods[key] = pd
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		pd.run()
		p.mu.Lock()
		if p.pods[key] == pd {
			delete(p.pods, key)
		}
		p.mu.Unlock()
	}()
	return nil
}

// UpdatePod takes the pod's new labels and annotations; the rest of a
// running pod does not change here.
func (p *provider) UpdatePod(_ context.Context, spec *corev1.Pod) error {
	pd := p.get(spec.Namespace, spec.Name)
	if pd == nil {
		return errdefs.NotFoundf("pod %s/%s", spec.Namespace, spec.Name)
	}
	pd.update(spec)
	return nil
}

// DeletePod starts stopping the pod: SIGTERM to each container's process
// group, SIGKILL after the grace period. It returns at once; the terminal
// status arrives through NotifyPods.
func (p *provider) DeletePod(_ context.Context, spec *corev1.Pod) error {
	pd := p.get(spec.Namespace, spec.Name)
	if pd == nil || pd.uid != spec.UID {
		return errdefs.NotFoundf("pod %s/%s", spec.Namespace, spec.Name)
	}
	pd.stop(gracePeriod(spec))
	return nil
}

func gracePeriod(spec *corev1.Pod) time.Duration {
	switch {
	case spec.DeletionGracePeriodSeconds != nil:
		return time.Duration(*spec.DeletionGracePeriodSeconds) * time.Second
	case spec.Spec.TerminationGracePeriodSeconds != nil:
		return time.Duration(*spec.Spec.TerminationGracePeriodSeconds) * time.Second
	}
	return 30 * time.Second
}

func (p *provider) get(namespace, name string) *pod {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pods[podKey(namespace, name)]
}

// GetPod returns the pod as created, with its current status.
func (p *provider) GetPod(_ context.Context, namespace, name string) (*corev1.Pod, error) {
	pd := p.get(namespace, name)
	if pd == nil {
		return nil, errdefs.NotFoundf("pod %s/%s", namespace, name)
	}
	return pd.snapshot(), nil
}

// GetPodStatus returns the pod's current status.
func (p *provider) GetPodStatus(ctx context.Context, namespace, name string) (*corev1.PodStatus, error) {
	pod, err := p.GetPod(ctx, namespace, name)
	if err != nil {
		return nil, err
	}
	return &pod.Status, nil
}

// GetPods returns every pod the node runs.
func (p *provider) GetPods(context.Context) ([]*corev1.Pod, error) {
	p.mu.Lock()
	pods := make([]*pod, 0, len(p.pods))
	for _, pd := range p.pods {
		pods = append(pods, pd)
	}
	p.mu.Unlock()
	out := make([]*corev1.Pod, 0, len(pods))
	for _, pd := range pods {
		out = append(out, pd.snapshot())
	}
	return out, nil
}

// close kills every pod's processes at once and waits until they are gone.
func (p *provider) close() {
	p.mu.Lock()
	p.closed = true
	pods := make([]*pod, 0, len(p.pods))
	for _, pd := range p.pods {
		pods = append(pods, pd)
	}
	p.mu.Unlock()
	for _, pd := range pods {
		pd.stop(0)
	}
	p.wg.Wait()
}

// allocate picks a pod IP on which every port binds, and returns the bound
// proxies, each forwarding to target.
func (p *provider) allocate(ports []int, target map[int]int) (netip.Addr, []*proxy, error) {
	var lastErr error
	for range ipAttempts {
		ip := p.ips.next()
		var proxies []*proxy
		ok := true
		for _, port := range ports {
			px, err := listenProxy(ip, port, target[port], p.cfg.log)
			if err != nil {
				for _, px := range proxies {
					px.close()
				}
				p.ips.release(ip)
				if !isAddrInUse(err) {
					return netip.Addr{}, nil, fmt.Errorf("listen on %s:%d: %w", ip, port, err)
				}
				lastErr = err
				ok = false
				break
			}
			proxies = append(proxies, px)
		}
		if ok {
			return ip, proxies, nil
		}
	}
	return netip.Addr{}, nil, fmt.Errorf("no free pod address after %d tries: %w", ipAttempts, lastErr)
}
