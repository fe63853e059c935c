package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"paddock.dev/paddock/internal/kubetest"
	"paddock.dev/paddock/internal/kubetest/node"
	"paddock.dev/paddock/internal/testenv"
)

// kubePlatform starts a real control plane, a node that runs pods as
// local processes, a registry on loopback and `paddock up --runtime
// kubernetes` on them.
func kubePlatform(t *testing.T, nodes ...node.Options) (*testenv.Platform, kubernetes.Interface) {
	t.Helper()
	c := kubetest.Start(t)
	return startOnKube(t, c, nil, nodes...)
}

// startOnKube adds nodes (one by default) to c and starts Paddock on it,
// with volumes kept by st's classes when st is not nil.
func startOnKube(t *testing.T, c *kubetest.Cluster, st *kubetest.Storage, nodes ...node.Options) (*testenv.Platform, kubernetes.Interface) {
	t.Helper()
	return startOnKubeWith(t, c, st, nil, nodes...)
}

// startOnKubeWith is startOnKube with more flags for `paddock up`.
func startOnKubeWith(t *testing.T, c *kubetest.Cluster, st *kubetest.Storage, flags []string, nodes ...node.Options) (*testenv.Platform, kubernetes.Interface) {
	t.Helper()
	if len(nodes) == 0 {
		nodes = []node.Options{{Name: "node-1"}}
	}
	for _, o := range nodes {
		if st != nil {
			o.CSI = map[string]string{st.Driver: st.Endpoint}
		}
		node.Start(t, c, o)
	}
	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(reg.Close)
	host := strings.TrimPrefix(reg.URL, "http://")
	args := []string{"--runtime", "kubernetes", "--kubeconfig", c.Kubeconfig, "--registry", host + "/paddock", "--registry-insecure"}
	if st != nil {
		args = append(args, "--storage-class", st.Class, "--snapshot-class", st.SnapshotClass)
	}
	p := testenv.Start(t, append(args, flags...)...)
	cs, err := kubernetes.NewForConfig(c.Config())
	if err != nil {
		t.Fatal(err)
	}
	return p, cs
}

const kubeWeb = `[processes.web]
command = "./tenant serve"
instances = 2
[processes.web.health]
path = "/healthz"
status = 200
interval = "1s"
timeout = "1s"
grace = "20s"
`

// TestKubernetes runs the daily workflow on Kubernetes: deploy builds an
// image and rolls it out as a Deployment whose pods serve through
// Paddock's router; a config change rolls out with no failed request; a
// crash-looping release is rolled back; rollback brings back the earlier
// pods' template; scale; logs; destroy keeps what is not Paddock's.
func TestKubernetes(t *testing.T) {
	p, cs := kubePlatform(t)
	ctx := t.Context()
	ns := "paddock-shop"

	p.MustRun("apps", "create", "shop")
	p.MustRun("config", "set", "shop", "NAME=shop-one")
	stdout, stderr, err := p.Run("deploy", tenantApp(t, kubeWeb), "--app", "shop")
	if err != nil {
		t.Fatalf("deploy: %v\n%s\n%s", err, stdout, stderr)
	}
	if all := stdout + stderr; !strings.Contains(all, "image of v2 pushed") || !strings.Contains(all, "rolled out") {
		t.Errorf("deploy output does not tell of the image and the rollout:\n%s\n%s", stdout, stderr)
	}
	if all := stdout + stderr; !strings.Contains(all, "web: on Kubernetes the health check passes on any 2xx or 3xx answer, not only status 200") {
		t.Errorf("deploy output does not say the cluster checks health more loosely than status = 200:\n%s\n%s", stdout, stderr)
	}
	serving(t, p, "shop.localhost", "shop-one")

	web, err := cs.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if *web.Spec.Replicas != 2 || web.Status.ReadyReplicas != 2 {
		t.Errorf("web deployment: %d replicas, %d ready; want 2, 2", *web.Spec.Replicas, web.Status.ReadyReplicas)
	}
	firstSecret := web.Spec.Template.Spec.Containers[0].EnvFrom[0].SecretRef.Name
	rows := ps(t, p, "shop")
	if len(rows) != 2 || !rows[0].Healthy || !rows[1].Healthy || rows[0].State != "running" || rows[0].Node != "node-1" {
		t.Errorf("ps: %+v, want 2 healthy running instances on node-1", rows)
	}
	if out := p.MustRun("ps", "shop"); !strings.Contains(out, "NODE") || !strings.Contains(out, "node-1") {
		t.Errorf("ps does not show the pods' node:\n%s", out)
	}

	// A config change rolls out pod by pod: no request fails.
	l := startLoad(p, "shop.localhost", 4)
	p.MustRun("config", "set", "shop", "NAME=shop-two")
	serving(t, p, "shop.localhost", "shop-two")
	time.Sleep(time.Second)
	l.finish(t, "config change on kubernetes")

	// A release that crash-loops fails the deploy and is rolled back: the
	// app keeps serving the release before it.
	crash := strings.Replace(kubeWeb, "./tenant serve", "echo boom; exit 3", 1)
	stdout, stderr, err = p.Run("deploy", tenantApp(t, crash), "--app", "shop")
	if err == nil {
		t.Fatalf("deploy of a crashing release succeeded:\n%s\n%s", stdout, stderr)
	}
	if all := stdout + stderr; !strings.Contains(all, "restarted") || !strings.Contains(all, "back to v3") {
		t.Errorf("failed deploy output does not say why and what runs:\n%s\n%s", stdout, stderr)
	}
	serving(t, p, "shop.localhost", "shop-two")
	testenv.Eventually(t, 30*time.Second, func() error {
		d, err := cs.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if got := d.Spec.Template.Spec.Containers[0].Command[2]; got != "./tenant serve" {
			return fmt.Errorf("web runs %q, want the release before the crash", got)
		}
		return nil
	})

	// Rollback to v2 brings back v2's exact pod template: its Secret, so
	// its ReplicaSet.
	p.MustRun("rollback", "shop", "v2")
	serving(t, p, "shop.localhost", "shop-one")
	web, err = cs.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := web.Spec.Template.Spec.Containers[0].EnvFrom[0].SecretRef.Name; got != firstSecret {
		t.Errorf("rollback to v2 uses secret %s, want v2's %s", got, firstSecret)
	}

	p.MustRun("scale", "shop", "web=3")
	testenv.Eventually(t, 60*time.Second, func() error {
		healthy := 0
		for _, r := range ps(t, p, "shop") {
			if r.Healthy {
				healthy++
			}
		}
		if healthy != 3 {
			return fmt.Errorf("%d healthy instances, want 3", healthy)
		}
		return nil
	})

	testenv.Eventually(t, 30*time.Second, func() error {
		out, _, err := p.Run("logs", "shop", "-n", "200")
		if err != nil {
			return err
		}
		if !strings.Contains(out, "listening on") {
			return fmt.Errorf("logs do not show the pods' output:\n%s", out)
		}
		return nil
	})

	// Destroy removes what Paddock made and nothing else.
	if _, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "not-paddocks"}, Data: map[string]string{"k": "v"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p.MustRun("apps", "destroy", "shop", "--yes")
	testenv.Eventually(t, 30*time.Second, func() error {
		if _, err := cs.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("web deployment after destroy: %v", err)
		}
		return nil
	})
	if _, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, "not-paddocks", metav1.GetOptions{}); err != nil {
		t.Errorf("a configmap Paddock did not make is gone after destroy: %v", err)
	}
	// Its pods' logs on this machine go with it.
	testenv.Eventually(t, 30*time.Second, func() error {
		if dirs, _ := filepath.Glob(filepath.Join(p.Data, "logs", "shop.*")); len(dirs) != 0 {
			return fmt.Errorf("log folders of the destroyed app: %v", dirs)
		}
		return nil
	})
}

// TestKubernetesPlacementAndImage: an app that requires a region runs only
// on that region's node, and says where in apps info; an image that exists
// already deploys with --image, nothing built.
func TestKubernetesPlacementAndImage(t *testing.T) {
	p, cs := kubePlatform(t,
		node.Options{Name: "eu-1", Labels: map[string]string{"topology.kubernetes.io/region": "eu-west"}},
		node.Options{Name: "us-1", Labels: map[string]string{"topology.kubernetes.io/region": "us-east"}})
	ctx := t.Context()

	p.MustRun("apps", "create", "eu-shop", "--place", "topology.kubernetes.io/region=eu-west")
	p.MustRun("config", "set", "eu-shop", "NAME=eu-shop")
	manifest := strings.Replace(kubeWeb, "instances = 2", "instances = 4", 1)
	if stdout, stderr, err := p.Run("deploy", tenantApp(t, manifest), "--app", "eu-shop"); err != nil {
		t.Fatalf("deploy: %v\n%s\n%s", err, stdout, stderr)
	}
	serving(t, p, "eu-shop.localhost", "eu-shop")
	pods, err := cs.CoreV1().Pods("paddock-eu-shop").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, pod := range pods.Items {
		if pod.Spec.NodeName != "eu-1" {
			t.Errorf("pod %s runs on %q, want eu-1 only", pod.Name, pod.Spec.NodeName)
		}
	}
	if len(pods.Items) != 4 {
		t.Errorf("%d pods, want 4", len(pods.Items))
	}
	info := p.MustRun("apps", "info", "eu-shop")
	if !strings.Contains(info, "placement: topology.kubernetes.io/region=eu-west") || !strings.Contains(info, "nodes:     eu-1\n") {
		t.Errorf("apps info does not show the placement and the node:\n%s", info)
	}
	if _, stderr, err := p.Run("apps", "create", "bad", "--place", "not a label=x"); err == nil || !strings.Contains(stderr, "placement label") {
		t.Errorf("a malformed placement label: err %v, stderr %q; want it refused, naming the label", err, stderr)
	}

	// The image Paddock built for eu-shop, deployed to another app by
	// reference: nothing is built, and it serves with that app's config.
	web, err := cs.AppsV1().Deployments("paddock-eu-shop").Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ref := web.Spec.Template.Spec.Containers[0].Image
	p.MustRun("apps", "create", "mirror")
	p.MustRun("config", "set", "mirror", "NAME=mirror")
	dir := writeApp(t, map[string]string{"paddock.toml": kubeWeb})
	start := time.Now()
	stdout, stderr, err := p.Run("deploy", dir, "--image", ref, "--app", "mirror")
	if err != nil {
		t.Fatalf("deploy --image: %v\n%s\n%s", err, stdout, stderr)
	}
	serving(t, p, "mirror.localhost", "mirror")
	t.Logf("deploy --image to the first 200: %s", time.Since(start).Round(time.Millisecond))
	if strings.Contains(stderr, "image of v") || strings.Contains(stderr, "build") {
		t.Errorf("deploy --image built or pushed something:\n%s", stderr)
	}
	// A tag is pinned to the digest it names at deploy time.
	tagged := strings.Split(ref, "@")[0] + ":stable"
	src, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Get(src)
	if err != nil {
		t.Fatal(err)
	}
	dst, err := name.NewTag(tagged, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Tag(dst, desc); err != nil {
		t.Fatal(err)
	}
	p.MustRun("config", "set", "mirror", "NAME=mirror-tagged")
	if stdout, stderr, err := p.Run("deploy", dir, "--image", tagged, "--app", "mirror"); err != nil {
		t.Fatalf("deploy --image by tag: %v\n%s\n%s", err, stdout, stderr)
	}
	serving(t, p, "mirror.localhost", "mirror-tagged")
	if got := deploymentImage(t, cs, "paddock-mirror"); got != ref {
		t.Errorf("deploy --image %s runs %s, want it pinned to %s", tagged, got, ref)
	}
	if _, stderr, err := p.Run("deploy", dir, "--image", strings.Split(ref, "@")[0]+":nosuchtag", "--app", "mirror"); err == nil || !strings.Contains(stderr, "nosuchtag") {
		t.Errorf("deploy --image of a tag that does not exist: err %v, stderr %q; want it refused, naming the image", err, stderr)
	}
	if _, stderr, err := p.Run("deploy", "--image", "not a reference", "--app", "mirror"); err == nil || !strings.Contains(stderr, "REGISTRY/REPOSITORY") {
		t.Errorf("a malformed image reference: err %v, stderr %q; want it refused with the form to use", err, stderr)
	}

	// A first deploy that never works leaves nothing running.
	p.MustRun("apps", "create", "broken")
	crash := strings.Replace(kubeWeb, "./tenant serve", "exit 3", 1)
	if stdout, stderr, err := p.Run("deploy", tenantApp(t, crash), "--app", "broken"); err == nil {
		t.Fatalf("deploy of a crashing first release succeeded:\n%s\n%s", stdout, stderr)
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		if _, err := cs.AppsV1().Deployments("paddock-broken").Get(ctx, "web", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("the failed first release's deployment: %v, want gone", err)
		}
		return nil
	})
}

// deploymentImage is the image of ns's web Deployment.
func deploymentImage(t *testing.T, cs kubernetes.Interface, ns string) string {
	t.Helper()
	d, err := cs.AppsV1().Deployments(ns).Get(t.Context(), "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return d.Spec.Template.Spec.Containers[0].Image
}

// TestKubernetesSecretsNeverLeak: pods that print their secrets in every
// form leave none of them in the logs, the events or `ps`, and the cluster
// holds them only in the release's Secrets: not in a Deployment, a
// ReplicaSet, a Pod or the names of the Secrets.
func TestKubernetesSecretsNeverLeak(t *testing.T) {
	p, cs := kubePlatform(t)
	ctx := t.Context()
	ns := "paddock-leak"
	values := map[string]string{"API_TOKEN": randomValue("v-"), "TLS_KEY": randomValue("v-")}
	p.MustRun("apps", "create", "leak")
	setSecret(t, p, "leak", "API_TOKEN", values["API_TOKEN"])
	setSecret(t, p, "leak", "TLS_KEY", values["TLS_KEY"], "--as-file")
	leaky := strings.Replace(kubeWeb, "./tenant serve", "./tenant leak API_TOKEN TLS_KEY", 1)
	if stdout, stderr, err := p.Run("deploy", tenantApp(t, leaky), "--app", "leak"); err != nil {
		t.Fatalf("deploy: %v\n%s\n%s", err, stdout, stderr)
	}
	serving(t, p, "leak.localhost", "leaked")
	var logs string
	testenv.Eventually(t, 30*time.Second, func() error {
		logs = p.MustRun("logs", "leak", "-n", "1000")
		for _, want := range []string{"API_TOKEN is [REDACTED:API_TOKEN]", "TLS_KEY on stderr: [REDACTED:TLS_KEY]", "API_TOKEN split: [REDACTED:API_TOKEN]"} {
			if !strings.Contains(logs, want) {
				return fmt.Errorf("logs do not show %q yet:\n%s", want, logs)
			}
		}
		return nil
	})

	surfaces := map[string]string{
		"logs":     logs,
		"events":   p.MustRun("events", "leak"),
		"ps":       p.MustRun("ps", "leak", "--json"),
		"releases": p.MustRun("releases", "leak", "--json"),
	}
	deps, err := cs.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rss, err := cs.AppsV1().ReplicaSets(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	secrets, err := cs.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range secrets.Items {
		names = append(names, s.Name)
	}
	for name, obj := range map[string]any{"deployments": deps, "replicasets": rss, "pods": pods} {
		b, err := json.Marshal(obj)
		if err != nil {
			t.Fatal(err)
		}
		surfaces[name] = string(b)
	}
	surfaces["secret names"] = strings.Join(names, " ")
	for surface, text := range surfaces {
		for name, v := range values {
			for _, form := range forms(v) {
				if strings.Contains(text, form) {
					t.Errorf("%s shows %s (as %q)", surface, name, form)
				}
			}
		}
	}
}
