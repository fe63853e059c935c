package alerts

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestFireOnceResolveOnce: a condition fires once it has held for its
// time, and not again while it holds; it resolves once when it is gone.
// Each is an event and a signed notification that checks out.
func TestFireOnceResolveOnce(t *testing.T) {
	secret := []byte("webhook-secret")
	var mu sync.Mutex
	var got []Notification
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if want := "sha256=" + Sign(secret, r.Header.Get("X-Paddock-Timestamp"), body); r.Header.Get("X-Paddock-Signature") != want {
			t.Errorf("signature %q, want %q", r.Header.Get("X-Paddock-Signature"), want)
		}
		var n Notification
		if err := json.Unmarshal(body, &n); err != nil {
			t.Error(err)
		}
		mu.Lock()
		got = append(got, n)
		mu.Unlock()
	}))
	defer srv.Close()

	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	var conds []Condition
	var events []string
	m := New(Config{
		Conditions: func(context.Context) ([]Condition, error) { return conds, nil },
		Webhooks: func(context.Context) ([]Webhook, error) {
			return []Webhook{{ID: "w", URL: srv.URL, Secret: secret}}, nil
		},
		Event: func(app, msg string) { events = append(events, app+": "+msg) },
		Now:   func() time.Time { return now },
	})
	ctx := context.Background()
	crash := Condition{Rule: "crash_loop", App: "shop", Subject: "shop.web.1", Message: "web.1 crashes", For: 30 * time.Second}
	conds = []Condition{crash}
	for i := 0; i < 3; i++ { // held 0, 10, 20 s: not yet
		m.Evaluate(ctx)
		now = now.Add(10 * time.Second)
	}
	if len(m.Active()) != 0 || len(events) != 0 {
		t.Fatalf("fired before its time: %v %v", m.Active(), events)
	}
	for i := 0; i < 5; i++ { // held 30 s and more: once
		m.Evaluate(ctx)
		now = now.Add(10 * time.Second)
	}
	if a := m.Active(); len(a) != 1 || a[0].Rule != "crash_loop" {
		t.Errorf("active: %+v", a)
	}
	conds = nil
	for i := 0; i < 2; i++ { // gone 0 and 10 s: not resolved yet
		m.Evaluate(ctx)
		now = now.Add(10 * time.Second)
	}
	if len(m.Active()) != 1 {
		t.Errorf("resolved before its condition was gone for 30 s: %v", m.Active())
	}
	for i := 0; i < 4; i++ {
		m.Evaluate(ctx)
		now = now.Add(10 * time.Second)
	}
	m.sending.Wait()
	if len(events) != 2 || !strings.Contains(events[0], "FIRING") || !strings.Contains(events[1], "resolved") {
		t.Errorf("events: %q, want one firing, one resolved", events)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 || got[0].Status != "firing" || got[1].Status != "resolved" || got[0].Alert.Subject != "shop.web.1" {
		t.Errorf("notifications: %+v", got)
	}
}

// TestNoResolveWithoutAReading: conditions that cannot be read resolve
// nothing.
func TestNoResolveWithoutAReading(t *testing.T) {
	fail := false
	m := New(Config{Conditions: func(context.Context) ([]Condition, error) {
		if fail {
			return nil, io.ErrUnexpectedEOF
		}
		return []Condition{{Rule: "r", App: "a"}}, nil
	}})
	m.Evaluate(context.Background())
	fail = true
	m.Evaluate(context.Background())
	if len(m.Active()) != 1 {
		t.Errorf("an unreadable evaluation resolved the alert: %v", m.Active())
	}
}
