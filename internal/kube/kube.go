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
//	Deployment <process>      one per process type
//	Service web               in front of the web pods, by the name "http"
//
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
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	rbacv1ac "k8s.io/client-go/applyconfigurations/rbac/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"paddock.dev/paddock/internal/runtime"
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
	// Pull, when set, is how nodes log in to the registry of Paddock's
	// images: a pull secret in each app's namespace.
	Pull *PullCredentials
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
}

// OnChange has f called at every change of what Paddock's watches see
// (pods, Deployments, ReplicaSets, EndpointSlices), so that a reconciler
// acts at once rather than at its next tick. f must not block.
func (r *Runtime) OnChange(f func()) { r.onChange.Store(&f) }

// watch is the informers of one app's namespace, or of all of them.
type watch struct {
	stop        chan struct{}
	factory     informers.SharedInformerFactory
	deployments cache.SharedIndexInformer
	replicasets cache.SharedIndexInformer
	pods        cache.SharedIndexInformer
	slices      cache.SharedIndexInformer
}

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
	r.mu.Lock()
	_, known := r.apps[ns]
	r.mu.Unlock()
	// The namespace and Paddock's rights in it are made once in the life
	// of this process: a reconcile pass that changes a release sends the
	// release's objects alone.
	fresh := false
	if !known {
		var err error
		if fresh, err = r.ensureNamespace(ctx, a, ns); err != nil {
			return err
		}
		if err := r.bind(ctx, a, ns); err != nil {
			return err
		}
	}
	r.watch(ns)
	o := build(a, ns, r.cfg.Pull != nil)
	if err := r.applyObjects(ctx, a, ns, o); err != nil {
		if apierrors.IsNotFound(err) {
			r.forget(ns) // the namespace went: the next Apply makes it again
		}
		return err
	}
	names := o.names(r.cfg.Pull != nil)
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
	names := build(a, ns, r.cfg.Pull != nil).names(r.cfg.Pull != nil)
	return r.collect(ctx, ns, names.processes, names.services, names.secrets)
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
func (r *Runtime) applyObjects(ctx context.Context, a *App, ns string, o *objects) error {
	for _, s := range o.secrets {
		if _, err := r.cs.CoreV1().Secrets(ns).Apply(ctx, s, applyOptions); err != nil {
			return fmt.Errorf("apply secret %s/%s: %w", ns, *s.Name, err)
		}
	}
	if s := r.pullSecret(a, ns); s != nil {
		if _, err := r.cs.CoreV1().Secrets(ns).Apply(ctx, s, applyOptions); err != nil {
			return fmt.Errorf("apply secret %s/%s: %w", ns, PullSecret, err)
		}
	}
	gens := map[string]int64{}
	for _, d := range o.deployments {
		got, err := r.cs.AppsV1().Deployments(ns).Apply(ctx, d, applyOptions)
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

// watch starts the informers of a namespace if they do not run yet, and
// returns them.
func (r *Runtime) watch(ns string) *watch {
	r.mu.Lock()
	defer r.mu.Unlock()
	if w := r.apps[ns]; w != nil {
		return w
	}
	w := r.shared
	if w == nil {
		w = r.newWatch(ns)
	}
	r.apps[ns] = w
	return w
}

// newWatch starts informers of what Paddock owns in ns (all namespaces
// for metav1.NamespaceAll). They keep no managed fields: those are most of
// an object's size and nothing here reads them.
func (r *Runtime) newWatch(ns string) *watch {
	owned := informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.LabelSelector = LabelManagedBy + "=" + ManagedBy
	})
	slim := informers.WithTransform(func(obj any) (any, error) {
		if m, ok := obj.(metav1.ObjectMetaAccessor); ok {
			m.GetObjectMeta().SetManagedFields(nil)
		}
		return obj, nil
	})
	f := informers.NewSharedInformerFactoryWithOptions(r.cs, 0, informers.WithNamespace(ns), owned, slim)
	w := &watch{
		stop:        make(chan struct{}),
		factory:     f,
		deployments: f.Apps().V1().Deployments().Informer(),
		replicasets: f.Apps().V1().ReplicaSets().Informer(),
		pods:        f.Core().V1().Pods().Informer(),
		slices:      f.Discovery().V1().EndpointSlices().Informer(),
	}
	changed := func() {
		if f := r.onChange.Load(); f != nil {
			(*f)()
		}
	}
	h := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { changed() },
		UpdateFunc: func(any, any) { changed() },
		DeleteFunc: func(any) { changed() },
	}
	for _, inf := range []cache.SharedIndexInformer{w.deployments, w.replicasets, w.pods, w.slices} {
		if _, err := inf.AddEventHandler(h); err != nil {
			r.log.Warn("kubernetes: watch", "namespace", ns, "err", err)
		}
	}
	f.Start(w.stop)
	return w
}

// list returns the objects of an informer in namespace ns.
func list(inf cache.SharedIndexInformer, ns string) []any {
	objs, _ := inf.GetIndexer().ByIndex(cache.NamespaceIndex, ns)
	return objs
}

// mayEverywhere asks the API server whether Paddock may do verbs to what
// it watches (list, watch) or writes (create, patch, delete) in every
// namespace. A service account limited to its own namespaces may not: it
// gets informers per namespace, and binds itself its rights in each.
func (r *Runtime) mayEverywhere(ctx context.Context, verbs ...string) (bool, error) {
	resources := []authzv1.ResourceAttributes{
		{Resource: "pods"}, {Group: "apps", Resource: "deployments"},
		{Group: "apps", Resource: "replicasets"}, {Group: "discovery.k8s.io", Resource: "endpointslices"},
	}
	if slices.Contains(verbs, "create") {
		resources = []authzv1.ResourceAttributes{
			{Resource: "secrets"}, {Resource: "services"}, {Group: "apps", Resource: "deployments"},
		}
	}
	for _, res := range resources {
		for _, verb := range verbs {
			res.Verb = verb
			review, err := r.cs.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx,
				&authzv1.SelfSubjectAccessReview{Spec: authzv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &res}}, metav1.CreateOptions{})
			if err != nil {
				return false, fmt.Errorf("may Paddock read every namespace (SelfSubjectAccessReview): %w", err)
			}
			if !review.Status.Allowed {
				return false, nil
			}
		}
	}
	return true, nil
}

func (w *watch) synced() bool {
	return w.deployments.HasSynced() && w.replicasets.HasSynced() && w.pods.HasSynced() && w.slices.HasSynced()
}

func (w *watch) close() {
	close(w.stop)
	w.factory.Shutdown()
}

func (r *Runtime) watching(app string) (*watch, string, error) {
	ns := r.namespace(app)
	r.mu.Lock()
	w := r.apps[ns]
	r.mu.Unlock()
	if w == nil {
		return nil, "", fmt.Errorf("%s: %w", app, ErrUnknownApp)
	}
	return w, ns, nil
}

// Pod is one pod of an app, as the last watch event showed it.
type Pod struct {
	Name     string    `json:"name"`
	Process  string    `json:"process"`
	Release  int       `json:"release"` // from its ReplicaSet; 0 if unknown
	Phase    string    `json:"phase"`
	Ready    bool      `json:"ready"`
	Restarts int       `json:"restarts"`
	Node     string    `json:"node,omitempty"`
	IP       string    `json:"ip,omitempty"`
	Started  time.Time `json:"started,omitzero"`
	// Reason says why a pod is not ready: a container's waiting reason
	// (CrashLoopBackOff, ErrImagePull…) and message, or its last exit.
	Reason string `json:"reason,omitempty"`
	// Deleting is set once the pod was told to stop.
	Deleting bool `json:"deleting,omitempty"`
}

// Pods lists an app's pods, by process and name.
func (r *Runtime) Pods(app string) ([]Pod, error) {
	w, ns, err := r.watching(app)
	if err != nil {
		return nil, err
	}
	releases := map[string]int{} // ReplicaSet name -> release
	for _, o := range list(w.replicasets, ns) {
		rs := o.(*appsv1.ReplicaSet)
		releases[rs.Name], _ = strconv.Atoi(rs.Annotations[AnnotationRelease])
	}
	var out []Pod
	for _, o := range list(w.pods, ns) {
		out = append(out, describe(o.(*corev1.Pod), releases))
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Process != out[j].Process {
			return out[i].Process < out[j].Process
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}

func describe(p *corev1.Pod, releases map[string]int) Pod {
	out := Pod{
		Name:     p.Name,
		Process:  p.Labels[LabelProcess],
		Phase:    string(p.Status.Phase),
		Node:     p.Spec.NodeName,
		IP:       p.Status.PodIP,
		Deleting: p.DeletionTimestamp != nil,
	}
	for _, ref := range p.OwnerReferences {
		if ref.Kind == "ReplicaSet" {
			out.Release = releases[ref.Name]
		}
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			out.Ready = c.Status == corev1.ConditionTrue
		}
	}
	for _, cs := range p.Status.ContainerStatuses {
		out.Restarts += int(cs.RestartCount)
		if cs.State.Running != nil && out.Started.IsZero() {
			out.Started = cs.State.Running.StartedAt.Time
		}
		switch {
		case out.Reason != "":
		case cs.State.Waiting != nil && cs.State.Waiting.Reason != "":
			out.Reason = cs.State.Waiting.Reason
			if m := cs.State.Waiting.Message; m != "" {
				out.Reason += ": " + m
			}
			if t := cs.LastTerminationState.Terminated; t != nil {
				out.Reason += fmt.Sprintf(" (last exit %d)", t.ExitCode)
			}
		case cs.State.Terminated != nil:
			out.Reason = fmt.Sprintf("exited %d %s", cs.State.Terminated.ExitCode, cs.State.Terminated.Reason)
		}
	}
	if out.Reason == "" && p.Status.Phase == corev1.PodPending {
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
				out.Reason = c.Reason + ": " + c.Message
			}
		}
	}
	return out
}

// Endpoints returns the addresses (IP:port) of an app's ready web pods,
// from the EndpointSlices of its Service: where the router sends requests.
func (r *Runtime) Endpoints(app string) ([]string, error) {
	w, ns, err := r.watching(app)
	if err != nil {
		return nil, err
	}
	if !w.slices.HasSynced() {
		return nil, fmt.Errorf("%s: %w", app, ErrNotSynced)
	}
	seen := map[string]bool{}
	for _, o := range list(w.slices, ns) {
		s := o.(*discoveryv1.EndpointSlice)
		// Only the slices Kubernetes made for Paddock's Service: one that
		// someone wrote by hand could point the router anywhere.
		if s.Labels[discoveryv1.LabelServiceName] != WebService || s.Labels[discoveryv1.LabelManagedBy] != "endpointslice-controller.k8s.io" {
			continue
		}
		port := 0
		for _, p := range s.Ports {
			if p.Name != nil && *p.Name == portName && p.Port != nil {
				port = int(*p.Port)
			}
		}
		if port == 0 {
			continue
		}
		for _, e := range s.Endpoints {
			if e.Conditions.Ready == nil || !*e.Conditions.Ready {
				continue
			}
			if e.Conditions.Terminating != nil && *e.Conditions.Terminating {
				continue
			}
			for _, a := range e.Addresses {
				seen[a+":"+strconv.Itoa(port)] = true
			}
		}
	}
	return slices.Sorted(maps.Keys(seen)), nil
}

// Rollout is how far an app's latest Apply has come.
type Rollout struct {
	Done bool
	// Failed says why the rollout cannot finish: a new pod that crash-loops
	// or cannot start, or a Deployment past its progress deadline.
	Failed string
	// Waiting says what it waits for, for progress messages.
	Waiting string
}

// crashRestarts is how often a new pod may restart before its rollout is
// called failed, as on one machine.
const crashRestarts = 3

// clockSkew is how far behind this machine's clock the API server's may
// be for a pod it made to count as one of a rollout.
const clockSkew = 5 * time.Second

// rollout is what an Apply asked of an app's Deployments.
type rollout struct {
	generations map[string]int64 // by Deployment: the generation applied
	since       time.Time        // when this machine applied it
}

// Status tells how an app's rollout is doing, per the Deployments'
// status and the new pods, in the same way as kubectl rollout status.
func (r *Runtime) Status(app string) (Rollout, error) {
	w, ns, err := r.watching(app)
	if err != nil {
		return Rollout{}, err
	}
	if !w.synced() {
		return Rollout{Waiting: "the watch of " + app + " to sync"}, nil
	}
	r.mu.Lock()
	ro := r.rollouts[ns]
	r.mu.Unlock()
	if ro == nil {
		return Rollout{Waiting: app + " to be applied"}, nil
	}
	// Only what the last Apply sent, once the watch has seen it and the
	// Deployment controller has acted on it: a cache a moment behind would
	// show the previous release's Deployments, all rolled out.
	for _, name := range slices.Sorted(maps.Keys(ro.generations)) {
		o, ok, _ := w.deployments.GetIndexer().GetByKey(ns + "/" + name)
		if !ok {
			return Rollout{Waiting: name + ": the watch to see the Deployment"}, nil
		}
		d := o.(*appsv1.Deployment)
		if d.Generation < ro.generations[name] {
			return Rollout{Waiting: name + ": the watch to see the change"}, nil
		}
		if d.Status.ObservedGeneration < d.Generation {
			return Rollout{Waiting: name + ": the Deployment controller to see the change"}, nil
		}
		if failed := r.newPodsFailing(w, ns, d, ro.since); failed != "" {
			return Rollout{Failed: failed}, nil
		}
		for _, c := range d.Status.Conditions {
			if c.Type == appsv1.DeploymentProgressing && c.Reason == "ProgressDeadlineExceeded" {
				return Rollout{Failed: fmt.Sprintf("%s: %s", d.Name, c.Message)}, nil
			}
		}
		want := int32(1)
		if d.Spec.Replicas != nil {
			want = *d.Spec.Replicas
		}
		st := d.Status
		switch {
		case st.UpdatedReplicas < want:
			return Rollout{Waiting: fmt.Sprintf("%s: %d of %d new pods made", d.Name, st.UpdatedReplicas, want)}, nil
		case st.Replicas > st.UpdatedReplicas:
			return Rollout{Waiting: fmt.Sprintf("%s: %d old pods to stop", d.Name, st.Replicas-st.UpdatedReplicas)}, nil
		case st.AvailableReplicas < st.UpdatedReplicas:
			return Rollout{Waiting: fmt.Sprintf("%s: %d of %d new pods ready", d.Name, st.AvailableReplicas, want)}, nil
		}
	}
	return Rollout{Done: true}, nil
}

// newPodsFailing tells why a Deployment's new pods cannot become ready, if
// one keeps crashing or cannot start at all.
func (r *Runtime) newPodsFailing(w *watch, ns string, d *appsv1.Deployment, since time.Time) string {
	// The newest ReplicaSet of the Deployment is the one with its revision.
	rev := d.Annotations["deployment.kubernetes.io/revision"]
	var current string
	for _, o := range list(w.replicasets, ns) {
		rs := o.(*appsv1.ReplicaSet)
		if metav1.IsControlledBy(rs, d) && rs.Annotations["deployment.kubernetes.io/revision"] == rev {
			current = rs.Name
		}
	}
	if current == "" {
		return ""
	}
	sel := labels.SelectorFromSet(map[string]string{LabelProcess: d.Name})
	for _, o := range list(w.pods, ns) {
		p := o.(*corev1.Pod)
		// Pods of this rollout only: a pod that restarted last month is no
		// reason to fail a release that did not change it.
		if !sel.Matches(labels.Set(p.Labels)) || !ownedBy(p, current) || p.DeletionTimestamp != nil ||
			p.CreationTimestamp.Time.Before(since.Add(-clockSkew)) {
			continue
		}
		for _, cs := range p.Status.ContainerStatuses {
			if cs.Ready {
				continue
			}
			if w := cs.State.Waiting; w != nil {
				switch w.Reason {
				// ErrImagePull is the first failure; a registry that
				// has just been pushed to may answer the next one.
				case "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError", "CreateContainerError":
					return fmt.Sprintf("%s: pod %s cannot start: %s: %s", d.Name, p.Name, w.Reason, w.Message)
				}
			}
			if cs.RestartCount >= crashRestarts {
				last := ""
				if t := cs.LastTerminationState.Terminated; t != nil {
					last = fmt.Sprintf(", last exit %d", t.ExitCode)
				}
				return fmt.Sprintf("%s: pod %s restarted %d times without becoming ready%s", d.Name, p.Name, cs.RestartCount, last)
			}
		}
	}
	return ""
}

func ownedBy(p *corev1.Pod, rs string) bool {
	for _, ref := range p.OwnerReferences {
		if ref.Kind == "ReplicaSet" && ref.Name == rs {
			return true
		}
	}
	return false
}

// The Runtime is a runtime.Runtime for what reads instances (ps, the
// dashboard, metrics, restarts): each pod is an instance whose ID is
// APP.PROCESS.REST, where the pod is named PROCESS-REST. Pods are started
// by Apply, never one at a time.
var _ runtime.Runtime = (*Runtime)(nil)

// ErrDeclarative is returned by Start: on Kubernetes, Apply starts pods.
var ErrDeclarative = errors.New("the Kubernetes runtime starts pods through Apply, not one by one")

// Start refuses: see Apply.
func (r *Runtime) Start(context.Context, runtime.Spec) (runtime.Instance, error) {
	return runtime.Instance{}, ErrDeclarative
}

// podOf maps an instance ID back to its app and pod name.
func podOf(id string) (app, pod string, ok bool) {
	app, rest, ok := strings.Cut(id, ".")
	if !ok {
		return "", "", false
	}
	process, suffix, ok := strings.Cut(rest, ".")
	if !ok {
		return "", "", false
	}
	return app, process + "-" + suffix, true
}

// Stop deletes an instance's pod, with its grace period: its ReplicaSet
// starts another in its place, which makes it a restart.
func (r *Runtime) Stop(ctx context.Context, id string) error {
	app, pod, ok := podOf(id)
	if !ok {
		return fmt.Errorf("%s: %w", id, runtime.ErrNotFound)
	}
	err := r.cs.CoreV1().Pods(r.namespace(app)).Delete(ctx, pod, metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("%s: %w", id, runtime.ErrNotFound)
	}
	return err
}

// List reports every pod of every app as an instance.
func (r *Runtime) List(context.Context) ([]runtime.Instance, error) {
	var out []runtime.Instance
	for ns, w := range r.watches() {
		releases := map[string]int{}
		for _, o := range list(w.replicasets, ns) {
			rs := o.(*appsv1.ReplicaSet)
			releases[rs.Name], _ = strconv.Atoi(rs.Annotations[AnnotationRelease])
		}
		for _, o := range list(w.pods, ns) {
			out = append(out, instance(o.(*corev1.Pod), releases))
		}
	}
	return out, nil
}

func instance(p *corev1.Pod, releases map[string]int) runtime.Instance {
	d := describe(p, releases)
	appID, _ := strconv.ParseInt(p.Labels[LabelAppID], 10, 64)
	in := runtime.Instance{
		Spec: runtime.Spec{
			ID:      p.Labels[LabelApp] + "." + d.Process + "." + strings.TrimPrefix(p.Name, d.Process+"-"),
			App:     p.Labels[LabelApp],
			AppID:   appID,
			Process: d.Process,
			Release: d.Release,
		},
		Restarts:  d.Restarts,
		StartedAt: d.Started,
		LastExit:  d.Reason,
		Node:      d.Node,
	}
	if len(p.Spec.Containers) > 0 {
		c := p.Spec.Containers[0]
		in.Command = strings.Join(c.Command, " ")
		if len(c.Command) == 3 && c.Command[0] == "/bin/sh" && c.Command[1] == "-c" {
			in.Command = c.Command[2]
		}
		for _, port := range c.Ports {
			in.Port = int(port.ContainerPort)
		}
		if m := c.Resources.Limits.Memory(); m != nil && !m.IsZero() {
			in.Memory = m.Value()
			in.MemoryLimit, in.MemoryEnforced = "by the kubelet on node "+d.Node, true
		}
	}
	switch {
	case d.Deleting:
		in.State = runtime.StateStopping
	case strings.HasPrefix(d.Reason, "CrashLoopBackOff"):
		in.State = runtime.StateCrashLoop
	case p.Status.Phase == corev1.PodRunning:
		in.State = runtime.StateRunning
	case p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed:
		in.State = runtime.StateStopped
	default:
		in.State = runtime.StateStarting
	}
	return in
}

// LogFile is where the output of an instance's pod is kept on this
// machine, as the process runtime keeps an instance's.
func (r *Runtime) LogFile(s runtime.Spec) string {
	return filepath.Join(r.cfg.Logs, runtime.LogFolder(s.App, s.AppID), s.ID+".log")
}

// Ready reports whether an instance's pod is ready, by its ID.
func (r *Runtime) Ready(id string) bool {
	app, pod, ok := podOf(id)
	if !ok {
		return false
	}
	r.mu.Lock()
	w := r.apps[r.namespace(app)]
	r.mu.Unlock()
	if w == nil {
		return false
	}
	o, ok, _ := w.pods.GetStore().GetByKey(r.namespace(app) + "/" + pod)
	if !ok {
		return false
	}
	for _, c := range o.(*corev1.Pod).Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// Apps names the apps whose namespaces are watched.
func (r *Runtime) Apps() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for ns := range r.apps {
		out = append(out, strings.TrimPrefix(ns, r.cfg.NamespacePrefix))
	}
	sort.Strings(out)
	return out
}

// Unwatch stops watching an app's namespace, and leaves it as it is.
func (r *Runtime) Unwatch(app string) { r.forget(r.namespace(app)) }

// AppID returns the app ID an app's namespace was made for; 0 if unknown.
func (r *Runtime) AppID(ctx context.Context, app string) int64 {
	ns, err := r.cs.CoreV1().Namespaces().Get(ctx, r.namespace(app), metav1.GetOptions{})
	if err != nil {
		return 0
	}
	id, _ := strconv.ParseInt(ns.Labels[LabelAppID], 10, 64)
	return id
}

// watches returns the watch of each app's namespace.
func (r *Runtime) watches() map[string]*watch {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.apps)
}

// Nodes names the nodes an app's pods run on.
func (r *Runtime) Nodes(app string) []string {
	pods, err := r.Pods(app)
	if err != nil {
		return nil
	}
	seen := map[string]bool{}
	for _, p := range pods {
		if p.Node != "" {
			seen[p.Node] = true
		}
	}
	return slices.Sorted(maps.Keys(seen))
}
