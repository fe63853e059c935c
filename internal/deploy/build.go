package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"paddock.dev/paddock/internal/archive"
	"paddock.dev/paddock/internal/build"
	"paddock.dev/paddock/internal/isolate"
	"paddock.dev/paddock/internal/logs"
	"paddock.dev/paddock/internal/manifest"
	"paddock.dev/paddock/internal/store"
)

// Progress receives what a deploy does, as it happens.
type Progress interface {
	// Output is a line of the build command's output.
	Output(line string)
	// Step is a line from the platform.
	Step(msg string)
}

// Deploy builds the uploaded source (a Pack stream), creates a release of it
// and waits until the release is rolled out or has failed. Nothing changes
// for the running release unless the build succeeds.
func (s *Service) Deploy(ctx context.Context, app string, upload io.Reader, actor string, p Progress) (store.Release, error) {
	if err := ValidateAppName(app); err != nil {
		return store.Release{}, err
	}
	a, err := s.st.GetApp(ctx, app)
	if errors.Is(err, store.ErrNotFound) {
		return store.Release{}, fmt.Errorf("%w: create it first with `paddock apps create %s`", err, app)
	}
	if err != nil {
		return store.Release{}, err
	}
	start := time.Now()
	b, err := s.build(ctx, a, upload, p)
	s.cfg.Metrics.Build(err == nil, time.Since(start))
	if err != nil {
		return store.Release{}, err
	}
	return s.release(ctx, app, store.Release{Build: b.ID, Artifact: b.Artifact, Manifest: b.Manifest, Description: "Deploy " + b.ID},
		"deploy of build "+b.ID, actor, p)
}

// release makes next, a deploy's release, with the app's current config and
// latest secrets, and waits for its rollout; what says what was deployed,
// in the event.
func (s *Service) release(ctx context.Context, app string, next store.Release, what, actor string, p Progress) (store.Release, error) {
	unlock := s.lock(app)
	pins, err := s.nextSecrets(ctx, app)
	if err != nil {
		unlock()
		return store.Release{}, err
	}
	last, err := s.lastConfig(ctx, app)
	if err != nil {
		unlock()
		return store.Release{}, err
	}
	rel, err := s.st.AddRelease(ctx, app, func(a store.App, cur *store.Release) (store.Release, error) {
		next.Config, next.Secrets, next.CreatedBy, next.CreatedAt = maps.Clone(last), pins, actor, s.now().UTC()
		if cur != nil {
			next.Config = cur.Config
		}
		return next, nil
	})
	unlock()
	if err != nil {
		return rel, err
	}
	s.event(ctx, app, "", "", fmt.Sprintf("release v%d created by %s: %s", rel.Version, actor, what))
	if s.cfg.Kube != nil {
		kubeHealthNotes(rel.Manifest, p)
	}
	p.Step(fmt.Sprintf("release v%d created; rolling out", rel.Version))
	s.Kick()
	return s.WaitRollout(ctx, app, rel.Version, p)
}

// kubeHealthNotes tells where a cluster checks health more loosely than
// one machine: the kubelet takes any 2xx or 3xx answer to an HTTP check,
// whatever status the manifest wants.
func kubeHealthNotes(manifestJSON []byte, p Progress) {
	var m manifest.Manifest
	if json.Unmarshal(manifestJSON, &m) != nil {
		return
	}
	for _, name := range slices.Sorted(maps.Keys(m.Processes)) {
		if h := m.Processes[name].Health; h.Status != 0 {
			p.Step(fmt.Sprintf("%s: on Kubernetes the health check passes on any 2xx or 3xx answer, not only status %d", name, h.Status))
		}
	}
}

// lastConfig is the config of app's newest release: what a new release
// starts from when none runs (the first deploy failed), so that the config
// set before a failed deploy is not lost.
func (s *Service) lastConfig(ctx context.Context, app string) (map[string]string, error) {
	if a, err := s.st.GetApp(ctx, app); err != nil || a.Release != 0 {
		return map[string]string{}, err // a release runs: the new one starts from it
	}
	rels, err := s.st.ListReleases(ctx, app)
	if err != nil || len(rels) == 0 {
		return map[string]string{}, err
	}
	newest := slices.MaxFunc(rels, func(a, b store.Release) int { return a.Version - b.Version })
	if newest.Config == nil {
		return map[string]string{}, nil
	}
	return newest.Config, nil
}

// WaitRollout waits until release version of app is deployed or failed,
// passing the app's events on to p meanwhile.
func (s *Service) WaitRollout(ctx context.Context, app string, version int, p Progress) (store.Release, error) {
	rel, err := s.st.GetRelease(ctx, app, version)
	if err != nil {
		return rel, err
	}
	since := rel.CreatedAt
	var last int64
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	pass := func() error {
		evs, err := s.st.ListEvents(ctx, app, since, last)
		if err != nil {
			return err
		}
		for _, e := range evs {
			last = e.ID
			if p != nil && !strings.HasPrefix(e.Message, "release v") {
				p.Step(e.Message)
			}
		}
		return nil
	}
	for {
		if err := pass(); err != nil {
			return store.Release{}, err
		}
		rel, err := s.st.GetRelease(ctx, app, version)
		if err != nil {
			return rel, err
		}
		if rel.Status != store.StatusPending {
			// The events written before the status was: why it failed,
			// what runs instead.
			if err := pass(); err != nil {
				return store.Release{}, err
			}
		}
		if rel.Status == store.StatusPending {
			if a, err := s.st.GetApp(ctx, app); err == nil && a.Release > version {
				return rel, fmt.Errorf("%w: v%d was superseded by v%d before it finished rolling out", ErrFailed, version, a.Release)
			}
		}
		switch rel.Status {
		case store.StatusDeployed:
			return rel, nil
		case store.StatusFailed:
			return rel, fmt.Errorf("%w: v%d: %s", ErrFailed, version, rel.Reason)
		}
		select {
		case <-ctx.Done():
			return rel, ctx.Err()
		case <-tick.C:
		}
	}
}

// build unpacks, builds and stores an upload as a build of app.
func (s *Service) build(ctx context.Context, a store.App, upload io.Reader, p Progress) (store.Build, error) {
	app := a.Name
	id := s.now().UTC().Format("20060102150405") + "-" + randomID(6)
	dir := filepath.Join(s.cfg.BuildDir, id)
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o700); err != nil {
		return store.Build{}, fmt.Errorf("build %s: %w", id, err)
	}
	defer os.RemoveAll(dir)
	uid, err := s.appUID(a)
	if err != nil {
		return store.Build{}, err
	}
	if uid != 0 {
		// The build user passes through to its folder and no further; src
		// stays root's (0700) until the build gets it whole.
		for _, d := range []string{s.cfg.BuildDir, dir} {
			if err := os.Chmod(d, 0o711); err != nil {
				return store.Build{}, err
			}
		}
	}

	if err := archive.Unpack(ctx, upload, src, archive.Limits{MaxBytes: s.cfg.Upload}); err != nil {
		if errors.Is(err, archive.ErrUnsafePath) || errors.Is(err, archive.ErrTooLarge) {
			return store.Build{}, fmt.Errorf("%w: upload rejected: %w", ErrInvalid, err)
		}
		return store.Build{}, fmt.Errorf("%w: upload unreadable: %w (send a gzip-compressed tar, as `paddock deploy` does)", ErrInvalid, err)
	}
	m, err := manifest.Load(src)
	if err != nil {
		return store.Build{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if len(m.Processes) == 0 {
		return store.Build{}, fmt.Errorf("%w: the manifest declares no process types: add [processes.web] to paddock.toml or a line `web: COMMAND` to the Procfile", ErrInvalid)
	}
	if m.Build.Command != "" {
		p.Step("building: " + m.Build.Command)
		home, err := s.buildHome(a.Name, uid)
		if err != nil {
			return store.Build{}, err
		}
		env := []string{
			"PATH=" + os.Getenv("PATH"),
			"HOME=" + home,
			"LANG=C.UTF-8",
			"PADDOCK_APP=" + app,
		}
		env = append(env, s.cfg.BuildEnv...)
		buildLog, err := logs.Open(filepath.Join(s.logDir(app, a.ID), app+".build.log"), 8<<20)
		if err != nil {
			return store.Build{}, fmt.Errorf("build %s: open log: %w", id, err)
		}
		defer buildLog.Close()
		buildLog.Line("paddock", "build "+id+": "+m.Build.Command)
		lines := logs.NewLines(func(line []byte) {
			buildLog.Line("out", string(line))
			p.Output(string(line))
		})
		// A build runs as the app's user, who can read what its running
		// instances got: their secrets are scrubbed from its output too.
		out, err := s.scrubber(ctx, a, lines)
		if err != nil {
			return store.Build{}, err
		}
		var cgroup string
		if s.cfg.Tracker != nil {
			if cgroup, err = s.cfg.Tracker.Group(a.ID, isolate.Builds, id); err != nil {
				return store.Build{}, err
			}
			defer isolate.Remove(cgroup)
			// A destroy that came meanwhile ended the builds it saw; this
			// one it did not see.
			if cur, err := s.st.GetApp(ctx, app); err != nil || cur.ID != a.ID {
				return store.Build{}, fmt.Errorf("%w: app %s was destroyed during the build", ErrInvalid, app)
			}
		}
		err = build.Run(ctx, build.Spec{
			Dir: src, Command: m.Build.Command, Timeout: m.Build.Timeout, Env: env, Output: out,
			UID: uid, GID: uid, Cgroup: cgroup,
			Started: func(pgid int) {
				os.WriteFile(filepath.Join(dir, "pgid"), []byte(strconv.Itoa(pgid)), 0o600)
			},
		})
		out.Flush()
		lines.Flush()
		if err != nil {
			return store.Build{}, fmt.Errorf("%w: %w", ErrBuild, err)
		}
	}
	p.Step("storing artifact")
	// What the build command wrote is the app user's, and read as such;
	// without a build command the tree is as root unpacked it.
	owner := uint32(0)
	if m.Build.Command != "" {
		owner = uid
	}
	digest, err := s.cfg.Artifacts.Store(ctx, src, owner)
	if errors.Is(err, archive.ErrNotOwned) {
		return store.Build{}, fmt.Errorf("%w: the build's output holds a file that is not the app's: %w", ErrBuild, err)
	}
	if err != nil {
		return store.Build{}, fmt.Errorf("build %s: store artifact: %w", id, err)
	}
	mj, err := json.Marshal(m)
	if err != nil {
		return store.Build{}, err
	}
	b := store.Build{ID: id, App: app, Artifact: digest, Manifest: mj, CreatedAt: s.now().UTC()}
	if err := s.st.CreateBuild(ctx, b); err != nil {
		return b, err
	}
	p.Step(fmt.Sprintf("build %s stored as %s", id, digest))
	return b, nil
}

// ErrBuild is a build command that failed or timed out.
var ErrBuild = errors.New("build failed")

// CleanBuilds ends what builds a previous server left running when it died
// (their process groups, by the ID each recorded) and removes their folders.
func (s *Service) CleanBuilds() {
	if s.cfg.Tracker != nil {
		if err := s.cfg.Tracker.KillGroups(0, isolate.Builds); err != nil {
			s.log.Warn("end the builds a previous server left running", "err", err)
		}
	}
	entries, _ := os.ReadDir(s.cfg.BuildDir)
	for _, e := range entries {
		dir := filepath.Join(s.cfg.BuildDir, e.Name())
		if b, err := os.ReadFile(filepath.Join(dir, "pgid")); err == nil {
			pgid, _ := strconv.Atoi(string(b))
			// Only while the group's leader still works in this build's folder.
			if cwd, err := os.Readlink("/proc/" + strconv.Itoa(pgid) + "/cwd"); pgid > 0 && err == nil && strings.HasPrefix(cwd, dir+"/") {
				syscall.Kill(-pgid, syscall.SIGKILL)
			}
		}
		os.RemoveAll(dir)
	}
}

// buildHome returns the HOME of app's builds, their cache between builds,
// made on first use. Each app user has a fresh one of its own: a home is
// never handed from one user to another, since root would have to re-own a
// tree that its old owner could still be changing.
func (s *Service) buildHome(app string, uid uint32) (string, error) {
	home := s.homePath(app, uid)
	if uid == 0 {
		return home, os.MkdirAll(home, 0o700)
	}
	if err := os.MkdirAll(s.cfg.BuildHome, 0o700); err != nil {
		return "", err
	}
	if err := os.Chmod(s.cfg.BuildHome, 0o711); err != nil {
		return "", err
	}
	err := os.Mkdir(home, 0o700)
	switch {
	case err == nil:
		if err := os.Chown(home, int(uid), int(uid)); err != nil {
			os.Remove(home)
			return "", err
		}
		return home, nil
	case !errors.Is(err, fs.ErrExist):
		return "", err
	}
	fi, err := os.Lstat(home)
	if err != nil {
		return "", err
	}
	if st := fi.Sys().(*syscall.Stat_t); !fi.IsDir() || st.Uid != uid {
		return "", fmt.Errorf("build home %s is not a folder of uid %d: remove it", home, uid)
	}
	return home, nil
}

// homePath is where buildHome keeps the home of app's builds as uid: APP
// when they run as the server's user, else APP.UID.
func (s *Service) homePath(app string, uid uint32) string {
	if uid == 0 {
		return filepath.Join(s.cfg.BuildHome, app)
	}
	return filepath.Join(s.cfg.BuildHome, app+"."+strconv.FormatUint(uint64(uid), 10))
}

// removeBuildHome removes the build home of a destroyed app's user.
func (s *Service) removeBuildHome(app string, uid uint32) {
	if uid == 0 {
		return // the server's user: the home may be another app's of that name
	}
	// RemoveAll works through file descriptors and follows no link.
	os.RemoveAll(s.homePath(app, uid))
}
