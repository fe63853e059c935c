// Package deploy owns apps' lifecycles: builds become releases, releases are
// rolled out by a level-triggered reconciler that compares the declared state
// in the store with the instances the runtime reports and acts until they
// match, and the router is told which instances are healthy.
//
// The API calls Service; Service calls the store, the runtime and the router,
// never the other way round.
package deploy

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"paddock.dev/paddock/internal/build"
	"paddock.dev/paddock/internal/image"
	"paddock.dev/paddock/internal/isolate"
	"paddock.dev/paddock/internal/kube"
	"paddock.dev/paddock/internal/manifest"
	"paddock.dev/paddock/internal/metrics"
	"paddock.dev/paddock/internal/router"
	"paddock.dev/paddock/internal/runtime"
	"paddock.dev/paddock/internal/store"
)

// Errors the API maps to status codes.
var (
	ErrInvalid  = errors.New("invalid request")
	ErrNotFound = store.ErrNotFound
	ErrExists   = store.ErrExists
	ErrFailed   = errors.New("rollout failed")
)

// Router is what the reconciler needs of the router process.
type Router interface {
	Push(ctx context.Context, t router.Table) error
	Status(ctx context.Context) (router.Status, error)
}

// Config configures a Service.
type Config struct {
	Store     store.Store       // required
	Runtime   runtime.Runtime   // required
	Router    Router            // required
	Artifacts *build.Artifacts  // required
	BuildDir  string            // required: scratch space for unpacked uploads
	BuildHome string            // required: HOME of build commands, kept between builds as their cache
	Logs      string            // required: the folder of per-app log folders, shared with the runtime
	Domain    string            // apps are served at APP.Domain; default "localhost"
	URLPort   string            // the router's port, shown in app URLs unless it is "" or "80"
	BuildEnv  []string          // extra KEY=VALUE for build commands (GOPROXY, GOFLAGS…)
	Interval  time.Duration     // reconcile period; default 500ms
	Drain     time.Duration     // most time to wait for in-flight requests of a removed instance; default 30s
	Upload    int64             // largest unpacked upload in bytes; default 512 MiB
	Now       func() time.Time  // default time.Now
	Logger    *slog.Logger      // default: discard
	AppEnv    map[string]string // base environment of every instance (PATH…); default a minimal PATH
	// Users, when set, runs each app's builds and instances as a user of
	// its own, Users.App(the app's ID), who can read neither the platform's
	// data nor other apps'. Nil runs them as the server's user.
	Users *isolate.Range
	// Keyring seals and opens secrets; nil: the server keeps no secrets.
	Keyring Keyring
	// Volumes publishes apps' volumes to their instances; nil: none.
	Volumes Volumes
	// Metrics counts reconcile passes and builds; nil: none.
	Metrics *metrics.Metrics
	// ReservedHosts are names and addresses no app may add as a domain:
	// the API's own.
	ReservedHosts []string
	// Tracker, when set, keeps every process of an app's builds in a
	// cgroup, so that a timeout or the app's destruction ends all of them;
	// the runtime does the same for instances.
	Tracker *isolate.Tracker
	// Kube, when set, runs apps on Kubernetes instead of Runtime (which
	// may then be nil): the reconciler applies releases and reads back
	// what runs.
	Kube *kube.Runtime
	// Images builds and pushes the images of releases, for Kube.
	Images *image.Registry
}

// Service manages apps, releases and their rollouts.
type Service struct {
	cfg    Config
	st     store.Store
	rt     runtime.Runtime
	log    *slog.Logger
	now    func() time.Time
	kick   chan struct{}
	locks  sync.Map // app name -> *sync.Mutex, serialises release changes per app
	probes *http.Client

	rec reconcilerState
}

// New returns a Service; call Run to start reconciling.
func New(cfg Config) (*Service, error) {
	if cfg.Kube != nil {
		cfg.Runtime = cfg.Kube
	}
	if cfg.Store == nil || cfg.Runtime == nil || cfg.Router == nil || cfg.Artifacts == nil || cfg.BuildDir == "" || cfg.BuildHome == "" || cfg.Logs == "" {
		return nil, errors.New("deploy: Store, Runtime, Router, Artifacts, BuildDir, BuildHome and Logs are required")
	}
	if cfg.Domain == "" {
		cfg.Domain = "localhost"
	}
	if cfg.Interval == 0 {
		cfg.Interval = 500 * time.Millisecond
	}
	if cfg.Drain == 0 {
		cfg.Drain = 30 * time.Second
	}
	if cfg.Upload == 0 {
		cfg.Upload = 512 << 20
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.AppEnv == nil {
		cfg.AppEnv = map[string]string{"PATH": "/usr/local/bin:/usr/bin:/bin"}
	}
	s := &Service{cfg: cfg, st: cfg.Store, rt: cfg.Runtime, log: cfg.Logger, now: cfg.Now, kick: make(chan struct{}, 1), probes: newProbeClient()}
	s.rec.init()
	if cfg.Kube != nil {
		// What the cluster does (a pod ready, an endpoint withdrawn) reaches
		// the router at once, not at the next tick.
		cfg.Kube.OnChange(s.Kick)
	}
	return s, nil
}

var appName = regexp.MustCompile(`^[a-z][a-z0-9-]*$`) // and at most 30 bytes

// ValidateAppName says what is wrong with name, if anything.
func ValidateAppName(name string) error {
	if len(name) > 30 || !appName.MatchString(name) || strings.HasSuffix(name, "-") {
		return fmt.Errorf("%w: app name %q: use 1 to 30 lowercase letters, digits and dashes, starting with a letter", ErrInvalid, name)
	}
	return nil
}

func (s *Service) lock(app string) func() {
	m, _ := s.locks.LoadOrStore(app, new(sync.Mutex))
	m.(*sync.Mutex).Lock()
	return m.(*sync.Mutex).Unlock
}

// Kick asks the reconciler for a pass now.
func (s *Service) Kick() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// CreateApp creates an empty app owned by owner, whose instances run only
// on nodes with the labels of placement (nil: anywhere).
func (s *Service) CreateApp(ctx context.Context, name, owner string, placement map[string]string) (store.App, error) {
	if err := ValidateAppName(name); err != nil {
		return store.App{}, err
	}
	if err := s.validatePlacement(placement); err != nil {
		return store.App{}, err
	}
	a, err := s.st.CreateApp(ctx, store.App{Name: name, Owner: owner, CreatedAt: s.now().UTC(), Formation: map[string]int{}, Placement: placement})
	if err != nil {
		return store.App{}, err
	}
	if _, err := s.appUID(a); err != nil {
		// An app that could never run is not made.
		s.st.DeleteApp(context.WithoutCancel(ctx), name)
		return store.App{}, err
	}
	s.event(ctx, name, "", "", "app created by "+owner)
	return a, nil
}

// DestroyApp removes an app and ends its builds; the reconciler stops its
// instances, and once the last is gone, whatever else of the app runs.
func (s *Service) DestroyApp(ctx context.Context, name string) error {
	defer s.lock(name)()
	a, err := s.st.GetApp(ctx, name)
	if err != nil {
		return err
	}
	if err := s.st.DeleteApp(ctx, name); errors.Is(err, store.ErrConflict) {
		return fmt.Errorf("%w: app %s has volumes, whose data would go with it: delete them first (`paddock volumes list --app %s`, then `paddock volumes delete NAME --force`)", ErrInvalid, name, name)
	} else if err != nil {
		return err
	}
	if s.cfg.Tracker != nil {
		if err := s.cfg.Tracker.KillGroups(a.ID, isolate.Builds); err != nil {
			s.log.Warn("end the builds of a destroyed app", "app", name, "err", err)
		}
	}
	if s.cfg.Kube != nil {
		if err := s.cfg.Kube.Destroy(ctx, name); err != nil {
			s.log.Warn("remove a destroyed app from kubernetes (the reconciler tries again)", "app", name, "err", err)
		}
		uid, _ := s.appUID(a)
		s.endApp(name, a.ID, uid) // its builds, build home and logs on this machine
	} else if insts, err := s.rt.List(ctx); err == nil && !slices.ContainsFunc(insts, func(in runtime.Instance) bool { return in.App == name }) {
		uid, _ := s.appUID(a)
		s.endApp(name, a.ID, uid)
	}
	s.Kick()
	s.pruneArtifacts(ctx)
	return nil
}

// pruneArtifacts removes the build artifacts no release refers to any more.
func (s *Service) pruneArtifacts(ctx context.Context) {
	apps, err := s.st.ListApps(ctx)
	if err != nil {
		return
	}
	keep := map[string]bool{}
	for _, a := range apps {
		rels, err := s.st.ListReleases(ctx, a.Name)
		if err != nil {
			return // keep everything rather than guess
		}
		for _, r := range rels {
			keep[r.Artifact] = true
		}
	}
	if n, err := s.cfg.Artifacts.Prune(keep, s.now().Add(-time.Hour)); err == nil && n > 0 {
		s.log.Info("removed unused build artifacts", "count", n)
	}
}

// AppInfo is an app with its current release and URL.
type AppInfo struct {
	store.App
	URL     string         `json:"url"`
	Current *store.Release `json:"current,omitempty"`
	Domains []store.Domain `json:"domains"`
	Process map[string]int `json:"processes"` // declared instance counts
	Nodes   []string       `json:"nodes,omitempty"`
}

// App returns what is declared for an app.
func (s *Service) App(ctx context.Context, name string) (AppInfo, error) {
	a, err := s.st.GetApp(ctx, name)
	if err != nil {
		return AppInfo{}, err
	}
	info := AppInfo{App: a, URL: "http://" + name + "." + s.cfg.Domain, Process: map[string]int{}}
	if p := s.cfg.URLPort; p != "" && p != "80" {
		info.URL += ":" + p
	}
	if a.Release != 0 {
		rel, err := s.st.GetRelease(ctx, name, a.Release)
		if err != nil {
			return info, err
		}
		info.Current = &rel
		m, err := s.manifestOf(a.ID, rel)
		if err != nil {
			return info, err
		}
		for p, spec := range m.Processes {
			info.Process[p] = wantCount(a, p, spec)
		}
	}
	if info.Domains, err = s.st.ListDomains(ctx, name); err != nil {
		return info, err
	}
	if s.cfg.Kube != nil {
		info.Nodes = s.cfg.Kube.Nodes(name)
	}
	return info, nil
}

// Volumes is what deploy needs of the volume layer.
type Volumes interface {
	// Mounts publishes the volumes attached to process of app for
	// instance and returns what the runtime binds.
	Mounts(ctx context.Context, app, process, instance string) ([]runtime.Mount, error)
	// Unpublish takes back the volumes published for instance.
	Unpublish(ctx context.Context, instance string) error
	// List returns app's volumes.
	List(ctx context.Context, app string) ([]store.Volume, error)
	// Restoring reports whether a volume is being restored.
	Restoring(volume string) bool
	// Slots returns the per-instance volumes of process of app for each
	// of its first n instances, made as needed.
	Slots(ctx context.Context, app, process string, n int) ([][]store.Volume, error)
}

// hasVolumes reports whether a volume is attached to process of app.
func (s *Service) hasVolumes(ctx context.Context, app, process string) bool {
	if s.cfg.Volumes == nil {
		return false
	}
	vols, _ := s.cfg.Volumes.List(ctx, app)
	for _, v := range vols {
		if v.Process == process {
			return true
		}
	}
	return false
}

// sharedVolume reports whether a volume that all instances of process of
// app would share is attached to it.
func (s *Service) sharedVolume(ctx context.Context, app, process string) bool {
	if s.cfg.Volumes == nil {
		return false
	}
	vols, _ := s.cfg.Volumes.List(ctx, app)
	for _, v := range vols {
		if v.Process == process && !v.PerInstance {
			return true
		}
	}
	return false
}

// stopInstance stops an instance and takes back its volumes.
func (s *Service) stopInstance(ctx context.Context, id string) error {
	if err := s.rt.Stop(ctx, id); err != nil {
		return err
	}
	if s.cfg.Volumes != nil {
		if err := s.cfg.Volumes.Unpublish(ctx, id); err != nil {
			return fmt.Errorf("unpublish the volumes of %s: %w", id, err)
		}
	}
	return nil
}

// appUID is the user app's builds and instances run as; 0 for the server's.
func (s *Service) appUID(a store.App) (uint32, error) {
	if s.cfg.Users == nil {
		return 0, nil
	}
	return s.cfg.Users.App(a.ID)
}

// Restart replaces an instance of app, named by its ID or by the ID
// without the app's name ("web.2l38dh"): it leaves the router and stops,
// and the reconciler starts another in its place.
func (s *Service) Restart(ctx context.Context, app, id, actor string) error {
	a, err := s.st.GetApp(ctx, app)
	if err != nil {
		return err
	}
	insts, err := s.rt.List(ctx)
	if err != nil {
		return err
	}
	for _, in := range insts {
		if in.App == app && in.AppID == a.ID && (in.ID == id || in.ID == app+"."+id) {
			if s.cfg.Kube != nil {
				// Its ReplicaSet makes another pod in its place.
				s.event(ctx, app, in.Process, in.ID, fmt.Sprintf("instance %s restarted by %s", short(in.ID), actor))
				return s.rt.Stop(ctx, in.ID)
			}
			s.retire(ctx, in, "restarted by "+actor)
			s.Kick()
			return nil
		}
	}
	return fmt.Errorf("instance %q of app %s: %w (see `paddock ps %s`)", id, app, store.ErrNotFound, app)
}

// Processes returns the instance counts app a wants by process type: its
// current release's, with its formation's over them. The release's
// manifest is read once.
func (s *Service) Processes(ctx context.Context, a store.App) (map[string]int, error) {
	out := map[string]int{}
	if a.Release == 0 {
		return out, nil
	}
	m := s.cachedManifest(a.ID, a.Release)
	if m == nil {
		rel, err := s.st.GetRelease(ctx, a.Name, a.Release)
		if err != nil {
			return nil, err
		}
		if m, err = s.manifestOf(a.ID, rel); err != nil {
			return nil, err
		}
	}
	for p, spec := range m.Processes {
		out[p] = wantCount(a, p, spec)
	}
	return out, nil
}

func wantCount(a store.App, process string, p manifest.Process) int {
	if n, ok := a.Formation[process]; ok {
		return n
	}
	return p.Instances
}

func releaseManifest(rel store.Release) (*manifest.Manifest, error) {
	m := &manifest.Manifest{}
	if len(rel.Manifest) == 0 {
		return m, nil
	}
	if err := json.Unmarshal(rel.Manifest, m); err != nil {
		return nil, fmt.Errorf("release %s v%d: manifest: %w", rel.App, rel.Version, err)
	}
	return m, nil
}

var configKey = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// reservedKeys are set by the platform for every instance.
var reservedKeys = map[string]bool{"PORT": true, "PADDOCK_APP": true, "PADDOCK_PROCESS": true, "PADDOCK_RELEASE": true, "PADDOCK_INSTANCE": true}

// SetConfig sets (non-nil) and unsets (nil) config vars in a new release.
func (s *Service) SetConfig(ctx context.Context, app string, vars map[string]*string, actor string) (store.Release, error) {
	if len(vars) == 0 {
		return store.Release{}, fmt.Errorf("%w: no config vars given: use KEY=VALUE to set and KEY to unset", ErrInvalid)
	}
	var keys []string
	for k := range vars {
		if !configKey.MatchString(k) {
			return store.Release{}, fmt.Errorf("%w: config key %q: use letters, digits and underscores, not starting with a digit", ErrInvalid, k)
		}
		if reservedKeys[k] {
			return store.Release{}, fmt.Errorf("%w: config key %q is set by the platform", ErrInvalid, k)
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	defer s.lock(app)()
	pins, err := s.nextSecrets(ctx, app)
	if err != nil {
		return store.Release{}, err
	}
	last, err := s.lastConfig(ctx, app)
	if err != nil {
		return store.Release{}, err
	}
	rel, err := s.st.AddRelease(ctx, app, func(a store.App, cur *store.Release) (store.Release, error) {
		next := store.Release{Config: maps.Clone(last), Secrets: pins, CreatedBy: actor, CreatedAt: s.now().UTC()}
		if cur != nil {
			next.Config = map[string]string{}
			next.Build, next.Artifact, next.Manifest = cur.Build, cur.Artifact, cur.Manifest
			for k, v := range cur.Config {
				next.Config[k] = v
			}
		}
		var set, unset []string
		for _, k := range keys {
			if v := vars[k]; v != nil {
				next.Config[k] = *v
				set = append(set, k)
			} else {
				delete(next.Config, k)
				unset = append(unset, k)
			}
		}
		var d []string
		if len(set) > 0 {
			d = append(d, "set "+strings.Join(set, ", "))
		}
		if len(unset) > 0 {
			d = append(d, "unset "+strings.Join(unset, ", "))
		}
		next.Description = "Config: " + strings.Join(d, "; ")
		if next.Build == "" {
			next.Status = store.StatusDeployed // nothing to roll out
		}
		return next, nil
	})
	if err != nil {
		return rel, err
	}
	s.event(ctx, app, "", "", fmt.Sprintf("release v%d created by %s: %s", rel.Version, actor, rel.Description))
	s.Kick()
	return rel, nil
}

// Rollback creates a new release with the build and config of version.
func (s *Service) Rollback(ctx context.Context, app string, version int, actor string) (store.Release, error) {
	defer s.lock(app)()
	old, err := s.st.GetRelease(ctx, app, version)
	if err != nil {
		return store.Release{}, err
	}
	if old.Build == "" {
		return store.Release{}, fmt.Errorf("%w: v%d has no build to roll back to", ErrInvalid, version)
	}
	rel, err := s.st.AddRelease(ctx, app, func(a store.App, cur *store.Release) (store.Release, error) {
		return store.Release{
			Build: old.Build, Artifact: old.Artifact, Image: old.Image, Manifest: old.Manifest, Config: old.Config, Secrets: old.Secrets,
			Description: fmt.Sprintf("Rollback to v%d", version), CreatedBy: actor, CreatedAt: s.now().UTC(),
		}, nil
	})
	if err != nil {
		return rel, err
	}
	s.event(ctx, app, "", "", fmt.Sprintf("release v%d created by %s: rollback to v%d", rel.Version, actor, version))
	s.Kick()
	return rel, nil
}

// Scale sets instance counts of process types of the current release.
func (s *Service) Scale(ctx context.Context, app string, counts map[string]int, actor string) (store.App, error) {
	defer s.lock(app)()
	a, err := s.st.GetApp(ctx, app)
	if err != nil {
		return a, err
	}
	if a.Release == 0 {
		return a, fmt.Errorf("%w: app %s has no release yet: deploy it first", ErrInvalid, app)
	}
	rel, err := s.st.GetRelease(ctx, app, a.Release)
	if err != nil {
		return a, err
	}
	m, err := releaseManifest(rel)
	if err != nil {
		return a, err
	}
	var desc []string
	for p, n := range counts {
		spec, ok := m.Processes[p]
		if !ok {
			return a, fmt.Errorf("%w: app %s has no process type %q (it has: %s)", ErrInvalid, app, p, strings.Join(processNames(m), ", "))
		}
		if n < 0 || n > 100 {
			return a, fmt.Errorf("%w: %s=%d: the count must be between 0 and 100", ErrInvalid, p, n)
		}
		if spec.Port != 0 && n > 1 {
			return a, fmt.Errorf("%w: %s listens on the fixed port %d, so only one instance can run on this machine; remove port from paddock.toml to let Paddock assign $PORT", ErrInvalid, p, spec.Port)
		}
		if n > 1 && s.sharedVolume(ctx, app, p) {
			return a, fmt.Errorf("%w: %s has a volume attached, which one instance writes at a time: it runs at most 1 instance (attach it --per-instance to give each instance a volume of its own)", ErrInvalid, p)
		}
		desc = append(desc, fmt.Sprintf("%s=%d", p, n))
	}
	if a, err = s.st.SetFormation(ctx, app, counts); err != nil {
		return a, err
	}
	sort.Strings(desc)
	s.event(ctx, app, "", "", fmt.Sprintf("scaled by %s: %s", actor, strings.Join(desc, " ")))
	s.Kick()
	return a, nil
}

func processNames(m *manifest.Manifest) []string {
	var names []string
	for p := range m.Processes {
		names = append(names, p)
	}
	sort.Strings(names)
	return names
}

// hostLabel is one label of a host name, of at most 63 bytes.
var hostLabel = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)

// validHostName reports whether host is a lowercase DNS name.
func validHostName(host string) bool {
	if len(host) > 253 {
		return false
	}
	for _, l := range strings.Split(host, ".") {
		if len(l) > 63 || !hostLabel.MatchString(l) {
			return false
		}
	}
	return true
}

// AddDomain routes host to app.
func (s *Service) AddDomain(ctx context.Context, app, host string) (store.Domain, error) {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if !validHostName(host) {
		return store.Domain{}, fmt.Errorf("%w: %q is not a host name (example: shop.example.com)", ErrInvalid, host)
	}
	if host == s.cfg.Domain || strings.HasSuffix(host, "."+s.cfg.Domain) {
		return store.Domain{}, fmt.Errorf("%w: %s is the platform domain %s or under it, whose names belong to apps", ErrInvalid, host, s.cfg.Domain)
	}
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return store.Domain{}, fmt.Errorf("%w: %s names this machine; add a domain of your own (example: shop.example.com)", ErrInvalid, host)
	}
	// No public suffix is a number: such a name is an address (127.1,
	// 10.0.0.1, 0x7f000001) to a browser, not a domain.
	last := host[strings.LastIndexByte(host, '.')+1:]
	if hex, ok := strings.CutPrefix(last, "0x"); strings.Trim(last, "0123456789") == "" || ok && strings.Trim(hex, "0123456789abcdef") == "" {
		return store.Domain{}, fmt.Errorf("%w: %s is an IP address, not a domain: add a host name (example: shop.example.com)", ErrInvalid, host)
	}
	for _, h := range s.cfg.ReservedHosts {
		if strings.EqualFold(strings.TrimSuffix(h, "."), host) {
			return store.Domain{}, fmt.Errorf("%w: %s is a name of the platform's API", ErrInvalid, host)
		}
	}
	d := store.Domain{Host: host, App: app, CreatedAt: s.now().UTC()}
	if _, err := s.st.GetApp(ctx, app); err != nil {
		return d, err
	}
	if err := s.st.AddDomain(ctx, d); err != nil {
		return d, err
	}
	s.Kick()
	return d, nil
}

// RemoveDomain stops routing host to app.
func (s *Service) RemoveDomain(ctx context.Context, app, host string) error {
	if err := s.st.RemoveDomain(ctx, app, strings.ToLower(host)); err != nil {
		return err
	}
	s.Kick()
	return nil
}

// AllInstances returns every instance as the runtime reports it, with its
// health and without its environment.
func (s *Service) AllInstances(ctx context.Context) ([]Instance, error) {
	insts, err := s.rt.List(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Instance, 0, len(insts))
	for _, in := range insts {
		in.Env = nil
		out = append(out, s.describe(in))
	}
	return out, nil
}

// Instances returns the instances of app as the runtime reports them, with
// their health.
func (s *Service) Instances(ctx context.Context, app string) ([]Instance, error) {
	if _, err := s.st.GetApp(ctx, app); err != nil {
		return nil, err
	}
	list := s.rt.List
	if al, ok := s.rt.(appLister); ok {
		list = func(ctx context.Context) ([]runtime.Instance, error) { return al.ListApp(ctx, app) }
	}
	insts, err := list(ctx)
	if err != nil {
		return nil, err
	}
	var out []Instance
	for _, in := range insts {
		if in.App != app {
			continue
		}
		// The environment holds the config; it is shown by the config
		// route, to those allowed to see it, not with every instance.
		in.Env = nil
		out = append(out, s.describe(in))
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Process != out[j].Process {
			return out[i].Process < out[j].Process
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// appLister is a runtime that lists one app's instances for less than all
// of them (the process runtime reads only that app's folders).
type appLister interface {
	ListApp(ctx context.Context, app string) ([]runtime.Instance, error)
}

// Instance is a runtime instance with what the reconciler knows of it.
type Instance struct {
	runtime.Instance
	Healthy  bool   `json:"healthy"`
	Health   string `json:"health,omitempty"` // last health check failure
	Retiring bool   `json:"retiring,omitempty"`
}

func (s *Service) event(ctx context.Context, app, process, instance, msg string) {
	e := store.Event{App: app, Time: s.now().UTC(), Process: process, Instance: instance, Message: msg}
	if err := s.st.AddEvent(context.WithoutCancel(ctx), e); err != nil && !errors.Is(err, store.ErrNotFound) {
		s.log.Warn("record event", "app", app, "err", err)
	}
	s.log.Info(msg, "app", app, "instance", instance)
}

func randomID(n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// ListApps returns every app.
func (s *Service) ListApps(ctx context.Context) ([]store.App, error) {
	apps, err := s.st.ListApps(ctx)
	if apps == nil {
		apps = []store.App{}
	}
	return apps, err
}

// Releases returns app's releases, newest first.
func (s *Service) Releases(ctx context.Context, app string) ([]store.Release, error) {
	rels, err := s.st.ListReleases(ctx, app)
	if rels == nil {
		rels = []store.Release{}
	}
	return rels, err
}

// Release returns one release of app.
func (s *Service) Release(ctx context.Context, app string, version int) (store.Release, error) {
	return s.st.GetRelease(ctx, app, version)
}
