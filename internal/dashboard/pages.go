package dashboard

import (
	"cmp"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"paddock.dev/paddock/internal/wire"
)

// App states on the overview.
const (
	stateHealthy   = "healthy"   // every declared instance of the current release is healthy
	stateDegraded  = "degraded"  // some are missing or unhealthy
	stateDeploying = "deploying" // a rollout is under way: instances of another release, or starting ones
	stateCrashed   = "crashed"   // none healthy, and some crash-looping
	stateStopped   = "stopped"   // scaled to zero
	stateNew       = "new"       // never released
)

// appState sums an app's instances up in one word, against the instance
// counts its current release and scale declare.
func appState(a wire.AppInfo, insts []wire.Instance) string {
	if a.Release == 0 {
		return stateNew
	}
	want := 0
	for _, n := range a.Processes {
		want += n
	}
	healthy, crashing, rolling := 0, 0, false
	for _, in := range insts {
		if in.Retiring || in.Release != a.Release {
			rolling = true
			continue
		}
		switch {
		case in.State == "running" && in.Healthy:
			healthy++
		case in.State == "crashloop" || in.State == "backoff":
			crashing++
		case in.State == "starting":
			rolling = true
		}
	}
	switch {
	case want == 0 && len(insts) == 0:
		return stateStopped
	case crashing > 0 && healthy == 0:
		return stateCrashed
	case rolling:
		return stateDeploying
	case healthy >= want:
		return stateHealthy
	}
	return stateDegraded
}

// procCount is a process type's instances: running and healthy of wanted.
type procCount struct {
	Type    string
	Healthy int
	Want    int
}

func procCounts(a wire.AppInfo, insts []wire.Instance) []procCount {
	m := map[string]*procCount{}
	get := func(t string) *procCount {
		if m[t] == nil {
			m[t] = &procCount{Type: t}
		}
		return m[t]
	}
	for t, n := range a.Processes {
		get(t).Want = n
	}
	for _, in := range insts {
		if in.Healthy && in.State == "running" && !in.Retiring && in.Release == a.Release {
			get(in.Process).Healthy++
		}
	}
	out := make([]procCount, 0, len(m))
	for _, c := range m {
		out = append(out, *c)
	}
	slices.SortFunc(out, func(a, b procCount) int { return cmp.Compare(a.Type, b.Type) })
	return out
}

type overviewRow struct {
	Name     string
	State    string
	Release  int
	Counts   []procCount
	Requests chart
	Errors   chart
}

type overviewData struct {
	Status wire.Status
	Apps   []overviewRow
	Counts map[string]int // apps by state
	Alerts []wire.Alert
	Audit  *verification
	Errors []string // what could not be read
}

// overview lists every app the user may read, with its state and recent
// traffic, and the platform's health.
func (h *Handler) overview(w http.ResponseWriter, r *http.Request, s *session) error {
	var apps []wire.App
	if err := h.call(r, s.token, http.MethodGet, "/v1/apps", nil, &apps); err != nil {
		return err
	}
	d := overviewData{Apps: make([]overviewRow, len(apps)), Counts: map[string]int{}}
	// Every app's instances and traffic in one request each: the list of
	// apps has their wanted instance counts.
	var insts []wire.Instance
	var series []wire.Metrics
	var mu sync.Mutex // guards d.Errors for the jobs below
	failed := func(what string, err error) {
		mu.Lock()
		d.Errors = append(d.Errors, what+": "+messageOf(err))
		mu.Unlock()
	}
	jobs := []func(){
		func() {
			if err := h.call(r, s.token, http.MethodGet, "/v1/status", nil, &d.Status); err != nil {
				failed("status", err)
			}
		},
		func() {
			if err := h.call(r, s.token, http.MethodGet, "/v1/alerts", nil, &d.Alerts); err != nil {
				failed("alerts", err)
			}
		},
		func() {
			if err := h.call(r, s.token, http.MethodGet, "/v1/instances", nil, &insts); err != nil {
				failed("instances", err)
			}
		},
		func() {
			if err := h.call(r, s.token, http.MethodGet, "/v1/metrics/apps?since=30m&series=requests_per_second,errors_per_second", nil, &series); err != nil {
				failed("metrics", err)
			}
		},
	}
	h.parallel(jobs)
	byApp := map[string][]wire.Instance{}
	for _, in := range insts {
		byApp[in.App] = append(byApp[in.App], in)
	}
	seriesOf := map[string]wire.Metrics{}
	for _, m := range series {
		seriesOf[m.App] = m
	}
	for i, a := range apps {
		d.Apps[i] = overviewRowOf(wire.AppInfo{App: a}, byApp[a.Name], seriesOf[a.Name])
	}
	d.Audit = h.auditStatus(r, s, false)
	for _, row := range d.Apps {
		d.Counts[row.State]++
	}
	return h.render(w, r, http.StatusOK, "overview", pageData{Title: "Overview", Nav: "overview", S: s, Page: d})
}

func overviewRowOf(info wire.AppInfo, insts []wire.Instance, m wire.Metrics) overviewRow {
	row := overviewRow{Name: info.Name, Release: info.Release}
	row.State = appState(info, insts)
	row.Counts = procCounts(info, insts)
	row.Requests = lineChart("requests per second, last 30 minutes", 120, 24, perSecond,
		series{"requests", "c-req", m.Series["requests_per_second"]})
	row.Errors = lineChart("errors per second, last 30 minutes", 120, 24, perSecond,
		series{"errors", "c-err", m.Series["errors_per_second"]})
	return row
}

// parallel runs jobs, at most cfg.Parallel at once, and waits for them.
func (h *Handler) parallel(jobs []func()) {
	sem := make(chan struct{}, h.cfg.Parallel)
	var wg sync.WaitGroup
	for _, f := range jobs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			f()
		}()
	}
	wg.Wait()
}

type instanceRow struct {
	wire.Instance
	Uptime string
	CPU    string // of one core, over the last 10 s
	Memory string // used of the limit
}

type releaseRow struct {
	wire.Release
	Current bool
	Changes []change // config and secret names changed from the release before
}

type change struct {
	Kind string // "added", "removed", "changed"
	What string // "config" or "secret"
	Name string
}

type configVar struct{ Key, Value string }

type volumeRow struct {
	wire.Volume
	SizeText  string
	UsedText  string
	Snaps     []wire.Snapshot
	SnapError string
}

type appData struct {
	Info      wire.AppInfo
	State     string
	Counts    []procCount
	Instances []instanceRow
	Range     string // "1h" or "24h"
	Charts    []chart
	Releases  []releaseRow
	Config    []configVar
	Secrets   []wire.Secret
	Volumes   []volumeRow
	Events    []wire.Event
	Processes []string // process types, for the log filter and scale forms
	Errors    []string // sections that could not be read, and why
}

// appPage shows one app: instances, charts, releases, logs, events,
// domains, config and secret names, volumes.
func (h *Handler) appPage(w http.ResponseWriter, r *http.Request, s *session) error {
	app := r.PathValue("app")
	base := "/v1/apps/" + url.PathEscape(app)
	d := appData{Range: "1h"}
	if r.URL.Query().Get("range") == "24h" {
		d.Range = "24h"
	}
	if err := h.call(r, s.token, http.MethodGet, base, nil, &d.Info); err != nil {
		return err
	}
	var (
		mu      sync.Mutex
		insts   []wire.Instance
		rels    []wire.Release
		metrics wire.Metrics
	)
	failed := func(what string, err error) {
		mu.Lock()
		defer mu.Unlock()
		d.Errors = append(d.Errors, what+": "+messageOf(err))
	}
	h.parallel([]func(){
		func() {
			if err := h.call(r, s.token, http.MethodGet, base+"/instances", nil, &insts); err != nil {
				failed("instances", err)
			}
		},
		func() {
			if err := h.call(r, s.token, http.MethodGet, base+"/releases", nil, &rels); err != nil {
				failed("releases", err)
			}
		},
		func() {
			if err := h.call(r, s.token, http.MethodGet, base+"/metrics?since="+d.Range, nil, &metrics); err != nil {
				failed("metrics", err)
			}
		},
		func() {
			since := url.QueryEscape((24 * time.Hour).String())
			err := h.callLines(r, s.token, base+"/events?since="+since, func(line []byte) error {
				var e wire.Event
				if err := json.Unmarshal(line, &e); err != nil {
					return err
				}
				d.Events = append(d.Events, e)
				return nil
			})
			if err != nil {
				failed("events", err)
			}
		},
		func() {
			if err := h.call(r, s.token, http.MethodGet, base+"/secrets", nil, &d.Secrets); err != nil {
				failed("secrets", err)
			}
		},
		func() {
			var vols []wire.Volume
			if err := h.call(r, s.token, http.MethodGet, base+"/volumes", nil, &vols); err != nil {
				var ae *APIError
				if !asAPIError(err, &ae) || ae.Code != "volumes_unavailable" {
					failed("volumes", err)
				}
				return
			}
			rows := make([]volumeRow, len(vols))
			for i, v := range vols {
				rows[i] = volumeRow{Volume: v, SizeText: bytesText(float64(v.Size))}
				if v.Used != nil {
					rows[i].UsedText = bytesText(float64(*v.Used))
				}
				if err := h.call(r, s.token, http.MethodGet, base+"/volumes/"+url.PathEscape(v.Name)+"/snapshots", nil, &rows[i].Snaps); err != nil {
					rows[i].SnapError = messageOf(err)
				}
			}
			mu.Lock()
			d.Volumes = rows
			mu.Unlock()
		},
	})
	now := h.now()
	d.State = appState(d.Info, insts)
	d.Counts = procCounts(d.Info, insts)
	for _, in := range insts {
		row := instanceRow{Instance: in}
		if !in.StartedAt.IsZero() && (in.State == "running" || in.State == "starting") {
			row.Uptime = ago(now.Sub(in.StartedAt))
		}
		if in.CPUCores != nil {
			row.CPU = strconv.FormatFloat(*in.CPUCores*100, 'f', 1, 64) + "%"
		}
		if in.MemoryUsed > 0 {
			row.Memory = bytesText(float64(in.MemoryUsed))
		}
		if in.Memory > 0 {
			row.Memory = cmp.Or(row.Memory, "?") + " of " + bytesText(float64(in.Memory))
		}
		d.Instances = append(d.Instances, row)
	}
	span := "last hour"
	if d.Range == "24h" {
		span = "last day"
	}
	sr := func(name, class, key string) series { return series{name, class, metrics.Series[key]} }
	from := "1 hour ago"
	if d.Range == "24h" {
		from = "1 day ago"
	}
	d.Charts = []chart{
		lineChart("Requests, "+span, 320, 80, perSecond, sr("requests", "c-req", "requests_per_second")),
		lineChart("Errors, "+span, 320, 80, perSecond, sr("errors", "c-err", "errors_per_second")),
		lineChart("Latency p50 / p95 / p99, "+span, 320, 80, seconds,
			sr("p50", "c-p50", "p50_seconds"), sr("p95", "c-p95", "p95_seconds"), sr("p99", "c-p99", "p99_seconds")),
		lineChart("CPU, "+span, 320, 80, cores, sr("cpu", "c-cpu", "cpu_cores")),
		lineChart("Memory, "+span, 320, 80, bytesText, sr("memory", "c-mem", "memory_bytes")),
	}
	for i := range d.Charts {
		d.Charts[i].From = from
	}
	d.Releases = releaseRows(rels, d.Info.Release)
	if d.Info.Current != nil {
		for k, v := range d.Info.Current.Config {
			d.Config = append(d.Config, configVar{k, v})
		}
		slices.SortFunc(d.Config, func(a, b configVar) int { return strings.Compare(a.Key, b.Key) })
	}
	procs := map[string]bool{}
	for t := range d.Info.Processes {
		procs[t] = true
	}
	for t := range d.Info.Formation {
		procs[t] = true
	}
	for _, in := range insts {
		procs[in.Process] = true
	}
	for t := range procs {
		d.Processes = append(d.Processes, t)
	}
	slices.Sort(d.Processes)
	if n := len(d.Events); n > 50 {
		d.Events = d.Events[n-50:]
	}
	slices.Reverse(d.Events)
	return h.render(w, r, http.StatusOK, "app", pageData{Title: d.Info.Name, Nav: "app", S: s, Page: d})
}

// releaseRows lists releases newest first, each with the config and secret
// names that changed from the release before it.
func releaseRows(rels []wire.Release, current int) []releaseRow {
	slices.SortFunc(rels, func(a, b wire.Release) int { return cmp.Compare(a.Version, b.Version) })
	out := make([]releaseRow, len(rels))
	for i, rel := range rels {
		row := releaseRow{Release: rel, Current: rel.Version == current}
		var prevCfg map[string]string
		var prevSec map[string]int
		if i > 0 {
			prevCfg, prevSec = rels[i-1].Config, rels[i-1].Secrets
		}
		row.Changes = append(diff("config", prevCfg, rel.Config), diff("secret", prevSec, rel.Secrets)...)
		out[len(rels)-1-i] = row
	}
	if len(out) > 30 {
		out = out[:30]
	}
	return out
}

func diff[V comparable](what string, before, after map[string]V) []change {
	var out []change
	for k, v := range after {
		old, ok := before[k]
		switch {
		case !ok:
			out = append(out, change{"added", what, k})
		case old != v:
			out = append(out, change{"changed", what, k})
		}
	}
	for k := range before {
		if _, ok := after[k]; !ok {
			out = append(out, change{"removed", what, k})
		}
	}
	slices.SortFunc(out, func(a, b change) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// ago writes a duration the way a person reads an age: 3d4h, 5h12m, 42s.
func ago(d time.Duration) string {
	switch {
	case d < time.Minute:
		return d.Truncate(time.Second).String()
	case d < 48*time.Hour:
		return strings.TrimSuffix(d.Truncate(time.Minute).String(), "0s")
	}
	days := d / (24 * time.Hour)
	return strconv.Itoa(int(days)) + "d" + strconv.Itoa(int((d-days*24*time.Hour)/time.Hour)) + "h"
}

func asAPIError(err error, target **APIError) bool { return errors.As(err, target) }
