package api

import (
	"cmp"
	"context"
	"encoding/json"
	"mime"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"paddock.dev/paddock/internal/auth"
	"paddock.dev/paddock/internal/deploy"
	"paddock.dev/paddock/internal/logs"
	"paddock.dev/paddock/internal/metrics"
	"paddock.dev/paddock/internal/store"
	"paddock.dev/paddock/internal/wire"
)

func (s *Server) status(w http.ResponseWriter, r *http.Request) error {
	out := wire.Status{Version: s.cfg.Version, User: principal(r).User}
	if s.cfg.Health != nil && s.cfg.Authz.Policy().Decide(principal(r), auth.SystemAdmin, "") == nil {
		h := s.cfg.Health(r.Context())
		out.Health = &h
	}
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) shutdown(w http.ResponseWriter, r *http.Request) error {
	var req wire.ShutdownRequest
	if err := readJSON(w, r, &req); err != nil {
		return err
	}
	if s.cfg.Shutdown == nil {
		return &Error{Status: http.StatusNotImplemented, Code: "unsupported", Message: "this server cannot be shut down through the API"}
	}
	if err := writeJSON(w, http.StatusAccepted, req); err != nil {
		return err
	}
	w.(http.Flusher).Flush()
	go s.cfg.Shutdown(req.Apps)
	return nil
}

func (s *Server) listApps(w http.ResponseWriter, r *http.Request) error {
	apps, err := s.d.ListApps(r.Context())
	if err != nil {
		return err
	}
	pol, p := s.cfg.Authz.Policy(), principal(r)
	visible := []wire.App{}
	for _, a := range apps {
		if pol.Visible(p, a.Name) {
			out := appOut(a)
			if out.Processes, err = s.d.Processes(r.Context(), a); err != nil {
				return err
			}
			visible = append(visible, out)
		}
	}
	return writeJSON(w, http.StatusOK, visible)
}

func (s *Server) createApp(w http.ResponseWriter, r *http.Request) error {
	var req wire.CreateAppRequest
	if err := readJSON(w, r, &req); err != nil {
		return err
	}
	a, err := s.d.CreateApp(r.Context(), req.Name, principal(r).User, req.Placement)
	if err != nil {
		return err
	}
	if err := s.reloadPolicy(r); err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, appOut(a))
}

func (s *Server) getApp(w http.ResponseWriter, r *http.Request) error {
	info, err := s.d.App(r.Context(), r.PathValue("app"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, appInfoOut(info))
}

func (s *Server) destroyApp(w http.ResponseWriter, r *http.Request) error {
	if err := s.d.DestroyApp(r.Context(), r.PathValue("app")); err != nil {
		return err
	}
	if err := s.reloadPolicy(r); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// stream writes newline-delimited JSON, starting the response on the first
// event so that errors found before it still get their own status code.
type stream struct {
	mu      sync.Mutex
	w       http.ResponseWriter
	started bool
}

func (st *stream) send(v any) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.started {
		st.w.Header().Set("Content-Type", "application/x-ndjson")
		st.w.WriteHeader(http.StatusOK)
		st.started = true
	}
	json.NewEncoder(st.w).Encode(v)
	if f, ok := st.w.(http.Flusher); ok {
		f.Flush()
	}
}

func (st *stream) Output(line string) { st.send(wire.DeployEvent{Type: wire.DeployOutput, Text: line}) }
func (st *stream) Step(msg string)    { st.send(wire.DeployEvent{Type: wire.DeployStep, Text: msg}) }

func (s *Server) deploy(w http.ResponseWriter, r *http.Request) error {
	st := &stream{w: w}
	var rel store.Release
	var err error
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt == "application/json" {
		var req wire.ImageDeploy
		if err := readJSON(w, r, &req); err != nil {
			return err
		}
		rel, err = s.d.DeployImage(r.Context(), r.PathValue("app"), req.Image, []byte(req.Manifest), principal(r).User, st)
	} else {
		body := http.MaxBytesReader(w, r.Body, maxUpload)
		rel, err = s.d.Deploy(r.Context(), r.PathValue("app"), body, principal(r).User, st)
	}
	if err != nil {
		st.mu.Lock()
		started := st.started
		st.mu.Unlock()
		if !started {
			return err
		}
		e := s.toError(r, err)
		st.send(wire.DeployEvent{Type: wire.DeployError, Error: s.wireError(r, err), Release: releaseOrNil(rel)})
		return &streamedError{e}
	}
	out := releaseOut(rel)
	st.send(wire.DeployEvent{Type: wire.DeployRelease, Release: &out})
	return nil
}

// streamedError is a failure already sent inside a streamed response.
type streamedError struct{ e *Error }

func (s *streamedError) Error() string { return s.e.Message }

func releaseOrNil(r store.Release) *wire.Release {
	if r.Version == 0 {
		return nil
	}
	out := releaseOut(r)
	return &out
}

func (s *Server) listReleases(w http.ResponseWriter, r *http.Request) error {
	rels, err := s.d.Releases(r.Context(), r.PathValue("app"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, listOut(rels, releaseOut))
}

func parseVersion(v string) (int, error) {
	n, err := strconv.Atoi(strings.TrimPrefix(v, "v"))
	if err != nil || n < 1 {
		return 0, invalid("release %q: give a version like v3 or 3", v)
	}
	return n, nil
}

// getRelease returns a release; with ?wait=DURATION it first waits up to
// that long for the release's rollout to finish.
func (s *Server) getRelease(w http.ResponseWriter, r *http.Request) error {
	app := r.PathValue("app")
	v, err := parseVersion(r.PathValue("version"))
	if err != nil {
		return err
	}
	if wait := r.URL.Query().Get("wait"); wait != "" {
		d, err := time.ParseDuration(wait)
		if err != nil || d < 0 || d > 10*time.Minute {
			return invalid("wait=%q: give a duration up to 10m, like 60s", wait)
		}
		ctx, cancel := context.WithTimeout(r.Context(), d)
		defer cancel()
		rel, err := s.d.WaitRollout(ctx, app, v, nil)
		if err == nil || ctx.Err() != nil || rel.Version != 0 {
			return writeJSON(w, http.StatusOK, releaseOut(rel))
		}
		return err
	}
	rel, err := s.d.Release(r.Context(), app, v)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, releaseOut(rel))
}

func (s *Server) rollback(w http.ResponseWriter, r *http.Request) error {
	var req wire.RollbackRequest
	if err := readJSON(w, r, &req); err != nil {
		return err
	}
	v, err := parseVersion(req.Version)
	if err != nil {
		return err
	}
	rel, err := s.d.Rollback(r.Context(), r.PathValue("app"), v, principal(r).User)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, releaseOut(rel))
}

func (s *Server) getConfig(w http.ResponseWriter, r *http.Request) error {
	info, err := s.d.App(r.Context(), r.PathValue("app"))
	if err != nil {
		return err
	}
	cfg := map[string]string{}
	if info.Current != nil {
		cfg = info.Current.Config
	}
	return writeJSON(w, http.StatusOK, cfg)
}

func (s *Server) setConfig(w http.ResponseWriter, r *http.Request) error {
	var vars wire.ConfigPatch
	if err := readJSON(w, r, &vars); err != nil {
		return err
	}
	if err := checkConfig(vars); err != nil {
		return err
	}
	rel, err := s.d.SetConfig(r.Context(), r.PathValue("app"), vars, principal(r).User)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, releaseOut(rel))
}

func (s *Server) getFormation(w http.ResponseWriter, r *http.Request) error {
	info, err := s.d.App(r.Context(), r.PathValue("app"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, info.Process)
}

func (s *Server) scale(w http.ResponseWriter, r *http.Request) error {
	var counts wire.Formation
	if err := readJSON(w, r, &counts); err != nil {
		return err
	}
	if _, err := s.d.Scale(r.Context(), r.PathValue("app"), counts, principal(r).User); err != nil {
		return err
	}
	return s.getFormation(w, r)
}

// allInstances answers the instances of every app the caller may read, in
// one request; an instance of a destroyed app, still stopping, is no one's.
func (s *Server) allInstances(w http.ResponseWriter, r *http.Request) error {
	apps, err := s.d.ListApps(r.Context())
	if err != nil {
		return err
	}
	ids := map[string]int64{}
	for _, a := range visible(s, r, apps, func(a store.App) string { return a.Name }) {
		ids[a.Name] = a.ID
	}
	list, err := s.d.AllInstances(r.Context())
	if err != nil {
		return err
	}
	list = slices.DeleteFunc(list, func(in deploy.Instance) bool { id, ok := ids[in.App]; return !ok || id != in.AppID })
	slices.SortFunc(list, func(a, b deploy.Instance) int {
		return cmp.Or(cmp.Compare(a.App, b.App), cmp.Compare(a.Process, b.Process), cmp.Compare(a.ID, b.ID))
	})
	return writeJSON(w, http.StatusOK, s.instancesOut(list))
}

// instancesOut converts instances for a client, with their recent CPU.
func (s *Server) instancesOut(list []deploy.Instance) []wire.Instance {
	out := listOut(list, instanceOut)
	if s.cfg.InstanceCPU != nil {
		for i := range out {
			if c, ok := s.cfg.InstanceCPU(out[i].ID); ok {
				out[i].CPUCores = &c
			}
		}
	}
	return out
}

func (s *Server) instances(w http.ResponseWriter, r *http.Request) error {
	list, err := s.d.Instances(r.Context(), r.PathValue("app"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, s.instancesOut(list))
}

func (s *Server) restartInstance(w http.ResponseWriter, r *http.Request) error {
	if err := s.d.Restart(r.Context(), r.PathValue("app"), r.PathValue("instance"), principal(r).User); err != nil {
		return err
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// logs streams log lines as newline-delimited JSON.
func (s *Server) logs(w http.ResponseWriter, r *http.Request) error {
	q := deploy.LogQuery{Process: r.URL.Query().Get("process"), Follow: r.URL.Query().Get("follow") == "true"}
	var err error
	if q.Since, err = s.since(r); err != nil {
		return err
	}
	if v := r.URL.Query().Get("tail"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return invalid("tail=%q: give a number of lines", v)
		}
		q.Tail = n
	}
	if v := r.URL.Query().Get("grep"); v != "" {
		// Go's regexps run in time linear in the text: no pattern can
		// stall the server.
		if len(v) > 1000 {
			return invalid("grep: give a regular expression (RE2 syntax) of at most 1000 bytes")
		}
		re, err := regexp.Compile(v)
		if err != nil {
			return invalid("grep=%q: %v: give a regular expression in RE2 syntax", v, err)
		}
		q.Grep = re
	}
	st := &stream{w: w}
	err = s.d.Logs(r.Context(), r.PathValue("app"), q, func(l logs.Line) error {
		st.send(lineOut(l))
		return r.Context().Err()
	})
	if err != nil && !st.started {
		return err
	}
	if !st.started {
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
	}
	return nil
}

// since reads the since parameter: a duration back from now, or a time;
// zero without one.
func (s *Server) since(r *http.Request) (time.Time, error) {
	v := r.URL.Query().Get("since")
	if v == "" {
		return time.Time{}, nil
	}
	if d, ok := ago(v); ok {
		return s.now().Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return t, invalid("since=%q: give a duration like 10m or 1d, or a time like 2026-01-02T15:04:05Z", v)
	}
	return t, nil
}

// ago reads a duration back from now: Go's (90m, 1h30m) or days (7d).
func ago(v string) (time.Duration, bool) {
	if n, ok := strings.CutSuffix(v, "d"); ok {
		days, err := strconv.Atoi(n)
		return time.Duration(days) * 24 * time.Hour, err == nil && days >= 0 && days <= 3650
	}
	d, err := time.ParseDuration(v)
	return d, err == nil && d >= 0
}

// events streams an app's platform events as NDJSON.
func (s *Server) events(w http.ResponseWriter, r *http.Request) error {
	since, err := s.since(r)
	if err != nil {
		return err
	}
	st := &stream{w: w}
	err = s.d.Events(r.Context(), r.PathValue("app"), since, r.URL.Query().Get("follow") == "true", func(e store.Event) error {
		st.send(wire.Event{ID: e.ID, App: e.App, Time: e.Time, Process: e.Process, Instance: e.Instance, Message: e.Message})
		return r.Context().Err()
	})
	if err != nil && !st.started {
		return err
	}
	if !st.started {
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
	}
	return nil
}

func (s *Server) listDomains(w http.ResponseWriter, r *http.Request) error {
	info, err := s.d.App(r.Context(), r.PathValue("app"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, listOut(info.Domains, domainOut))
}

func (s *Server) addDomain(w http.ResponseWriter, r *http.Request) error {
	var req wire.DomainRequest
	if err := readJSON(w, r, &req); err != nil {
		return err
	}
	d, err := s.d.AddDomain(r.Context(), r.PathValue("app"), req.Host)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, domainOut(d))
}

func (s *Server) removeDomain(w http.ResponseWriter, r *http.Request) error {
	if err := s.d.RemoveDomain(r.Context(), r.PathValue("app"), r.PathValue("host")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// checkConfig refuses config keys and values no process environment can
// hold, before a release is made of them.
func checkConfig(vars wire.ConfigPatch) error {
	for k, v := range vars {
		if len(k) > 256 || !configKey.MatchString(k) {
			return invalid("config key %q: use letters, digits and underscores, not starting with a digit", k)
		}
		if v != nil && strings.IndexByte(*v, 0) >= 0 {
			return invalid("config var %s: the value holds a NUL byte (\\u0000), which no environment variable can hold: remove it", k)
		}
	}
	return nil
}

var configKey = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`) // and at most 256 bytes

func (s *Server) metrics(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.Metrics == nil {
		return &Error{Status: http.StatusServiceUnavailable, Code: "metrics_unavailable", Message: "this server keeps no metrics"}
	}
	s.cfg.Metrics.Handler().ServeHTTP(w, r)
	return nil
}

// appMetrics answers an app's recent series from the history.
var errNoMetrics = &Error{Status: http.StatusServiceUnavailable, Code: "metrics_unavailable", Message: "this server keeps no metrics"}

func (s *Server) appMetrics(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.History == nil {
		return errNoMetrics
	}
	if _, err := s.st.GetApp(r.Context(), r.PathValue("app")); err != nil {
		return err
	}
	q, err := s.metricsQuery(r)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, s.series(r.PathValue("app"), q))
}

// allMetrics answers the recent series of every app the caller may read,
// in one request: what an overview of many apps draws.
func (s *Server) allMetrics(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.History == nil {
		return errNoMetrics
	}
	q, err := s.metricsQuery(r)
	if err != nil {
		return err
	}
	apps, err := s.d.ListApps(r.Context())
	if err != nil {
		return err
	}
	out := []wire.Metrics{}
	for _, a := range visible(s, r, apps, func(a store.App) string { return a.Name }) {
		out = append(out, s.series(a.Name, q))
	}
	return writeJSON(w, http.StatusOK, out)
}

// metricsQuery is what a request of series asks for: since (a duration
// back, at most 30 days; an hour by default) and series (names, comma
// separated; all by default).
type metricsQuery struct {
	since  time.Time
	series []string
}

func (s *Server) metricsQuery(r *http.Request) (metricsQuery, error) {
	q := metricsQuery{since: s.now().Add(-time.Hour), series: metrics.Series}
	if v := r.URL.Query().Get("since"); v != "" {
		d, ok := ago(v)
		if !ok || d <= 0 || d > metrics.CoarseSpan {
			return q, invalid("since=%q: give a duration of at most 30d, e.g. 1h or 7d", v)
		}
		q.since = s.now().Add(-d)
	}
	if v := r.URL.Query().Get("series"); v != "" {
		q.series = strings.Split(v, ",")
		for _, name := range q.series {
			if !slices.Contains(metrics.Series, name) {
				return q, invalid("series=%q: no series %q; there are %s", v, name, strings.Join(metrics.Series, ", "))
			}
		}
	}
	return q, nil
}

// series returns an app's series of q.
func (s *Server) series(app string, q metricsQuery) wire.Metrics {
	start, step, points := s.cfg.History.Range(app, q.since, s.now())
	out := wire.Metrics{App: app, Start: start, Step: int(step / time.Second), Series: map[string][]*float64{}}
	for i, name := range metrics.Series {
		if !slices.Contains(q.series, name) {
			continue
		}
		col := make([]*float64, len(points))
		for j, p := range points {
			if i < len(p) && p[i] >= 0 {
				v := p[i]
				col[j] = &v
			}
		}
		out.Series[name] = col
	}
	return out
}
