package kube

import (
	"context"
	"fmt"
	"slices"

	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
)

// watch is the informers of one app's namespace, or of all of them.
type watch struct {
	stop        chan struct{}
	factory     informers.SharedInformerFactory
	deployments cache.SharedIndexInformer
	replicasets cache.SharedIndexInformer
	pods        cache.SharedIndexInformer
	slices      cache.SharedIndexInformer
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
