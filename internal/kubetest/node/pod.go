package node

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// pod is one pod on the node.
//
// Its life:
//
//	newPod (address, ports bound)
//	  -> run: volumes written, one supervisor per container (see container)
//	  -> stop (pod deleted, or node stopped): no more restarts, SIGTERM to
//	     every container's process group, SIGKILL at the grace deadline
//	  -> every supervisor returned: proxies closed, volumes removed, address
//	     released, terminal status sent; the provider forgets the pod.
type pod struct {
	prov *provider
	log  *slog.Logger
	uid  types.UID
	dir  string
	ip   netip.Addr

	proxies    []*proxy
	containers []*container

	ctx    context.Context // canceled by stop
	cancel context.CancelFunc
	kick   chan struct{} // the grace deadline moved

	changed chan struct{} // status changed; the notifier sends it
	final   chan struct{} // closed when the last status is ready
	sent    chan struct{} // closed when the notifier has sent it

	mu          sync.Mutex
	spec        *corev1.Pod // as created, labels and annotations updated
	started     metav1.Time
	volumes     map[string]string // volume name -> local folder
	published   []*publication    // persistent volumes published into volumes
	volumesOK   bool
	terminating bool
	deadline    time.Time
	finished    bool // every container stopped for good
	conditions  map[corev1.PodConditionType]condition
}

type condition struct {
	status corev1.ConditionStatus
	since  metav1.Time
}

func newPod(prov *provider, spec *corev1.Pod) (*pod, error) {
	log := prov.cfg.log.With("pod", spec.Namespace+"/"+spec.Name)
	dir := filepath.Join(prov.cfg.dir, "pods", fmt.Sprintf("%s_%s_%s", spec.Namespace, spec.Name, spec.UID))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	pd := &pod{
		prov:       prov,
		log:        log,
		uid:        spec.UID,
		dir:        dir,
		spec:       spec,
		kick:       make(chan struct{}, 1),
		changed:    make(chan struct{}, 1),
		final:      make(chan struct{}),
		sent:       make(chan struct{}),
		started:    metav1.Now(),
		volumes:    make(map[string]string),
		conditions: make(map[corev1.PodConditionType]condition),
	}
	pd.ctx, pd.cancel = context.WithCancel(context.Background())

	var ports []int
	target := make(map[int]int)
	for i := range spec.Spec.Containers {
		cs := &spec.Spec.Containers[i]
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		for _, cp := range cs.Ports {
			if cp.Protocol != "" && cp.Protocol != corev1.ProtocolTCP {
				continue
			}
			p := int(cp.ContainerPort)
			if _, dup := target[p]; dup {
				return nil, fmt.Errorf("container port %d declared twice", p)
			}
			target[p] = port
			ports = append(ports, p)
		}
		pd.containers = append(pd.containers, newContainer(pd, cs, port))
	}
	ip, proxies, err := prov.allocate(ports, target)
	if err != nil {
		return nil, err
	}
	pd.ip, pd.proxies = ip, proxies
	log.Info("pod created", "ip", ip, "ports", ports)
	return pd, nil
}

// run runs the pod until it is stopped and its processes are gone.
func (pd *pod) run() {
	go pd.notifier()
	pd.markChanged()

	var wg sync.WaitGroup
	if pd.writeVolumes() {
		for _, c := range pd.containers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.supervise(pd.ctx)
			}()
		}
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()

	select {
	case <-done:
		// Every container ended for good (restart policy Never or
		// OnFailure): the pod stays, terminated, until it is deleted.
		pd.mu.Lock()
		pd.finished = true
		pd.mu.Unlock()
		pd.markChanged()
		<-pd.ctx.Done()
	case <-pd.ctx.Done():
	}

	// Stopping: SIGKILL whatever still runs at the deadline.
	for {
		pd.mu.Lock()
		wait := time.Until(pd.deadline)
		pd.mu.Unlock()
		timer := time.NewTimer(max(wait, 0))
		select {
		case <-done:
			timer.Stop()
			pd.cleanup()
			return
		case <-pd.kick:
		case <-timer.C:
			for _, c := range pd.containers {
				c.signal(syscall.SIGKILL)
			}
			pd.mu.Lock()
			pd.deadline = time.Now().Add(time.Second) // and again until gone
			pd.mu.Unlock()
		}
		timer.Stop()
	}
}

func (pd *pod) cleanup() {
	for _, px := range pd.proxies {
		px.close()
	}
	// Persistent volumes go back to their plugin first: the folder they
	// were published in is removed only once they are out of it.
	kept := false
	pd.mu.Lock()
	published := pd.published
	pd.mu.Unlock()
	for _, p := range published {
		if err := p.unpublish(context.Background()); err != nil {
			pd.log.Warn("unpublish volume", "volume", p.volumeID, "err", err)
			kept = true
		}
	}
	if !kept {
		if err := os.RemoveAll(filepath.Join(pd.dir, "volumes")); err != nil {
			pd.log.Warn("remove volumes", "err", err)
		}
	}
	pd.prov.ips.release(pd.ip)
	pd.mu.Lock()
	pd.finished = true
	pd.mu.Unlock()
	close(pd.final)
	<-pd.sent
	pd.log.Info("pod stopped")
}

// stop ends the pod: no more restarts, SIGTERM now (or after a
// container's preStop sleep, as the kubelet does: the pod keeps serving
// while its endpoints are withdrawn), SIGKILL after grace. A second stop
// can only shorten the grace period.
func (pd *pod) stop(grace time.Duration) {
	pd.mu.Lock()
	deadline := time.Now().Add(grace)
	first := !pd.terminating
	if first || deadline.Before(pd.deadline) {
		pd.deadline = deadline
	}
	pd.terminating = true
	pd.mu.Unlock()
	if first {
		pd.log.Info("pod stopping", "grace", grace)
		pd.cancel()
		for _, c := range pd.containers {
			if d := preStopSleep(c.spec); d > 0 {
				time.AfterFunc(min(d, grace), func() { c.signal(syscall.SIGTERM) })
				continue
			}
			c.signal(syscall.SIGTERM)
		}
		pd.markChanged()
	}
	select {
	case pd.kick <- struct{}{}:
	default:
	}
}

func (pd *pod) update(spec *corev1.Pod) {
	pd.mu.Lock()
	pd.spec.Labels = spec.Labels
	pd.spec.Annotations = spec.Annotations
	pd.mu.Unlock()
}

func (pd *pod) isTerminating() bool {
	pd.mu.Lock()
	defer pd.mu.Unlock()
	return pd.terminating
}

// markChanged asks the notifier to send the pod's status.
func (pd *pod) markChanged() {
	select {
	case pd.changed <- struct{}{}:
	default:
	}
}

// notifier sends the pod's status after each change, in order, and the
// last one once the pod is gone.
func (pd *pod) notifier() {
	defer close(pd.sent)
	for {
		select {
		case <-pd.changed:
			pd.prov.send(pd.snapshot())
		case <-pd.final:
			pd.prov.send(pd.snapshot())
			return
		}
	}
}

// snapshot is the pod with its current status.
func (pd *pod) snapshot() *corev1.Pod {
	pd.mu.Lock()
	defer pd.mu.Unlock()
	out := pd.spec.DeepCopy()
	st := &out.Status
	st.HostIP = "127.0.0.1"
	st.HostIPs = []corev1.HostIP{{IP: "127.0.0.1"}}
	st.PodIP = pd.ip.String()
	st.PodIPs = []corev1.PodIP{{IP: pd.ip.String()}}
	st.StartTime = &pd.started
	st.Reason, st.Message = "", ""
	st.ContainerStatuses = nil

	allReady, anyStarted, allDone, anyFailed := len(pd.containers) > 0, false, true, false
	for _, c := range pd.containers {
		cs := c.status()
		st.ContainerStatuses = append(st.ContainerStatuses, cs)
		allReady = allReady && cs.Ready
		if cs.State.Running != nil || cs.State.Terminated != nil || cs.RestartCount > 0 {
			anyStarted = true
		}
		if cs.State.Terminated == nil {
			allDone = false
		} else if cs.State.Terminated.ExitCode != 0 {
			anyFailed = true
		}
	}
	allReady = allReady && !pd.terminating
	switch {
	case pd.finished && allDone && anyFailed:
		st.Phase = corev1.PodFailed
	case pd.finished && allDone:
		st.Phase = corev1.PodSucceeded
	case anyStarted:
		st.Phase = corev1.PodRunning
	default:
		st.Phase = corev1.PodPending
	}

	boolCond := func(b bool) corev1.ConditionStatus {
		if b {
			return corev1.ConditionTrue
		}
		return corev1.ConditionFalse
	}
	st.Conditions = []corev1.PodCondition{
		pd.condition(corev1.PodReadyToStartContainers, boolCond(!pd.finished)),
		pd.condition(corev1.PodInitialized, corev1.ConditionTrue),
		pd.condition(corev1.ContainersReady, boolCond(allReady)),
		pd.condition(corev1.PodReady, boolCond(allReady)),
		pd.condition(corev1.PodScheduled, corev1.ConditionTrue),
	}
	return out
}

// condition returns the pod condition, its transition time kept while its
// status stays. Called with pd.mu held.
func (pd *pod) condition(t corev1.PodConditionType, s corev1.ConditionStatus) corev1.PodCondition {
	c, ok := pd.conditions[t]
	if !ok || c.status != s {
		c = condition{status: s, since: metav1.Now()}
		pd.conditions[t] = c
	}
	return corev1.PodCondition{Type: t, Status: s, LastTransitionTime: c.since}
}

// preStopSleep is a container's preStop sleep; 0 without one. Other
// preStop handlers are not run by this node.
func preStopSleep(c *corev1.Container) time.Duration {
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil {
		return 0
	}
	return time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
}
