package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"paddock.dev/paddock/internal/isolate"
	"paddock.dev/paddock/internal/logs"
	"paddock.dev/paddock/internal/manifest"
	"paddock.dev/paddock/internal/router"
	"paddock.dev/paddock/internal/runtime"
	"paddock.dev/paddock/internal/store"
)

// The reconciler's loop, one pass at a time:
//
//	list apps, domains, instances ─► per app: start missing instances of the
//	current release, retire surplus ones, retire older releases' instances once
//	the current ones are all healthy, settle the release's status ─► push the
//	router table (healthy, non-retiring web instances) ─► stop retired
//	instances once the router no longer sends them requests.
//
// Health checks run beside it, each instance at its own interval. What the
// reconciler keeps in memory (health, retiring) is rebuilt from the runtime
// after a restart; nothing in it is declared state.
type reconcilerState struct {
	mu       sync.Mutex
	health   map[string]*health
	retiring map[string]bool
	restarts map[string]int
	stops    []runtime.Instance // retired, waiting for the table that drops them
	wg       sync.WaitGroup

	manifests map[string]*manifest.Manifest // "app/version" -> manifest; releases are immutable
	handover  map[string]time.Time          // "app/process" -> when an old instance was told to give its volume up
	table     []byte                        // last table pushed
	kube      kubeState
	version   uint64
	pushedAt  time.Time
	warmUntil time.Time
}

type health struct {
	firstSeen time.Time
	started   time.Time // StartedAt of the process this refers to
	probed    bool
	probing   bool
	ok        bool
	everOK    bool
	fails     int
	lastProbe time.Time
	err       string
	gen       int // counts the processes seen: a check counts for the one it began with
}

func (r *reconcilerState) init() {
	r.health = map[string]*health{}
	r.retiring = map[string]bool{}
	r.restarts = map[string]int{}
	r.manifests = map[string]*manifest.Manifest{}
	r.handover = map[string]time.Time{}
	r.kube = kubeState{images: map[string]string{}, applied: map[string]string{}, appliedAt: map[string]time.Time{}, waiting: map[string]string{}, reported: map[string]string{}}
}

func (r *reconcilerState) describe(in runtime.Instance) Instance {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := Instance{Instance: in, Retiring: r.retiring[in.ID]}
	if h := r.health[in.ID]; h != nil && h.started.Equal(in.StartedAt) {
		out.Healthy, out.Health = h.ok, h.err
		if h.ok {
			out.Health = ""
		}
	}
	return out
}

// Run reconciles until ctx is done, then waits for the instance stops it
// began.
func (s *Service) Run(ctx context.Context) error {
	s.rec.mu.Lock()
	// Until every running instance has had a health check, the table would
	// list fewer instances than the router already has: hold it back.
	s.rec.warmUntil = s.now().Add(5 * time.Second)
	s.rec.mu.Unlock()
	if s.cfg.Kube != nil {
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.cfg.Kube.ShipLogs(ctx, s.redactPod)
		}()
		defer func() { <-done }()
	}
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		start := time.Now()
		pass := s.reconcile
		if s.cfg.Kube != nil {
			pass = s.reconcileKube
		}
		if err := pass(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("reconcile", "err", err)
		}
		s.cfg.Metrics.ReconcilePass(time.Since(start))
		select {
		case <-ctx.Done():
			s.rec.wg.Wait()
			return nil
		case <-t.C:
		case <-s.kick:
			if s.cfg.Kube != nil {
				// A cluster reports changes in bursts (a rollout moves
				// many objects): one pass for a burst.
				time.Sleep(20 * time.Millisecond)
				select {
				case <-s.kick:
				default:
				}
			}
		}
	}
}

func (s *Service) reconcile(ctx context.Context) error {
	apps, err := s.st.ListApps(ctx)
	if err != nil {
		return fmt.Errorf("list apps: %w", err)
	}
	domains, err := s.st.ListDomains(ctx, "")
	if err != nil {
		return fmt.Errorf("list domains: %w", err)
	}
	insts, err := s.rt.List(ctx)
	if err != nil {
		return fmt.Errorf("list instances: %w", err)
	}
	byApp := map[string][]runtime.Instance{}
	for _, in := range insts {
		byApp[in.App] = append(byApp[in.App], in)
	}
	known := map[string]store.App{}
	for _, a := range apps {
		known[a.Name] = a
	}
	for name, list := range byApp {
		if _, ok := known[name]; !ok {
			for _, in := range s.live(ctx, list) {
				s.retire(ctx, in, "app destroyed")
			}
		}
	}
	s.probe(ctx, insts)
	s.evictSquatted(ctx, insts)
	for _, a := range apps {
		if err := s.reconcileApp(ctx, a, byApp[a.Name]); err != nil {
			s.log.Warn("reconcile app", "app", a.Name, "err", err)
		}
	}
	// The pass above may have started and retired instances: route from
	// what the runtime reports now.
	if insts, err = s.rt.List(ctx); err != nil {
		return fmt.Errorf("list instances: %w", err)
	}
	return s.route(ctx, apps, domains, insts)
}

// evictSquatted replaces the web instances whose port another user's
// process listens on: apps share the machine's loopback, and one that binds
// another's port while it restarts would get its traffic and keep it from
// ever serving again. The router sends nothing to a listener of the wrong
// user; this moves the victim to a port of its own.
func (s *Service) evictSquatted(ctx context.Context, insts []runtime.Instance) {
	var owners map[int][]isolate.Listener
	for _, in := range insts {
		if in.Process != "web" || in.Port == 0 || in.State == runtime.StateStopped || in.State == runtime.StateLost {
			continue
		}
		if owners == nil {
			var err error
			if owners, err = isolate.ListenerOwners(); err != nil {
				s.log.Warn("list listening sockets", "err", err)
				return
			}
		}
		if err := ownedBy(owners, in); err != nil {
			s.move(ctx, in, err.Error())
		}
	}
}

// move retires an instance whose port another user's process took, so
// that a replacement starts on another port; one with a fixed port cannot
// move.
func (s *Service) move(ctx context.Context, in runtime.Instance, why string) {
	if m, err := s.processManifest(ctx, in.App, in.AppID, in.Release); err != nil || m.Processes[in.Process].Port != 0 {
		return
	}
	s.retire(ctx, in, why+"; a replacement starts on another port")
}

// evictImpostors replaces the web instances the router found another
// user's listener on (addr -> that user).
func (s *Service) evictImpostors(ctx context.Context, impostors map[string]uint32, insts []runtime.Instance) {
	for _, in := range insts {
		if uid, ok := impostors["127.0.0.1:"+strconv.Itoa(in.Port)]; ok && in.Process == "web" && in.State != runtime.StateStopped {
			s.move(ctx, in, fmt.Sprintf("the router found port %d held by a process of another user (uid %d)", in.Port, uid))
		}
	}
}

// live drops instances that are retiring, and cleans up those whose
// supervisor is gone.
func (s *Service) live(ctx context.Context, insts []runtime.Instance) []runtime.Instance {
	var out []runtime.Instance
	for _, in := range insts {
		s.rec.mu.Lock()
		retiring := s.rec.retiring[in.ID]
		s.rec.mu.Unlock()
		switch {
		case retiring:
		case in.State == runtime.StateLost || in.State == runtime.StateStopped:
			if in.State == runtime.StateLost {
				s.event(ctx, in.App, in.Process, in.ID, fmt.Sprintf("instance %s lost (its supervisor is gone); replacing it", short(in.ID)))
			}
			if err := s.stopInstance(ctx, in.ID); err != nil {
				s.log.Warn("clean up instance", "instance", in.ID, "err", err)
			}
			s.forget(in.ID)
		default:
			out = append(out, in)
		}
	}
	return out
}

func (s *Service) forget(id string) {
	s.rec.mu.Lock()
	delete(s.rec.health, id)
	delete(s.rec.retiring, id)
	delete(s.rec.restarts, id)
	s.rec.mu.Unlock()
}

// manifest returns version of the app called app, whose ID is appID: an
// instance of a destroyed app of the same name finds nothing, not the
// manifest of the new app's release of that number.
func (s *Service) manifest(ctx context.Context, app string, appID int64, version int) (*manifest.Manifest, store.Release, error) {
	rel, err := s.st.GetRelease(ctx, app, version)
	if err != nil {
		return nil, rel, err
	}
	if a, err := s.st.GetApp(ctx, app); err != nil || a.ID != appID {
		return nil, rel, fmt.Errorf("app %s (%d): %w", app, appID, store.ErrNotFound)
	}
	m, err := s.manifestOf(appID, rel)
	return m, rel, err
}

// manifestOf returns the manifest of release rel of the app whose ID is
// appID, parsed once: releases never change, and IDs are never reused.
func (s *Service) manifestOf(appID int64, rel store.Release) (*manifest.Manifest, error) {
	if m := s.cachedManifest(appID, rel.Version); m != nil {
		return m, nil
	}
	m, err := releaseManifest(rel)
	if err != nil {
		return nil, err
	}
	s.rec.mu.Lock()
	s.rec.manifests[manifestKey(appID, rel.Version)] = m
	s.rec.mu.Unlock()
	return m, nil
}

// cachedManifest returns the manifest of an app's release if it was read
// before, else nil.
func (s *Service) cachedManifest(appID int64, version int) *manifest.Manifest {
	s.rec.mu.Lock()
	defer s.rec.mu.Unlock()
	return s.rec.manifests[manifestKey(appID, version)]
}

func manifestKey(appID int64, version int) string {
	return strconv.FormatInt(appID, 10) + "/" + strconv.Itoa(version)
}

// processManifest is manifest without the release, which it reads only
// the first time: a manifest is kept by the app's ID, never reused, and its
// release's number, so that what it finds is that instance's, without a
// query on every pass over every instance.
func (s *Service) processManifest(ctx context.Context, app string, appID int64, version int) (*manifest.Manifest, error) {
	if m := s.cachedManifest(appID, version); m != nil {
		return m, nil
	}
	m, _, err := s.manifest(ctx, app, appID, version)
	return m, err
}

func (s *Service) reconcileApp(ctx context.Context, a store.App, insts []runtime.Instance) error {
	live := s.live(ctx, insts)
	s.crashEvents(ctx, live)
	if a.Release == 0 {
		for _, in := range live {
			s.retire(ctx, in, "no release")
		}
		return nil
	}
	m, rel, err := s.manifest(ctx, a.Name, a.ID, a.Release)
	if err != nil {
		return err
	}
	settled := true
	var failure string
	for p, spec := range m.Processes {
		want := wantCount(a, p, spec)
		var cur, old []runtime.Instance
		for _, in := range live {
			switch {
			case in.Process != p:
			case in.Release == rel.Version:
				cur = append(cur, in)
			default:
				old = append(old, in)
			}
		}
		// A fixed port cannot be shared, nor a volume one instance writes:
		// the old instance goes first.
		exclusive := spec.Port != 0 || s.hasVolumes(ctx, a.Name, p)
		if exclusive && len(old) > 0 {
			why := fmt.Sprintf("fixed port %d", spec.Port)
			if spec.Port == 0 {
				why = "its volume moves to the new instance"
				s.rec.mu.Lock()
				if _, ok := s.rec.handover[a.Name+"/"+p]; !ok {
					s.rec.handover[a.Name+"/"+p] = s.now()
				}
				s.rec.mu.Unlock()
			}
			for _, in := range old {
				s.retire(ctx, in, fmt.Sprintf("replaced by v%d (%s)", rel.Version, why))
			}
			settled = false
			continue
		}
		if exclusive && s.anyRetiring(a.Name, p) {
			settled = false
			continue
		}
		for i := len(cur); i < want; i++ {
			in, err := s.start(ctx, a, rel, p, spec)
			if err != nil {
				s.event(ctx, a.Name, p, "", fmt.Sprintf("could not start a %s instance: %v", p, err))
				failure = fmt.Sprintf("could not start a %s instance: %v", p, err)
				break
			}
			s.admit(ctx, in, spec)
			cur = append(cur, in)
		}
		if len(cur) > want {
			s.sortForRetirement(cur)
			for _, in := range cur[want:] {
				s.retire(ctx, in, "scaled down")
			}
			cur = cur[:want]
		}
		healthy := 0
		for _, in := range cur {
			if n := s.failedInARow(in); spec.Health.RestartAfter > 0 && n >= spec.Health.RestartAfter {
				// Liveness: it was healthy and is no more; a new one
				// takes its place at the next pass.
				s.retire(ctx, in, fmt.Sprintf("failed %d health checks in a row: replacing it", n))
				settled = false
				continue
			}
			ok, why := s.healthy(in, spec)
			if ok {
				healthy++
			} else if failure == "" && rel.Status == store.StatusPending && why != "" {
				failure = fmt.Sprintf("instance %s %s", short(in.ID), why)
			}
		}
		if healthy < want {
			settled = false
			continue
		}
		for _, in := range old {
			s.retire(ctx, in, fmt.Sprintf("replaced by v%d", rel.Version))
		}
		if len(old) > 0 {
			settled = false
		}
	}
	for _, in := range live {
		if _, ok := m.Processes[in.Process]; !ok {
			s.retire(ctx, in, fmt.Sprintf("v%d has no %s process type", rel.Version, in.Process))
			settled = false
		}
	}
	if rel.Status != store.StatusPending {
		return nil
	}
	if settled && !s.anyRetiring(a.Name, "") {
		s.event(ctx, a.Name, "", "", fmt.Sprintf("v%d rolled out", rel.Version))
		return s.st.SetReleaseStatus(ctx, a.Name, rel.Version, store.StatusDeployed, "")
	}
	if failure != "" {
		return s.fail(ctx, a, rel, failure)
	}
	return nil
}

// healthy says whether in is healthy, and if it is not, whether it has
// failed for good: crash-looping, or unhealthy past its grace period.
// failedInARow returns the checks an instance that was healthy has
// failed since it last passed one; 0 for one never healthy.
func (s *Service) failedInARow(in runtime.Instance) int {
	s.rec.mu.Lock()
	defer s.rec.mu.Unlock()
	if h := s.rec.health[in.ID]; h != nil && h.everOK && h.started.Equal(in.StartedAt) {
		return h.fails
	}
	return 0
}

func (s *Service) healthy(in runtime.Instance, spec manifest.Process) (bool, string) {
	s.rec.mu.Lock()
	defer s.rec.mu.Unlock()
	h := s.rec.health[in.ID]
	if h != nil && h.ok && h.started.Equal(in.StartedAt) && in.State == runtime.StateRunning {
		return true, ""
	}
	if in.State == runtime.StateCrashLoop {
		return false, "is crash-looping (" + in.LastExit + ")"
	}
	if h != nil && s.now().Sub(h.firstSeen) > spec.Health.Grace {
		why := fmt.Sprintf("did not become healthy within %s", spec.Health.Grace)
		if h.err != "" {
			why += " (" + h.err + ")"
		} else if in.LastExit != "" {
			why += " (" + in.LastExit + ")"
		}
		return false, why
	}
	return false, ""
}

// fail marks rel failed and points the app back at the release that ran
// before it.
func (s *Service) fail(ctx context.Context, a store.App, rel store.Release, why string) error {
	defer s.lock(a.Name)()
	reason := why
	if tail := s.lastLines(ctx, a, rel.Version, 10); tail != "" {
		reason += "\nlast output:\n" + tail
	}
	rels, err := s.st.ListReleases(ctx, a.Name)
	if err != nil {
		return err
	}
	prev := 0
	for _, r := range rels {
		if r.Version != rel.Version && r.Status == store.StatusDeployed && r.Build != "" {
			prev = r.Version
			break
		}
	}
	// The app goes back before the release is marked failed: whoever
	// waits for the failure finds it back already, and a crash in between
	// leaves it on the release that worked. Only if nothing newer was
	// released meanwhile: that one rolls out instead.
	err = s.st.SetRelease(ctx, a.Name, rel.Version, prev)
	superseded := errors.Is(err, store.ErrConflict)
	if err != nil && !superseded {
		return err
	}
	// The event comes before the status, so that whoever waits for the
	// status has the event to show with it (see WaitRollout).
	back := "no release runs"
	if superseded {
		back = "superseded meanwhile"
	} else if prev != 0 {
		back = fmt.Sprintf("back to v%d", prev)
	}
	s.event(ctx, a.Name, "", "", fmt.Sprintf("v%d failed: %s; %s", rel.Version, why, back))
	return s.st.SetReleaseStatus(ctx, a.Name, rel.Version, store.StatusFailed, reason)
}

// lastLines returns the last n lines of output of the instances of version.
func (s *Service) lastLines(ctx context.Context, a store.App, version int, n int) string {
	insts, err := s.rt.List(ctx)
	if err != nil {
		return ""
	}
	var lines []logs.Line
	for _, in := range insts {
		if in.AppID != a.ID || in.Release != version {
			continue
		}
		logs.Read(s.logDir(a.Name, a.ID), logs.Query{Source: short(in.ID), Tail: n}, nil, func(l logs.Line) error {
			lines = append(lines, l)
			return nil
		})
	}
	sort.SliceStable(lines, func(i, j int) bool { return lines[i].Time.Before(lines[j].Time) })
	var out []string
	for _, l := range lines[max(0, len(lines)-n):] {
		out = append(out, l.Source+" "+l.String())
	}
	return strings.Join(out, "\n")
}

// anyRetiring reports whether an instance of app's process ("" for any)
// is being stopped: from when it is retired until it has stopped and given
// its volumes back, though the runtime may list it no more meanwhile.
func (s *Service) anyRetiring(app, process string) bool {
	// Instance IDs are APP.PROCESS.RANDOM (start), and names hold no dots.
	prefix := app + "."
	if process != "" {
		prefix += process + "."
	}
	s.rec.mu.Lock()
	defer s.rec.mu.Unlock()
	for id := range s.rec.retiring {
		if strings.HasPrefix(id, prefix) {
			return true
		}
	}
	return false
}

// sortForRetirement puts the instances to keep first: healthy before
// unhealthy, older before newer.
func (s *Service) sortForRetirement(list []runtime.Instance) {
	s.rec.mu.Lock()
	defer s.rec.mu.Unlock()
	ok := func(in runtime.Instance) bool { h := s.rec.health[in.ID]; return h != nil && h.ok }
	sort.SliceStable(list, func(i, j int) bool {
		if oi, oj := ok(list[i]), ok(list[j]); oi != oj {
			return oi
		}
		return list[i].StartedAt.Before(list[j].StartedAt)
	})
}

// crashEvents records an event for every restart the runtime reports.
func (s *Service) crashEvents(ctx context.Context, insts []runtime.Instance) {
	for _, in := range insts {
		s.rec.mu.Lock()
		seen, known := s.rec.restarts[in.ID]
		s.rec.restarts[in.ID] = in.Restarts
		s.rec.mu.Unlock()
		if known && in.Restarts > seen {
			msg := fmt.Sprintf("instance %s %s; restarted (%d restarts)", short(in.ID), in.LastExit, in.Restarts)
			if in.State == runtime.StateCrashLoop {
				msg = fmt.Sprintf("instance %s %s; crash loop: restarting with backoff (%d restarts)", short(in.ID), in.LastExit, in.Restarts)
			}
			s.event(ctx, in.App, in.Process, in.ID, msg)
		}
	}
}

func (s *Service) start(ctx context.Context, a store.App, rel store.Release, process string, spec manifest.Process) (runtime.Instance, error) {
	uid, err := s.appUID(a)
	if err != nil {
		return runtime.Instance{}, err
	}
	secrets, err := s.openSecrets(ctx, a, rel.Secrets)
	if err != nil {
		return runtime.Instance{}, err
	}
	port := spec.Port
	if port == 0 {
		if port, err = s.freePort(ctx); err != nil {
			return runtime.Instance{}, err
		}
	}
	id := fmt.Sprintf("%s.%s.%s", a.Name, process, randomID(6))
	env := make([]string, 0, len(s.cfg.AppEnv)+len(rel.Config)+5)
	for k, v := range s.cfg.AppEnv {
		env = append(env, k+"="+v)
	}
	for k, v := range rel.Config {
		env = append(env, k+"="+v)
	}
	env = append(env, "PADDOCK_APP="+a.Name, "PADDOCK_PROCESS="+process,
		"PADDOCK_RELEASE=v"+strconv.Itoa(rel.Version), "PADDOCK_INSTANCE="+id)
	s.rec.mu.Lock()
	s.rec.health[id] = &health{firstSeen: s.now()}
	s.rec.mu.Unlock()
	var mounts []runtime.Mount
	if s.cfg.Volumes != nil {
		if mounts, err = s.cfg.Volumes.Mounts(ctx, a.Name, process, id); err != nil {
			s.forget(id)
			return runtime.Instance{}, err
		}
	}
	rs := runtime.Spec{
		ID: id, App: a.Name, AppID: a.ID, Process: process, UID: uid, GID: uid, Release: rel.Version, Artifact: rel.Artifact,
		Command: spec.Command, Env: env, Port: port, Memory: spec.Memory, StopTimeout: spec.StopTimeout,
		Secrets: secrets, Mounts: mounts,
	}
	if h := spec.Health; h.Command != "" {
		rs.Check = &runtime.Check{Command: h.Command, Interval: h.Interval, Timeout: h.Timeout}
	}
	in, err := s.rt.Start(ctx, rs)
	if err != nil {
		if s.cfg.Volumes != nil {
			s.cfg.Volumes.Unpublish(context.WithoutCancel(ctx), id)
		}
		s.forget(id)
		return in, err
	}
	s.event(ctx, a.Name, process, id, fmt.Sprintf("instance %s of v%d started on port %d", short(id), rel.Version, port))
	return in, nil
}

// freePort picks a port in the instance range that no instance has and
// nothing listens on.
func (s *Service) freePort(ctx context.Context) (int, error) {
	insts, err := s.rt.List(ctx)
	if err != nil {
		return 0, err
	}
	taken := map[int]bool{}
	for _, in := range insts {
		taken[in.Port] = true
	}
	start := isolate.PortLow + mrand.IntN(isolate.PortHigh-isolate.PortLow)
	for i := 0; i < isolate.PortHigh-isolate.PortLow; i++ {
		port := isolate.PortLow + (start-isolate.PortLow+i)%(isolate.PortHigh-isolate.PortLow)
		if taken[port] {
			continue
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue
		}
		l.Close()
		return port, nil
	}
	return 0, fmt.Errorf("no free port between %d and %d", isolate.PortLow, isolate.PortHigh)
}

// retire takes an instance out of the router table at the next push and
// stops it once no request is in flight to it.
func (s *Service) retire(ctx context.Context, in runtime.Instance, reason string) {
	s.rec.mu.Lock()
	if s.rec.retiring[in.ID] {
		s.rec.mu.Unlock()
		return
	}
	s.rec.retiring[in.ID] = true
	s.rec.stops = append(s.rec.stops, in)
	s.rec.mu.Unlock()
	s.event(ctx, in.App, in.Process, in.ID, fmt.Sprintf("stopping instance %s: %s", short(in.ID), reason))
}

// stopRetired stops the instances retired before the last successful push.
func (s *Service) stopRetired(ctx context.Context) {
	s.rec.mu.Lock()
	stops := s.rec.stops
	s.rec.stops = nil
	s.rec.mu.Unlock()
	for _, in := range stops {
		s.rec.wg.Add(1)
		go func() {
			defer s.rec.wg.Done()
			s.drain(ctx, in)
			if err := s.stopInstance(context.WithoutCancel(ctx), in.ID); err != nil {
				s.log.Warn("stop instance", "instance", in.ID, "err", err)
			}
			s.afterStop(ctx, in)
			s.forget(in.ID)
			s.Kick()
		}()
	}
}

// drain waits until the router has no request in flight to in.
func (s *Service) drain(ctx context.Context, in runtime.Instance) {
	backend := "127.0.0.1:" + strconv.Itoa(in.Port)
	deadline := s.now().Add(s.cfg.Drain)
	for s.now().Before(deadline) {
		st, err := s.cfg.Router.Status(ctx)
		if err != nil || st.Inflight[backend] == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
	// A request the router picked this backend for just before the new
	// table took over may not be counted yet.
	select {
	case <-ctx.Done():
	case <-time.After(100 * time.Millisecond):
	}
}

// route pushes the table of healthy web instances to the router when it
// changed, or when the router reports another version (it restarted).
func (s *Service) route(ctx context.Context, apps []store.App, domains []store.Domain, insts []runtime.Instance) error {
	backends := map[string][]router.Backend{}
	warming := false
	s.rec.mu.Lock()
	for _, in := range insts {
		h := s.rec.health[in.ID]
		if in.State == runtime.StateRunning && (h == nil || !h.probed) {
			warming = true
		}
		if in.Process != "web" || s.rec.retiring[in.ID] || in.State != runtime.StateRunning {
			continue
		}
		if h != nil && h.ok && h.started.Equal(in.StartedAt) {
			// The router sends traffic only to a listener this user owns.
			uid := in.UID
			if uid == 0 {
				uid = uint32(os.Geteuid()) // the instance runs as the runtime's (our) user
			}
			backends[in.App] = append(backends[in.App], router.Backend{Addr: "127.0.0.1:" + strconv.Itoa(in.Port), UID: uid})
		}
	}
	if warming && s.now().Before(s.rec.warmUntil) {
		s.rec.mu.Unlock()
		return nil
	}
	s.rec.mu.Unlock()
	if err := s.pushTable(ctx, apps, domains, backends, func(impostors map[string]uint32) {
		s.evictImpostors(ctx, impostors, insts)
	}); err != nil {
		return err
	}
	s.stopRetired(ctx)
	return nil
}

// pushTable pushes the table of apps' host names and backends to the router
// when it changed, or when the router reports another version (it
// restarted). impostors, if set, gets the listeners of other users the
// router found on backends' ports.
func (s *Service) pushTable(ctx context.Context, apps []store.App, domains []store.Domain, backends map[string][]router.Backend, impostors func(map[string]uint32)) error {
	var t router.Table
	hosts := map[string][]string{}
	for _, a := range apps {
		hosts[a.Name] = append(hosts[a.Name], a.Name+"."+s.cfg.Domain)
	}
	for _, d := range domains {
		hosts[d.App] = append(hosts[d.App], d.Host)
	}
	for _, a := range apps {
		b := backends[a.Name]
		sort.Slice(b, func(i, j int) bool { return b[i].Addr < b[j].Addr })
		for _, h := range hosts[a.Name] {
			t.Routes = append(t.Routes, router.Route{Host: h, App: a.Name, Backends: b})
		}
	}
	sort.Slice(t.Routes, func(i, j int) bool { return t.Routes[i].Host < t.Routes[j].Host })
	body, err := json.Marshal(t.Routes)
	if err != nil {
		return err
	}
	s.rec.mu.Lock()
	changed := !bytes.Equal(body, s.rec.table)
	stale := s.now().Sub(s.rec.pushedAt) > 2*time.Second
	version := s.rec.version
	s.rec.mu.Unlock()
	if !changed && stale {
		st, err := s.cfg.Router.Status(ctx)
		changed = err != nil || st.Version != version
		if err == nil && st.Version > version {
			version = st.Version
		}
		s.rec.mu.Lock()
		s.rec.pushedAt = s.now()
		s.rec.mu.Unlock()
		if impostors != nil && err == nil {
			impostors(st.Impostors)
		}
	}
	if changed {
		// Versions only grow, across server restarts too: the router
		// ignores a table older than the one it has.
		t.Version = max(version+1, uint64(s.now().UnixNano()))
		if err := s.cfg.Router.Push(ctx, t); err != nil {
			return fmt.Errorf("push routes: %w", err)
		}
		s.rec.mu.Lock()
		s.rec.table, s.rec.version, s.rec.pushedAt = body, t.Version, s.now()
		s.rec.mu.Unlock()
	}
	return nil
}

// afterStop keeps the log folder of a stopped instance's app within its
// bound, deleting the oldest files of instances that no longer run; once
// the last instance of a destroyed app is gone, it ends the app for good.
func (s *Service) afterStop(ctx context.Context, in runtime.Instance) {
	insts, err := s.rt.List(ctx)
	if err != nil {
		return
	}
	keep := map[string]bool{in.App + ".build": true}
	left := 0
	for _, other := range insts {
		keep[other.ID] = true
		if other.AppID == in.AppID {
			left++
		}
	}
	// Destroyed: gone, or its name taken by a new app since.
	a, err := s.st.GetApp(ctx, in.App)
	if (errors.Is(err, store.ErrNotFound) || err == nil && a.ID != in.AppID) && left == 0 {
		s.endApp(in.App, in.AppID, in.UID)
		return
	}
	logs.Prune(s.logDir(in.App, in.AppID), appLogLimit, keep)
}

// endApp removes what is left of a destroyed app with no instance left:
// every process still in its cgroup, its build home and its logs.
func (s *Service) endApp(name string, id int64, uid uint32) {
	if s.cfg.Tracker != nil && id != 0 {
		if err := s.cfg.Tracker.KillApp(id); err != nil {
			s.log.Warn("end the processes of a destroyed app", "app", name, "err", err)
		}
	}
	s.removeBuildHome(name, uid)
	os.RemoveAll(s.logDir(name, id))
}

func short(id string) string {
	if i := strings.IndexByte(id, '.'); i >= 0 {
		return id[i+1:]
	}
	return id
}
