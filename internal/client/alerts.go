package client

import (
	"context"
	"net/url"
	"time"

	"paddock.dev/paddock/internal/wire"
)

// Alerts lists the alerts firing for the apps the caller may read.
func (c *Client) Alerts(ctx context.Context) ([]wire.Alert, error) {
	var out []wire.Alert
	return out, c.do(ctx, "GET", "/v1/alerts", nil, &out)
}

// AlertRules lists the built-in alert rules and those set on the apps the
// caller may read (app "": every such app).
func (c *Client) AlertRules(ctx context.Context, app string) ([]wire.AlertRule, error) {
	var out []wire.AlertRule
	p := "/v1/alerts/rules"
	if app != "" {
		p += "?app=" + url.QueryEscape(app)
	}
	return out, c.do(ctx, "GET", p, nil, &out)
}

// AddAlertRule sets a rule on an app's metrics, such as "p95 > 500ms".
func (c *Client) AddAlertRule(ctx context.Context, app, when string, holdFor time.Duration) (wire.AlertRule, error) {
	var out wire.AlertRule
	return out, c.do(ctx, "POST", appPath(app, "/alerts/rules"), wire.AlertRuleRequest{When: when, For: holdFor}, &out)
}

// RemoveAlertRule removes a rule set on an app's metrics.
func (c *Client) RemoveAlertRule(ctx context.Context, app, id string) error {
	return c.do(ctx, "DELETE", appPath(app, "/alerts/rules/"+url.PathEscape(id)), nil, nil)
}

// Webhooks lists where alerts are sent (admins).
func (c *Client) Webhooks(ctx context.Context) ([]wire.Webhook, error) {
	var out []wire.Webhook
	return out, c.do(ctx, "GET", "/v1/alerts/webhooks", nil, &out)
}

// AddWebhook sends alerts to a URL too; the answer holds the secret that
// signs them, this once.
func (c *Client) AddWebhook(ctx context.Context, u string) (wire.Webhook, error) {
	var out wire.Webhook
	return out, c.do(ctx, "POST", "/v1/alerts/webhooks", wire.WebhookRequest{URL: u}, &out)
}

// RemoveWebhook stops sending alerts to a webhook.
func (c *Client) RemoveWebhook(ctx context.Context, id string) error {
	return c.do(ctx, "DELETE", "/v1/alerts/webhooks/"+url.PathEscape(id), nil, nil)
}

// Metrics returns an app's recent series since since ("1h"; "" for an hour).
func (c *Client) Metrics(ctx context.Context, app, since string) (wire.Metrics, error) {
	var out wire.Metrics
	p := appPath(app, "/metrics")
	if since != "" {
		p += "?since=" + url.QueryEscape(since)
	}
	return out, c.do(ctx, "GET", p, nil, &out)
}

// Drains lists an app's log drains.
func (c *Client) Drains(ctx context.Context, app string) ([]wire.Drain, error) {
	var out []wire.Drain
	return out, c.do(ctx, "GET", appPath(app, "/drains"), nil, &out)
}

// AddDrain forwards an app's log lines to a URL; ca (PEM) is trusted
// beside the system's certificates.
func (c *Client) AddDrain(ctx context.Context, app, u, ca string) (wire.Drain, error) {
	var out wire.Drain
	return out, c.do(ctx, "POST", appPath(app, "/drains"), wire.DrainRequest{URL: u, CA: ca}, &out)
}

// RemoveDrain stops forwarding to a drain.
func (c *Client) RemoveDrain(ctx context.Context, app, id string) error {
	return c.do(ctx, "DELETE", appPath(app, "/drains/", url.PathEscape(id)), nil, nil)
}

// Registry returns the image registry and its kept logins, without
// passwords.
func (c *Client) Registry(ctx context.Context) (wire.Registry, error) {
	var out wire.Registry
	return out, c.do(ctx, "GET", "/v1/registry", nil, &out)
}

// SetRegistryLogin keeps the registry login of kind "push" or "pull".
func (c *Client) SetRegistryLogin(ctx context.Context, kind, username, password string) (wire.Registry, error) {
	var out wire.Registry
	return out, c.do(ctx, "PUT", "/v1/registry/credentials/"+url.PathEscape(kind), wire.RegistryCredentialRequest{Username: username, Password: password}, &out)
}

// DeleteRegistryLogin forgets the registry login of kind.
func (c *Client) DeleteRegistryLogin(ctx context.Context, kind string) error {
	return c.do(ctx, "DELETE", "/v1/registry/credentials/"+url.PathEscape(kind), nil, nil)
}
