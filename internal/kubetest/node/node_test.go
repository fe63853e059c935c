package node_test

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"paddock.dev/paddock/internal/kubetest"
	"paddock.dev/paddock/internal/kubetest/node"
)

const regionLabel = "topology.kubernetes.io/region"

// TestNode runs one control plane with two nodes, in regions eu-west and
// us-east, and checks in subtests what pods on them do.
func TestNode(t *testing.T) {
	c := kubetest.Start(t)
	image := pushApp(t)
	eu := node.Start(t, c, node.Options{Name: "eu-1", Labels: map[string]string{regionLabel: "eu-west"}})
	us := node.Start(t, c, node.Options{Name: "us-1", Labels: map[string]string{regionLabel: "us-east"}})
	cs, err := kubernetes.NewForConfig(c.Config())
	if err != nil {
		t.Fatal(err)
	}
	secret(t, cs, "shop-v3", map[string]string{"MESSAGE": "hello from shop-v3", "DB_PASSWORD": "s3cret"})

	t.Run("NodeObject", func(t *testing.T) { testNodeObject(t, cs, eu, us) })
	t.Run("Deployment", func(t *testing.T) { testDeployment(t, cs, image) })
	t.Run("CrashLoop", func(t *testing.T) { testCrashLoop(t, cs, image) })
	t.Run("Readiness", func(t *testing.T) { testReadiness(t, cs, image) })
	t.Run("Liveness", func(t *testing.T) { testLiveness(t, cs, image) })
	t.Run("MissingSecret", func(t *testing.T) { testMissingSecret(t, cs, image) })
	t.Run("ImagePullError", func(t *testing.T) { testImagePullError(t, cs, image) })
	t.Run("Delete", func(t *testing.T) { testDelete(t, cs, image) })
	t.Run("DeleteGraceExpires", func(t *testing.T) { testDeleteGraceExpires(t, cs, image) })
	t.Run("Placement", func(t *testing.T) { testPlacement(t, cs, image, eu.Name) })
	t.Run("Logs", func(t *testing.T) { testLogs(t, cs, image) })
	t.Run("NodeStop", func(t *testing.T) { testNodeStop(t, cs, image, us) })
}

func testNodeObject(t *testing.T, cs kubernetes.Interface, nodes ...*node.Node) {
	for _, n := range nodes {
		obj, err := cs.CoreV1().Nodes().Get(t.Context(), n.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for k, want := range map[string]string{
			"kubernetes.io/hostname": n.Name,
			"kubernetes.io/os":       "linux",
			"type":                   "virtual-kubelet",
		} {
			if got := obj.Labels[k]; got != want {
				t.Errorf("node %s label %s = %q, want %q", n.Name, k, got, want)
			}
		}
		if obj.Labels[regionLabel] == "" {
			t.Errorf("node %s has no %s label: %v", n.Name, regionLabel, obj.Labels)
		}
		if len(obj.Spec.Taints) != 0 {
			t.Errorf("node %s taints = %v, want none", n.Name, obj.Spec.Taints)
		}
		for res, want := range map[corev1.ResourceName]string{corev1.ResourceCPU: "8", corev1.ResourceMemory: "16Gi", corev1.ResourcePods: "110"} {
			if got := obj.Status.Capacity[res]; got.String() != want {
				t.Errorf("node %s capacity %s = %s, want %s", n.Name, res, got.String(), want)
			}
		}
		if got := obj.Status.DaemonEndpoints.KubeletEndpoint.Port; int(got) != n.KubeletPort {
			t.Errorf("node %s kubelet port = %d, want %d", n.Name, got, n.KubeletPort)
		}
		if _, err := cs.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(t.Context(), n.Name, metav1.GetOptions{}); err != nil {
			t.Errorf("node %s lease: %v", n.Name, err)
		}
	}
}

// testDeployment: two replicas become Running and Ready on distinct
// loopback IPs, the Service's EndpointSlice lists both ready, and each
// answers on podIP:8080 with values from its secret.
func testDeployment(t *testing.T, cs kubernetes.Interface, image string) {
	ctx := t.Context()
	if _, err := cs.AppsV1().Deployments(ns).Create(ctx, deployment("shop", 2, podSpec(webContainer(image))), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Services(ns).Create(ctx, service("shop"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pods := readyPods(t, cs, "shop", 2)
	var ips []string
	for _, p := range pods {
		if ip, err := netip.ParseAddr(p.Status.PodIP); err != nil || !netip.MustParsePrefix(node.PodCIDR).Contains(ip) {
			t.Errorf("pod %s IP %q: want an address in %s", p.Name, p.Status.PodIP, node.PodCIDR)
		}
		if len(p.Status.PodIPs) != 1 || p.Status.PodIPs[0].IP != p.Status.PodIP {
			t.Errorf("pod %s podIPs = %v, want [%s]", p.Name, p.Status.PodIPs, p.Status.PodIP)
		}
		ips = append(ips, p.Status.PodIP)
		st := p.Status.ContainerStatuses[0]
		if !st.Ready || st.Started == nil || !*st.Started || st.State.Running == nil {
			t.Errorf("pod %s container status = %+v, want running, started and ready", p.Name, st)
		}
		if st.Resources == nil || st.Resources.Limits.Memory().String() != "256Mi" {
			t.Errorf("pod %s container resources = %v, want memory limit 256Mi", p.Name, st.Resources)
		}
	}
	if ips[0] == ips[1] {
		t.Errorf("both pods have IP %s", ips[0])
	}
	slices.Sort(ips)
	eventually(t, 20*time.Second, func() string {
		ready, _ := readyEndpoints(t, cs, "shop")
		slices.Sort(ready)
		if !slices.Equal(ready, ips) {
			return fmt.Sprintf("ready endpoints %v, want %v", ready, ips)
		}
		return ""
	})
	for _, p := range pods {
		base := "http://" + net.JoinHostPort(p.Status.PodIP, "8080")
		if got, want := get(t, base+"/"), "hello from shop-v3 from "+p.Name+"\n"; got != want {
			t.Errorf("GET %s/ = %q, want %q", base, got, want)
		}
		if got := get(t, base+"/env?name=DB_PASSWORD"); got != "s3cret" {
			t.Errorf("DB_PASSWORD = %q, want s3cret", got)
		}
		if got := get(t, base+"/env?name=IMAGE_ENV"); got != "from-image" {
			t.Errorf("IMAGE_ENV = %q, want from-image", got)
		}
		if got := get(t, base+"/secret?key=DB_PASSWORD"); got != "s3cret" {
			t.Errorf("secret file DB_PASSWORD = %q, want s3cret", got)
		}
		dir := get(t, base+"/env?name=SECRETS_DIR")
		if dir == "/var/run/paddock/secrets" || !filepath.IsAbs(dir) {
			t.Errorf("SECRETS_DIR = %q, want a local folder", dir)
		} else {
			checkMode(t, dir, 0o700|os.ModeDir)
			checkMode(t, filepath.Join(dir, "DB_PASSWORD"), 0o400)
		}
	}
}

func checkMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Error(err)
		return
	}
	if got := fi.Mode(); got != want {
		t.Errorf("mode of %s = %v, want %v", path, got, want)
	}
}

// testCrashLoop: a container that exits 1 reaches CrashLoopBackOff with
// restarts counted and its exit code kept, and is never listed ready.
func testCrashLoop(t *testing.T, cs kubernetes.Interface, image string) {
	ctx := t.Context()
	c := webContainer(image)
	c.Command = []string{"/bin/sh", "-c", "echo crashing; exit 1"}
	c.StartupProbe, c.LivenessProbe = nil, nil
	if _, err := cs.AppsV1().Deployments(ns).Create(ctx, deployment("crash", 1, podSpec(c)), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Services(ns).Create(ctx, service("crash"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() string {
		pods := listPods(t, cs, "crash")
		if len(pods) != 1 || len(pods[0].Status.ContainerStatuses) != 1 {
			return "no pod status yet: " + describe(pods)
		}
		p := pods[0]
		st := p.Status.ContainerStatuses[0]
		if st.State.Waiting == nil || st.State.Waiting.Reason != "CrashLoopBackOff" || st.RestartCount < 2 {
			return "want CrashLoopBackOff after 2 restarts: " + describe(pods)
		}
		if lt := st.LastTerminationState.Terminated; lt == nil || lt.ExitCode != 1 {
			return fmt.Sprintf("last state = %+v, want terminated with exit code 1", st.LastTerminationState)
		}
		if podReady(&p) || st.Ready {
			return "crashing pod is ready: " + describe(pods)
		}
		if p.Status.Phase != corev1.PodRunning {
			return fmt.Sprintf("phase %s, want Running", p.Status.Phase)
		}
		return ""
	})
	ready, notReady := readyEndpoints(t, cs, "crash")
	if len(ready) != 0 {
		t.Errorf("ready endpoints of a crashing pod: %v (not ready: %v)", ready, notReady)
	}
}

// testReadiness: a pod whose readiness probe fails is Running but not
// Ready, and not listed ready; an exec probe passes when its command does.
func testReadiness(t *testing.T, cs kubernetes.Interface, image string) {
	ctx := t.Context()
	bad := webContainer(image)
	bad.ReadinessProbe.HTTPGet.Path = "/nope"
	if _, err := cs.AppsV1().Deployments(ns).Create(ctx, deployment("unready", 1, podSpec(bad)), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Services(ns).Create(ctx, service("unready"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	execOK := webContainer(image)
	execOK.Env = append(execOK.Env, corev1.EnvVar{Name: "READY", Value: "yes"})
	execOK.ReadinessProbe = &corev1.Probe{
		ProbeHandler:  corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"/bin/sh", "-c", `test "$READY" = yes && test -x bin/web`}}},
		PeriodSeconds: 1,
	}
	if _, err := cs.AppsV1().Deployments(ns).Create(ctx, deployment("exec-ready", 1, podSpec(execOK)), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	readyPods(t, cs, "exec-ready", 1)

	eventually(t, 30*time.Second, func() string {
		pods := listPods(t, cs, "unready")
		if len(pods) != 1 || len(pods[0].Status.ContainerStatuses) != 1 {
			return "no pod status yet: " + describe(pods)
		}
		st := pods[0].Status.ContainerStatuses[0]
		if st.State.Running == nil || st.Started == nil || !*st.Started {
			return "want running and started: " + describe(pods)
		}
		return ""
	})
	time.Sleep(2 * time.Second) // several probe periods
	pods := listPods(t, cs, "unready")
	if len(pods) != 1 || podReady(&pods[0]) || pods[0].Status.Phase != corev1.PodRunning || pods[0].Status.ContainerStatuses[0].RestartCount != 0 {
		t.Fatalf("want one Running pod, not ready, never restarted: %s", describe(pods))
	}
	eventually(t, 10*time.Second, func() string {
		ready, notReady := readyEndpoints(t, cs, "unready")
		if len(ready) != 0 || len(notReady) != 1 {
			return fmt.Sprintf("endpoints ready %v, not ready %v; want one not ready", ready, notReady)
		}
		return ""
	})
}

// testLiveness: a failing liveness probe restarts the container.
func testLiveness(t *testing.T, cs kubernetes.Interface, image string) {
	c := webContainer(image)
	c.LivenessProbe.HTTPGet.Path = "/nope"
	c.LivenessProbe.FailureThreshold = 1
	if _, err := cs.AppsV1().Deployments(ns).Create(t.Context(), deployment("unlive", 1, podSpec(c)), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() string {
		pods := listPods(t, cs, "unlive")
		if len(pods) != 1 || len(pods[0].Status.ContainerStatuses) != 1 {
			return "no pod status yet: " + describe(pods)
		}
		st := pods[0].Status.ContainerStatuses[0]
		lt := st.LastTerminationState.Terminated
		if st.RestartCount < 1 || lt == nil || !strings.Contains(lt.Message, "Liveness probe failed") {
			return "want a restart after a failed liveness probe: " + describe(pods)
		}
		return ""
	})
}

// testMissingSecret: a container whose secret is missing waits with
// CreateContainerConfigError, and starts once the secret exists.
func testMissingSecret(t *testing.T, cs kubernetes.Interface, image string) {
	c := webContainer(image)
	c.EnvFrom[0].SecretRef.Name = "late"
	c.StartupProbe, c.LivenessProbe = nil, nil
	if _, err := cs.AppsV1().Deployments(ns).Create(t.Context(), deployment("late", 1, podSpec(c)), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() string {
		pods := listPods(t, cs, "late")
		if len(pods) != 1 || len(pods[0].Status.ContainerStatuses) != 1 {
			return "no pod status yet: " + describe(pods)
		}
		w := pods[0].Status.ContainerStatuses[0].State.Waiting
		if w == nil || w.Reason != "CreateContainerConfigError" || !strings.Contains(w.Message, `"late" not found`) {
			return "want CreateContainerConfigError: " + describe(pods)
		}
		return ""
	})
	secret(t, cs, "late", map[string]string{"MESSAGE": "late but here"})
	p := readyPods(t, cs, "late", 1)[0]
	if got, want := get(t, "http://"+net.JoinHostPort(p.Status.PodIP, "8080")+"/"), "late but here from "+p.Name+"\n"; got != want {
		t.Errorf("GET / = %q, want %q", got, want)
	}
}

// testImagePullError: an image that is not in the registry shows as
// ErrImagePull or ImagePullBackOff, with the registry's error.
func testImagePullError(t *testing.T, cs kubernetes.Interface, image string) {
	c := webContainer(image)
	c.Image = image[:strings.LastIndex(image, ":")+1] + strings.Repeat("0", 64)
	if _, err := cs.AppsV1().Deployments(ns).Create(t.Context(), deployment("nopull", 1, podSpec(c)), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() string {
		pods := listPods(t, cs, "nopull")
		if len(pods) != 1 || len(pods[0].Status.ContainerStatuses) != 1 {
			return "no pod status yet: " + describe(pods)
		}
		w := pods[0].Status.ContainerStatuses[0].State.Waiting
		if w == nil || (w.Reason != "ErrImagePull" && w.Reason != "ImagePullBackOff") || !strings.Contains(w.Message, "MANIFEST_UNKNOWN") {
			return "want ErrImagePull: " + describe(pods)
		}
		return ""
	})
}

// barePod creates a pod with no controller.
func barePod(t *testing.T, cs kubernetes.Interface, name string, spec corev1.PodSpec) *corev1.Pod {
	t.Helper()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app": name}}, Spec: spec}
	p, err := cs.CoreV1().Pods(ns).Create(t.Context(), p, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// waitGone waits until the pod is gone from the API.
func waitGone(t *testing.T, cs kubernetes.Interface, name string, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, func() string {
		pods := listPods(t, cs, name)
		if len(pods) != 0 {
			return "pod still in the API: " + describe(pods)
		}
		return ""
	})
}

// testDelete: deleting a pod ends its process and the processes it started
// in its group, then the pod leaves the API.
func testDelete(t *testing.T, cs kubernetes.Interface, image string) {
	barePod(t, cs, "doomed", podSpec(webContainer(image)))
	p := readyPods(t, cs, "doomed", 1)[0]
	pid := containerPID(t, p.Status.ContainerStatuses[0])
	var child int
	if _, err := fmt.Sscan(get(t, "http://"+net.JoinHostPort(p.Status.PodIP, "8080")+"/spawn"), &child); err != nil {
		t.Fatal(err)
	}
	if !alive(pid) || !alive(child) {
		t.Fatalf("pid %d alive %v, child %d alive %v: want both alive", pid, alive(pid), child, alive(child))
	}
	if pgid, err := syscall.Getpgid(pid); err != nil || pgid != pid {
		t.Errorf("process group of %d = %d (%v), want its own", pid, pgid, err)
	}
	if err := cs.CoreV1().Pods(ns).Delete(t.Context(), p.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitGone(t, cs, "doomed", 10*time.Second)
	eventually(t, 5*time.Second, func() string {
		if alive(pid) || alive(child) {
			return fmt.Sprintf("pid %d alive %v, child %d alive %v: want both gone", pid, alive(pid), child, alive(child))
		}
		return ""
	})
	if conn, err := net.DialTimeout("tcp", net.JoinHostPort(p.Status.PodIP, "8080"), time.Second); err == nil {
		conn.Close()
		t.Errorf("pod address %s:8080 still accepts connections", p.Status.PodIP)
	}
}

// testDeleteGraceExpires: a process that ignores SIGTERM is killed when
// the grace period ends.
func testDeleteGraceExpires(t *testing.T, cs kubernetes.Interface, image string) {
	c := webContainer(image)
	c.Command = []string{"/bin/sh", "-c", "trap '' TERM; ./bin/web & while true; do sleep 0.1; done"}
	barePod(t, cs, "stubborn", podSpec(c))
	p := readyPods(t, cs, "stubborn", 1)[0]
	pid := containerPID(t, p.Status.ContainerStatuses[0])
	begin := time.Now()
	if err := cs.CoreV1().Pods(ns).Delete(t.Context(), p.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() string {
		if alive(pid) {
			return fmt.Sprintf("pid %d still alive", pid)
		}
		return ""
	})
	if took := time.Since(begin); took < 1500*time.Millisecond {
		t.Errorf("process ignoring SIGTERM gone after %s, want the 2 s grace period", took)
	}
	waitGone(t, cs, "stubborn", 10*time.Second)
}

// testPlacement: a Deployment that requires region eu-west lands only on
// the eu-west node.
func testPlacement(t *testing.T, cs kubernetes.Interface, image, euNode string) {
	spec := podSpec(webContainer(image))
	spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
		RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
			MatchExpressions: []corev1.NodeSelectorRequirement{{Key: regionLabel, Operator: corev1.NodeSelectorOpIn, Values: []string{"eu-west"}}},
		}}},
	}}
	if _, err := cs.AppsV1().Deployments(ns).Create(t.Context(), deployment("eu-only", 3, spec), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, p := range readyPods(t, cs, "eu-only", 3) {
		if p.Spec.NodeName != euNode {
			t.Errorf("pod %s on node %s, want %s", p.Name, p.Spec.NodeName, euNode)
		}
	}
}

// testLogs: the API server streams a container's output from the node,
// following it as it grows.
func testLogs(t *testing.T, cs kubernetes.Interface, image string) {
	barePod(t, cs, "chatty", podSpec(webContainer(image)))
	p := readyPods(t, cs, "chatty", 1)[0]
	tailLines := int64(10)
	ctx := ctxTimeout(t, 20*time.Second)
	rc, err := cs.CoreV1().Pods(ns).GetLogs(p.Name, &corev1.PodLogOptions{Container: "web", Follow: true, TailLines: &tailLines}).Stream(ctx)
	if err != nil {
		t.Fatalf("stream logs: %v", err)
	}
	defer rc.Close()
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(rc)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
	}()
	expect := func(want string) {
		t.Helper()
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("log stream ended before %q", want)
				}
				if l == want {
					return
				}
			case <-ctx.Done():
				t.Fatalf("no log line %q: %v", want, ctx.Err())
			}
		}
	}
	expect("listening on :" + get(t, "http://"+net.JoinHostPort(p.Status.PodIP, "8080")+"/env?name=PORT"))
	get(t, "http://"+net.JoinHostPort(p.Status.PodIP, "8080")+"/secret?key=DB_PASSWORD")
	expect("GET /secret")

	// tailLines=1 gives only the last line.
	one := int64(1)
	b, err := cs.CoreV1().Pods(ns).GetLogs(p.Name, &corev1.PodLogOptions{Container: "web", TailLines: &one}).DoRaw(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if got := string(b); got != "GET /secret\n" {
		t.Errorf("last line = %q, want %q", got, "GET /secret\n")
	}
}

// testNodeStop: stopping a node kills its pods' processes and closes their
// addresses.
func testNodeStop(t *testing.T, cs kubernetes.Interface, image string, n *node.Node) {
	spec := podSpec(webContainer(image))
	spec.NodeName = n.Name
	barePod(t, cs, "orphan", spec)
	p := readyPods(t, cs, "orphan", 1)[0]
	pid := containerPID(t, p.Status.ContainerStatuses[0])
	n.Stop()
	if alive(pid) {
		t.Errorf("pid %d alive after the node stopped", pid)
	}
	if conn, err := net.DialTimeout("tcp", net.JoinHostPort(p.Status.PodIP, "8080"), time.Second); err == nil {
		conn.Close()
		t.Errorf("pod address %s:8080 still accepts connections after the node stopped", p.Status.PodIP)
	}
	n.Stop() // idempotent
}
