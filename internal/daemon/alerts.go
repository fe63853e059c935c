package daemon

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math"
	"net/url"
	"os"
	"time"

	"paddock.dev/paddock/internal/alerts"
	"paddock.dev/paddock/internal/deploy"
	"paddock.dev/paddock/internal/metrics"
	"paddock.dev/paddock/internal/router"
	"paddock.dev/paddock/internal/runtime"
	"paddock.dev/paddock/internal/store"
	"paddock.dev/paddock/internal/volume"
)

// watched is what the alerts' rules read.
type watched struct {
	svc     *deploy.Service
	vols    *volume.Service // nil: no volumes
	traffic func(context.Context) (map[string]router.AppStats, error)
	st      store.Store      // the rules users set
	history *metrics.History // what they read
	certs   []certFile       // the certificates the platform serves
}

// conditions returns what is wrong now: by the default rules, on from the
// start (what the platform sees of each app that needs someone's
// attention), and by the rules users set on their apps' metrics.
func conditions(w watched) func(context.Context) ([]alerts.Condition, error) {
	var window trafficWindow
	var lastTraffic []alerts.Condition
	crashes := restartWindow{}
	svc, vols, traffic := w.svc, w.vols, w.traffic
	return func(ctx context.Context) ([]alerts.Condition, error) {
		insts, err := svc.AllInstances(ctx)
		if err != nil {
			return nil, err
		}
		rules, err := w.st.ListAlertRules(ctx, "")
		if err != nil {
			return nil, err
		}
		var out []alerts.Condition
		now := time.Now()
		for _, sr := range rules {
			r := alerts.Rule{ID: sr.ID, App: sr.App, Metric: sr.Metric, Above: sr.Above, Threshold: sr.Threshold, For: sr.For}
			_, _, points := w.history.Range(sr.App, now.Add(-time.Minute), now)
			if c, ok := r.Condition(points); ok {
				out = append(out, c)
			}
		}
		out = append(out, expiring(w.certs, now)...)
		// Without a reading of the router, its conditions stay as they
		// were: an alert does not resolve for want of a reading.
		if stats, err := traffic(ctx); err == nil {
			lastTraffic = window.conditions(time.Now(), stats)
		}
		out = append(out, lastTraffic...)
		webs, healthy := map[string]int{}, map[string]int{}
		crashes.begin()
		for _, in := range insts {
			// Between its crashes an instance runs for a moment: a crash
			// loop holds while it restarted 3 times in 10 minutes.
			if in.State == runtime.StateCrashLoop || crashes.count(in.ID, now, in.Restarts) >= 3 {
				out = append(out, alerts.Condition{Rule: "crash_loop", App: in.App, Subject: in.ID,
					Message: fmt.Sprintf("instance %s of %s keeps exiting (%d restarts, last: %s): see `paddock logs %s`", in.ID, in.App, in.Restarts, in.LastExit, in.App)})
			}
			if in.Memory > 0 && in.MemoryUsed >= in.Memory/10*9 {
				out = append(out, alerts.Condition{Rule: "memory_near_limit", App: in.App, Subject: in.ID, For: time.Minute,
					Message: fmt.Sprintf("instance %s of %s uses %d MiB of its %d MiB limit: raise memory in paddock.toml, or find the leak", in.ID, in.App, in.MemoryUsed>>20, in.Memory>>20)})
			}
			if in.Process == "web" && !in.Retiring {
				webs[in.App]++
				if in.Healthy {
					healthy[in.App]++
				}
			}
		}
		crashes.end()
		for app, n := range webs {
			if healthy[app] == 0 {
				out = append(out, alerts.Condition{Rule: "no_healthy_instance", App: app, For: time.Minute,
					Message: fmt.Sprintf("app %s has %d web instances and none is healthy: the router answers 503; see `paddock ps %s`", app, n, app)})
			}
		}
		if vols == nil {
			return out, nil
		}
		all, err := vols.List(ctx, "")
		if err != nil {
			return nil, err
		}
		for _, v := range all {
			if used, ok := vols.Used(ctx, v); ok && used >= v.Size/10*9 {
				out = append(out, alerts.Condition{Rule: "volume_nearly_full", App: v.App, Subject: v.Name,
					Message: fmt.Sprintf("volume %s of %s holds %d MiB of %d MiB: grow it with `paddock volumes resize %s --size …`", v.Name, v.App, used>>20, v.Size>>20, v.Name)})
			}
		}
		schedules, err := vols.Schedules(ctx, "")
		if err != nil {
			return nil, err
		}
		for _, b := range schedules {
			if b.LastError != "" {
				out = append(out, alerts.Condition{Rule: "backup_failed", App: b.App, Subject: b.Volume,
					Message: fmt.Sprintf("the last backup of volume %s failed: %s", b.Volume, b.LastError)})
			}
		}
		return out, nil
	}
}

// certFile is a certificate the platform serves, and what to do before it
// expires.
type certFile struct {
	What, Path, Do string
}

// certWarning is how long before a certificate expires its alert fires.
const certWarning = 14 * 24 * time.Hour

// expiring returns a condition for each certificate that expires within
// certWarning, or cannot be read.
func expiring(certs []certFile, now time.Time) []alerts.Condition {
	var out []alerts.Condition
	for _, c := range certs {
		leaf, err := readLeaf(c.Path)
		cond := alerts.Condition{Rule: "certificate_expiring", Subject: c.What}
		switch {
		case err != nil:
			cond.Message = fmt.Sprintf("the %s (%s) cannot be read: %v", c.What, c.Path, err)
		case now.Add(certWarning).After(leaf.NotAfter):
			days := int(math.Ceil(leaf.NotAfter.Sub(now).Hours() / 24))
			when := fmt.Sprintf("expires on %s, in %d days", leaf.NotAfter.UTC().Format(time.DateOnly), days)
			if days <= 0 {
				when = "expired on " + leaf.NotAfter.UTC().Format(time.DateOnly)
			}
			cond.Message = fmt.Sprintf("the %s (%s) %s: %s", c.What, c.Path, when, c.Do)
		default:
			continue
		}
		out = append(out, cond)
	}
	return out
}

// readLeaf reads the first certificate of a PEM file.
func readLeaf(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	for {
		var blk *pem.Block
		if blk, b = pem.Decode(b); blk == nil {
			return nil, errors.New("no certificate in it")
		}
		if blk.Type == "CERTIFICATE" {
			return x509.ParseCertificate(blk.Bytes)
		}
	}
}

// restartWindow keeps each instance's restart counts of the last ten
// minutes.
type restartWindow struct {
	seen    map[string][]restartSample
	current map[string]bool
}

type restartSample struct {
	at       time.Time
	restarts int
}

func (w *restartWindow) begin() { w.current = map[string]bool{} }

// count adds a reading and returns the restarts within the window.
func (w *restartWindow) count(id string, now time.Time, restarts int) int {
	if w.seen == nil {
		w.seen = map[string][]restartSample{}
	}
	w.current[id] = true
	s := append(w.seen[id], restartSample{now, restarts})
	for len(s) > 1 && now.Sub(s[0].at) > 10*time.Minute {
		s = s[1:]
	}
	w.seen[id] = s
	return restarts - s[0].restarts
}

// end forgets the instances not read since begin.
func (w *restartWindow) end() {
	for id := range w.seen {
		if !w.current[id] {
			delete(w.seen, id)
		}
	}
}

// Thresholds of the rules on an app's traffic, over the last five minutes.
const (
	trafficWindowLength = 5 * time.Minute
	minRequests         = 20   // fewer say nothing
	maxErrorRate        = 0.05 // of answers that are 5xx
	maxP95              = time.Second
)

// trafficWindow keeps the router's counters of the last minutes, to read
// rates from.
type trafficWindow struct {
	samples []trafficSample
}

type trafficSample struct {
	at    time.Time
	stats map[string]router.AppStats
}

// conditions adds a sample and returns the apps whose error rate or 95th
// percentile latency over the window is too high.
func (w *trafficWindow) conditions(now time.Time, stats map[string]router.AppStats) []alerts.Condition {
	w.samples = append(w.samples, trafficSample{now, stats})
	for len(w.samples) > 1 && now.Sub(w.samples[0].at) > trafficWindowLength {
		w.samples = w.samples[1:]
	}
	first := w.samples[0].stats
	var out []alerts.Condition
	for app, cur := range stats {
		old, ok := first[app]
		if !ok {
			continue
		}
		var total, errors uint64
		for class, n := range cur.Requests {
			d := n - old.Requests[class]
			if n < old.Requests[class] { // the router restarted
				d = n
			}
			total += d
			if class == "5xx" {
				errors += d
			}
		}
		if total < minRequests {
			continue
		}
		if rate := float64(errors) / float64(total); rate > maxErrorRate {
			out = append(out, alerts.Condition{Rule: "error_rate", App: app,
				Message: fmt.Sprintf("%.0f%% of the requests to %s in the last %s were answered 5xx (%d of %d): see `paddock logs %s`", rate*100, app, trafficWindowLength, errors, total, app)})
		}
		if p95 := percentile(old.Durations, cur.Durations, 0.95); p95 > maxP95.Seconds() {
			out = append(out, alerts.Condition{Rule: "slow_responses", App: app,
				Message: fmt.Sprintf("the 95th percentile of %s's response times in the last %s is over %gs", app, trafficWindowLength, min(p95, router.DurationBounds[len(router.DurationBounds)-1]))})
		}
	}
	return out
}

// percentile returns the upper bound of the duration bucket that holds
// the q quantile of the requests counted between two readings (+Inf for
// the last bucket), in seconds.
func percentile(old, cur []uint64, q float64) float64 {
	var total uint64
	d := make([]uint64, len(cur))
	for i := range cur {
		if i < len(old) && cur[i] >= old[i] {
			d[i] = cur[i] - old[i]
		} else {
			d[i] = cur[i]
		}
		total += d[i]
	}
	if total == 0 {
		return 0
	}
	var seen uint64
	for i, n := range d {
		seen += n
		if float64(seen) >= q*float64(total) {
			if i < len(router.DurationBounds) {
				return router.DurationBounds[i]
			}
			return math.Inf(1)
		}
	}
	return math.Inf(1)
}

// alertHooks keeps the alerts' webhooks in the store, their secrets sealed
// by the keyring.
type alertHooks struct {
	st store.Store
	kr keyring
	m  *alerts.Manager
}

func webhookAAD(id string) []byte { return []byte("paddock webhook\x00" + id) }

// Active returns the alerts firing now.
func (h alertHooks) Active() []alerts.Alert { return h.m.Active() }

// Webhooks returns the webhooks with their secrets open.
func (h alertHooks) Webhooks(ctx context.Context) ([]alerts.Webhook, error) {
	list, err := h.st.ListWebhooks(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]alerts.Webhook, 0, len(list))
	for _, w := range list {
		secret, err := h.kr.Open(ctx, w.Secret, webhookAAD(w.ID))
		if err != nil {
			return nil, fmt.Errorf("open the secret of webhook %s: %w", w.ID, err)
		}
		out = append(out, alerts.Webhook{ID: w.ID, URL: w.URL, Secret: secret})
	}
	return out, nil
}

// List returns the webhooks without their secrets.
func (h alertHooks) List(ctx context.Context) ([]store.Webhook, error) {
	return h.st.ListWebhooks(ctx)
}

// Add adds a webhook and returns it with its new secret, shown once.
func (h alertHooks) Add(ctx context.Context, rawURL string) (store.Webhook, []byte, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
		return store.Webhook{}, nil, fmt.Errorf("%w: %q: give an http:// or https:// URL without credentials in it (the secret signs each notification)", alerts.ErrBadWebhook, rawURL)
	}
	id, secret := make([]byte, 6), make([]byte, 32)
	rand.Read(id)
	rand.Read(secret)
	w := store.Webhook{ID: "wh-" + hex.EncodeToString(id), URL: u.String(), CreatedAt: time.Now().UTC()}
	hexSecret := []byte(hex.EncodeToString(secret))
	if w.Secret, err = h.kr.Seal(ctx, hexSecret, webhookAAD(w.ID)); err != nil {
		return w, nil, err
	}
	return w, hexSecret, h.st.AddWebhook(ctx, w)
}

// Rules returns the rules set on app's metrics, or on every app's when app
// is "".
func (h alertHooks) Rules(ctx context.Context, app string) ([]store.AlertRule, error) {
	return h.st.ListAlertRules(ctx, app)
}

// AddRule sets a rule on app's metrics.
func (h alertHooks) AddRule(ctx context.Context, app, when string, holdFor time.Duration, by string) (store.AlertRule, error) {
	r, err := alerts.ParseRule(when, holdFor)
	if err != nil {
		return store.AlertRule{}, err
	}
	id := make([]byte, 4)
	rand.Read(id)
	sr := store.AlertRule{ID: "rule-" + hex.EncodeToString(id), App: app, Metric: r.Metric, Above: r.Above, Threshold: r.Threshold,
		For: r.For, CreatedBy: by, CreatedAt: time.Now().UTC()}
	return sr, h.st.AddAlertRule(ctx, sr)
}

// RemoveRule removes a rule of app's.
func (h alertHooks) RemoveRule(ctx context.Context, app, id string) error {
	return h.st.DeleteAlertRule(ctx, app, id)
}

// Remove removes a webhook.
func (h alertHooks) Remove(ctx context.Context, id string) error {
	return h.st.DeleteWebhook(ctx, id)
}
