package api

import (
	"context"
	"errors"
	"net/http"

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
