// Package kube runs Paddock's apps on a Kubernetes cluster: the runtime for
// when one machine is not enough. It is declarative where the process
// runtime is imperative: Apply makes the cluster run one release of an app
// and Kubernetes does the rest (the scheduler places pods, the Deployment
// controller rolls them out); what runs is read back from watches.
//
// Each app is a namespace, PREFIX+NAME. In it, Paddock applies with
// server-side apply, under one field manager:
//
//	Secret env-<digest>       the release's config vars and env secrets, immutable
//	Secret files-<digest>     its file secrets, mounted at /var/run/paddock/secrets
//	Secret registry           with registry credentials: the nodes' pull secret
//	Deployment <process>      one per process type; one per instance,
//	                          <process>-<k>, for a process whose instances
//	                          each have volumes of their own
//	Service web               headless, in front of the web pods
//	RoleBinding paddock       Paddock's own rights there (ClusterRole paddock-app)
//	PersistentVolumeClaim pdk-<volume>-<id>   a volume (see Storage)
//	VolumeSnapshot pdk-snap-<id>              a snapshot of one
//
// The namespace enforces the restricted Pod Security Standard and carries
// the installation's ID.
// Every object carries app.kubernetes.io/managed-by=paddock; Paddock never
// changes or deletes an object without it, so what others put in an app's
// namespace stays.
package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	rbacv1ac "k8s.io/client-go/applyconfigurations/rbac/v1"
	"k8s.io/client-go/kubernetes"
)

// ErrUnknownApp is returned for an app whose namespace Paddock does not
// watch.
var ErrUnknownApp = errors.New("app not running on Kubernetes")

// ErrNotSynced is returned while a watch has not yet listed what it
// watches: an empty answer would be wrong, not empty.
var ErrNotSynced = errors.New("watch not synced yet")

// ErrForeign is returned for an app whose namespace exists and is not
// Paddock's: Paddock takes nothing over.
var ErrForeign = errors.New("namespace taken")

// Config is what Runtime needs.
type Config struct {
	Client kubernetes.Interface
	// NamespacePrefix comes before an app's name to make its namespace.
	NamespacePrefix string
	// Logs is the folder of per-app log folders, where pods' output is
	// kept as instances' is on one machine.
	Logs string
	// Installation names this Paddock among others on the cluster: its
	// namespaces carry it, and it touches no namespace of another's.
	Installation string
	Log          *slog.Logger
}

// Runtime applies apps to a cluster and watches what runs there. Its
// informers are per namespace, so that it needs no read access to other
// namespaces than its apps'.
type Runtime struct {
	cfg  Config
	cs   kubernetes.Interface
	log  *slog.Logger
	self string // Paddock's user name on the cluster
	// writesEverywhere: Paddock may write what it writes in any namespace,
	// and needs no role binding in its own.
	writesEverywhere bool
	mu               sync.Mutex
	apps             map[string]*watch // by namespace: its own, or shared
	// applied is, by namespace, the names of what the last Apply sent.
	applied map[string]string
	// rollouts is, by namespace, what the last Apply asked for.
	rollouts map[string]*rollout
	// shared, when Paddock may read every namespace, is one set of
	// informers for all of them: a few watches, not four per app.
	shared *watch
	// onChange is called at every change the watches see.
	onChange atomic.Pointer[func()]
	// pull, when set, is how nodes log in to the registry of Paddock's
	// images: a pull secret in each app's namespace.
	pull atomic.Pointer[PullCredentials]
}

// SetPull sets how nodes log in to the registry of Paddock's images (nil:
// they pull without logging in). Each app's pull secret follows at its
// next Apply.
func (r *Runtime) SetPull(p *PullCredentials) { r.pull.Store(p) }

// OnChange has f called at every change of what Paddock's watches see
// (pods, Deployments, ReplicaSets, EndpointSlices), so that a reconciler
// acts at once rather than at its next tick. f must not block.
func (r *Runtime) OnChange(f func()) { r.onChange.Store(&f) }

// New returns a Runtime. Call Resume to watch the apps already on the
// cluster.
func New(cfg Config) *Runtime {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Runtime{cfg: cfg, cs: cfg.Client, log: cfg.Log, apps: map[string]*watch{}, applied: map[string]string{}, rollouts: map[string]*rollout{}}
}

// Resume learns who Paddock is on the cluster and watches the namespaces
// of apps it applied before.
func (r *Runtime) Resume(ctx context.Context) error {
	review, err := r.cs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authnv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("who am I on the cluster (SelfSubjectReview): %w", err)
	}
	r.self = review.Status.UserInfo.Username
	all, err := r.mayEverywhere(ctx, "list", "watch")
	if err != nil {
		return err
	}
	// An account that may write what Paddock writes in every namespace
	// needs no binding in each.
	if r.writesEverywhere, err = r.mayEverywhere(ctx, "create", "patch", "delete"); err != nil {
		return err
	}
	if all {
		r.mu.Lock()
		r.shared = r.newWatch(metav1.NamespaceAll)
		r.mu.Unlock()
	}
	list, err := r.cs.CoreV1().Namespaces().List(ctx, metav1.ListOptions{LabelSelector: LabelManagedBy + "=" + ManagedBy})
	if err != nil {
		return fmt.Errorf("list Paddock's namespaces: %w", err)
	}
	for _, ns := range list.Items {
		// Another installation's apps may be in namespaces of another
		// prefix: never touch those.
		if ns.DeletionTimestamp == nil && ns.Annotations[AnnotationDestroyed] == "" && strings.HasPrefix(ns.Name, r.cfg.NamespacePrefix) &&
			ns.Labels[LabelInstallation] == r.cfg.Installation {
			r.watch(ns.Name)
		}
	}
	return nil
}

// Close stops every watch.
func (r *Runtime) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for ns, w := range r.apps {
		if w != r.shared {
			w.close()
		}
		delete(r.apps, ns)
	}
	if r.shared != nil {
		r.shared.close()
		r.shared = nil
	}
}

func (r *Runtime) namespace(app string) string { return Namespace(r.cfg.NamespacePrefix, app) }

var applyOptions = metav1.ApplyOptions{FieldManager: FieldManager, Force: true}

// Apply makes the cluster run a release of an app: its namespace, Secrets,
// Deployments and Service, in that order, so that no pod ever refers to a
// Secret that does not exist yet. Then it deletes the Deployments of
// process types the release no longer has, and the Secrets that no
// ReplicaSet with pods needs any more. Apply returns once the API server
// has the objects; Rollout tells how their pods are doing.
func (r *Runtime) Apply(ctx context.Context, a *App) error {
	ns := r.namespace(a.Name)
	fresh, err := r.prepare(ctx, a, ns)
	if err != nil {
		return err
	}
	pull := r.pull.Load()
	o := build(a, ns, pull != nil)
	if err := r.applyObjects(ctx, a, ns, o, pull); err != nil {
		if apierrors.IsNotFound(err) {
			r.forget(ns) // the namespace went: the next Apply makes it again
		}
		return err
	}
	names := o.names(pull != nil)
	r.mu.Lock()
	same := r.applied[ns] == names.String()
	r.applied[ns] = names.String()
	r.mu.Unlock()
	if fresh || same {
		return nil // nothing of Paddock's there that this release does not name
	}
	return r.collect(ctx, ns, names.processes, names.services, names.secrets)
}

// Collect deletes what Paddock owns in an app's namespace that a release
// no longer needs: call it once a rollout is done, when the old
// ReplicaSets no longer need their Secrets.
func (r *Runtime) Collect(ctx context.Context, a *App) error {
	ns := r.namespace(a.Name)
	pull := r.pull.Load() != nil
	names := build(a, ns, pull).names(pull)
	return r.collect(ctx, ns, names.processes, names.services, names.secrets)
}

// prepare makes an app's namespace and Paddock's rights in it, once in
// the life of this process (a reconcile pass that changes a release sends
// the release's objects alone), and watches it. It reports whether the
// namespace is new.
func (r *Runtime) prepare(ctx context.Context, a *App, ns string) (fresh bool, err error) {
	r.mu.Lock()
	_, known := r.apps[ns]
	r.mu.Unlock()
	if !known {
		if fresh, err = r.ensureNamespace(ctx, a, ns); err != nil {
			return false, err
		}
		if err := r.bind(ctx, a, ns); err != nil {
			return false, err
		}
	}
	r.watch(ns)
	return fresh, nil
}

// getDeleter is a typed client of one kind in one namespace.
type getDeleter[T metav1.Object] interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (T, error)
	Delete(ctx context.Context, name string, opts metav1.DeleteOptions) error
}

// deleteOwned deletes an object if Paddock owns it; one that is gone is
// deleted already.
func deleteOwned[T metav1.Object](ctx context.Context, c getDeleter[T], name string) error {
	o, err := c.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if o.GetLabels()[LabelManagedBy] != ManagedBy {
		return fmt.Errorf("%s is not Paddock's (no %s=%s label): left alone", name, LabelManagedBy, ManagedBy)
	}
	err = c.Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: new(o.GetUID())}})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// ensureNamespace makes an app's namespace, and reports whether it is new;
// one that exists gets Paddock's labels applied again.
func (r *Runtime) ensureNamespace(ctx context.Context, a *App, ns string) (bool, error) {
	_, err := r.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: namespaceLabels(a, r.cfg.Installation)},
	}, metav1.CreateOptions{FieldManager: FieldManager})
	if err == nil {
		return true, nil
	}
	if !apierrors.IsAlreadyExists(err) {
		return false, fmt.Errorf("create namespace %s: %w", ns, err)
	}
	got, err := r.cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err != nil {
		return false, fmt.Errorf("get namespace %s: %w", ns, err)
	}
	if got.Labels[LabelManagedBy] != ManagedBy || got.Labels[LabelInstallation] != r.cfg.Installation {
		return false, fmt.Errorf("%w: namespace %s exists and is not this Paddock's: rename the app, or start the server with another --namespace-prefix", ErrForeign, ns)
	}
	nsAC := corev1ac.Namespace(ns).WithLabels(namespaceLabels(a, r.cfg.Installation))
	if _, err := r.cs.CoreV1().Namespaces().Apply(ctx, nsAC, applyOptions); err != nil {
		return false, fmt.Errorf("apply namespace %s: %w", ns, err)
	}
	return false, nil
}

// applyObjects applies a release's objects: Secrets first, so that no pod
// ever names one that does not exist yet.
func (r *Runtime) applyObjects(ctx context.Context, a *App, ns string, o *objects, pull *PullCredentials) error {
	for _, s := range o.secrets {
		if _, err := r.cs.CoreV1().Secrets(ns).Apply(ctx, s, applyOptions); err != nil {
			return fmt.Errorf("apply secret %s/%s: %w", ns, *s.Name, err)
		}
	}
	if s := pullSecret(a, ns, pull); s != nil {
		if _, err := r.cs.CoreV1().Secrets(ns).Apply(ctx, s, applyOptions); err != nil {
			return fmt.Errorf("apply secret %s/%s: %w", ns, PullSecret, err)
		}
	}
	gens := map[string]int64{}
	for _, d := range o.deployments {
		got, err := r.cs.AppsV1().Deployments(ns).Apply(ctx, d, applyOptions)
		if selectorChanged(err) {
			// A Deployment's selector cannot change. One of Paddock's with
			// another selector ran something else under this name (a
			// process type an earlier release named like an instance of
			// this one): it is replaced.
			got, err = r.replaceDeployment(ctx, ns, d)
		}
		if err != nil {
			return fmt.Errorf("apply deployment %s/%s: %w", ns, *d.Name, err)
		}
		gens[got.Name] = got.Generation
	}
	r.mu.Lock()
	if prev := r.rollouts[ns]; prev == nil || !maps.Equal(prev.generations, gens) {
		// A Deployment whose generation moved starts a rollout: its new
		// pods are judged from now on.
		r.rollouts[ns] = &rollout{generations: gens, since: time.Now()}
	}
	r.mu.Unlock()
	for _, s := range o.services {
		if _, err := r.cs.CoreV1().Services(ns).Apply(ctx, s, applyOptions); err != nil {
			return fmt.Errorf("apply service %s/%s: %w", ns, *s.Name, err)
		}
	}
	return nil
}

// selectorChanged reports whether err refuses an apply because it would
// change a Deployment's selector.
func selectorChanged(err error) bool {
	var status apierrors.APIStatus
	if !apierrors.IsInvalid(err) || !errors.As(err, &status) || status.Status().Details == nil {
		return false
	}
	for _, c := range status.Status().Details.Causes {
		if c.Field == "spec.selector" {
			return true
		}
	}
	return false
}

// replaceDeployment deletes the Deployment named like d, if it is
// Paddock's, and applies d in its place. Its pods stop as their ReplicaSet
// is collected.
func (r *Runtime) replaceDeployment(ctx context.Context, ns string, d *appsv1ac.DeploymentApplyConfiguration) (*appsv1.Deployment, error) {
	deps := r.cs.AppsV1().Deployments(ns)
	if err := deleteOwned(ctx, deps, *d.Name); err != nil {
		return nil, fmt.Errorf("replace a deployment whose selector changed: %w", err)
	}
	r.log.Info("kubernetes: deployment replaced: its selector changed", "namespace", ns, "deployment", *d.Name)
	return deps.Apply(ctx, d, applyOptions)
}

// forget stops watching ns.
func (r *Runtime) forget(ns string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if w := r.apps[ns]; w != nil && w != r.shared {
		w.close()
	}
	delete(r.apps, ns)
	delete(r.applied, ns)
	delete(r.rollouts, ns)
}

// AppRole is the ClusterRole that holds what Paddock does in an app's
// namespace; Paddock binds it to itself in each namespace it makes, so that
// it needs no rights in namespaces that are not its own (see
// docs/kubernetes/paddock-rbac.yaml).
const AppRole = "paddock-app"

// bind gives Paddock's own user the AppRole in ns, unless it has those
// rights everywhere already.
func (r *Runtime) bind(ctx context.Context, a *App, ns string) error {
	if r.self == "" || r.writesEverywhere {
		return nil
	}
	rb := rbacv1ac.RoleBinding("paddock", ns).
		WithLabels(appLabels(a)).
		WithRoleRef(rbacv1ac.RoleRef().WithAPIGroup("rbac.authorization.k8s.io").WithKind("ClusterRole").WithName(AppRole)).
		WithSubjects(rbacv1ac.Subject().WithAPIGroup("rbac.authorization.k8s.io").WithKind("User").WithName(r.self))
	if _, err := r.cs.RbacV1().RoleBindings(ns).Apply(ctx, rb, applyOptions); err != nil {
		return fmt.Errorf("bind %s to %s in %s: %w", AppRole, r.self, ns, err)
	}
	return nil
}

// collectAll deletes every Deployment, Service and Secret Paddock owns in
// ns.
func (r *Runtime) collectAll(ctx context.Context, ns string) error {
	if err := r.collect(ctx, ns, nil, nil, nil); err != nil {
		return err
	}
	list, err := r.cs.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{LabelSelector: LabelManagedBy + "=" + ManagedBy})
	if err != nil {
		return fmt.Errorf("list secrets of %s: %w", ns, err)
	}
	for _, s := range list.Items {
		if err := r.cs.CoreV1().Secrets(ns).Delete(ctx, s.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete secret %s/%s: %w", ns, s.Name, err)
		}
	}
	return nil
}

// Idle stops what runs of an app that has no release to run (its first
// deploy failed): every Deployment, Service and Secret Paddock made for it
// goes; the namespace stays for the next deploy.
func (r *Runtime) Idle(ctx context.Context, app string) error {
	ns := r.namespace(app)
	r.mu.Lock()
	_, known := r.apps[ns]
	r.mu.Unlock()
	if !known {
		return nil
	}
	if err := r.collectAll(ctx, ns); err != nil {
		return err
	}
	r.mu.Lock()
	delete(r.applied, ns)
	delete(r.rollouts, ns)
	r.mu.Unlock()
	return nil
}

// collect deletes what Paddock owns in ns and no longer needs.
func (r *Runtime) collect(ctx context.Context, ns string, processes, services, secrets map[string]bool) error {
	secrets = maps.Clone(secrets)
	if secrets == nil {
		secrets = map[string]bool{}
	}
	owned := metav1.ListOptions{LabelSelector: LabelManagedBy + "=" + ManagedBy}
	deps, err := r.cs.AppsV1().Deployments(ns).List(ctx, owned)
	if err != nil {
		return fmt.Errorf("list deployments of %s: %w", ns, err)
	}
	for _, d := range deps.Items {
		if !processes[d.Name] {
			if err := r.cs.AppsV1().Deployments(ns).Delete(ctx, d.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("delete deployment %s/%s: %w", ns, d.Name, err)
			}
		}
	}
	svcs, err := r.cs.CoreV1().Services(ns).List(ctx, owned)
	if err != nil {
		return fmt.Errorf("list services of %s: %w", ns, err)
	}
	for _, s := range svcs.Items {
		if !services[s.Name] {
			if err := r.cs.CoreV1().Services(ns).Delete(ctx, s.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("delete service %s/%s: %w", ns, s.Name, err)
			}
		}
	}
	// A ReplicaSet that still has pods, or is asked to, may start more:
	// the Secrets its template names stay.
	rss, err := r.cs.AppsV1().ReplicaSets(ns).List(ctx, owned)
	if err != nil {
		return fmt.Errorf("list replicasets of %s: %w", ns, err)
	}
	for _, rs := range rss.Items {
		if (rs.Spec.Replicas != nil && *rs.Spec.Replicas > 0) || rs.Status.Replicas > 0 {
			for _, name := range secretsOf(&rs.Spec.Template.Spec) {
				secrets[name] = true
			}
		}
	}
	list, err := r.cs.CoreV1().Secrets(ns).List(ctx, owned)
	if err != nil {
		return fmt.Errorf("list secrets of %s: %w", ns, err)
	}
	for _, s := range list.Items {
		if !secrets[s.Name] {
			if err := r.cs.CoreV1().Secrets(ns).Delete(ctx, s.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("delete secret %s/%s: %w", ns, s.Name, err)
			}
		}
	}
	return nil
}

// secretsOf names the Secrets a pod template uses.
func secretsOf(spec *corev1.PodSpec) []string {
	var out []string
	for _, c := range spec.Containers {
		for _, e := range c.EnvFrom {
			if e.SecretRef != nil {
				out = append(out, e.SecretRef.Name)
			}
		}
	}
	for _, v := range spec.Volumes {
		if v.Secret != nil {
			out = append(out, v.Secret.SecretName)
		}
	}
	return out
}

// Destroy deletes everything Paddock owns of an app, and its namespace
// unless something Paddock does not own is in it. The pods stop as their
// ReplicaSets are collected.
func (r *Runtime) Destroy(ctx context.Context, app string) error {
	ns := r.namespace(app)
	got, err := r.cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		r.forget(ns)
		return nil
	}
	if err != nil {
		return fmt.Errorf("get namespace %s: %w", ns, err)
	}
	if got.Labels[LabelManagedBy] != ManagedBy {
		return fmt.Errorf("namespace %s is not Paddock's (no %s=%s label): delete what you put there yourself", ns, LabelManagedBy, ManagedBy)
	}
	// Everything Paddock owns goes, Secrets too: the pods that used them
	// are stopping with their Deployments.
	if err := r.collectAll(ctx, ns); err != nil {
		return err
	}
	foreign, err := r.foreign(ctx, ns)
	if err != nil {
		return err
	}
	if foreign != "" {
		// Paddock keeps no rights in a namespace it leaves behind, and no
		// longer watches it.
		r.log.Info("kubernetes: namespace kept: it holds objects Paddock does not own", "namespace", ns, "object", foreign)
		mark := corev1ac.Namespace(ns).WithLabels(got.Labels).WithAnnotations(map[string]string{AnnotationDestroyed: "true"})
		if _, err := r.cs.CoreV1().Namespaces().Apply(ctx, mark, applyOptions); err != nil {
			return fmt.Errorf("mark namespace %s as left behind: %w", ns, err)
		}
		if err := r.cs.RbacV1().RoleBindings(ns).Delete(ctx, "paddock", metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete Paddock's role binding in %s: %w", ns, err)
		}
		r.forget(ns)
		return nil
	}
	if err := r.cs.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete namespace %s: %w", ns, err)
	}
	r.forget(ns) // only now: until then the reconciler sees the app and tries again
	return nil
}

// foreign names an object in ns that Paddock did not make, if any, among
// the kinds someone would put beside an app's: what Kubernetes makes in
// every namespace by itself does not count.
func (r *Runtime) foreign(ctx context.Context, ns string) (string, error) {
	notOwned := metav1.ListOptions{LabelSelector: LabelManagedBy + "!=" + ManagedBy}
	type lister func() ([]metav1.Object, error)
	kinds := []struct {
		kind string
		list lister
	}{
		{"deployment", func() ([]metav1.Object, error) {
			l, err := r.cs.AppsV1().Deployments(ns).List(ctx, notOwned)
			return objs(l, err, func(l *appsv1.DeploymentList) []appsv1.Deployment { return l.Items })
		}},
		{"statefulset", func() ([]metav1.Object, error) {
			l, err := r.cs.AppsV1().StatefulSets(ns).List(ctx, notOwned)
			return objs(l, err, func(l *appsv1.StatefulSetList) []appsv1.StatefulSet { return l.Items })
		}},
		{"service", func() ([]metav1.Object, error) {
			l, err := r.cs.CoreV1().Services(ns).List(ctx, notOwned)
			return objs(l, err, func(l *corev1.ServiceList) []corev1.Service { return l.Items })
		}},
		{"secret", func() ([]metav1.Object, error) {
			l, err := r.cs.CoreV1().Secrets(ns).List(ctx, notOwned)
			return objs(l, err, func(l *corev1.SecretList) []corev1.Secret { return l.Items })
		}},
		{"configmap", func() ([]metav1.Object, error) {
			l, err := r.cs.CoreV1().ConfigMaps(ns).List(ctx, notOwned)
			return objs(l, err, func(l *corev1.ConfigMapList) []corev1.ConfigMap { return l.Items })
		}},
		{"persistentvolumeclaim", func() ([]metav1.Object, error) {
			l, err := r.cs.CoreV1().PersistentVolumeClaims(ns).List(ctx, notOwned)
			return objs(l, err, func(l *corev1.PersistentVolumeClaimList) []corev1.PersistentVolumeClaim { return l.Items })
		}},
	}
	for _, k := range kinds {
		list, err := k.list()
		if err != nil {
			return "", fmt.Errorf("list %ss of %s: %w", k.kind, ns, err)
		}
		for _, o := range list {
			if k.kind == "configmap" && o.GetName() == "kube-root-ca.crt" {
				continue // published in every namespace by kube-controller-manager
			}
			return k.kind + "/" + o.GetName(), nil
		}
	}
	return "", nil
}

func objs[L any, T any, PT interface {
	*T
	metav1.Object
}](l L, err error, items func(L) []T) ([]metav1.Object, error) {
	if err != nil {
		return nil, err
	}
	its := items(l)
	out := make([]metav1.Object, len(its))
	for i := range its {
		out[i] = PT(&its[i])
	}
	return out, nil
}
