// Package api serves the platform's HTTP API under /v1: JSON in and out,
// errors as {"error": {"code", "message", "request_id"}} with stable codes.
// Every route but /healthz and /v1/ca needs a bearer token. The bodies it
// reads and writes are the types of internal/wire; this package converts
// its domain's types into them, so that nothing internal (ids, uids, paths,
// environments) reaches a client by accident. Only the composition root
// (internal/daemon) and tests import it.
package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"paddock.dev/paddock/internal/audit"
	"paddock.dev/paddock/internal/auth"
	"paddock.dev/paddock/internal/deploy"
	"paddock.dev/paddock/internal/metrics"
	"paddock.dev/paddock/internal/store"
	"paddock.dev/paddock/internal/wire"
)

// Limits on request bodies.
const (
	maxJSON   = 1 << 20
	maxUpload = 512 << 20
)

// Authenticator checks a bearer token.
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (auth.Principal, error)
}

// Auditor records audit events; Append has made the event durable when it
// returns nil.
type Auditor interface {
	Append(ctx context.Context, e audit.Event) (audit.Event, error)
	List(ctx context.Context, f audit.Filter) ([]audit.Event, error)
	Export(ctx context.Context, w io.Writer) error
	Verify(ctx context.Context) audit.Report
}

// Config configures a Server.
type Config struct {
	Deploy *deploy.Service  // required
	Store  store.Store      // required: users, tokens, teams
	Auth   Authenticator    // required
	Authz  *auth.Authorizer // required
	Audit  Auditor          // required
	// Registry is the image registry's logins; nil: no registry (apps
	// run on this machine).
	Registry Registry
	// Volumes manages apps' volumes; nil: those routes answer 503
	// volumes_unavailable.
	Volumes Volumes
	// Keys manages the keyring of secrets under /v1/keys; nil: those
	// routes answer 503 secrets_unavailable.
	Keys    Keys
	Limiter *auth.Limiter // failed authentications; default 100 an hour per address and per account (see guard.go)
	CA      []byte        // PEM of the CA that signed the server's certificate, served at /v1/ca
	Version string
	// Drains are the apps' log drains; nil: those routes answer 503.
	Drains Drains
	// History is the apps' recent metrics; nil: that route answers 503.
	History *metrics.History
	// Alerts are the alerts firing and their webhooks; nil: those routes
	// answer 503.
	Alerts Alerts
	// Metrics counts the API's requests and serves GET /metrics; nil: no
	// counting, and that route answers 503.
	Metrics *metrics.Metrics
	// InstanceCPU returns an instance's CPU, in cores, over the last few
	// seconds; nil: not reported.
	InstanceCPU func(id string) (float64, bool)
	// Health reports how the platform's parts are doing, to admins in GET
	// /v1/status; nil: not reported.
	Health func(context.Context) wire.PlatformHealth
	// Shutdown stops the server, and every app too when apps is true. It
	// is called after the response is sent.
	Shutdown func(apps bool)
	Now      func() time.Time // default time.Now
	Logger   *slog.Logger     // default: discard
}

// Server is the API's HTTP handler.
type Server struct {
	cfg    Config
	d      *deploy.Service
	st     store.Store
	log    *slog.Logger
	now    func() time.Time
	mux    *http.ServeMux
	routes []route
	limits bodyLimits // time limits on reading bodies (body.go)
	// rejected remembers token values that failed, so that a repeat is
	// refused without a store lookup (see guard.go).
	rejected *rejectedTokens
}

// New returns the API handler.
func New(cfg Config) (*Server, error) {
	if cfg.Deploy == nil || cfg.Store == nil || cfg.Auth == nil || cfg.Authz == nil || cfg.Audit == nil {
		return nil, errors.New("api: Deploy, Store, Auth, Authz and Audit are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Limiter == nil {
		cfg.Limiter = &auth.Limiter{Max: 100, Window: time.Hour, Now: cfg.Now}
	}
	s := &Server{cfg: cfg, d: cfg.Deploy, st: cfg.Store, log: cfg.Logger, now: cfg.Now, mux: http.NewServeMux(), limits: defaultBodyLimits,
		rejected: newRejectedTokens(maxRejectedTokens, cfg.Limiter.Window, cfg.Now)}
	s.routes = s.table()
	for _, rt := range s.routes {
		s.mux.Handle(rt.Pattern, s.guard(rt))
	}
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, &Error{Status: http.StatusNotFound, Code: "no_route",
			Message: fmt.Sprintf("no API route %s %s: see the API reference in the README", r.Method, r.URL.Path)})
	})
	return s, nil
}

type handler func(w http.ResponseWriter, r *http.Request) error

// Route is one API route and what it needs.
type Route struct {
	Pattern string    // method and path, as http.ServeMux takes them
	Perm    auth.Perm // what the caller needs; "" only for public routes
	Public  bool      // served without a token
	Action  string    // the audit event's action; GET and HEAD routes without one are not audited
	// Creates is the kind of thing the route creates ("app", "user", …),
	// named by the "name" field of its JSON body: the audit event's target
	// is then KIND/NAME.
	Creates string
	// Upload marks a route whose body is a stream of any size up to
	// maxUpload: it may take as long as it keeps moving (see body.go).
	Upload bool
	// Read marks an audited route that changes nothing (a secret's value,
	// a volume's export): its handler runs while its event is made
	// durable, and no byte of its answer leaves before that.
	Read bool
}

type route struct {
	Route
	h handler
}

// Routes lists every route of the API with the permission it needs.
func Routes() []Route {
	table := (&Server{}).table()
	out := make([]Route, len(table))
	for i, r := range table {
		out[i] = r.Route
	}
	return out
}

// table is the one place where routes declare their permission.
func (s *Server) table() []route {
	r := func(pattern string, perm auth.Perm, action string, h handler) route {
		return route{Route{Pattern: pattern, Perm: perm, Action: action}, h}
	}
	creates := func(kind string, rt route) route { rt.Creates = kind; return rt }
	upload := func(rt route) route { rt.Upload = true; return rt }
	read := func(rt route) route { rt.Read = true; return rt }
	return []route{
		{Route{Pattern: "GET /healthz", Public: true}, func(w http.ResponseWriter, r *http.Request) error {
			_, err := io.WriteString(w, "ok\n")
			return err
		}},
		{Route{Pattern: "GET /v1/ca", Public: true}, s.ca},
		r("GET /v1/status", auth.StatusRead, "", s.status),
		r("GET /v1/whoami", auth.StatusRead, "", s.whoami),
		r("POST /v1/login", auth.StatusRead, "auth.login", s.login),
		r("POST /v1/shutdown", auth.SystemAdmin, "system.shutdown", s.shutdown),
		// The platform's metrics in the Prometheus exposition format: every
		// app's, so admins' (a scraper gets an admin's token, or scrapes
		// the --metrics listener on a private address instead).
		r("GET /metrics", auth.MetricsRead, "", s.metrics),
		// Alerts of the apps one may read; their webhooks are admins'.
		r("GET /v1/alerts", auth.AppsList, "", s.listAlerts),
		r("GET /v1/alerts/webhooks", auth.SystemAdmin, "", s.listWebhooks),
		r("POST /v1/alerts/webhooks", auth.SystemAdmin, "alerts.webhooks.add", s.addWebhook),
		r("DELETE /v1/alerts/webhooks/{webhook}", auth.SystemAdmin, "alerts.webhooks.remove", s.removeWebhook),
		// The image registry's logins: admins', their passwords write-only.
		r("GET /v1/registry", auth.SystemAdmin, "", s.getRegistry),
		r("PUT /v1/registry/credentials/{kind}", auth.SystemAdmin, "registry.credentials.set", s.setRegistryCredential),
		r("DELETE /v1/registry/credentials/{kind}", auth.SystemAdmin, "registry.credentials.remove", s.deleteRegistryCredential),
		r("GET /v1/alerts/rules", auth.AppsList, "", s.listRules),
		r("POST /v1/apps/{app}/alerts/rules", auth.AppWrite, "apps.alerts.add", s.addRule),
		r("DELETE /v1/apps/{app}/alerts/rules/{rule}", auth.AppWrite, "apps.alerts.remove", s.removeRule),

		r("GET /v1/apps", auth.AppsList, "", s.listApps),
		r("GET /v1/instances", auth.AppsList, "", s.allInstances),
		r("GET /v1/metrics/apps", auth.AppsList, "", s.allMetrics),
		creates("app", r("POST /v1/apps", auth.AppsCreate, "apps.create", s.createApp)),
		r("GET /v1/apps/{app}", auth.AppRead, "", s.getApp),
		r("DELETE /v1/apps/{app}", auth.AppAdmin, "apps.destroy", s.destroyApp),
		upload(r("POST /v1/apps/{app}/deploys", auth.AppWrite, "apps.deploy", s.deploy)),
		r("GET /v1/apps/{app}/releases", auth.AppRead, "", s.listReleases),
		r("GET /v1/apps/{app}/releases/{version}", auth.AppRead, "", s.getRelease),
		r("POST /v1/apps/{app}/rollback", auth.AppWrite, "apps.rollback", s.rollback),
		r("GET /v1/apps/{app}/config", auth.AppRead, "", s.getConfig),
		r("PATCH /v1/apps/{app}/config", auth.AppWrite, "apps.config", s.setConfig),
		r("GET /v1/apps/{app}/formation", auth.AppRead, "", s.getFormation),
		r("PATCH /v1/apps/{app}/formation", auth.AppWrite, "apps.scale", s.scale),
		r("GET /v1/apps/{app}/instances", auth.AppRead, "", s.instances),
		r("POST /v1/apps/{app}/instances/{instance}/restart", auth.AppWrite, "apps.restart", s.restartInstance),
		r("GET /v1/apps/{app}/logs", auth.AppRead, "", s.logs),
		r("GET /v1/apps/{app}/events", auth.AppRead, "", s.events),
		r("GET /v1/apps/{app}/metrics", auth.AppRead, "", s.appMetrics),
		r("GET /v1/apps/{app}/drains", auth.AppRead, "", s.listDrains),
		r("POST /v1/apps/{app}/drains", auth.AppWrite, "apps.drains.add", s.addDrain),
		r("DELETE /v1/apps/{app}/drains/{drain}", auth.AppWrite, "apps.drains.remove", s.removeDrain),
		r("GET /v1/apps/{app}/domains", auth.AppRead, "", s.listDomains),
		r("POST /v1/apps/{app}/domains", auth.AppWrite, "apps.domains.add", s.addDomain),
		r("DELETE /v1/apps/{app}/domains/{host}", auth.AppWrite, "apps.domains.remove", s.removeDomain),
		r("PUT /v1/apps/{app}/grants/{team}", auth.UsersAdmin, "apps.grant", s.grant),

		// Secrets: names, versions and digests to viewers; values only
		// through reveal, which is audited like a change (allowed, denied
		// or failed), naming the app and the secret, never the value.
		// Volumes: an app's data; deleting one is the app admin's.
		r("GET /v1/volumes", auth.AppsList, "", s.listAllVolumes),
		r("GET /v1/apps/{app}/volumes", auth.AppRead, "", s.listVolumes),
		r("POST /v1/apps/{app}/volumes", auth.AppWrite, "apps.volumes.create", s.createVolume),
		r("GET /v1/apps/{app}/volumes/{volume}", auth.AppRead, "", s.getVolume),
		r("PATCH /v1/apps/{app}/volumes/{volume}", auth.AppWrite, "apps.volumes.resize", s.resizeVolume),
		r("DELETE /v1/apps/{app}/volumes/{volume}", auth.AppAdmin, "apps.volumes.delete", s.deleteVolume),
		r("PUT /v1/apps/{app}/volumes/{volume}/attachment", auth.AppWrite, "apps.volumes.attach", s.attachVolume),
		r("DELETE /v1/apps/{app}/volumes/{volume}/attachment", auth.AppWrite, "apps.volumes.detach", s.detachVolume),
		r("GET /v1/apps/{app}/volumes/{volume}/snapshots", auth.AppRead, "", s.listSnapshots),
		r("POST /v1/apps/{app}/volumes/{volume}/snapshots", auth.AppWrite, "apps.volumes.snapshot", s.createSnapshot),
		r("DELETE /v1/apps/{app}/volumes/{volume}/snapshots/{snapshot}", auth.AppWrite, "apps.volumes.snapshot-delete", s.deleteSnapshot),
		r("POST /v1/apps/{app}/volumes/{volume}/restore", auth.AppWrite, "apps.volumes.restore", s.restoreVolume),
		// Verifying reads the whole snapshot: its developers'.
		r("POST /v1/apps/{app}/volumes/{volume}/snapshots/{snapshot}/verify", auth.AppWrite, "apps.volumes.verify", s.verifySnapshot),
		// An export takes the app's data off the platform: its developers'.
		read(r("GET /v1/apps/{app}/volumes/{volume}/snapshots/{snapshot}/export", auth.AppWrite, "apps.volumes.export", s.exportSnapshot)),
		upload(r("POST /v1/apps/{app}/volumes/{volume}/import", auth.AppWrite, "apps.volumes.import", s.importVolume)),
		r("GET /v1/backups", auth.AppsList, "", s.listBackups),
		r("PUT /v1/apps/{app}/volumes/{volume}/backups", auth.AppWrite, "apps.volumes.backups-schedule", s.scheduleBackups),
		r("DELETE /v1/apps/{app}/volumes/{volume}/backups", auth.AppWrite, "apps.volumes.backups-unschedule", s.unscheduleBackups),
		r("POST /v1/apps/{app}/volumes/{volume}/backups", auth.AppWrite, "apps.volumes.backup", s.backupNow),
		r("GET /v1/apps/{app}/secrets", auth.AppRead, "", s.listSecrets),
		r("PUT /v1/apps/{app}/secrets/{name}", auth.AppWrite, "apps.secrets.set", s.setSecret),
		r("DELETE /v1/apps/{app}/secrets/{name}", auth.AppWrite, "apps.secrets.unset", s.unsetSecret),
		r("GET /v1/apps/{app}/secrets/{name}/versions", auth.AppRead, "", s.secretVersions),
		read(r("POST /v1/apps/{app}/secrets/{name}/reveal", auth.SecretsReveal, "apps.secrets.reveal", s.revealSecret)),
		r("GET /v1/keys", auth.KeysAdmin, "", s.keyStatus),
		r("POST /v1/keys/rotate", auth.KeysAdmin, "keys.rotate", s.rotateKeys),
		r("POST /v1/keys/export", auth.KeysAdmin, "keys.export", s.exportKeys),
		r("POST /v1/keys/import", auth.KeysAdmin, "keys.import", s.importKeys),

		r("GET /v1/users", auth.UsersAdmin, "", s.listUsers),
		creates("user", r("POST /v1/users", auth.UsersAdmin, "users.create", s.createUser)),
		r("POST /v1/users/{user}/disable", auth.UsersAdmin, "users.disable", s.disableUser),
		r("GET /v1/tokens", auth.TokensOwn, "", s.listTokens),
		creates("token", r("POST /v1/tokens", auth.TokensOwn, "tokens.create", s.createToken)),
		r("DELETE /v1/tokens/{token}", auth.TokensOwn, "tokens.revoke", s.revokeToken),
		r("GET /v1/teams", auth.UsersAdmin, "", s.listTeams),
		creates("team", r("POST /v1/teams", auth.UsersAdmin, "teams.create", s.createTeam)),
		r("PUT /v1/teams/{team}/members/{user}", auth.UsersAdmin, "teams.add-member", s.addMember),
		r("DELETE /v1/teams/{team}/members/{user}", auth.UsersAdmin, "teams.remove-member", s.removeMember),

		r("GET /v1/audit", auth.AuditRead, "", s.auditList),
		r("GET /v1/audit/export", auth.AuditRead, "", s.auditExport),
		r("POST /v1/audit/verify", auth.AuditRead, "", s.auditVerify),
	}
}
