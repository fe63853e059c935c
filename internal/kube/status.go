package kube

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"paddock.dev/paddock/internal/runtime"
)

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
	sel := labels.SelectorFromSet(d.Spec.Selector.MatchLabels)
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
