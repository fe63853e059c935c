package kubetest_test

import (
	"os"
	"slices"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"paddock.dev/paddock/internal/kubetest"
)

const fieldManager = "paddock"

// TestCluster drives a real API server the way Paddock's Kubernetes runtime
// will: typed clients, server-side apply under one field manager, and an
// informer that sees what was applied.
func TestCluster(t *testing.T) {
	c := kubetest.Start(t)
	ctx := t.Context()

	cs, err := kubernetes.NewForConfig(c.Config())
	if err != nil {
		t.Fatal(err)
	}

	// The kubeconfig file reaches the same server as the same user.
	fromFile, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		t.Fatalf("load kubeconfig: %v", err)
	}
	csFile, err := kubernetes.NewForConfig(fromFile)
	if err != nil {
		t.Fatal(err)
	}
	v, err := csFile.Discovery().ServerVersion()
	if err != nil {
		t.Fatalf("server version through the kubeconfig: %v", err)
	}
	if got, want := v.GitVersion, "v1.36.3"; got != want {
		t.Errorf("server version = %q, want %q", got, want)
	}
	if info, err := os.Stat(c.Kubeconfig); err != nil {
		t.Fatal(err)
	} else if got := info.Mode().Perm(); got&0o077 != 0 {
		t.Errorf("kubeconfig mode = %v, want no access for group and others (it holds the admin token)", got)
	}

	ns := "paddock-shop"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: ns},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace: %v", err)
	}

	// Watch the namespace's Deployments before applying one, so the create
	// arrives as an event rather than in the initial list.
	factory := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(ns))
	added := make(chan *appsv1.Deployment, 10)
	deployments := factory.Apps().V1().Deployments().Informer()
	if _, err := deployments.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if d, ok := obj.(*appsv1.Deployment); ok {
				added <- d
			}
		},
	}); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	factory.Start(stop)
	t.Cleanup(func() {
		close(stop)
		factory.Shutdown()
	})
	if !cache.WaitForCacheSync(ctx.Done(), deployments.HasSynced) {
		t.Fatal("deployment informer did not sync")
	}

	labels := map[string]string{"paddock.dev/app": "shop", "paddock.dev/process": "web"}
	dep := appsv1ac.Deployment("web", ns).
		WithLabels(labels).
		WithSpec(appsv1ac.DeploymentSpec().
			WithReplicas(2).
			WithSelector(metav1ac.LabelSelector().WithMatchLabels(labels)).
			WithTemplate(corev1ac.PodTemplateSpec().
				WithLabels(labels).
				WithSpec(corev1ac.PodSpec().
					WithContainers(corev1ac.Container().
						WithName("web").
						WithImage("registry.example/shop:1.4").
						WithEnvFrom(corev1ac.EnvFromSource().
							WithSecretRef(corev1ac.SecretEnvSource().WithName("shop-v1")))))))
	apply := metav1.ApplyOptions{FieldManager: fieldManager, Force: true}
	if _, err := cs.AppsV1().Deployments(ns).Apply(ctx, dep, apply); err != nil {
		t.Fatalf("apply deployment: %v", err)
	}
	secret := corev1ac.Secret("shop-v1", ns).
		WithLabels(map[string]string{"paddock.dev/app": "shop", "paddock.dev/release": "v1"}).
		WithImmutable(true).
		WithStringData(map[string]string{"DATABASE_URL": "postgres://shop@db/shop"})
	if _, err := cs.CoreV1().Secrets(ns).Apply(ctx, secret, apply); err != nil {
		t.Fatalf("apply secret: %v", err)
	}

	gotDep, err := cs.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get deployment: %v", err)
	}
	if got, want := *gotDep.Spec.Replicas, int32(2); got != want {
		t.Errorf("deployment replicas = %d, want %d", got, want)
	}
	if got, want := gotDep.Spec.Template.Spec.Containers[0].Image, "registry.example/shop:1.4"; got != want {
		t.Errorf("deployment image = %q, want %q", got, want)
	}
	checkAppliedBy(t, "deployment", gotDep.ManagedFields)

	gotSecret, err := cs.CoreV1().Secrets(ns).Get(ctx, "shop-v1", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get secret: %v", err)
	}
	if got, want := string(gotSecret.Data["DATABASE_URL"]), "postgres://shop@db/shop"; got != want {
		t.Errorf("secret DATABASE_URL = %q, want %q", got, want)
	}
	if gotSecret.Immutable == nil || !*gotSecret.Immutable {
		t.Errorf("secret immutable = %v, want true", gotSecret.Immutable)
	}
	checkAppliedBy(t, "secret", gotSecret.ManagedFields)

	select {
	case d := <-added:
		if got, want := d.Name, "web"; got != want {
			t.Errorf("informer saw deployment %q, want %q", got, want)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("informer saw no deployment created within 30 s")
	}

	// kube-controller-manager turns the Deployment into two Pods, which
	// stay Pending: the cluster has no node.
	waitFor(t, "the deployment's 2 pods", func() (bool, error) {
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "paddock.dev/app=shop"})
		if err != nil {
			return false, err
		}
		return len(pods.Items) == 2 && pods.Items[0].Status.Phase == corev1.PodPending, nil
	})

	if err := cs.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete namespace: %v", err)
	}
	// The namespace controller empties the namespace and removes it. Its
	// pods are bound to no node, so nothing waits for them to stop.
	waitFor(t, "the namespace to be gone", func() (bool, error) {
		_, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, err
	})
}

// waitFor polls cond every 100 ms for up to a minute.
func waitFor(t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	var lastErr error
	for time.Now().Before(deadline) {
		ok, err := cond()
		if ok {
			return
		}
		lastErr = err
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("waited a minute for %s (last error: %v)", what, lastErr)
}

// checkAppliedBy checks that the field manager owns fields of the object
// through server-side apply.
func checkAppliedBy(t *testing.T, what string, fields []metav1.ManagedFieldsEntry) {
	t.Helper()
	if !slices.ContainsFunc(fields, func(f metav1.ManagedFieldsEntry) bool {
		return f.Manager == fieldManager && f.Operation == metav1.ManagedFieldsOperationApply
	}) {
		t.Errorf("%s managedFields = %+v, want an Apply entry of manager %q", what, fields, fieldManager)
	}
}
