package kube_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/restmapper"

	"paddock.dev/paddock/internal/kube"
	"paddock.dev/paddock/internal/kubetest"
)

// applyYAML applies every object of a multi-document YAML file, as
// `kubectl apply --server-side` would.
func applyYAML(t *testing.T, c *kubetest.Cluster, file string) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	dc, err := discovery.NewDiscoveryClientForConfig(c.Config())
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	dyn, err := dynamic.NewForConfig(c.Config())
	if err != nil {
		t.Fatal(err)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for {
		var obj unstructured.Unstructured
		if err := dec.Decode(&obj.Object); errors.Is(err, io.EOF) {
			return
		} else if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if len(obj.Object) == 0 {
			continue
		}
		gvk := obj.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			t.Fatalf("%s: %s: %v", file, gvk, err)
		}
		body, err := obj.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
		if ns := obj.GetNamespace(); ns != "" {
			ri = dyn.Resource(m.Resource).Namespace(ns)
		}
		if _, err := ri.Patch(t.Context(), obj.GetName(), types.ApplyPatchType, body, metav1.PatchOptions{FieldManager: "test-admin"}); err != nil {
			t.Fatalf("apply %s %s: %v", gvk.Kind, obj.GetName(), err)
		}
	}
}

// TestLeastPrivilege runs the runtime as the service account of
// docs/kubernetes/paddock-rbac.yaml: that is enough to run, change and
// destroy an app, and not enough to read or change anything outside
// Paddock's own namespaces.
func TestLeastPrivilege(t *testing.T) {
	c := kubetest.Start(t)
	ctx := t.Context()
	applyYAML(t, c, "../../docs/kubernetes/paddock-rbac.yaml")
	admin, err := kubernetes.NewForConfig(c.Config())
	if err != nil {
		t.Fatal(err)
	}
	tok, err := admin.CoreV1().ServiceAccounts("paddock-system").CreateToken(ctx, "paddock",
		&authv1.TokenRequest{Spec: authv1.TokenRequestSpec{}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := c.Config()
	cfg.BearerToken = tok.Status.Token
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}

	// The admission policy is in force once the API server has loaded it:
	// a namespace without Paddock's label is refused (asked as a dry run).
	waitFor(t, "the admission policy in force", func() bool {
		_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "sneaky"}},
			metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return apierrors.IsInvalid(err) || apierrors.IsForbidden(err)
	})

	r := kube.New(kube.Config{Client: cs, NamespacePrefix: prefix})
	if err := r.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	// A new RoleBinding takes effect within moments: the first Apply may
	// find its rights not there yet, the reconciler's next pass would not.
	var applyErr error
	waitFor(t, "an apply as the service account", func() bool {
		applyErr = r.Apply(ctx, shop(1))
		return applyErr == nil
	})
	ns := prefix + "shop"
	if _, err := cs.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{}); err != nil {
		t.Fatalf("the service account cannot read its own deployment: %v", err)
	}
	waitFor(t, "the watch of the app", func() bool { _, err := r.Status("shop"); return err == nil })

	denied := func(what string, err error) {
		t.Helper()
		if !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
			t.Errorf("%s as Paddock: %v, want it refused", what, err)
		} else if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%s: error shows a secret: %v", what, err)
		}
	}
	_, err = cs.CoreV1().Secrets("kube-system").List(ctx, metav1.ListOptions{})
	denied("list kube-system's secrets", err)
	_, err = cs.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, metav1.CreateOptions{})
	denied("create a secret in default", err)
	_, err = cs.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{})
	denied("list kube-system's pods", err)
	denied("delete namespace default", cs.CoreV1().Namespaces().Delete(ctx, "default", metav1.DeleteOptions{}))
	_, err = cs.CoreV1().Namespaces().Patch(ctx, "default", types.MergePatchType,
		[]byte(`{"metadata":{"labels":{"app.kubernetes.io/managed-by":"paddock"}}}`), metav1.PatchOptions{})
	denied("label namespace default as Paddock's", err)
	_, err = cs.RbacV1().RoleBindings("default").Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "paddock"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: kube.AppRole},
		Subjects:   []rbacv1.Subject{{Kind: "User", Name: "system:serviceaccount:paddock-system:paddock"}},
	}, metav1.CreateOptions{})
	denied("bind paddock-app in default", err)
	_, err = cs.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "admin"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "cluster-admin"},
		Subjects:   []rbacv1.Subject{{Kind: "User", Name: "system:serviceaccount:paddock-system:paddock"}},
	}, metav1.CreateOptions{})
	denied("bind cluster-admin in its own namespace", err)
	_, err = cs.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "everyone"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: kube.AppRole},
		Subjects:   []rbacv1.Subject{{Kind: "Group", Name: "system:authenticated"}},
	}, metav1.CreateOptions{})
	denied("bind paddock-app to every user in its own namespace", err)
	_, err = cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "np"},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Ports: []corev1.ServicePort{{Port: 80}}},
	}, metav1.CreateOptions{})
	denied("make a NodePort service", err)
	_, err = cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "paddock-lax",
		Labels: map[string]string{kube.LabelManagedBy: "paddock"}}}, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	denied("make a namespace without the restricted pod security standard", err)
	_, err = cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kube-sneaky",
		Labels: map[string]string{kube.LabelManagedBy: "paddock", "pod-security.kubernetes.io/enforce": "restricted"}}}, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	denied("make a namespace outside its prefix", err)
	_, err = cs.CoreV1().Namespaces().Patch(ctx, ns, types.MergePatchType,
		[]byte(`{"metadata":{"labels":{"pod-security.kubernetes.io/enforce":"privileged"}}}`), metav1.PatchOptions{})
	denied("lower its namespace's pod security standard", err)
	// Volumes: claims of its own, of new volumes only; a claim that names a
	// PersistentVolume (another namespace's released one) is refused.
	st := r.Storage(kube.StorageConfig{})
	vol, err := st.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pdk-data-1", CapacityRange: &csi.CapacityRange{RequiredBytes: 1 << 20},
		Parameters: map[string]string{kube.ParamApp: "shop", kube.ParamAppID: "7"}})
	if err != nil {
		t.Errorf("a volume's claim as Paddock: %v", err)
	} else {
		_, err := cs.CoreV1().PersistentVolumeClaims(ns).Patch(ctx, "pdk-data-1", types.MergePatchType, []byte(`{"spec":{"volumeName":"someone-elses"}}`), metav1.PatchOptions{})
		if err == nil || !strings.Contains(err.Error(), "claims of new volumes") {
			t.Errorf("bind its claim to a PersistentVolume by name as Paddock: %v, want it refused by the admission policy", err)
		}
		if _, err := st.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: vol.Volume.VolumeId}); err != nil {
			t.Errorf("delete a volume's claim as Paddock: %v", err)
		}
	}
	_, err = cs.CoreV1().PersistentVolumeClaims(ns).Create(ctx, &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "steal"},
		Spec: corev1.PersistentVolumeClaimSpec{VolumeName: "someone-elses", AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Mi")}}},
	}, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if !apierrors.IsInvalid(err) && !apierrors.IsForbidden(err) || !strings.Contains(fmt.Sprint(err), "claims of new volumes") {
		t.Errorf("claim a PersistentVolume by name as Paddock: %v, want it refused by the admission policy", err)
	}
	_, err = cs.CoreV1().PersistentVolumeClaims("default").List(ctx, metav1.ListOptions{})
	denied("list default's claims", err)

	// Not even an admin may run a pod as root, with its capabilities, in
	// an app's namespace: it enforces the restricted Pod Security Standard.
	_, err = admin.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "root"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "x"}}},
	}, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "restricted") {
		t.Errorf("a pod as root in an app's namespace: %v, want it refused by the restricted standard", err)
	}

	// Destroy keeps a namespace with something of someone else's in it,
	// and leaves Paddock no rights there.
	if _, err := admin.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "theirs"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := r.Destroy(ctx, "shop"); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CoreV1().ConfigMaps(ns).Get(ctx, "theirs", metav1.GetOptions{}); err != nil {
		t.Errorf("foreign configmap: %v", err)
	}
	waitFor(t, "Paddock's rights in the kept namespace gone", func() bool {
		_, err := cs.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{})
		return apierrors.IsForbidden(err)
	})
	// After a restart, the kept namespace is not Paddock's to watch.
	r2 := kube.New(kube.Config{Client: cs, NamespacePrefix: prefix})
	if err := r2.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if apps := r2.Apps(); len(apps) != 0 {
		t.Errorf("after a restart Paddock watches %v, want nothing", apps)
	}

	// An app whose namespace holds nothing foreign goes whole.
	other := shop(1)
	other.Name = "cart"
	waitFor(t, "an apply of a second app", func() bool { return r.Apply(ctx, other) == nil })
	if err := r.Destroy(ctx, "cart"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "cart's namespace gone", func() bool {
		_, err := admin.CoreV1().Namespaces().Get(ctx, prefix+"cart", metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
}
