package kube

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"path"
	goruntime "runtime"
	"slices"
	"strconv"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"

	"paddock.dev/paddock/internal/manifest"
	"paddock.dev/paddock/internal/runtime"
)

// Labels and annotations on every object Paddock applies. ManagedBy is how
// Paddock finds what it owns: an object without it is never changed or
// deleted.
const (
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedBy      = "paddock"
	LabelApp       = "paddock.dev/app"
	LabelAppID     = "paddock.dev/app-id"
	LabelProcess   = "paddock.dev/process"
	// LabelSlot is the instance slot of a pod of a process whose instances
	// each have volumes of their own.
	LabelSlot = "paddock.dev/slot"
	// LabelInstallation is on the namespaces of one Paddock installation:
	// another one's, even of the same prefix, are never touched.
	LabelInstallation = "paddock.dev/installation"
	// AnnotationRelease is on Deployments and StatefulSets (not on their pod
	// templates, so that the same release content keeps the same template
	// and ReplicaSet); the Deployment controller copies it to ReplicaSets.
	AnnotationRelease = "paddock.dev/release"
	// AnnotationDestroyed marks the namespace of a destroyed app that was
	// kept for objects Paddock does not own in it.
	AnnotationDestroyed = "paddock.dev/destroyed"
)

const (
	// FieldManager is the server-side apply field manager of every object
	// Paddock applies.
	FieldManager = "paddock"
	// WorkDir is where an image built by Paddock holds the app, and the
	// working directory of its containers.
	WorkDir = "/app"
	// SecretsDir is where secrets given as files are mounted, named to the
	// process in $PADDOCK_SECRETS_DIR as on one machine.
	SecretsDir = "/var/run/paddock/secrets"
	// WebPort is the port a web process listens on ($PORT) when its
	// manifest names none: every pod has an address of its own, so all use
	// the same one.
	WebPort = 8080
	// AppUID is the user and group a Paddock-built image's files belong to
	// and its containers run as: never root, as the restricted Pod
	// Security Standard of every app namespace requires.
	AppUID = 10001
	// WebService is the name of the Service in front of an app's web pods.
	WebService = "web"
	// WebDrain is how long a web pod told to stop keeps serving before its
	// process gets SIGTERM (a preStop sleep): the time for Paddock's router
	// (and any other) to see its endpoint withdrawn and send it no more
	// requests. One machine takes an instance out of the router first
	// instead.
	WebDrain = 2 * time.Second
	portName = "http"
)

// App is one release of an app as Kubernetes runs it: what Apply makes the
// cluster run.
type App struct {
	Name    string
	ID      int64
	Release int
	// Image is the release's image reference, best by digest.
	Image string
	// External marks an image Paddock did not build: its own working
	// directory, and its own command for a process without one.
	External  bool
	Processes map[string]Process
	// Config is the release's config vars, given as environment variables.
	Config map[string]string
	// Secrets are the release's secrets: environment variables, or files
	// in $PADDOCK_SECRETS_DIR.
	Secrets []runtime.Secret `json:"-"`
	// SecretVersions are the versions of Secrets, by name: the Secrets'
	// names come from them, not from the values, which names seen by
	// anyone who may read a pod must not hint at.
	SecretVersions map[string]int
	// Placement is node labels the app's pods require: never preferred.
	Placement map[string]string
	// Volumes are the app's volumes attached to its process types.
	Volumes []Volume
}

// Volume is a volume attached to a process type: a claim its pods mount.
type Volume struct {
	Name    string // Paddock's name of the volume
	Claim   string // the PersistentVolumeClaim that holds it
	Process string
	Path    string // relative to the working directory
	Env     string // the environment variable that holds its absolute path
	// PerInstance marks the volume of one instance, Slot, of a process
	// whose instances each have their own: each instance is then a
	// Deployment of its own, PROCESS-SLOT, of one pod.
	PerInstance bool
	Slot        int
}

// Process is one process type of a release and how many pods run it.
type Process struct {
	Command     string
	Replicas    int
	Port        int // web: the port it listens on; 0 takes WebPort
	Memory      int64
	StopTimeout time.Duration
	Health      manifest.Health
}

// FromManifest makes the processes of a release from its manifest and the
// app's formation (instance counts set with scale).
func FromManifest(m *manifest.Manifest, formation map[string]int) map[string]Process {
	out := make(map[string]Process, len(m.Processes))
	for name, p := range m.Processes {
		n := p.Instances
		if c, ok := formation[name]; ok {
			n = c
		}
		out[name] = Process{Command: p.Command, Replicas: n, Port: p.Port, Memory: p.Memory,
			StopTimeout: p.StopTimeout, Health: p.Health}
	}
	return out
}

// Namespace names the namespace of an app.
func Namespace(prefix, app string) string { return prefix + app }

func appLabels(a *App) map[string]string {
	return map[string]string{
		LabelManagedBy: ManagedBy,
		LabelApp:       a.Name,
		LabelAppID:     strconv.FormatInt(a.ID, 10),
	}
}

// namespaceLabels are an app's labels and the Pod Security Standard its
// namespace enforces: restricted, so that no pod in it runs privileged, as
// root, or with the host's namespaces or folders, whoever makes it.
func namespaceLabels(a *App, installation string) map[string]string {
	l := appLabels(a)
	if installation != "" {
		l[LabelInstallation] = installation
	}
	l["pod-security.kubernetes.io/enforce"] = "restricted"
	return l
}

func processLabels(a *App, process string) map[string]string {
	l := appLabels(a)
	l[LabelProcess] = process
	return l
}

// selector is the part of a process's labels that picks its pods: the app's
// ID stays out of it, so that it could never need to change.
func selector(a *App, process string) map[string]string {
	return map[string]string{LabelManagedBy: ManagedBy, LabelApp: a.Name, LabelProcess: process}
}

// objects is everything one release of an app needs besides its namespace,
// as server-side apply configurations.
type objects struct {
	secrets     []*corev1ac.SecretApplyConfiguration
	deployments []*appsv1ac.DeploymentApplyConfiguration
	services    []*corev1ac.ServiceApplyConfiguration
}

// build maps an app's release to Kubernetes objects. Its config and secrets
// become immutable Secrets named by their content, so that a rollback to
// the same content gives back the very same pod template (and ReplicaSet),
// and a release that changes nothing in them starts no new pods.
func build(a *App, ns string, pullSecret bool) *objects {
	o := &objects{}
	env := map[string][]byte{}
	files := map[string][]byte{}
	envID := map[string][]byte{} // what names the Secrets: config values, secrets' versions
	filesID := map[string][]byte{}
	for k, v := range a.Config {
		env[k] = []byte(v)
		envID[k] = []byte(v)
	}
	for _, s := range a.Secrets {
		version := []byte("secret version " + strconv.Itoa(a.SecretVersions[s.Name]))
		if s.AsFile {
			files[s.Name], filesID[s.Name] = s.Value, version
		} else {
			env[s.Name], envID[s.Name] = s.Value, version
		}
	}
	envSecret := contentName("env", envID)
	o.secrets = append(o.secrets, secret(a, ns, envSecret, env))
	filesSecret := ""
	if len(files) > 0 {
		filesSecret = contentName("files", filesID)
		o.secrets = append(o.secrets, secret(a, ns, filesSecret, files))
	}

	for _, name := range slices.Sorted(maps.Keys(a.Processes)) {
		p := a.Processes[name]
		deployment := func(dname string, replicas, slot int) {
			pod := podSpec(a, name, p, envSecret, filesSecret, slot)
			if pullSecret && !a.External {
				pod.WithImagePullSecrets(corev1ac.LocalObjectReference().WithName(PullSecret))
			}
			sel, podLabels := selector(a, name), processLabels(a, name)
			if slot >= 0 {
				sel[LabelSlot], podLabels[LabelSlot] = strconv.Itoa(slot), strconv.Itoa(slot)
			}
			d := appsv1ac.Deployment(dname, ns).
				WithLabels(processLabels(a, name)).
				WithAnnotations(map[string]string{AnnotationRelease: strconv.Itoa(a.Release)}).
				WithSpec(appsv1ac.DeploymentSpec().
					WithReplicas(int32(replicas)).
					WithSelector(metav1ac.LabelSelector().WithMatchLabels(sel)).
					WithStrategy(strategy(a, name)).
					WithRevisionHistoryLimit(10).
					WithTemplate(corev1ac.PodTemplateSpec().
						WithLabels(podLabels).
						WithSpec(pod)))
			if grace := p.Health.Grace; grace > 0 {
				// A rollout that has not made progress for this long is
				// marked failed by the Deployment controller.
				d.Spec.WithProgressDeadlineSeconds(int32(max(grace, 10*time.Second) / time.Second))
			}
			o.deployments = append(o.deployments, d)
		}
		if slices.ContainsFunc(a.Volumes, func(v Volume) bool { return v.Process == name && v.PerInstance }) {
			// Each instance mounts a volume of its own: a Deployment of
			// one pod for each, as on one machine each instance has its
			// slot. The Service below selects them all.
			for k := range p.Replicas {
				deployment(SlotDeployment(name, k), 1, k)
			}
		} else {
			deployment(name, p.Replicas, -1)
		}
		if name == "web" {
			o.services = append(o.services, corev1ac.Service(WebService, ns).
				WithLabels(processLabels(a, name)).
				// Headless: Paddock's router sends requests to the pods it
				// finds in the EndpointSlices, and apps in the cluster find
				// them by DNS; a virtual IP would cost an address of the
				// cluster's range and kube-proxy rules for every app.
				WithSpec(corev1ac.ServiceSpec().
					WithClusterIP(corev1.ClusterIPNone).
					WithSelector(selector(a, name)).
					WithPorts(corev1ac.ServicePort().
						WithName(portName).
						WithPort(int32(webPort(p))).
						WithTargetPort(intstr.FromString(portName)))))
		}
	}
	return o
}

// strategy is how a process type's pods are replaced. A new pod must be
// ready, not merely started, before an old one goes: the same
// zero-downtime rule as on one machine. A volume has one writer, though:
// there, as on one machine, the old pod stops before the new one starts.
func strategy(a *App, process string) *appsv1ac.DeploymentStrategyApplyConfiguration {
	for _, v := range a.Volumes {
		if v.Process == process {
			return appsv1ac.DeploymentStrategy().WithType(appsv1.RecreateDeploymentStrategyType)
		}
	}
	return appsv1ac.DeploymentStrategy().
		WithType(appsv1.RollingUpdateDeploymentStrategyType).
		WithRollingUpdate(appsv1ac.RollingUpdateDeployment().
			WithMaxUnavailable(intstr.FromInt32(0)).
			WithMaxSurge(intstr.FromString("25%")))
}

func webPort(p Process) int {
	if p.Port != 0 {
		return p.Port
	}
	return WebPort
}

func secret(a *App, ns, name string, data map[string][]byte) *corev1ac.SecretApplyConfiguration {
	return corev1ac.Secret(name, ns).
		WithLabels(appLabels(a)).
		WithType(corev1.SecretTypeOpaque).
		WithImmutable(true).
		WithData(data)
}

// contentName names a Secret by a digest of its keys and what identifies
// their values.
func contentName(kind string, data map[string][]byte) string {
	h := sha256.New()
	for _, k := range slices.Sorted(maps.Keys(data)) {
		fmt.Fprintf(h, "%d:%s%d:", len(k), k, len(data[k]))
		h.Write(data[k])
	}
	return kind + "-" + hex.EncodeToString(h.Sum(nil))[:16]
}

// SlotDeployment names the Deployment of instance slot of a process whose
// instances each have a volume of their own.
func SlotDeployment(process string, slot int) string { return process + "-" + strconv.Itoa(slot) }

// podSpec is the pod of a process; slot is the instance's, for a process
// whose instances each have volumes of their own, else -1.
func podSpec(a *App, name string, p Process, envSecret, filesSecret string, slot int) *corev1ac.PodSpecApplyConfiguration {
	c := corev1ac.Container().
		WithName(name).
		WithImage(a.Image).
		WithEnvFrom(corev1ac.EnvFromSource().WithSecretRef(corev1ac.SecretEnvSource().WithName(envSecret)))
	if p.Command != "" {
		c.WithCommand("/bin/sh", "-c", p.Command)
	}
	if !a.External {
		c.WithWorkingDir(WorkDir)
	} else {
		// A tag may move, and a node may hold another app's copy of an
		// image: an image Paddock did not build is pulled, with the
		// registry's checks, for every pod.
		c.WithImagePullPolicy(corev1.PullAlways)
	}
	// As on one machine, less PADDOCK_RELEASE: a release number in the pod
	// template would make a rollback start new pods rather than scale the
	// earlier release's ReplicaSet back up.
	env := []*corev1ac.EnvVarApplyConfiguration{
		corev1ac.EnvVar().WithName("PADDOCK_APP").WithValue(a.Name),
		corev1ac.EnvVar().WithName("PADDOCK_PROCESS").WithValue(name),
		corev1ac.EnvVar().WithName("PADDOCK_INSTANCE").WithValueFrom(corev1ac.EnvVarSource().
			WithFieldRef(corev1ac.ObjectFieldSelector().WithFieldPath("metadata.name"))),
	}
	if name == "web" {
		port := webPort(p)
		env = append(env, corev1ac.EnvVar().WithName("PORT").WithValue(strconv.Itoa(port)))
		c.WithPorts(corev1ac.ContainerPort().WithName(portName).WithContainerPort(int32(port)).WithProtocol(corev1.ProtocolTCP))
	}
	c.WithSecurityContext(corev1ac.SecurityContext().
		WithAllowPrivilegeEscalation(false).
		WithCapabilities(corev1ac.Capabilities().WithDrop("ALL")))
	podSecurity := corev1ac.PodSecurityContext().
		WithRunAsNonRoot(true).
		WithSeccompProfile(corev1ac.SeccompProfile().WithType(corev1.SeccompProfileTypeRuntimeDefault)).
		// The group of the secret files, so that a user other than root
		// may read them.
		WithFSGroup(AppUID)
	if !a.External {
		podSecurity.WithRunAsUser(AppUID).WithRunAsGroup(AppUID)
	}
	spec := corev1ac.PodSpec().
		WithSecurityContext(podSecurity).
		WithEnableServiceLinks(false). // no FOO_SERVICE_HOST variables: apps get their config from Paddock
		WithAutomountServiceAccountToken(false)
	if filesSecret != "" {
		env = append(env, corev1ac.EnvVar().WithName("PADDOCK_SECRETS_DIR").WithValue(SecretsDir))
		c.WithVolumeMounts(corev1ac.VolumeMount().WithName("secrets").WithMountPath(SecretsDir).WithReadOnly(true))
		spec.WithVolumes(corev1ac.Volume().WithName("secrets").
			WithSecret(corev1ac.SecretVolumeSource().WithSecretName(filesSecret).WithDefaultMode(0o400)))
	}
	for _, v := range a.Volumes {
		if v.Process != name || v.PerInstance && v.Slot != slot {
			continue
		}
		dir := path.Join(WorkDir, v.Path)
		env = append(env, corev1ac.EnvVar().WithName(v.Env).WithValue(dir))
		c.WithVolumeMounts(corev1ac.VolumeMount().WithName("volume-" + v.Name).WithMountPath(dir))
		spec.WithVolumes(corev1ac.Volume().WithName("volume-" + v.Name).
			WithPersistentVolumeClaim(corev1ac.PersistentVolumeClaimVolumeSource().WithClaimName(v.Claim)))
	}
	c.WithEnv(env...)
	if p.Memory > 0 {
		mem := *resource.NewQuantity(p.Memory, resource.BinarySI)
		c.WithResources(corev1ac.ResourceRequirements().
			WithLimits(corev1.ResourceList{corev1.ResourceMemory: mem}).
			WithRequests(corev1.ResourceList{corev1.ResourceMemory: mem}))
	}
	probes(c, name, p)
	stop := p.StopTimeout
	if stop <= 0 {
		stop = manifest.DefaultStopTimeout
	}
	if name == "web" {
		c.WithLifecycle(corev1ac.Lifecycle().WithPreStop(corev1ac.LifecycleHandler().
			WithSleep(corev1ac.SleepAction().WithSeconds(int64(WebDrain / time.Second)))))
		stop += WebDrain // the grace period counts the preStop sleep
	}
	spec.WithTerminationGracePeriodSeconds(ceilSeconds(stop)).WithContainers(c)
	if req := required(a); len(req) > 0 {
		term := corev1ac.NodeSelectorTerm()
		for _, k := range slices.Sorted(maps.Keys(req)) {
			term.WithMatchExpressions(corev1ac.NodeSelectorRequirement().
				WithKey(k).WithOperator(corev1.NodeSelectorOpIn).WithValues(req[k]))
		}
		spec.WithAffinity(corev1ac.Affinity().WithNodeAffinity(corev1ac.NodeAffinity().
			WithRequiredDuringSchedulingIgnoredDuringExecution(corev1ac.NodeSelector().WithNodeSelectorTerms(term))))
	}
	return spec
}

// required is the node labels an app's pods require: its placement, and
// for an image Paddock built, the architecture it was built for (this
// machine's, where the build ran), which the image declares.
func required(a *App) map[string]string {
	req := maps.Clone(a.Placement)
	if a.External {
		return req // an image of its own may be built for several
	}
	if req == nil {
		req = map[string]string{}
	}
	if _, ok := req[corev1.LabelArchStable]; !ok {
		req[corev1.LabelArchStable] = goruntime.GOARCH
	}
	return req
}

// probes maps a process's health check to the kubelet's probes: readiness
// takes a pod out of its Service after unhealthy_after failures, as one
// machine takes an instance out of the router; a startup probe gives a new
// pod the check's grace to pass first; liveness restarts a pod after
// restart_after failures, when that is set. A process with neither a check
// nor a port (a worker) gets no probe: it is ready once it runs.
func probes(c *corev1ac.ContainerApplyConfiguration, name string, p Process) {
	h := p.Health
	handler := func() *corev1ac.ProbeApplyConfiguration {
		switch {
		case h.Command != "":
			return corev1ac.Probe().WithExec(corev1ac.ExecAction().WithCommand("/bin/sh", "-c", h.Command))
		case name != "web":
			return nil
		case h.Path != "":
			return corev1ac.Probe().WithHTTPGet(corev1ac.HTTPGetAction().
				WithPath(h.Path).WithPort(intstr.FromString(portName)))
		default:
			return corev1ac.Probe().WithTCPSocket(corev1ac.TCPSocketAction().WithPort(intstr.FromString(portName)))
		}
	}
	if handler() == nil {
		return
	}
	interval := cmpOr(h.Interval, manifest.DefaultHealthInterval)
	timeout := cmpOr(h.Timeout, manifest.DefaultHealthTimeout)
	grace := cmpOr(h.Grace, manifest.DefaultHealthGrace)
	period, timeoutS := ceilSeconds(interval), ceilSeconds(timeout)

	// The startup probe runs every second whatever the interval, so a pod
	// that is ready quickly serves quickly.
	c.WithStartupProbe(handler().WithPeriodSeconds(1).WithTimeoutSeconds(int32(timeoutS)).
		WithFailureThreshold(int32(max(1, ceilSeconds(grace)))))
	unhealthy := h.UnhealthyAfter
	if unhealthy == 0 {
		unhealthy = 3
	}
	c.WithReadinessProbe(handler().WithPeriodSeconds(int32(period)).WithTimeoutSeconds(int32(timeoutS)).
		WithFailureThreshold(int32(unhealthy)))
	if h.RestartAfter > 0 {
		c.WithLivenessProbe(handler().WithPeriodSeconds(int32(period)).WithTimeoutSeconds(int32(timeoutS)).
			WithFailureThreshold(int32(h.RestartAfter)))
	}
}

func cmpOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// ceilSeconds rounds a duration up to whole seconds, at least 1: the
// kubelet's probes and grace periods count in seconds.
func ceilSeconds(d time.Duration) int64 {
	return max(1, int64(math.Ceil(d.Seconds())))
}

// PullSecret is the Secret in each app's namespace that lets nodes pull
// Paddock's images from a registry that asks for a password.
const PullSecret = "registry"

// PullCredentials log in to a registry.
type PullCredentials struct {
	Server   string // the registry's host (and port)
	Username string
	Password string
}

// String keeps the password out of logs and errors.
func (p PullCredentials) String() string { return p.Username + "@" + p.Server }

// pullSecret is the PullSecret of an app, or nil without credentials. It
// is not immutable: the password may change.
func pullSecret(a *App, ns string, p *PullCredentials) *corev1ac.SecretApplyConfiguration {
	if p == nil {
		return nil
	}
	type entry struct {
		Username string `json:"username"`
		Password string `json:"password"`
		Auth     string `json:"auth"`
	}
	cfg, _ := json.Marshal(map[string]map[string]entry{"auths": {p.Server: {
		Username: p.Username, Password: p.Password,
		Auth: base64.StdEncoding.EncodeToString([]byte(p.Username + ":" + p.Password)),
	}}})
	return corev1ac.Secret(PullSecret, ns).
		WithLabels(appLabels(a)).
		WithType(corev1.SecretTypeDockerConfigJson).
		WithData(map[string][]byte{corev1.DockerConfigJsonKey: cfg})
}

// objectNames are the names of what a release needs, by kind.
type objectNames struct {
	processes, services, secrets map[string]bool
}

func (o *objects) names(pullSecret bool) objectNames {
	n := objectNames{processes: map[string]bool{}, services: map[string]bool{}, secrets: map[string]bool{}}
	for _, d := range o.deployments {
		n.processes[*d.Name] = true
	}
	for _, s := range o.services {
		n.services[*s.Name] = true
	}
	for _, s := range o.secrets {
		n.secrets[*s.Name] = true
	}
	if pullSecret {
		n.secrets[PullSecret] = true
	}
	return n
}

func (n objectNames) String() string {
	return fmt.Sprint(slices.Sorted(maps.Keys(n.processes)), slices.Sorted(maps.Keys(n.services)), slices.Sorted(maps.Keys(n.secrets)))
}
