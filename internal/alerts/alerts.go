// Package alerts turns conditions the platform sees (an instance in a crash
// loop, an app with no healthy instance, a volume nearly full, a failed
// backup, a high error rate) into alerts that fire once when a condition
// has held for its time and resolve once when it is gone, each told to the
// app's events and to every webhook, signed with HMAC-SHA256 so that the
// receiver can check it came from the platform.
package alerts

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"
)

// ErrBadWebhook is a webhook URL that is not one.
var ErrBadWebhook = errors.New("invalid webhook")

// Condition is something wrong that holds now.
type Condition struct {
	Rule    string        // "crash_loop", "no_healthy_instance", …
	App     string        //
	Subject string        // what it is about within the app: an instance, a volume; "" for the app
	Message string        // what is wrong and what to do
	For     time.Duration // how long it must hold before it fires
}

func (c Condition) key() string { return c.Rule + "/" + c.App + "/" + c.Subject }

// Alert is a condition that has held for its time.
type Alert struct {
	Rule    string    `json:"rule"`
	App     string    `json:"app"`
	Subject string    `json:"subject,omitempty"`
	Message string    `json:"message"`
	Since   time.Time `json:"since"` // when the condition was first seen
}

// Webhook receives alerts: a POST of a JSON Notification, signed in the
// X-Paddock-Signature header ("sha256=" and the hex HMAC-SHA256 of the
// timestamp header, a dot and the body, under Secret).
type Webhook struct {
	ID     string
	URL    string
	Secret []byte
}

// Notification is what a webhook receives.
type Notification struct {
	Status string    `json:"status"` // "firing" or "resolved"
	Alert  Alert     `json:"alert"`
	Time   time.Time `json:"time"`
}

// Config configures a Manager.
type Config struct {
	// Conditions returns what is wrong now; required.
	Conditions func(context.Context) ([]Condition, error)
	// Webhooks returns where to send alerts; nil: nowhere.
	Webhooks func(context.Context) ([]Webhook, error)
	// Event tells an app's events; nil: not told.
	Event func(app, msg string)
	// ResolveAfter is how long a firing alert's condition must be gone
	// before it resolves, so that one near its threshold does not flap;
	// default 30 s.
	ResolveAfter time.Duration
	Client       *http.Client     // default: 10 s timeout, no redirects
	Now          func() time.Time // default time.Now
	Logger       *slog.Logger     // default: discard
}

// Manager evaluates conditions and sends what fires and resolves.
type Manager struct {
	cfg     Config
	mu      sync.Mutex
	seen    map[string]time.Time // conditions holding, since when
	gone    map[string]time.Time // firing alerts whose condition is gone, since when
	firing  map[string]Alert
	queues  map[string]chan delivery // by webhook: one sender each, in order
	ctx     context.Context          // ends the senders' waits
	sending sync.WaitGroup           // deliveries queued and not done
}

type delivery struct {
	hook Webhook
	ts   string
	body []byte
}

// New returns a Manager.
func New(cfg Config) *Manager {
	if cfg.Client == nil {
		// A redirect is an answer, not a hop: a receiver must not bounce
		// the platform's POST elsewhere.
		cfg.Client = &http.Client{Timeout: 10 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	if cfg.ResolveAfter == 0 {
		cfg.ResolveAfter = 30 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Manager{cfg: cfg, seen: map[string]time.Time{}, gone: map[string]time.Time{}, firing: map[string]Alert{},
		queues: map[string]chan delivery{}, ctx: context.Background()}
}

// Run evaluates every interval until ctx ends, then waits for the
// notifications under way.
func (m *Manager) Run(ctx context.Context, interval time.Duration) {
	m.mu.Lock()
	m.ctx = ctx
	m.mu.Unlock()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		m.Evaluate(ctx)
		select {
		case <-ctx.Done():
			m.sending.Wait()
			return
		case <-t.C:
		}
	}
}

// Evaluate reads the conditions once: those that have held for their time
// fire, firing ones that no longer hold resolve.
func (m *Manager) Evaluate(ctx context.Context) {
	conds, err := m.cfg.Conditions(ctx)
	if err != nil {
		// Without a reading nothing resolves: no storm of false "resolved".
		m.cfg.Logger.Warn("read the alerts' conditions", "err", err)
		return
	}
	now := m.cfg.Now()
	var fired, resolved []Alert
	m.mu.Lock()
	holding := map[string]bool{}
	for _, c := range conds {
		k := c.key()
		holding[k] = true
		since, ok := m.seen[k]
		if !ok {
			since = now
			m.seen[k] = now
		}
		if _, on := m.firing[k]; !on && now.Sub(since) >= c.For {
			a := Alert{Rule: c.Rule, App: c.App, Subject: c.Subject, Message: c.Message, Since: since}
			m.firing[k] = a
			fired = append(fired, a)
		}
	}
	for k := range m.seen {
		if !holding[k] {
			delete(m.seen, k)
		}
	}
	for k, a := range m.firing {
		if holding[k] {
			delete(m.gone, k)
			continue
		}
		since, ok := m.gone[k]
		if !ok {
			since = now
			m.gone[k] = now
		}
		if now.Sub(since) >= m.cfg.ResolveAfter {
			delete(m.firing, k)
			delete(m.gone, k)
			resolved = append(resolved, a)
		}
	}
	m.mu.Unlock()
	for _, a := range fired {
		m.tell(ctx, "firing", a, now)
	}
	for _, a := range resolved {
		m.tell(ctx, "resolved", a, now)
	}
}

// Active returns the alerts firing now, oldest first.
func (m *Manager) Active() []Alert {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Alert, 0, len(m.firing))
	for _, a := range m.firing {
		out = append(out, a)
	}
	slices.SortFunc(out, func(a, b Alert) int { return a.Since.Compare(b.Since) })
	return out
}

func (m *Manager) tell(ctx context.Context, status string, a Alert, now time.Time) {
	if m.cfg.Event != nil {
		if status == "firing" {
			m.cfg.Event(a.App, "alert "+a.Rule+" FIRING: "+a.Message)
		} else {
			m.cfg.Event(a.App, "alert "+a.Rule+" resolved: "+a.Message)
		}
	}
	if m.cfg.Webhooks == nil {
		return
	}
	hooks, err := m.cfg.Webhooks(ctx)
	if err != nil {
		m.cfg.Logger.Warn("list the alerts' webhooks", "err", err)
		return
	}
	body, err := json.Marshal(Notification{Status: status, Alert: a, Time: now.UTC()})
	if err != nil {
		return
	}
	ts := strconv.FormatInt(now.Unix(), 10)
	for _, h := range hooks {
		m.enqueue(delivery{hook: h, ts: ts, body: body})
	}
}

// enqueue hands a delivery to its webhook's sender, which delivers one
// at a time, in order: a receiver never sees a resolution before its
// firing.
func (m *Manager) enqueue(d delivery) {
	m.mu.Lock()
	defer m.mu.Unlock()
	key := d.hook.ID + " " + d.hook.URL
	q, ok := m.queues[key]
	if !ok {
		q = make(chan delivery, 256)
		m.queues[key] = q
		go m.deliver(m.ctx, q)
	}
	// Counted before it is queued: the sender may finish it at once.
	m.sending.Add(1)
	select {
	case q <- d:
	default:
		m.sending.Done()
		m.cfg.Logger.Warn("an alert's webhook is behind by 256 notifications: this one is dropped", "webhook", d.hook.ID)
	}
}

// deliver sends a webhook's deliveries in order, each tried 5 times over
// about a minute, until ctx ends.
func (m *Manager) deliver(ctx context.Context, q chan delivery) {
	for d := range q {
		m.send(ctx, d)
		m.sending.Done()
	}
}

func (m *Manager) send(ctx context.Context, d delivery) {
	wait := 2 * time.Second
	for try := 1; ; try++ {
		err := m.post(context.WithoutCancel(ctx), d.hook, d.ts, d.body)
		if err == nil {
			return
		}
		if try == 5 || ctx.Err() != nil {
			m.cfg.Logger.Warn("an alert did not reach its webhook", "webhook", d.hook.ID, "err", err)
			return
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
		wait *= 2
	}
}

func (m *Manager) post(ctx context.Context, h Webhook, ts string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "paddock-alerts")
	req.Header.Set("X-Paddock-Timestamp", ts)
	req.Header.Set("X-Paddock-Signature", "sha256="+Sign(h.Secret, ts, body))
	resp, err := m.cfg.Client.Do(req)
	if err != nil {
		// Not the URL: it may hold a token.
		var ue *url.Error
		if errors.As(err, &ue) {
			return ue.Err
		}
		return err
	}
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		return fmt.Errorf("the webhook answered %s", resp.Status)
	}
	return nil
}

// Sign is the hex HMAC-SHA256 under secret of the timestamp, a dot and the
// body, as a receiver computes it to check a notification.
func Sign(secret []byte, timestamp string, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(timestamp))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return hex.EncodeToString(mac.Sum(nil))
}
