package deploy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation"

	"paddock.dev/paddock/internal/image"
	"paddock.dev/paddock/internal/kube"
	"paddock.dev/paddock/internal/manifest"
	"paddock.dev/paddock/internal/router"
	"paddock.dev/paddock/internal/runtime"
	"paddock.dev/paddock/internal/store"
	"paddock.dev/paddock/internal/volume"
)

// On Kubernetes the reconciler's pass is:
//
//	list apps ─► per app: make the image of its release's artifact (once),
//	apply the release (when it changed, or every reapplyEvery to undo drift)
//	─► settle the release's status from the Deployments' rollout ─► push the
//	router table: the ready endpoints of each app's web Service
//
// Kubernetes does the starting, stopping and health checking; the
// reconciler only says what should run and reads back what does.

// reapplyEvery is how often an unchanged release is applied again, which
// undoes changes others made to Paddock's objects.
const reapplyEvery = 5 * time.Minute

// kubeState is what the Kubernetes reconciler remembers between passes.
type kubeState struct {
	images    map[string]string           // "app/artifact digest" -> image reference by digest
	applied   map[string]string           // app -> fingerprint of what was last applied
	appliedAt map[string]time.Time        // app -> when
	waiting   map[string]string           // app -> the last rollout progress reported
	reported  map[string]string           // app -> the last problem reported by reportOnce
	backends  map[string][]router.Backend // app -> what was last routed to
}

func (s *Service) reconcileKube(ctx context.Context) error {
	apps, err := s.st.ListApps(ctx)
	if err != nil {
		return fmt.Errorf("list apps: %w", err)
	}
	domains, err := s.st.ListDomains(ctx, "")
	if err != nil {
		return fmt.Errorf("list domains: %w", err)
	}
	known := map[string]bool{}
	for _, a := range apps {
		known[a.Name] = true
		if err := s.reconcileKubeApp(ctx, a); err != nil {
			s.log.Warn("reconcile app on kubernetes", "app", a.Name, "err", err)
		}
	}
	var last int64 = -1
	for _, name := range s.cfg.Kube.Apps() {
		if known[name] {
			continue
		}
		// An app this store made and destroyed, whose destruction did not
		// finish: finish it. One of an ID this store never handed out
		// (a store restored from an older backup) is left alone.
		if last < 0 {
			if last, err = s.st.LastAppID(ctx); err != nil {
				return err
			}
		}
		if id := s.cfg.Kube.AppID(ctx, name); id == 0 || id > last {
			s.log.Warn("kubernetes: a namespace of an app this store never made is left alone", "app", name)
			s.cfg.Kube.Unwatch(name)
			continue
		}
		if err := s.cfg.Kube.Destroy(ctx, name); err != nil {
			s.log.Warn("remove a destroyed app from kubernetes", "app", name, "err", err)
		}
	}
	return s.routeKube(ctx, apps, domains)
}

func (s *Service) reconcileKubeApp(ctx context.Context, a store.App) error {
	if a.Release == 0 {
		// No release to run (the first deploy failed): nothing runs.
		s.rec.mu.Lock()
		_, ran := s.rec.kube.applied[a.Name]
		delete(s.rec.kube.applied, a.Name)
		s.rec.mu.Unlock()
		if ran {
			return s.cfg.Kube.Idle(ctx, a.Name)
		}
		return nil
	}
	m, rel, err := s.manifest(ctx, a.Name, a.ID, a.Release)
	if err != nil {
		return err
	}
	if rel.Artifact == "" && rel.Image == "" {
		return nil // config set before the first deploy: nothing to run yet
	}
	img, err := s.image(ctx, a, rel)
	if err != nil {
		if rel.Status == store.StatusPending {
			return s.fail(ctx, a, rel, err.Error())
		}
		return err
	}
	app := &kube.App{
		Name: a.Name, ID: a.ID, Release: rel.Version, Image: img, External: rel.Image != "",
		Processes:      kube.FromManifest(m, a.Formation),
		Config:         rel.Config,
		SecretVersions: rel.Secrets,
		Placement:      a.Placement,
	}
	if s.cfg.Volumes != nil {
		vols, err := s.cfg.Volumes.List(ctx, a.Name)
		if err != nil {
			return err
		}
		perInstance := map[string]bool{}
		byName := map[string]store.Volume{}
		for _, v := range vols {
			byName[v.Name] = v
		}
		for _, v := range vols {
			switch {
			case v.Process == "":
				continue
			case v.PerInstance:
				perInstance[v.Process] = true
				continue
			case s.cfg.Volumes.Restoring(v.Name):
				return nil // its pods start with the restored claim, once there is one
			}
			app.Volumes = append(app.Volumes, kube.Volume{Name: v.Name, Claim: claimOf(v), Process: v.Process, Path: v.Path, Env: volume.EnvName(v.Name)})
			// One writer, as on one machine (where a second instance cannot
			// mount it): more pods would share a ReadWriteOnce claim.
			if p, ok := app.Processes[v.Process]; ok && p.Replicas > 1 {
				p.Replicas = 1
				app.Processes[v.Process] = p
			}
		}
		// Each instance of such a process has a slot of its own, and in it
		// a volume for each per-instance attachment, as on one machine.
		problem := ""
		for _, proc := range slices.Sorted(maps.Keys(perInstance)) { // in order: the fingerprint hashes it
			p, ok := app.Processes[proc]
			if !ok {
				continue
			}
			for k := range p.Replicas {
				if _, clash := app.Processes[kube.SlotDeployment(proc, k)]; clash {
					return s.failIfPending(ctx, a, rel, fmt.Errorf("%w: instance %d of %s would be the Deployment %s, the name of another process type: rename that one", errSlotClash, k, proc, kube.SlotDeployment(proc, k)))
				}
			}
			slots, err := s.cfg.Volumes.Slots(ctx, a.Name, proc, p.Replicas)
			if err != nil {
				refused := errors.Is(err, volume.ErrQuota) || errors.Is(err, volume.ErrInUse)
				if !refused || len(slots) == 0 {
					return s.failIfPending(ctx, a, rel, err)
				}
				// The instances whose volumes there are run, and a release
				// rolls out with them; those whose volumes the platform
				// refuses wait, as on one machine an instance that cannot
				// have its volume does not start. (A failure that may pass
				// changes nothing: the pass is tried again.)
				which := fmt.Sprintf("instances %d to %d of %s wait for their volumes", len(slots), p.Replicas-1, proc)
				if len(slots) == p.Replicas-1 {
					which = fmt.Sprintf("instance %d of %s waits for its volumes", len(slots), proc)
				}
				if problem != "" {
					problem += "; "
				}
				problem += which + ": " + err.Error()
				p.Replicas = len(slots)
				app.Processes[proc] = p
			}
			for k, vs := range slots {
				for _, v := range vs {
					if s.cfg.Volumes.Restoring(v.Name) {
						return nil
					}
					tmpl := v
					if v.Template != "" {
						tmpl = byName[v.Template]
					}
					app.Volumes = append(app.Volumes, kube.Volume{Name: v.Name, Claim: claimOf(v), Process: proc, Path: tmpl.Path,
						Env: volume.EnvName(tmpl.Name), PerInstance: true, Slot: k})
				}
			}
		}
		s.reportOnce(ctx, a.Name, problem)
	}
	// The fingerprint is of the secrets' versions, not their values: a
	// pass that changes nothing opens no secret.
	fp := fingerprint(app)
	s.rec.mu.Lock()
	changed := s.rec.kube.applied[a.Name] != fp
	stale := changed || s.now().Sub(s.rec.kube.appliedAt[a.Name]) > s.reapplyAfter(a)
	s.rec.mu.Unlock()
	if stale {
		if app.Secrets, err = s.openSecrets(ctx, a, rel.Secrets); err == nil {
			err = s.cfg.Kube.Apply(ctx, app)
		}
		if err != nil {
			if rel.Status == store.StatusPending && permanent(err) {
				// Trying again would not help: the release fails now
				// rather than leave its deploy waiting.
				return s.fail(ctx, a, rel, err.Error())
			}
			return err
		}
		if !changed {
			// Now and then, what earlier releases left and no longer need.
			if err := s.cfg.Kube.Collect(ctx, app); err != nil {
				s.log.Warn("collect what an app's releases no longer need", "app", a.Name, "err", err)
			}
		}
		s.rec.mu.Lock()
		s.rec.kube.applied[a.Name], s.rec.kube.appliedAt[a.Name] = fp, s.now()
		s.rec.mu.Unlock()
	}
	if rel.Status != store.StatusPending {
		return nil
	}
	ro, err := s.cfg.Kube.Status(a.Name)
	if err != nil {
		return err
	}
	switch {
	case ro.Failed != "":
		return s.fail(ctx, a, rel, ro.Failed)
	case ro.Done:
		s.event(ctx, a.Name, "", "", fmt.Sprintf("v%d rolled out", rel.Version))
		if err := s.st.SetReleaseStatus(ctx, a.Name, rel.Version, store.StatusDeployed, ""); err != nil {
			return err
		}
		// The old pods are gone: so is the need for their Secrets.
		return s.cfg.Kube.Collect(ctx, app)
	}
	s.rec.mu.Lock()
	report := ro.Waiting != "" && s.rec.kube.waiting[a.Name] != ro.Waiting
	s.rec.kube.waiting[a.Name] = ro.Waiting
	s.rec.mu.Unlock()
	if report {
		s.event(ctx, a.Name, "", "", "waiting for "+ro.Waiting)
	}
	return nil
}

// reportOnce makes msg an event of app unless it is the last one made so;
// "" says the problem is gone, so that it is reported again if it comes
// back.
func (s *Service) reportOnce(ctx context.Context, app, msg string) {
	s.rec.mu.Lock()
	seen := s.rec.kube.reported[app] == msg
	s.rec.kube.reported[app] = msg
	s.rec.mu.Unlock()
	if !seen && msg != "" {
		s.event(ctx, app, "", "", msg)
	}
}

// errSlotClash: an instance's Deployment would have the name of another
// process type's.
var errSlotClash = errors.New("names clash")

// failIfPending fails a pending release for a reason that trying again
// would not change; for a release that runs, it only reports it.
func (s *Service) failIfPending(ctx context.Context, a store.App, rel store.Release, err error) error {
	if rel.Status == store.StatusPending && (permanent(err) || errors.Is(err, volume.ErrInvalid) || errors.Is(err, volume.ErrQuota) || errors.Is(err, volume.ErrInUse)) {
		return s.fail(ctx, a, rel, err.Error())
	}
	return err
}

// claimOf names the PersistentVolumeClaim of a volume kept on Kubernetes,
// whose ID is "namespace/claim".
func claimOf(v store.Volume) string {
	_, claim, _ := strings.Cut(v.CSIID, "/")
	return claim
}

// image returns the image of a release's artifact, building and pushing
// it the first time.
func (s *Service) image(ctx context.Context, a store.App, rel store.Release) (string, error) {
	if rel.Image != "" {
		return rel.Image, nil
	}
	key := a.Name + "/" + rel.Artifact // each app's images are in its own repository
	s.rec.mu.Lock()
	ref := s.rec.kube.images[key]
	s.rec.mu.Unlock()
	if ref != "" {
		return ref, nil
	}
	if s.cfg.Images == nil {
		return "", fmt.Errorf("v%d has no image and no registry is configured to push one to: start the server with --registry", rel.Version)
	}
	file, err := s.cfg.Artifacts.File(rel.Artifact)
	if err != nil {
		return "", err
	}
	start := s.now()
	ref, err = s.cfg.Images.Build(ctx, file, a.Name, fmt.Sprintf("v%d", rel.Version))
	if err != nil {
		return "", fmt.Errorf("image of v%d: %w", rel.Version, err)
	}
	s.event(ctx, a.Name, "", "", fmt.Sprintf("image of v%d pushed in %s: %s", rel.Version, s.now().Sub(start).Round(time.Millisecond), ref))
	s.rec.mu.Lock()
	s.rec.kube.images[key] = ref
	s.rec.mu.Unlock()
	return ref, nil
}

// fingerprint is a digest of everything Apply would send, before the
// secrets are opened: their versions stand for their values.
func fingerprint(a *kube.App) string {
	h := sha256.New()
	json.NewEncoder(h).Encode(a)
	return hex.EncodeToString(h.Sum(nil))
}

// reapplyAfter spreads the reapplies of unchanged apps over the period,
// by app, rather than all in one pass.
func (s *Service) reapplyAfter(a store.App) time.Duration {
	return reapplyEvery + time.Duration(a.ID%60)*time.Second
}

// permanent reports whether an error of Apply will come again however often
// it is tried: the cluster refused the objects, or the app cannot have them.
func permanent(err error) bool {
	return apierrors.IsInvalid(err) || apierrors.IsForbidden(err) || apierrors.IsRequestEntityTooLargeError(err) ||
		apierrors.IsBadRequest(err) || errors.Is(err, kube.ErrForeign) || errors.Is(err, ErrNoKeyring) || errors.Is(err, errSlotClash)
}

// routeKube pushes the router table: each app's host names to the ready
// endpoints of its web Service.
func (s *Service) routeKube(ctx context.Context, apps []store.App, domains []store.Domain) error {
	backends := map[string][]router.Backend{}
	for _, a := range apps {
		eps, err := s.cfg.Kube.Endpoints(a.Name)
		if err != nil {
			// Not applied yet, or its watch has not synced since the
			// server started: what the router has stays.
			s.rec.mu.Lock()
			backends[a.Name] = s.rec.kube.backends[a.Name]
			s.rec.mu.Unlock()
			continue
		}
		for _, addr := range eps {
			// A pod is on the cluster's network: never this machine's
			// loopback or a link-local address (a cloud's metadata).
			if ap, err := netip.ParseAddrPort(addr); err != nil || !ap.Addr().IsGlobalUnicast() {
				s.log.Warn("an endpoint of the app's web Service is no pod address; not routed to", "app", a.Name, "addr", addr)
				continue
			}
			backends[a.Name] = append(backends[a.Name], router.Backend{Addr: addr, Pod: true})
		}
	}
	s.rec.mu.Lock()
	s.rec.kube.backends = backends
	s.rec.mu.Unlock()
	return s.pushTable(ctx, apps, domains, backends, nil)
}

// describe adds what the reconciler knows of an instance's health: on
// Kubernetes, its pod's readiness.
func (s *Service) describe(in runtime.Instance) Instance {
	d := s.rec.describe(in)
	if s.cfg.Kube != nil {
		d.Healthy = s.cfg.Kube.Ready(in.ID)
		if !d.Healthy && in.State == runtime.StateCrashLoop {
			d.Health = in.LastExit
		}
	}
	return d
}

// redactPod is the redaction of an app's secrets in its pods' output.
func (s *Service) redactPod(ctx context.Context, app string, w io.Writer) (kube.Flusher, error) {
	a, err := s.st.GetApp(ctx, app)
	if err != nil {
		return nil, err
	}
	return s.scrubber(ctx, a, w)
}

// validatePlacement checks that placement is node labels Kubernetes would
// take, and that the runtime can honour them: one machine has no nodes to
// choose from, and a requirement silently ignored would be broken.
func (s *Service) validatePlacement(placement map[string]string) error {
	if len(placement) == 0 {
		return nil
	}
	if s.cfg.Kube == nil {
		return fmt.Errorf("%w: placement needs a cluster to choose nodes in: start the server with --runtime kubernetes, or create the app without --place", ErrInvalid)
	}
	for _, k := range slices.Sorted(maps.Keys(placement)) {
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			return fmt.Errorf("%w: placement label %q: %s", ErrInvalid, k, strings.Join(errs, "; "))
		}
		if errs := validation.IsValidLabelValue(placement[k]); len(errs) > 0 {
			return fmt.Errorf("%w: placement %s=%q: %s", ErrInvalid, k, placement[k], strings.Join(errs, "; "))
		}
	}
	return nil
}

// DeployImage releases an image that exists already, with the processes of
// manifestTOML (a paddock.toml; empty: one web process running the image's
// own command), and waits for its rollout. Only Kubernetes runs images.
func (s *Service) DeployImage(ctx context.Context, app, ref string, manifestTOML []byte, actor string, p Progress) (store.Release, error) {
	if s.cfg.Kube == nil {
		return store.Release{}, fmt.Errorf("%w: deploying an image needs a cluster (start the server with --runtime kubernetes); on one machine, deploy the app's folder", ErrInvalid)
	}
	if err := ValidateAppName(app); err != nil {
		return store.Release{}, err
	}
	if _, err := name.ParseReference(ref); err != nil || strings.ContainsAny(ref, " \t\n") {
		return store.Release{}, fmt.Errorf("%w: image %q: give REGISTRY/REPOSITORY:TAG or REGISTRY/REPOSITORY@sha256:DIGEST", ErrInvalid, ref)
	}
	if _, err := s.st.GetApp(ctx, app); errors.Is(err, store.ErrNotFound) {
		return store.Release{}, fmt.Errorf("%w: create it first with `paddock apps create %s`", err, app)
	} else if err != nil {
		return store.Release{}, err
	}
	// A tag may move: the release runs the image it names now, for good,
	// so that a rollback to it is exact.
	pinned, err := s.cfg.Images.Resolve(ctx, ref)
	switch {
	case errors.Is(err, image.ErrNoAccess):
		// The nodes may pull it with credentials of their own.
		p.Step(fmt.Sprintf("image %s is not pinned to a digest: Paddock may not read it, so a rollback to this release runs what the tag names then", ref))
		pinned = ref
	case errors.Is(err, image.ErrNoImage):
		return store.Release{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	case err != nil:
		return store.Release{}, err
	}
	if pinned != ref {
		p.Step(fmt.Sprintf("image %s is %s", ref, pinned))
		ref = pinned
	}
	m := manifest.ImageWeb()
	if len(manifestTOML) > 0 {
		var err error
		if m, err = manifest.Parse(manifestTOML); err != nil {
			return store.Release{}, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
	}
	mj, err := json.Marshal(m)
	if err != nil {
		return store.Release{}, err
	}
	b := store.Build{ID: s.now().UTC().Format("20060102150405") + "-" + randomID(6), App: app, Manifest: mj, CreatedAt: s.now().UTC()}
	if err := s.st.CreateBuild(ctx, b); err != nil {
		return store.Release{}, err
	}
	return s.release(ctx, app, store.Release{Build: b.ID, Image: ref, Manifest: mj, Description: "Deploy image " + ref},
		"deploy of image "+ref, actor, p)
}

// Reapply has the next reconcile pass apply every app on Kubernetes again,
// changed or not: for what the apps' objects hold that is not in their
// releases, such as the registry's pull secret.
func (s *Service) Reapply() {
	s.rec.mu.Lock()
	clear(s.rec.kube.appliedAt) // stale, still marked as applied
	s.rec.mu.Unlock()
	s.Kick()
}
