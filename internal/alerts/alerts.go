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
	Event  func(app, msg string)
	Client *http.Client     // default: 10 s timeout
	Now    func() time.Time // default time.Now
	Logger *slog.Logger     // default: discard
}

// Manager evaluates conditions and sends what fires and resolves.
type Manager struct {
	cfg     Config
	mu      sync.Mutex
	seen    map[string]time.Time // conditions holding, since when
	firing  map[string]Alert
	sending sync.WaitGroup
}

// New returns a Manager.
func New(cfg Config) *Manager {
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Manager{cfg: cfg, seen: map[string]time.Time{}, firing: map[string]Alert{}}
}

// Run evaluates every interval until ctx ends, then waits for the
// notifications under way.
func (m *Manager) Run(ctx context.Context, interval time.Duration) {
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
		if !holding[k] {
			delete(m.firing, k)
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
		m.sending.Add(1)
		go func() {
			defer m.sending.Done()
			m.send(context.WithoutCancel(ctx), h, ts, body)
		}()
	}
}

// send posts body to a webhook, trying 5 times over about a minute.
func (m *Manager) send(ctx context.Context, h Webhook, ts string, body []byte) {
	wait := 2 * time.Second
	for try := 1; ; try++ {
		err := m.post(ctx, h, ts, body)
		if err == nil {
			return
		}
		if try == 5 {
			m.cfg.Logger.Warn("an alert did not reach its webhook", "webhook", h.ID, "err", err)
			return
		}
		time.Sleep(wait)
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
