package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	snapclient "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"paddock.dev/paddock/internal/kube"
	"paddock.dev/paddock/internal/kubetest"
	"paddock.dev/paddock/internal/testenv"
)

// kubeNotes serves the note kept in its volume: NOTE the first time,
// OVERWRITE whenever that is set. Each of its two workers has a volume of
// its own, where the first pod of its slot writes its name.
const kubeNotes = `[processes.web]
command = "d=$PADDOCK_VOLUME_DATA; [ -e $d/note ] || printf %s \"$NOTE\" > $d/note; [ -z \"$OVERWRITE\" ] || printf %s \"$OVERWRITE\" > $d/note; echo \"note=$(cat $d/note)\"; NAME=$(cat $d/note) exec ./tenant serve"
[processes.web.health]
path = "/healthz"
interval = "1s"
timeout = "1s"
grace = "20s"
[processes.worker]
command = "d=$PADDOCK_VOLUME_SCRATCH; [ -e $d/owner ] || printf %s \"$PADDOCK_INSTANCE\" > $d/owner; echo \"owner=$(cat $d/owner) me=$PADDOCK_INSTANCE\"; exec sleep 3600"
instances = 2
`

// TestKubernetesVolumes: on Kubernetes a volume is a claim of the
// configured StorageClass, made by the cluster's provisioner from a real
// CSI plugin; its data outlives pods; a snapshot is a VolumeSnapshot and a
// restore from it gives the data back; a resize grows the claim; destroy
// takes it all back. What needs the content from Paddock is refused with
// a reason.
func TestKubernetesVolumes(t *testing.T) {
	c := kubetest.Start(t)
	st := c.StartStorage(t)
	p, cs := startOnKube(t, c, st)
	snaps, err := snapclient.NewForConfig(c.Config())
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	ns := "paddock-notes"

	p.MustRun("apps", "create", "notes")
	p.MustRun("config", "set", "notes", "NOTE=first")
	p.MustRun("volumes", "create", "data", "--app", "notes", "--size", "64MiB")
	p.MustRun("volumes", "attach", "data", "notes", "--process", "web", "--path", "data")
	p.MustRun("volumes", "create", "scratch", "--app", "notes", "--size", "16MiB")
	p.MustRun("volumes", "attach", "scratch", "notes", "--process", "worker", "--path", "scratch", "--per-instance")
	if out, errOut, err := p.Run("deploy", tenantApp(t, kubeNotes), "--app", "notes"); err != nil {
		t.Fatalf("deploy: %v\n%s\n%s", err, out, errOut)
	}
	serving(t, p, "notes.localhost", "first")

	// Each worker is a Deployment of one pod with a claim of its own:
	// scratch for the first, scratch-1 (made for it) for the second.
	for slot, vol := range []string{"scratch", "scratch-1"} {
		name := fmt.Sprintf("worker-%d", slot)
		d, err := cs.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("the Deployment of a worker with a volume of its own: %v", err)
		}
		if *d.Spec.Replicas != 1 || envOf(d, "PADDOCK_VOLUME_SCRATCH") != "/app/scratch" {
			t.Errorf("%s: %d replicas, PADDOCK_VOLUME_SCRATCH=%q; want 1 and /app/scratch", name, *d.Spec.Replicas, envOf(d, "PADDOCK_VOLUME_SCRATCH"))
		}
		if got, want := mountedClaim(d), boundClaim(t, cs, ns, vol).Name; got != want {
			t.Errorf("%s mounts claim %q, want %s, the claim of volume %s", name, got, want, vol)
		}
	}
	if vols := p.MustRun("volumes", "--app", "notes"); !strings.Contains(vols, "scratch-1") {
		t.Errorf("volumes does not list the second worker's volume:\n%s", vols)
	}
	claim := boundClaim(t, cs, ns, "data")
	if got := claim.Spec.StorageClassName; got == nil || *got != st.Class {
		t.Errorf("claim's StorageClass = %v, want %s", got, st.Class)
	}
	if got := claim.Spec.Resources.Requests[corev1.ResourceStorage]; got.Cmp(resource.MustParse("64Mi")) != 0 {
		t.Errorf("claim's request = %s, want 64Mi", got.String())
	}
	if l := claim.Labels; l["paddock.dev/volume"] != "data" || l["app.kubernetes.io/managed-by"] != "paddock" {
		t.Errorf("claim's labels = %v", l)
	}
	web, err := cs.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if web.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Errorf("a Deployment with a volume of one writer has strategy %s, want Recreate", web.Spec.Strategy.Type)
	}
	if got := mountedClaim(web); got != claim.Name {
		t.Errorf("web pods mount claim %q, want %s", got, claim.Name)
	}
	if env := envOf(web, "PADDOCK_VOLUME_DATA"); env != "/app/data" {
		t.Errorf("PADDOCK_VOLUME_DATA = %q, want /app/data", env)
	}
	if _, errOut, err := p.Run("scale", "notes", "web=2"); err == nil || !strings.Contains(errOut, "one instance writes at a time") {
		t.Errorf("scale of a process with a volume of one writer to 2: err %v, stderr %q; want it refused", err, errOut)
	}

	// A snapshot is a VolumeSnapshot of the claim, taken before the
	// command returns.
	start := time.Now()
	p.MustRun("volumes", "snapshot", "data", "--name", "before")
	t.Logf("volumes snapshot took %s", time.Since(start).Round(time.Millisecond))
	list, err := snaps.SnapshotV1().VolumeSnapshots(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 {
		t.Fatalf("%d VolumeSnapshots in %s, want 1", len(list.Items), ns)
	}
	vs := list.Items[0]
	if src := vs.Spec.Source.PersistentVolumeClaimName; src == nil || *src != claim.Name ||
		vs.Spec.VolumeSnapshotClassName == nil || *vs.Spec.VolumeSnapshotClassName != st.SnapshotClass ||
		vs.Status == nil || vs.Status.ReadyToUse == nil || !*vs.Status.ReadyToUse {
		t.Errorf("VolumeSnapshot: source %v, class %v, status %+v; want of %s, class %s, ready", src, vs.Spec.VolumeSnapshotClassName, vs.Status, claim.Name, st.SnapshotClass)
	}

	// The data outlives pods: a pod that wrote it is replaced by one
	// that reads it.
	p.MustRun("config", "set", "notes", "OVERWRITE=second")
	serving(t, p, "notes.localhost", "second")
	p.MustRun("config", "unset", "notes", "OVERWRITE")
	testenv.Eventually(t, 60*time.Second, func() error {
		if logs := p.MustRun("logs", "notes", "-n", "1000"); strings.Count(logs, "note=second") < 2 {
			return fmt.Errorf("no second pod read the note yet:\n%s", logs)
		}
		return nil
	})
	serving(t, p, "notes.localhost", "second")
	// New workers found what the first pod of their own slot wrote, in
	// both slots.
	testenv.Eventually(t, 60*time.Second, func() error {
		logs := p.MustRun("logs", "notes", "-n", "1000")
		kept := map[string]bool{}
		for _, line := range strings.Split(logs, "\n") {
			_, rest, ok := strings.Cut(line, "owner=")
			owner, me, ok2 := strings.Cut(rest, " me=")
			me = strings.TrimSpace(me)
			for _, slot := range []string{"worker-0-", "worker-1-"} {
				if ok && ok2 && owner != me && strings.HasPrefix(owner, slot) && strings.HasPrefix(me, slot) {
					kept[slot] = true
				}
			}
		}
		if len(kept) < 2 {
			return fmt.Errorf("slots whose new worker read what the first one wrote: %v, want both:\n%s", kept, logs)
		}
		return nil
	})

	// Restore: refused while a pod mounts the claim; then a new claim
	// from the VolumeSnapshot takes the old one's place.
	if _, errOut, err := p.Run("volumes", "restore", "data", "before"); err == nil || !strings.Contains(errOut, "scale") {
		t.Errorf("restore of a volume a pod mounts: err %v, stderr %q; want a refusal that says to scale to 0", err, errOut)
	}
	p.MustRun("scale", "notes", "web=0")
	testenv.Eventually(t, 60*time.Second, func() error {
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "paddock.dev/process=web"})
		if err != nil || len(pods.Items) > 0 {
			return fmt.Errorf("web pods of notes: %v (%v)", podNames(pods), err)
		}
		return nil
	})
	p.MustRun("volumes", "restore", "data", "before")
	p.MustRun("scale", "notes", "web=1")
	serving(t, p, "notes.localhost", "first")
	restored := boundClaim(t, cs, ns, "data")
	if restored.Name == claim.Name || restored.Spec.DataSourceRef == nil || restored.Spec.DataSourceRef.Name != vs.Name {
		t.Errorf("restored claim %s from %+v; want a new claim from VolumeSnapshot %s", restored.Name, restored.Spec.DataSourceRef, vs.Name)
	}

	// A resize raises the claim's request, and the cluster's resizer grows
	// the volume.
	p.MustRun("volumes", "resize", "data", "--size", "128MiB")
	testenv.Eventually(t, 60*time.Second, func() error {
		got, err := cs.CoreV1().PersistentVolumeClaims(ns).Get(ctx, restored.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if req, capa := got.Spec.Resources.Requests[corev1.ResourceStorage], got.Status.Capacity[corev1.ResourceStorage]; req.Cmp(resource.MustParse("128Mi")) != 0 || capa.Cmp(resource.MustParse("128Mi")) < 0 {
			return fmt.Errorf("claim requests %s and has %s; want 128Mi", req.String(), capa.String())
		}
		return nil
	})

	// Paddock does not read a volume's content on a cluster: it says so.
	for _, args := range [][]string{{"volumes", "verify", "data", "before"}, {"volumes", "export", "data", "before", "-o", t.TempDir() + "/x.tar"}} {
		if _, errOut, err := p.Run(args...); err == nil || !strings.Contains(errOut, "on Kubernetes") {
			t.Errorf("%s: err %v, stderr %q; want a refusal that says why", strings.Join(args, " "), err, errOut)
		}
	}

	// Deleting the volume takes back its claim, its snapshots and, by the
	// classes' policies, their storage.
	p.MustRun("scale", "notes", "web=0", "worker=0")
	for _, vol := range []string{"data", "scratch-1", "scratch"} {
		testenv.Eventually(t, 60*time.Second, func() error {
			if _, errOut, err := p.Run("volumes", "delete", vol, "--force", "--yes"); err != nil {
				return fmt.Errorf("volumes delete %s: %v: %s", vol, err, errOut)
			}
			return nil
		})
	}
	p.MustRun("apps", "destroy", "notes", "--yes")
	testenv.Eventually(t, 90*time.Second, func() error {
		if _, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("namespace %s: %v, want gone", ns, err)
		}
		contents, err := snaps.SnapshotV1().VolumeSnapshotContents().List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		if len(contents.Items) > 0 {
			return fmt.Errorf("%d VolumeSnapshotContents left, e.g. %s", len(contents.Items), contents.Items[0].Name)
		}
		pvs, err := cs.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		if len(pvs.Items) > 0 {
			return fmt.Errorf("%d PersistentVolumes left, e.g. %s", len(pvs.Items), pvs.Items[0].Name)
		}
		return nil
	})
}

// TestKubernetesVolumeQuota: scaled past the app's volume quota, a process
// with a volume per instance runs the instances whose volumes fit, says
// which wait and why, and the app's other changes still roll out.
func TestKubernetesVolumeQuota(t *testing.T) {
	c := kubetest.Start(t)
	st := c.StartStorage(t)
	p, cs := startOnKubeWith(t, c, st, []string{"--volume-quota", "40MiB"})
	ctx := t.Context()
	ns := "paddock-quota"

	p.MustRun("apps", "create", "quota")
	p.MustRun("volumes", "create", "scratch", "--app", "quota", "--size", "16MiB")
	p.MustRun("volumes", "attach", "scratch", "quota", "--process", "worker", "--path", "scratch", "--per-instance")
	manifest := "[processes.worker]\ncommand = \"exec sleep 3600\"\ninstances = 1\n"
	if out, errOut, err := p.Run("deploy", tenantApp(t, manifest), "--app", "quota"); err != nil {
		t.Fatalf("deploy: %v\n%s\n%s", err, out, errOut)
	}

	// 16 MiB for each instance: a third does not fit in 40.
	p.MustRun("scale", "quota", "worker=3")
	testenv.Eventually(t, 60*time.Second, func() error {
		for _, name := range []string{"worker-0", "worker-1"} {
			d, err := cs.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return fmt.Errorf("deployment %s: %v", name, err)
			}
			if d.Status.ReadyReplicas != 1 {
				return fmt.Errorf("deployment %s: %d ready, want 1", name, d.Status.ReadyReplicas)
			}
		}
		if events := p.MustRun("events", "quota"); !strings.Contains(events, "instance 2 of worker waits for its volumes") || !strings.Contains(events, "quota") {
			return fmt.Errorf("no event says instance 2 waits for its volume over the quota:\n%s", events)
		}
		return nil
	})
	if _, err := cs.AppsV1().Deployments(ns).Get(ctx, "worker-2", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("deployment worker-2, whose volume is over the quota: %v, want none", err)
	}
	if vols := p.MustRun("volumes", "--app", "quota"); !strings.Contains(vols, "scratch-1") || strings.Contains(vols, "scratch-2") {
		t.Errorf("volumes: want scratch-1 and no scratch-2:\n%s", vols)
	}

	// The app's other changes still roll out.
	release := func() int {
		d, err := cs.AppsV1().Deployments(ns).Get(ctx, "worker-1", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		v, _ := strconv.Atoi(d.Annotations[kube.AnnotationRelease])
		return v
	}
	before := release()
	if out, errOut, err := p.Run("config", "set", "quota", "GREETING=hello"); err != nil {
		t.Fatalf("config set over the quota: %v\n%s\n%s", err, out, errOut)
	}
	if after := release(); after != before+1 {
		t.Errorf("worker-1 runs release v%d after the config change, want v%d", after, before+1)
	}
}

// boundClaim waits for the one claim of a volume in ns to be bound and
// returns it.
func boundClaim(t *testing.T, cs kubernetes.Interface, ns, volume string) *corev1.PersistentVolumeClaim {
	t.Helper()
	var claim *corev1.PersistentVolumeClaim
	testenv.Eventually(t, 60*time.Second, func() error {
		list, err := cs.CoreV1().PersistentVolumeClaims(ns).List(t.Context(), metav1.ListOptions{LabelSelector: "paddock.dev/volume=" + volume})
		if err != nil {
			return err
		}
		var live []corev1.PersistentVolumeClaim
		for _, c := range list.Items {
			if c.DeletionTimestamp == nil {
				live = append(live, c)
			}
		}
		if len(live) != 1 || live[0].Status.Phase != corev1.ClaimBound {
			return fmt.Errorf("claims in %s: %d live, want 1 bound", ns, len(live))
		}
		claim = &live[0]
		return nil
	})
	return claim
}

func mountedClaim(d *appsv1.Deployment) string {
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.PersistentVolumeClaim != nil {
			return v.PersistentVolumeClaim.ClaimName
		}
	}
	return ""
}

func envOf(d *appsv1.Deployment, name string) string {
	for _, e := range d.Spec.Template.Spec.Containers[0].Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

func podNames(l *corev1.PodList) []string {
	if l == nil {
		return nil
	}
	var out []string
	for _, p := range l.Items {
		out = append(out, p.Name)
	}
	return out
}
