package api

import (
	"context"
	"errors"
	"net/http"
	"time"

	"paddock.dev/paddock/internal/alerts"
	"paddock.dev/paddock/internal/store"
	"paddock.dev/paddock/internal/wire"
)

// Alerts is what the alert routes need.
type Alerts interface {
	Active() []alerts.Alert
	List(ctx context.Context) ([]store.Webhook, error)
	Add(ctx context.Context, url string) (store.Webhook, []byte, error)
	Remove(ctx context.Context, id string) error
	Rules(ctx context.Context, app string) ([]store.AlertRule, error)
	AddRule(ctx context.Context, app, when string, holdFor time.Duration, by string) (store.AlertRule, error)
	RemoveRule(ctx context.Context, app, id string) error
}

var errNoAlerts = &Error{Status: http.StatusServiceUnavailable, Code: "alerts_unavailable", Message: "this server keeps no alerts"}

// listAlerts lists the alerts firing for the apps the caller may read.
func (s *Server) listAlerts(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.Alerts == nil {
		return errNoAlerts
	}
	out := []wire.Alert{}
	for _, a := range visible(s, r, s.cfg.Alerts.Active(), func(a alerts.Alert) string { return a.App }) {
		out = append(out, wire.Alert{Rule: a.Rule, App: a.App, Subject: a.Subject, Message: a.Message, Since: a.Since})
	}
	return writeJSON(w, http.StatusOK, out)
}

func webhookOut(h store.Webhook) wire.Webhook {
	return wire.Webhook{ID: h.ID, URL: h.URL, CreatedAt: h.CreatedAt}
}

func (s *Server) listWebhooks(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.Alerts == nil {
		return errNoAlerts
	}
	list, err := s.cfg.Alerts.List(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, listOut(list, webhookOut))
}

// addWebhook adds a webhook and answers with its secret, this once.
func (s *Server) addWebhook(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.Alerts == nil {
		return errNoAlerts
	}
	var req wire.WebhookRequest
	if err := readJSON(w, r, &req); err != nil {
		return err
	}
	h, secret, err := s.cfg.Alerts.Add(r.Context(), req.URL)
	if errors.Is(err, alerts.ErrBadWebhook) {
		return invalid("%s", err.Error())
	}
	if err != nil {
		return err
	}
	out := webhookOut(h)
	out.Secret = string(secret)
	return writeJSON(w, http.StatusCreated, out)
}

func (s *Server) removeWebhook(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.Alerts == nil {
		return errNoAlerts
	}
	if err := s.cfg.Alerts.Remove(r.Context(), r.PathValue("webhook")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func ruleOut(r store.AlertRule) wire.AlertRule {
	return wire.AlertRule{ID: r.ID, App: r.App, For: r.For, CreatedBy: r.CreatedBy, CreatedAt: r.CreatedAt,
		When: alerts.Rule{Metric: r.Metric, Above: r.Above, Threshold: r.Threshold}.When()}
}

// listRules lists the built-in rules and the rules set on the apps the
// caller may read (?app=NAME: on that app only).
func (s *Server) listRules(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.Alerts == nil {
		return errNoAlerts
	}
	out := []wire.AlertRule{}
	for _, b := range alerts.Builtins {
		out = append(out, wire.AlertRule{ID: b.Name, When: b.Description, Builtin: true})
	}
	app := r.URL.Query().Get("app")
	rules, err := s.cfg.Alerts.Rules(r.Context(), app)
	if err != nil {
		return err
	}
	for _, rule := range visible(s, r, rules, func(r store.AlertRule) string { return r.App }) {
		out = append(out, ruleOut(rule))
	}
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) addRule(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.Alerts == nil {
		return errNoAlerts
	}
	var req wire.AlertRuleRequest
	if err := readJSON(w, r, &req); err != nil {
		return err
	}
	rule, err := s.cfg.Alerts.AddRule(r.Context(), r.PathValue("app"), req.When, req.For, principal(r).User)
	if errors.Is(err, alerts.ErrBadRule) {
		return invalid("%s", err.Error())
	}
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, ruleOut(rule))
}

func (s *Server) removeRule(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.Alerts == nil {
		return errNoAlerts
	}
	if err := s.cfg.Alerts.RemoveRule(r.Context(), r.PathValue("app"), r.PathValue("rule")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
