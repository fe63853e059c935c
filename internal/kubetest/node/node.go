// Package node adds real Kubernetes nodes to a kubetest cluster: each one
// registers with the API server through virtual-kubelet, and runs the pods
// the real scheduler binds to it as plain local processes, unpacked from the
// pods' OCI images, so that Deployments, Services and EndpointSlices behave
// as on a real cluster. Only tests import it.
//
// What a pod gets, and how it differs from a kubelet with a container
// runtime:
//
//   - Its image is pulled once per node and digest, flattened and unpacked
//     into a folder; the process runs on the host, not chrooted: its working
//     folder is that folder's workingDir, and a command's first word is taken
//     from the image if it exists there, else from the host (so /bin/sh is
//     the host's shell).
//   - Its IP is an address of its own in PodCIDR (198.18.0.0/15), which a
//     local route on the loopback interface makes local to this machine
//     (added by Start if missing; that needs root, see ensureLocalRoute):
//     packets to it never leave the machine. 127.0.0.0/8 will not do, as the
//     API server refuses loopback addresses in EndpointSlices. Its
//     processes get PORT set to a free port on 127.0.0.1, and the node
//     proxies TCP from podIP:containerPort to that port, for every declared
//     container port.
//   - Env values equal to or under a volume's mount path are rewritten to
//     the local folder holding that volume (secret files are 0400 in a 0700
//     folder, removed with the pod). Absolute paths elsewhere (in a command's
//     arguments, or read by the program) are not rewritten.
//   - Each container runs in its own process group; deleting a pod sends
//     SIGTERM to each group and SIGKILL after the grace period. A process
//     that starts a new session (setsid) leaves the group and is not killed.
//   - Persistent volumes of the CSI plugins in Options.CSI are published
//     by the plugin into the pod's folder (NodePublishVolume; no staging,
//     no attaching) and unpublished when the pod stops.
//   - Memory limits are reported in the container status, not enforced.
//   - Readiness and startup probes run every 100 ms (at most their period)
//     until their first success, so that pods become ready as soon as they
//     serve; after that, and for liveness probes, the spec's timing holds.
//   - Not supported: init and ephemeral containers, exec/attach/port-forward,
//     service links env, subPath mounts, log timestamps.
package node

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	vklog "github.com/virtual-kubelet/virtual-kubelet/log"
	vkslog "github.com/virtual-kubelet/virtual-kubelet/log/slog"
	vknode "github.com/virtual-kubelet/virtual-kubelet/node"
	"github.com/virtual-kubelet/virtual-kubelet/node/api"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"

	"paddock.dev/paddock/internal/kubetest"
)

// Options configures a node. The zero value is a node named "node-1".
type Options struct {
	// Name is the node's name; "" means "node-1". Names must differ between
	// the nodes of one cluster.
	Name string
	// Labels are added to the node's labels (kubernetes.io/hostname,
	// kubernetes.io/os=linux, kubernetes.io/arch, type=virtual-kubelet),
	// e.g. {"topology.kubernetes.io/region": "eu-west"}.
	Labels map[string]string
	// BackoffInitial is the wait before a container that exited is started
	// again, doubled after each exit up to BackoffMax; 0 means 100 ms.
	BackoffInitial time.Duration
	// BackoffMax caps the restart wait; 0 means 2 s.
	BackoffMax time.Duration
	// BackoffReset is how long a container must run for its next exit to
	// start the backoff again from BackoffInitial; 0 means 10 s.
	BackoffReset time.Duration
	// CSI is the endpoints (unix:///…) of CSI plugins on this machine, by
	// driver name: the node publishes persistent volumes of those drivers
	// into pods (kubetest's StartStorage gives one).
	CSI map[string]string
}

func (o Options) withDefaults() Options {
	if o.Name == "" {
		o.Name = "node-1"
	}
	if o.BackoffInitial <= 0 {
		o.BackoffInitial = 100 * time.Millisecond
	}
	if o.BackoffMax <= 0 {
		o.BackoffMax = 2 * time.Second
	}
	if o.BackoffMax < o.BackoffInitial {
		o.BackoffMax = o.BackoffInitial
	}
	if o.BackoffReset <= 0 {
		o.BackoffReset = 10 * time.Second
	}
	return o
}

// Capacity the node reports.
const (
	CapacityCPU    = "8"
	CapacityMemory = "16Gi"
	CapacityPods   = "110"
)

const (
	// readyTimeout bounds the wait for the node to be registered and Ready.
	readyTimeout = 30 * time.Second
	// podWorkers is how many pods virtual-kubelet syncs at once.
	podWorkers = 4
	// logTailBytes is how much of the node's own log a failed test shows.
	logTailBytes = 16 << 10
)

// Node is a running node. Start stops it when the test ends.
type Node struct {
	// Name is the node's name.
	Name string
	// Dir is the node's folder: image cache, pods' files and logs, and the
	// node's own log (node.log).
	Dir string
	// KubeletPort is the port of the node's kubelet API on 127.0.0.1, which
	// the API server uses for pod logs.
	KubeletPort int

	prov     *provider
	cancel   context.CancelFunc
	runDone  chan struct{}
	srv      *http.Server
	events   record.EventBroadcaster
	logFile  *os.File
	stopOnce sync.Once
}

// Start registers a node with c's API server and returns once the node is
// Ready there, without taints. It fails the test if it cannot. At the end of the test the
// node is stopped: every pod process group is killed and waited for. The
// Node object stays in the API (as after a node failure).
func Start(t testing.TB, c *kubetest.Cluster, o Options) *Node {
	t.Helper()
	o = o.withDefaults()
	n, err := start(t.Context(), c, o, t.TempDir())
	if err != nil {
		t.Fatalf("start node %s: %v", o.Name, err)
	}
	t.Cleanup(func() {
		n.Stop()
		if t.Failed() {
			t.Logf("--- node %s log (%s), last %d KiB:\n%s", n.Name, n.logFile.Name(), logTailBytes>>10, tail(n.logFile.Name(), logTailBytes))
		}
	})
	if err := n.waitReady(t.Context(), c); err != nil {
		t.Fatalf("start node %s: %v\n--- node log:\n%s", o.Name, err, tail(n.logFile.Name(), logTailBytes))
	}
	return n
}

func start(ctx context.Context, c *kubetest.Cluster, o Options, dir string) (_ *Node, err error) {
	if err := ensureLocalRoute(); err != nil {
		return nil, err
	}
	client, err := kubernetes.NewForConfig(c.Config())
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	logFile, err := os.OpenFile(filepath.Join(dir, "node.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	logger := slog.New(slog.NewTextHandler(logFile, &slog.HandlerOptions{Level: slog.LevelInfo})).With("node", o.Name)

	ln, cert, err := kubeletListener()
	if err != nil {
		logFile.Close()
		return nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port

	n := &Node{Name: o.Name, Dir: dir, KubeletPort: port, logFile: logFile, runDone: make(chan struct{})}
	n.prov = newProvider(providerConfig{
		nodeName: o.Name,
		dir:      dir,
		client:   client,
		log:      logger,
		backoff:  backoff{initial: o.BackoffInitial, max: o.BackoffMax, reset: o.BackoffReset},
		csi:      o.CSI,
	})
	defer func() {
		if err != nil {
			ln.Close()
			n.prov.close()
			logFile.Close()
		}
	}()

	spec := nodeObject(o, port)
	podInformers := informers.NewSharedInformerFactoryWithOptions(client, time.Minute,
		informers.WithTweakListOptions(func(lo *metav1.ListOptions) {
			lo.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", o.Name).String()
		}))
	otherInformers := informers.NewSharedInformerFactory(client, time.Minute)
	podInformer := podInformers.Core().V1().Pods()

	n.events = record.NewBroadcaster()
	n.events.StartRecordingToSink(&corev1client.EventSinkImpl{Interface: client.CoreV1().Events(corev1.NamespaceAll)})
	recorder := n.events.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "kubelet", Host: o.Name})

	pc, err := vknode.NewPodController(vknode.PodControllerConfig{
		PodClient:         client.CoreV1(),
		PodInformer:       podInformer,
		EventRecorder:     recorder,
		Provider:          n.prov,
		ConfigMapInformer: otherInformers.Core().V1().ConfigMaps(),
		SecretInformer:    otherInformers.Core().V1().Secrets(),
		ServiceInformer:   otherInformers.Core().V1().Services(),
		// The provider resolves env itself, so that a missing secret shows
		// as CreateContainerConfigError, as on a kubelet.
		SkipDownwardAPIResolution: true,
	})
	if err != nil {
		n.events.Shutdown()
		return nil, fmt.Errorf("pod controller: %w", err)
	}
	nc, err := vknode.NewNodeController(nodeProvider{}, spec, client.CoreV1().Nodes(),
		vknode.WithNodeEnableLeaseV1(client.CoordinationV1().Leases(corev1.NamespaceNodeLease), vknode.DefaultLeaseDuration))
	if err != nil {
		n.events.Shutdown()
		return nil, fmt.Errorf("node controller: %w", err)
	}

	n.srv = &http.Server{
		Handler: api.PodHandler(api.PodHandlerConfig{
			GetContainerLogs: n.prov.GetContainerLogs,
			GetPods:          n.prov.GetPods,
			GetPodsFromKubernetes: func(context.Context) ([]*corev1.Pod, error) {
				return podInformer.Lister().List(labels.Everything())
			},
		}, false),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	go n.srv.Serve(tls.NewListener(ln, n.srv.TLSConfig)) //nolint:errcheck // ends with Close in Stop

	// The controllers live until Stop, not until the caller's context: a
	// test's context ends before its cleanups run.
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	runCtx = vklog.WithLogger(runCtx, vkslog.FromSlog(logger))
	n.cancel = cancel
	go func() {
		defer close(n.runDone)
		podInformers.Start(runCtx.Done())
		otherInformers.Start(runCtx.Done())
		pcDone := make(chan struct{})
		go func() {
			defer close(pcDone)
			if err := pc.Run(runCtx, podWorkers); err != nil {
				logger.Error("pod controller stopped", "err", err)
			}
		}()
		select {
		case <-pc.Ready():
		case <-pcDone:
			return
		}
		if err := nc.Run(runCtx); err != nil {
			logger.Error("node controller stopped", "err", err)
		}
		<-pcDone
		podInformers.Shutdown()
		otherInformers.Shutdown()
	}()
	return n, nil
}

// waitReady waits until the node is in the API with its Ready condition
// true and no taints, so that pods schedule on it without tolerations.
func (n *Node) waitReady(ctx context.Context, c *kubetest.Cluster) error {
	client, err := kubernetes.NewForConfig(c.Config())
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	last := errors.New("not registered yet")
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("not ready after %s: %w", readyTimeout, last)
		case <-n.runDone:
			return errors.New("controllers stopped before the node was ready")
		case <-tick.C:
		}
		obj, err := client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			last = err
			continue
		}
		ready := false
		for _, cond := range obj.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
				ready = true
			}
		}
		switch {
		case !ready:
			last = errors.New("node registered, not Ready")
		case len(obj.Spec.Taints) > 0:
			// The API server taints a new node not-ready until the node
			// lifecycle controller sees it Ready.
			last = fmt.Errorf("node Ready, still tainted %v", obj.Spec.Taints)
		default:
			return nil
		}
	}
}

// Stop stops the node: its controllers, then every pod's processes (by
// SIGKILL to their process groups), then its kubelet API. It waits for all
// of them. Stop is idempotent. The Node object stays in the API, where the
// node lifecycle controller marks it unreachable after its grace period.
func (n *Node) Stop() {
	n.stopOnce.Do(func() {
		n.cancel()
		<-n.runDone
		n.prov.close()
		n.srv.Close()
		n.events.Shutdown()
		n.logFile.Close()
	})
}

// nodeObject is the Node as registered: Ready, with no taints, reachable
// for logs at 127.0.0.1:port.
func nodeObject(o Options, port int) *corev1.Node {
	lbls := map[string]string{
		"type":                   "virtual-kubelet",
		"kubernetes.io/role":     "agent",
		"kubernetes.io/hostname": o.Name,
		"kubernetes.io/os":       "linux",
		"kubernetes.io/arch":     runtime.GOARCH,
	}
	for k, v := range o.Labels {
		lbls[k] = v
	}
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse(CapacityCPU),
		corev1.ResourceMemory: resource.MustParse(CapacityMemory),
		corev1.ResourcePods:   resource.MustParse(CapacityPods),
	}
	now := metav1.Now()
	cond := func(t corev1.NodeConditionType, s corev1.ConditionStatus, reason, msg string) corev1.NodeCondition {
		return corev1.NodeCondition{Type: t, Status: s, Reason: reason, Message: msg, LastHeartbeatTime: now, LastTransitionTime: now}
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: o.Name, Labels: lbls},
		Status: corev1.NodeStatus{
			Phase:       corev1.NodeRunning,
			Capacity:    capacity,
			Allocatable: capacity.DeepCopy(),
			Conditions: []corev1.NodeCondition{
				cond(corev1.NodeReady, corev1.ConditionTrue, "KubeletReady", "kubelet is posting ready status"),
				cond(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
				cond(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
				cond(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
				cond(corev1.NodeNetworkUnavailable, corev1.ConditionFalse, "RouteCreated", "loopback network"),
			},
			// Only an InternalIP: the API server would try a Hostname
			// address first, and the node's name does not resolve.
			Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}},
			DaemonEndpoints: corev1.NodeDaemonEndpoints{
				KubeletEndpoint: corev1.DaemonEndpoint{Port: int32(port)},
			},
			NodeInfo: corev1.NodeSystemInfo{
				OperatingSystem:         "linux",
				Architecture:            runtime.GOARCH,
				KubeletVersion:          "v1.36.3-paddock-node",
				ContainerRuntimeVersion: "process://local",
			},
		},
	}
}

// nodeProvider keeps the node as registered: always reachable, status
// unchanged (virtual-kubelet refreshes heartbeats and the lease).
type nodeProvider struct{}

func (nodeProvider) Ping(context.Context) error                           { return nil }
func (nodeProvider) NotifyNodeStatus(context.Context, func(*corev1.Node)) {}

// kubeletListener listens on 127.0.0.1 with a self-signed certificate for
// that address. The API server does not verify kubelets' certificates
// unless given --kubelet-certificate-authority.
func kubeletListener() (net.Listener, tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "paddock-node"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, tls.Certificate{}, fmt.Errorf("kubelet certificate: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, tls.Certificate{}, fmt.Errorf("kubelet listener: %w", err)
	}
	return ln, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// tail returns the last n bytes of the file at path.
func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err.Error()
	}
	off := max(fi.Size()-n, 0)
	b := make([]byte, fi.Size()-off)
	_, _ = f.ReadAt(b, off)
	return string(b)
}
