package kube_test

import (
	"errors"
	"maps"
	"reflect"
	goruntime "runtime"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"paddock.dev/paddock/internal/kube"
	"paddock.dev/paddock/internal/kubetest"
	"paddock.dev/paddock/internal/manifest"
	"paddock.dev/paddock/internal/runtime"
)

const prefix = "paddock-"

func newRuntime(t *testing.T, c *kubetest.Cluster) (*kube.Runtime, kubernetes.Interface) {
	t.Helper()
	cs, err := kubernetes.NewForConfig(c.Config())
	if err != nil {
		t.Fatal(err)
	}
	r := kube.New(kube.Config{Client: cs, NamespacePrefix: prefix})
	if err := r.Resume(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r, cs
}

func shop(release int) *kube.App {
	return &kube.App{
		Name: "shop", ID: 7, Release: release,
		Image: "127.0.0.1:5000/paddock/shop@sha256:" + strings.Repeat("ab", 32),
		Processes: map[string]kube.Process{
			"web": {Command: "./bin/web", Replicas: 2, Memory: 64 << 20, StopTimeout: 5 * time.Second,
				Health: manifest.Health{Path: "/health", Interval: 2 * time.Second, Timeout: time.Second, Grace: 30 * time.Second, RestartAfter: 5}},
			"worker": {Command: "./bin/worker", Replicas: 1},
		},
		Config:         map[string]string{"GREETING": "hello"},
		Secrets:        []runtime.Secret{{Name: "DB_PASSWORD", Value: []byte("s3cret")}, {Name: "tls.key", Value: []byte("KEY"), AsFile: true}},
		SecretVersions: map[string]int{"DB_PASSWORD": 3, "tls.key": 1},
		Placement:      map[string]string{"topology.kubernetes.io/region": "eu-west"},
	}
}

// TestApply applies an app to a real API server and checks the objects a
// cluster operator would look at, field by field.
func TestApply(t *testing.T) {
	c := kubetest.Start(t)
	r, cs := newRuntime(t, c)
	ctx := t.Context()
	ns := prefix + "shop"

	if err := r.Apply(ctx, shop(1)); err != nil {
		t.Fatal(err)
	}
	nsObj, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if nsObj.Labels[kube.LabelManagedBy] != "paddock" || nsObj.Labels[kube.LabelApp] != "shop" || nsObj.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
		t.Errorf("namespace labels = %v", nsObj.Labels)
	}

	web, err := cs.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if *web.Spec.Replicas != 2 {
		t.Errorf("web replicas = %d, want 2", *web.Spec.Replicas)
	}
	if web.Annotations[kube.AnnotationRelease] != "1" {
		t.Errorf("web release annotation = %q, want 1", web.Annotations[kube.AnnotationRelease])
	}
	if ru := web.Spec.Strategy.RollingUpdate; ru == nil || ru.MaxUnavailable.IntValue() != 0 {
		t.Errorf("web rolling update = %+v, want maxUnavailable 0 (zero downtime)", ru)
	}
	pod := web.Spec.Template.Spec
	ctr := pod.Containers[0]
	if ctr.Image != shop(1).Image || !slices.Equal(ctr.Command, []string{"/bin/sh", "-c", "./bin/web"}) || ctr.WorkingDir != "/app" {
		t.Errorf("web container image %q command %q dir %q", ctr.Image, ctr.Command, ctr.WorkingDir)
	}
	if got := ctr.Resources.Limits.Memory().Value(); got != 64<<20 {
		t.Errorf("web memory limit = %d, want %d", got, 64<<20)
	}
	if sc := pod.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser != kube.AppUID {
		t.Errorf("pod security context = %+v, want non-root, uid %d", sc, kube.AppUID)
	}
	if sc := ctr.SecurityContext; sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || len(sc.Capabilities.Drop) != 1 {
		t.Errorf("container security context = %+v, want no privilege escalation, every capability dropped", sc)
	}
	if *pod.TerminationGracePeriodSeconds != 7 {
		t.Errorf("termination grace = %d, want 7: the stop timeout and the 2 s drain", *pod.TerminationGracePeriodSeconds)
	}
	if l := ctr.Lifecycle; l == nil || l.PreStop == nil || l.PreStop.Sleep == nil || l.PreStop.Sleep.Seconds != 2 {
		t.Errorf("web lifecycle = %+v, want a 2 s preStop sleep while its endpoint is withdrawn", l)
	}
	if p := ctr.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/health" || p.PeriodSeconds != 2 || p.FailureThreshold != 3 {
		t.Errorf("readiness probe = %+v, want GET /health every 2 s, 3 failures", p)
	}
	if p := ctr.LivenessProbe; p == nil || p.FailureThreshold != 5 {
		t.Errorf("liveness probe = %+v, want 5 failures (restart_after)", p)
	}
	if p := ctr.StartupProbe; p == nil || p.FailureThreshold != 30 || p.PeriodSeconds != 1 {
		t.Errorf("startup probe = %+v, want every 1 s for the 30 s grace", p)
	}
	env := map[string]string{}
	for _, e := range ctr.Env {
		env[e.Name] = e.Value
	}
	if env["PORT"] != "8080" || env["PADDOCK_SECRETS_DIR"] != kube.SecretsDir {
		t.Errorf("web env = %v", env)
	}
	if len(ctr.Ports) != 1 || ctr.Ports[0].ContainerPort != 8080 || ctr.Ports[0].Name != "http" {
		t.Errorf("web ports = %+v", ctr.Ports)
	}
	// Placement and, for an image Paddock built, this machine's
	// architecture: both required.
	terms := pod.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms
	want := []corev1.NodeSelectorRequirement{
		{Key: corev1.LabelArchStable, Operator: corev1.NodeSelectorOpIn, Values: []string{goruntime.GOARCH}},
		{Key: "topology.kubernetes.io/region", Operator: corev1.NodeSelectorOpIn, Values: []string{"eu-west"}},
	}
	if len(terms) != 1 || !reflect.DeepEqual(terms[0].MatchExpressions, want) {
		t.Errorf("required node affinity = %+v, want %+v", terms, want)
	}

	// The release's Secrets: env vars and files apart, immutable.
	envSecret := ctr.EnvFrom[0].SecretRef.Name
	sec, err := cs.CoreV1().Secrets(ns).Get(ctx, envSecret, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if string(sec.Data["DB_PASSWORD"]) != "s3cret" || string(sec.Data["GREETING"]) != "hello" || sec.Data["tls.key"] != nil {
		t.Errorf("env secret keys = %v", slices.Sorted(maps.Keys(sec.Data)))
	}
	if sec.Immutable == nil || !*sec.Immutable {
		t.Error("env secret is not immutable")
	}
	if v := pod.Volumes; len(v) != 1 || v[0].Secret == nil || *v[0].Secret.DefaultMode != 0o400 {
		t.Errorf("volumes = %+v, want the file secrets, mode 0400", v)
	}

	worker, err := cs.AppsV1().Deployments(ns).Get(ctx, "worker", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if w := worker.Spec.Template.Spec.Containers[0]; w.ReadinessProbe != nil || len(w.Ports) != 0 {
		t.Errorf("worker has probe %+v ports %+v, want none", w.ReadinessProbe, w.Ports)
	}
	svc, err := cs.CoreV1().Services(ns).Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p := svc.Spec.Ports; len(p) != 1 || p[0].Port != 8080 || p[0].TargetPort.StrVal != "http" {
		t.Errorf("service ports = %+v", p)
	}

	// Without a node the pods stay Pending, and say why.
	waitFor(t, "pending pods that say why", func() bool {
		pods, err := r.Pods("shop")
		return err == nil && len(pods) == 3 && pods[0].Phase == "Pending" && strings.Contains(pods[0].Reason, "Unschedulable")
	})
	if ro, err := r.Status("shop"); err != nil || ro.Done || ro.Failed != "" {
		t.Errorf("status = %+v, %v; want waiting", ro, err)
	}

	// Applying the same release again changes nothing: same secret, same
	// template generation.
	gen := web.Generation
	if err := r.Apply(ctx, shop(1)); err != nil {
		t.Fatal(err)
	}
	if again, _ := cs.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{}); again.Generation != gen {
		t.Errorf("re-applying the same release bumped the generation %d -> %d", gen, again.Generation)
	}

	// A config change is a new Secret; the old one stays while the old
	// ReplicaSet has pods; a process type that is gone loses its Deployment.
	v2 := shop(2)
	v2.Config["GREETING"] = "bonjour"
	delete(v2.Processes, "worker")
	if err := r.Apply(ctx, v2); err != nil {
		t.Fatal(err)
	}
	web2, _ := cs.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
	newSecret := web2.Spec.Template.Spec.Containers[0].EnvFrom[0].SecretRef.Name
	if newSecret == envSecret {
		t.Fatalf("config change kept secret %s", envSecret)
	}
	if _, err := cs.CoreV1().Secrets(ns).Get(ctx, envSecret, metav1.GetOptions{}); err != nil {
		t.Errorf("old release's secret deleted while its pods may restart: %v", err)
	}
	if _, err := cs.AppsV1().Deployments(ns).Get(ctx, "worker", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("worker deployment after its process type went: %v, want not found", err)
	}

	// A process type named like an instance of a later one (worker-0,
	// then worker with a volume per instance): the Deployment worker-0
	// changes selector, which Kubernetes refuses in place, so it is
	// replaced.
	v3 := shop(3)
	v3.Processes = map[string]kube.Process{"web": v3.Processes["web"], "worker-0": {Command: "./bin/old", Replicas: 1}}
	if err := r.Apply(ctx, v3); err != nil {
		t.Fatal(err)
	}
	before, err := cs.AppsV1().Deployments(ns).Get(ctx, "worker-0", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	v4 := shop(4)
	v4.Volumes = []kube.Volume{{Name: "scratch", Claim: "pdk-scratch-1", Process: "worker", Path: "scratch", Env: "PADDOCK_VOLUME_SCRATCH", PerInstance: true, Slot: 0}}
	if err := r.Apply(ctx, v4); err != nil {
		t.Fatalf("apply of a per-instance worker after a process named worker-0: %v", err)
	}
	after, err := cs.AppsV1().Deployments(ns).Get(ctx, "worker-0", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if after.UID == before.UID || after.Spec.Selector.MatchLabels[kube.LabelSlot] != "0" ||
		after.Spec.Template.Spec.Containers[0].Command[2] != "./bin/worker" {
		t.Errorf("worker-0 after the change: uid %s (was %s), selector %v, command %q; want a new Deployment of slot 0 running ./bin/worker",
			after.UID, before.UID, after.Spec.Selector.MatchLabels, after.Spec.Template.Spec.Containers[0].Command)
	}

	// Another installation of Paddock on the same cluster, with the same
	// prefix, neither watches this one's apps nor takes them over.
	other := kube.New(kube.Config{Client: cs, NamespacePrefix: prefix, Installation: "elsewhere"})
	if err := other.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if apps := other.Apps(); len(apps) != 0 {
		t.Errorf("another installation watches %v, want nothing", apps)
	}
	if err := other.Apply(ctx, v2); !errors.Is(err, kube.ErrForeign) {
		t.Errorf("another installation's apply of shop: %v, want ErrForeign", err)
	}

	// Destroy keeps what someone else put in the namespace, and so the
	// namespace; everything Paddock's goes.
	if _, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "theirs"}, Data: map[string]string{"a": "b"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := r.Destroy(ctx, "shop"); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, "theirs", metav1.GetOptions{}); err != nil {
		t.Errorf("foreign configmap after destroy: %v", err)
	}
	owned := metav1.ListOptions{LabelSelector: kube.LabelManagedBy + "=paddock"}
	if l, _ := cs.AppsV1().Deployments(ns).List(ctx, owned); len(l.Items) != 0 {
		t.Errorf("%d deployments left after destroy", len(l.Items))
	}
	if l, _ := cs.CoreV1().Secrets(ns).List(ctx, owned); len(l.Items) != 0 {
		t.Errorf("%d secrets left after destroy", len(l.Items))
	}
	if l, _ := cs.CoreV1().Services(ns).List(ctx, owned); len(l.Items) != 0 {
		t.Errorf("%d services left after destroy", len(l.Items))
	}
	if got, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); err != nil || got.DeletionTimestamp != nil {
		t.Errorf("namespace with a foreign object: %v, deleting %v; want kept", err, got.DeletionTimestamp)
	}

	// Without anything foreign, the namespace goes too.
	if err := cs.CoreV1().ConfigMaps(ns).Delete(ctx, "theirs", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := r.Destroy(ctx, "shop"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the namespace gone", func() bool {
		_, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("waited a minute for %s", what)
}
