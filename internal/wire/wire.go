// Package wire is the JSON the API speaks: the body of every request and
// answer under /v1, and the error envelope. The server (internal/api)
// converts its own types into these; clients (internal/client, the CLI and
// anything else) decode them.
//
// It imports only the standard library, so a client depends on the
// protocol and never on the server's packages (deploy, store, audit,
// runtime). A test in internal/client keeps it so.
//
// What is here is what a user may see: no numeric ids, uids, file paths or
// instance environments. A field is added to an answer by adding it here
// and to the server's conversion; nothing reaches the wire by accident.
package wire

import (
	"encoding/json"
	"time"
)

// Error is what the API answers on failure, inside ErrorBody. Code is
// stable (see the README's API reference); Message says what was wrong and
// what to do; RequestID is the server's id of the request, also in the
// X-Request-Id header and in the audit log.
type Error struct {
	Code      string `json:"code"`
	Message   string `json:"message"`
	RequestID string `json:"request_id,omitempty"`
}

// ErrorBody is the body of every error answer: {"error": {...}}.
type ErrorBody struct {
	Error *Error `json:"error"`
}

// Status is the answer of GET /v1/status.
type Status struct {
	Version string `json:"version"`
	User    string `json:"user"`
	// Health is the platform's, for admins only.
	Health *PlatformHealth `json:"health,omitempty"`
}

// PlatformHealth is how the platform's own parts are doing.
type PlatformHealth struct {
	Store   StoreHealth   `json:"store"`
	Runtime RuntimeHealth `json:"runtime"`
	Disk    DiskHealth    `json:"disk"`
}

// StoreHealth is the store's answer to a query.
type StoreHealth struct {
	OK        bool    `json:"ok"`
	Error     string  `json:"error,omitempty"`
	LatencyMS float64 `json:"latency_ms"`
}

// RuntimeHealth counts the instances by state.
type RuntimeHealth struct {
	OK        bool           `json:"ok"` // the runtime answered, and no instance is lost
	Error     string         `json:"error,omitempty"`
	Instances int            `json:"instances"`
	States    map[string]int `json:"states"`
}

// DiskHealth is the space of the filesystem of the data folder.
type DiskHealth struct {
	OK         bool   `json:"ok"` // at least 10% free
	Error      string `json:"error,omitempty"`
	FreeBytes  uint64 `json:"free_bytes"`
	TotalBytes uint64 `json:"total_bytes"`
}

// ShutdownRequest is the body of POST /v1/shutdown.
type ShutdownRequest struct {
	Apps bool `json:"apps"` // stop every app and the router too
}

// NameRequest is the body of the routes that create something by name:
// POST /v1/apps and POST /v1/teams.
type NameRequest struct {
	Name string `json:"name"`
}

// ImageDeploy is the body of a deploy of an image (Content-Type
// application/json), rather than of a folder (application/gzip).
type ImageDeploy struct {
	Image string `json:"image"`
	// Manifest is a paddock.toml for the image's process types; "": one
	// web process running the image's command.
	Manifest string `json:"manifest,omitempty"`
}

// CreateAppRequest creates an app.
type CreateAppRequest struct {
	Name string `json:"name"`
	// Placement is node labels the app's instances require (Kubernetes).
	Placement map[string]string `json:"placement,omitempty"`
}

// App is an app as listed and as created.
type App struct {
	Name      string    `json:"name"`
	Owner     string    `json:"owner"` // the user who created it
	CreatedAt time.Time `json:"created_at"`
	// Release is the version that should run; 0 before the first release.
	Release int `json:"release"`
	// Formation holds the instance counts set with scale, by process type.
	Formation map[string]int `json:"formation"`
	// Processes are the instance counts wanted by process type: the
	// current release's, with the formation's over them.
	Processes map[string]int `json:"processes"`
	// Placement is node labels the app's instances require.
	Placement map[string]string `json:"placement,omitempty"`
}

// AppInfo is the answer of GET /v1/apps/{app}.
type AppInfo struct {
	App
	URL     string   `json:"url"`
	Current *Release `json:"current,omitempty"`
	Domains []Domain `json:"domains"`
	// Nodes are the nodes the app's instances run on, on Kubernetes.
	Nodes []string `json:"nodes,omitempty"`
}

// Release statuses.
const (
	ReleasePending  = "pending"  // created, rollout not finished
	ReleaseDeployed = "deployed" // every instance healthy and the older ones stopped
	ReleaseFailed   = "failed"   // never became healthy; the app went back to the release before
)

// Release is one numbered release of an app.
type Release struct {
	App      string            `json:"app"`
	Version  int               `json:"version"`
	Build    string            `json:"build,omitempty"`    // the build's id; empty for a config-only release before the first deploy
	Artifact string            `json:"artifact,omitempty"` // content digest of the build's output, "sha256:…"
	Manifest json.RawMessage   `json:"manifest,omitempty"` // the processes the build declared
	Config   map[string]string `json:"config"`
	// Secrets pins the version of each secret the release's instances get,
	// by name: names and versions, never values.
	Secrets     map[string]int `json:"secrets"`
	Description string         `json:"description"`
	CreatedBy   string         `json:"created_by"`
	CreatedAt   time.Time      `json:"created_at"`
	Status      string         `json:"status"` // ReleasePending, ReleaseDeployed or ReleaseFailed
	Reason      string         `json:"reason,omitempty"`
}

// RollbackRequest is the body of POST /v1/apps/{app}/rollback.
type RollbackRequest struct {
	Version string `json:"version"` // "v3" or "3"
}

// ConfigPatch is the body of PATCH /v1/apps/{app}/config: a value sets a
// var, null unsets it.
type ConfigPatch map[string]*string

// Formation is the body and answer of /v1/apps/{app}/formation: instance
// counts by process type.
type Formation map[string]int

// Instance is one running (or once running) copy of a process type, as
// GET /v1/apps/{app}/instances reports it.
type Instance struct {
	ID        string    `json:"id"`
	App       string    `json:"app"`
	Process   string    `json:"process"`
	Release   int       `json:"release"`
	State     string    `json:"state"` // starting, running, backoff, crashloop, stopping, stopped, lost
	Port      int       `json:"port"`
	PID       int       `json:"pid,omitempty"`
	Restarts  int       `json:"restarts"`
	StartedAt time.Time `json:"started_at"` // when the current process started
	LastExit  string    `json:"last_exit,omitempty"`
	// Memory is the limit declared, in bytes; 0 means none. MemoryLimit
	// says how it is enforced, or why it is not.
	Memory         int64  `json:"memory,omitempty"`
	MemoryLimit    string `json:"memory_limit,omitempty"`
	MemoryEnforced bool   `json:"memory_enforced"`
	MemoryUsed     int64  `json:"memory_used,omitempty"`
	// CPUCores is the CPU the instance used over the last 10 s, in cores;
	// null before the server has measured it twice.
	CPUCores *float64 `json:"cpu_cores,omitempty"`
	Healthy  bool     `json:"healthy"`
	Health   string   `json:"health,omitempty"` // the last failed health check
	Retiring bool     `json:"retiring,omitempty"`
	// Node is the Kubernetes node of the instance's pod; "" on one machine.
	Node string `json:"node,omitempty"`
}

// LogLine is one line of GET /v1/apps/{app}/logs (newline-delimited JSON).
type LogLine struct {
	Time   time.Time `json:"time"`
	Source string    `json:"source"` // "web.x1y2z3", "build", "paddock"
	Stream string    `json:"stream"` // "out", "err", "paddock"
	Text   string    `json:"text"`
}

// Deploy event types, in the order a deploy sends them.
const (
	DeployStep    = "step"    // what the platform is doing
	DeployOutput  = "output"  // a line of the build's output
	DeployRelease = "release" // the last event on success, with the release
	DeployError   = "error"   // the last event on failure, with the error
)

// DeployEvent is one line of POST /v1/apps/{app}/deploys' streamed answer.
type DeployEvent struct {
	Type    string   `json:"type"`
	Text    string   `json:"text,omitempty"`
	Release *Release `json:"release,omitempty"`
	Error   *Error   `json:"error,omitempty"`
}

// Domain routes a host name to an app.
type Domain struct {
	Host      string    `json:"host"`
	App       string    `json:"app"`
	CreatedAt time.Time `json:"created_at"`
}

// DomainRequest is the body of POST /v1/apps/{app}/domains.
type DomainRequest struct {
	Host string `json:"host"`
}

// Grant gives a team a role on an app.
type Grant struct {
	App  string `json:"app"`
	Team string `json:"team"`
	Role string `json:"role"` // "viewer" or "developer"; "" removes the grant
}

// GrantRequest is the body of PUT /v1/apps/{app}/grants/{team}.
type GrantRequest struct {
	Role string `json:"role"`
}

// Principal is who a token acts as: GET /v1/whoami and POST /v1/login.
type Principal struct {
	User      string     `json:"user"`
	Token     string     `json:"token"`                // the token's name
	Role      string     `json:"role"`                 // the token's cap, or the user's role
	Apps      []string   `json:"apps,omitempty"`       // the token's app scope; empty for all
	ExpiresAt *time.Time `json:"expires_at,omitempty"` // when the token stops working
}

// User is a person or a machine account.
type User struct {
	Name      string    `json:"name"`
	Role      string    `json:"role"` // "admin", "developer" or "viewer"
	Disabled  bool      `json:"disabled"`
	CreatedAt time.Time `json:"created_at"`
}

// UserRequest is the body of POST /v1/users.
type UserRequest struct {
	Name string `json:"name"`
	Role string `json:"role"`
}

// Token is an API token as listed: never its value.
type Token struct {
	ID        string     `json:"id"` // the public part of the value, after "pdk_": what a secret scanner reports
	Name      string     `json:"name"`
	User      string     `json:"user"`
	Role      string     `json:"role,omitempty"` // caps the user's role; "" for the user's
	Apps      []string   `json:"apps,omitempty"` // only these apps; empty for every app the user may touch
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	LastUsed  *time.Time `json:"last_used,omitempty"`
}

// CreatedToken answers a token's creation: the only time its value is shown.
type CreatedToken struct {
	Token
	Value string `json:"value"`
}

// TokenRequest is the body of POST /v1/tokens.
type TokenRequest struct {
	Name    string   `json:"name"`
	User    string   `json:"user,omitempty"`    // default: the caller
	Expires string   `json:"expires,omitempty"` // "30d", "12h"; default: never, or when the calling token expires
	Role    string   `json:"role,omitempty"`    // a cap below the user's role
	Apps    []string `json:"apps,omitempty"`    // an app scope
}

// Team is a named group of users.
type Team struct {
	Name      string    `json:"name"`
	Members   []string  `json:"members"`
	CreatedAt time.Time `json:"created_at"`
}

// AuditEvent is one event of the audit trail, as GET /v1/audit lists it.
type AuditEvent struct {
	Seq       uint64    `json:"seq"`
	Time      time.Time `json:"time"`
	Actor     string    `json:"actor"`  // user name; "" for an unauthenticated request
	Token     string    `json:"token"`  // token name, never its value
	Source    string    `json:"source"` // client address
	Action    string    `json:"action"`
	Target    string    `json:"target"` // e.g. "app/shop"
	Outcome   string    `json:"outcome"`
	RequestID string    `json:"request_id"` // the server's id of the request
	// ClientRequestID is the X-Request-Id the client sent, if it was a
	// well-formed one; it is the client's claim, recorded beside the
	// server's id and never used in its place.
	ClientRequestID string `json:"client_request_id,omitempty"`
	Detail          string `json:"detail,omitempty"`
	Prev            string `json:"prev"`
	Hash            string `json:"hash"`
}

// VerifyReport is the answer of POST /v1/audit/verify.
type VerifyReport struct {
	Events      uint64 `json:"events"`
	Checkpoints int    `json:"checkpoints"`
	Head        string `json:"head"`
	OK          bool   `json:"ok"`
	FirstBad    uint64 `json:"first_bad,omitempty"`
	Error       string `json:"error,omitempty"`
}

// Event is a platform event of an app: a deploy, an instance's start,
// exit, health, a scale, a config or secret change, a backup.
type Event struct {
	ID       int64     `json:"id"`
	App      string    `json:"app"`
	Time     time.Time `json:"time"`
	Process  string    `json:"process,omitempty"`
	Instance string    `json:"instance,omitempty"`
	Message  string    `json:"message"`
}

// Alert is a condition that needs someone's attention, firing now.
type Alert struct {
	Rule    string    `json:"rule"`              // a built-in rule's name (crash_loop, …), or the condition of a rule set on the app ("p95 > 500ms")
	App     string    `json:"app"`               // "" for the platform's own (certificate_expiring)
	Subject string    `json:"subject,omitempty"` // the instance, volume or certificate it is about; the rule's ID for a rule set on the app
	Message string    `json:"message"`
	Since   time.Time `json:"since"`
}

// Webhook is where alerts are sent. Secret is in the answer to its
// creation only.
type Webhook struct {
	ID        string    `json:"id"`
	URL       string    `json:"url"`
	Secret    string    `json:"secret,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// AlertRule is a rule alerts fire by: a built-in one, which watches every
// app, or one set on an app's metrics.
type AlertRule struct {
	ID        string        `json:"id"`            // the built-in rule's name, or rule-…
	App       string        `json:"app,omitempty"` // "" for a built-in rule
	When      string        `json:"when"`          // the condition: "p95 > 500ms", or what a built-in rule watches
	For       time.Duration `json:"for_ns"`        // how long it holds before it fires
	Builtin   bool          `json:"builtin,omitempty"`
	CreatedBy string        `json:"created_by,omitempty"`
	CreatedAt time.Time     `json:"created_at,omitzero"`
}

// AlertRuleRequest sets a rule on an app's metrics: When is
// "METRIC > THRESHOLD" or "METRIC < THRESHOLD" (METRIC: requests, errors,
// error_rate, p50, p95, p99, cpu, memory), For how long it holds before it
// fires.
type AlertRuleRequest struct {
	When string        `json:"when"`
	For  time.Duration `json:"for_ns"`
}

// WebhookRequest adds a webhook.
type WebhookRequest struct {
	URL string `json:"url"`
}

// Metrics are an app's recent series: a point every Step seconds from
// Start; null where nothing is known.
type Metrics struct {
	App    string                `json:"app"`
	Start  time.Time             `json:"start"`
	Step   int                   `json:"step_seconds"`
	Series map[string][]*float64 `json:"series"` // requests_per_second, errors_per_second, p50_seconds, p95_seconds, p99_seconds, cpu_cores, memory_bytes
}

// Drain forwards an app's log lines. URL is shown without credentials,
// query or fragment.
type Drain struct {
	ID           string    `json:"id"`
	App          string    `json:"app"`
	URL          string    `json:"url"`
	Sent         int64     `json:"sent"`
	Dropped      int64     `json:"dropped"`
	LastError    string    `json:"last_error,omitempty"`
	FailingSince time.Time `json:"failing_since,omitzero"`
	CreatedAt    time.Time `json:"created_at"`
}

// DrainRequest adds a drain: syslog://HOST:PORT, syslog+tls://HOST:PORT or
// https://HOST/PATH; CA holds PEM certificates to trust beside the
// system's.
type DrainRequest struct {
	URL string `json:"url"`
	CA  string `json:"ca,omitempty"`
}

// Registry is where the platform pushes apps' images (on Kubernetes) and
// the logins it keeps for it: Push to push, Pull for the nodes to pull
// (Push too when there is no Pull). Passwords are never shown.
type Registry struct {
	Repository string              `json:"repository"`
	Insecure   bool                `json:"insecure,omitempty"`
	BaseImage  string              `json:"base_image,omitempty"`
	Push       *RegistryCredential `json:"push,omitempty"`
	Pull       *RegistryCredential `json:"pull,omitempty"`
}

// RegistryCredential is a kept registry login, without its password.
type RegistryCredential struct {
	Username  string    `json:"username"`
	UpdatedBy string    `json:"updated_by"`
	UpdatedAt time.Time `json:"updated_at"`
}

// RegistryCredentialRequest sets a registry login.
type RegistryCredentialRequest struct {
	Username string `json:"username"`
	Password string `json:"password"`
}
