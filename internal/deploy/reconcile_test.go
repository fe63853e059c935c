package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"paddock.dev/paddock/internal/build"
	"paddock.dev/paddock/internal/manifest"
	"paddock.dev/paddock/internal/router"
	"paddock.dev/paddock/internal/runtime"
	"paddock.dev/paddock/internal/store"
	"paddock.dev/paddock/internal/store/sqlite"
)

// fakeRuntime runs each instance as an HTTP server on its port inside the
// test process, and records what was asked of it. The e2e tests run the
// real process runtime; this one makes the reconciler's order observable.
type fakeRuntime struct {
	mu    sync.Mutex
	insts map[string]*fakeInstance
	log   []string // "start ID" / "stop ID", in order
	crash map[int]bool
}

type fakeInstance struct {
	runtime.Instance
	srv *http.Server
}

func (f *fakeRuntime) Start(ctx context.Context, s runtime.Spec) (runtime.Instance, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	in := &fakeInstance{Instance: runtime.Instance{Spec: s, State: runtime.StateRunning, StartedAt: time.Now()}}
	if f.crash[s.Release] {
		in.State, in.LastExit = runtime.StateCrashLoop, "exited with code 1"
	} else {
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(s.Port))
		if err != nil {
			return runtime.Instance{}, err
		}
		in.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})}
		go in.srv.Serve(ln)
	}
	f.insts[s.ID] = in
	f.log = append(f.log, "start "+s.ID)
	return in.Instance, nil
}

func (f *fakeRuntime) Stop(ctx context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	in, ok := f.insts[id]
	if !ok {
		return runtime.ErrNotFound
	}
	if in.srv != nil {
		in.srv.Close()
	}
	delete(f.insts, id)
	f.log = append(f.log, "stop "+id)
	return nil
}

func (f *fakeRuntime) List(ctx context.Context) ([]runtime.Instance, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []runtime.Instance
	for _, in := range f.insts {
		out = append(out, in.Instance)
	}
	return out, nil
}

func (f *fakeRuntime) LogFile(s runtime.Spec) string { return filepath.Join("/nonexistent", s.ID) }

// fakeRouter records the tables pushed to it.
type fakeRouter struct {
	mu     sync.Mutex
	tables []router.Table
	rt     *fakeRuntime // to interleave pushes with the runtime's log
}

func (r *fakeRouter) Push(ctx context.Context, t router.Table) error {
	r.mu.Lock()
	r.tables = append(r.tables, t)
	r.mu.Unlock()
	r.rt.mu.Lock()
	b, _ := json.Marshal(t.Routes)
	r.rt.log = append(r.rt.log, "push "+string(b))
	r.rt.mu.Unlock()
	return nil
}

func (r *fakeRouter) Status(ctx context.Context) (router.Status, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var v uint64
	if n := len(r.tables); n > 0 {
		v = r.tables[n-1].Version
	}
	return router.Status{Version: v}, nil
}

func newService(t *testing.T) (*Service, *fakeRuntime, store.Store) {
	t.Helper()
	return newServiceRunning(t, true, nil)
}

// newServiceRunning returns a Service whose reconciler runs, if run, with
// vols as its volume layer (nil: none).
func newServiceRunning(t *testing.T, run bool, vols Volumes) (*Service, *fakeRuntime, store.Store) {
	t.Helper()
	dir := t.TempDir()
	st, err := sqlite.Open(context.Background(), filepath.Join(dir, "p.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	rt := &fakeRuntime{insts: map[string]*fakeInstance{}, crash: map[int]bool{}}
	s, err := New(Config{
		Store: st, Runtime: rt, Router: &fakeRouter{rt: rt}, Artifacts: &build.Artifacts{Dir: dir}, Volumes: vols,
		BuildDir: dir, BuildHome: dir, Logs: dir, Interval: 10 * time.Millisecond, Drain: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	if run {
		go func() { s.Run(ctx); close(done) }()
	} else {
		close(done)
	}
	t.Cleanup(func() {
		cancel()
		<-done
		insts, _ := rt.List(context.Background())
		for _, in := range insts {
			rt.Stop(context.Background(), in.ID)
		}
	})
	return s, rt, st
}

func release(t *testing.T, st store.Store, app, build string, instances int) store.Release {
	t.Helper()
	m := manifest.Manifest{Processes: map[string]manifest.Process{"web": {
		Command: "x", Instances: instances, StopTimeout: time.Second,
		Health: manifest.Health{Interval: 20 * time.Millisecond, Timeout: time.Second, Grace: 2 * time.Second},
	}}}
	mj, _ := json.Marshal(m)
	rel, err := st.AddRelease(context.Background(), app, func(store.App, *store.Release) (store.Release, error) {
		return store.Release{Build: build, Manifest: mj, Config: map[string]string{}, CreatedAt: time.Now()}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return rel
}

// TestRolloutStopsOldOnlyAfterNewServe checks the order of a rollout: the
// new instances start, the router gets a table without the old ones, and
// only then are the old ones stopped.
func TestRolloutStopsOldOnlyAfterNewServe(t *testing.T) {
	s, rt, st := newService(t)
	ctx := context.Background()
	if _, err := s.CreateApp(ctx, "a", "admin", nil); err != nil {
		t.Fatal(err)
	}
	v1 := release(t, st, "a", "b1", 2)
	if _, err := s.WaitRollout(ctx, "a", v1.Version, nil); err != nil {
		t.Fatal(err)
	}
	rt.mu.Lock()
	old := map[string]int{}
	for id, in := range rt.insts {
		old[id] = in.Port
	}
	rt.log = nil
	rt.mu.Unlock()

	v2 := release(t, st, "a", "b2", 2)
	if _, err := s.WaitRollout(ctx, "a", v2.Version, nil); err != nil {
		t.Fatal(err)
	}
	rt.mu.Lock()
	log := append([]string(nil), rt.log...)
	rt.mu.Unlock()
	// dropped[port] is where the router was first told to stop using port.
	starts, dropped := 0, map[int]int{}
	for i, l := range log {
		switch {
		case strings.HasPrefix(l, "start "):
			starts++
		case strings.HasPrefix(l, "push "):
			for _, port := range old {
				if _, ok := dropped[port]; !ok && !strings.Contains(l, ":"+strconv.Itoa(port)) {
					dropped[port] = i
				}
			}
		case strings.HasPrefix(l, "stop "):
			id := l[5:]
			port, wasOld := old[id]
			if !wasOld {
				t.Errorf("a new instance was stopped: %s", id)
				continue
			}
			if starts < 2 {
				t.Errorf("old instance %s stopped before both new ones started: %v", id, log)
			}
			if at, ok := dropped[port]; !ok || at > i {
				t.Errorf("old instance %s stopped before the router was told to drop it: %v", id, log)
			}
		}
	}
	if starts != 2 {
		t.Errorf("got %d starts, want 2: %v", starts, log)
	}
}

// TestFailedRolloutGoesBack: a crash-looping release fails and the app
// returns to the release before it, whose instances never stopped.
func TestFailedRolloutGoesBack(t *testing.T) {
	s, rt, st := newService(t)
	ctx := context.Background()
	s.CreateApp(ctx, "a", "admin", nil)
	v1 := release(t, st, "a", "b1", 1)
	if _, err := s.WaitRollout(ctx, "a", v1.Version, nil); err != nil {
		t.Fatal(err)
	}
	rt.mu.Lock()
	rt.crash[2] = true
	rt.mu.Unlock()
	v2 := release(t, st, "a", "b2", 1)
	_, err := s.WaitRollout(ctx, "a", v2.Version, nil)
	if err == nil || !strings.Contains(err.Error(), "crash-looping") {
		t.Fatalf("rollout of a crashing release: got %v, want a failure naming the crash loop", err)
	}
	if a, _ := st.GetApp(ctx, "a"); a.Release != v1.Version {
		t.Errorf("after the failure the app runs v%d, want v%d", a.Release, v1.Version)
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		insts, _ := rt.List(ctx)
		if len(insts) == 1 && insts[0].Release == v1.Version {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	insts, _ := rt.List(ctx)
	t.Errorf("instances after the failure: %+v, want v1's alone", insts)
}

// TestFailDoesNotUndoANewerRelease: marking a release failed must not move
// the app off a release created meanwhile.
func TestFailDoesNotUndoANewerRelease(t *testing.T) {
	// No reconciler: a pass that settles v2 while it is current would race
	// with the failure the test makes.
	s, _, st := newServiceRunning(t, false, nil)
	ctx := context.Background()
	s.CreateApp(ctx, "a", "admin", nil)
	release(t, st, "a", "b1", 0)
	v2 := release(t, st, "a", "b2", 0)
	v3 := release(t, st, "a", "b3", 0)
	staleApp := store.App{Name: "a", Release: v2.Version}
	if err := s.fail(ctx, staleApp, v2, "test"); err != nil {
		t.Fatal(err)
	}
	a, _ := st.GetApp(ctx, "a")
	if a.Release != v3.Version {
		t.Errorf("after failing v2: the app runs v%d, want v%d (created meanwhile)", a.Release, v3.Version)
	}
	if r, _ := st.GetRelease(ctx, "a", v2.Version); r.Status != store.StatusFailed {
		t.Errorf("v2 status: got %s, want failed", r.Status)
	}
}

// oneWriterVolume is a volume attached to web of app "a" that one instance
// at a time may have published; giving it back takes a while, as
// unmounting does.
type oneWriterVolume struct {
	mu     sync.Mutex
	holder string
}

func (v *oneWriterVolume) Mounts(ctx context.Context, app, process, instance string) ([]runtime.Mount, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.holder != "" && v.holder != instance {
		return nil, fmt.Errorf("volume in use by %s", v.holder)
	}
	v.holder = instance
	return nil, nil
}

func (v *oneWriterVolume) Unpublish(ctx context.Context, instance string) error {
	time.Sleep(200 * time.Millisecond)
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.holder == instance {
		v.holder = ""
	}
	return nil
}

func (v *oneWriterVolume) Restoring(string) bool { return false }

func (v *oneWriterVolume) Slots(context.Context, string, string, int) ([][]store.Volume, error) {
	return nil, nil
}

func (v *oneWriterVolume) List(ctx context.Context, app string) ([]store.Volume, error) {
	return []store.Volume{{Name: "data", App: "a", Process: "web"}}, nil
}

// TestVolumeHandoverWaitsForUnpublish: a release of a process whose volume
// has one writer starts its instance only once the old one has stopped
// and given the volume back, though the runtime lists the old one no more
// while its volume is being unmounted.
func TestVolumeHandoverWaitsForUnpublish(t *testing.T) {
	s, _, st := newServiceRunning(t, true, &oneWriterVolume{})
	ctx := context.Background()
	if _, err := s.CreateApp(ctx, "a", "admin", nil); err != nil {
		t.Fatal(err)
	}
	for i, b := range []string{"b1", "b2", "b3"} {
		rel := release(t, st, "a", b, 1)
		if _, err := s.WaitRollout(ctx, "a", rel.Version, nil); err != nil {
			t.Fatalf("release %d: %v", i+1, err)
		}
	}
}

// TestPlacementNeedsKubernetes: one machine cannot choose nodes, so an app
// that requires some is refused, not made to run anywhere.
func TestPlacementNeedsKubernetes(t *testing.T) {
	s, _, st := newService(t)
	ctx := context.Background()
	_, err := s.CreateApp(ctx, "eu-shop", "admin", map[string]string{"topology.kubernetes.io/region": "eu-west"})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "--runtime kubernetes") {
		t.Fatalf("create with placement on one machine: %v, want ErrInvalid naming --runtime kubernetes", err)
	}
	if _, err := st.GetApp(ctx, "eu-shop"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the refused app exists: %v", err)
	}
}

// TestDeployImageNeedsKubernetes: one machine runs folders it built, not
// images; a deploy of one is refused and releases nothing.
func TestDeployImageNeedsKubernetes(t *testing.T) {
	s, _, st := newService(t)
	ctx := context.Background()
	if _, err := s.CreateApp(ctx, "a", "admin", nil); err != nil {
		t.Fatal(err)
	}
	_, err := s.DeployImage(ctx, "a", "registry.example/shop:1.4", nil, "admin", nil)
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "--runtime kubernetes") {
		t.Fatalf("deploy of an image on one machine: %v, want ErrInvalid naming --runtime kubernetes", err)
	}
	if rels, _ := st.ListReleases(ctx, "a"); len(rels) != 0 {
		t.Errorf("%d releases made by a refused deploy", len(rels))
	}
}
