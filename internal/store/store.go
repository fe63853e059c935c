// Package store defines the declared state of the platform and the interface
// every storage backend implements. The embedded default is sqlite/; a
// backend must pass the contract tests in storetest/.
//
// Values returned by a Store are copies: callers may keep them but must not
// expect changes to them to reach the store except through Store methods.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

// Sentinel errors. Backends wrap them; callers use errors.Is.
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
)

// App is a named unit with a current release and a formation.
type App struct {
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
	// Release is the version that should run; 0 before the first release.
	Release int `json:"release"`
	// Formation holds the instance counts set with scale, by process type.
	// A process type not listed runs the count its manifest declares.
	Formation map[string]int `json:"formation"`
}

// Release statuses.
const (
	StatusPending  = "pending"  // created, rollout not finished
	StatusDeployed = "deployed" // every instance healthy and the older ones stopped
	StatusFailed   = "failed"   // never became healthy; the app went back to the previous release
)

// Release is an immutable pairing of a build with a config, numbered per app.
// Only Status and StatusReason change after creation.
type Release struct {
	App         string            `json:"app"`
	Version     int               `json:"version"`
	Build       string            `json:"build,omitempty"` // build ID; empty for a config-only release before the first deploy
	Artifact    string            `json:"artifact,omitempty"`
	Manifest    json.RawMessage   `json:"manifest,omitempty"` // the build's manifest.Manifest as JSON
	Config      map[string]string `json:"config"`
	Description string            `json:"description"`
	CreatedBy   string            `json:"created_by"`
	CreatedAt   time.Time         `json:"created_at"`
	Status      string            `json:"status"`
	Reason      string            `json:"reason,omitempty"`
}

// Build is the record of one build of uploaded source.
type Build struct {
	ID        string          `json:"id"`
	App       string          `json:"app"`
	Artifact  string          `json:"artifact"` // content digest, "sha256:…"
	Manifest  json.RawMessage `json:"manifest"`
	CreatedAt time.Time       `json:"created_at"`
}

// Domain routes a host name to an app.
type Domain struct {
	Host      string    `json:"host"`
	App       string    `json:"app"`
	CreatedAt time.Time `json:"created_at"`
}

// Event is something the platform did or saw, shown among an app's logs.
type Event struct {
	ID       int64     `json:"id"`
	App      string    `json:"app"`
	Time     time.Time `json:"time"`
	Process  string    `json:"process,omitempty"`
	Instance string    `json:"instance,omitempty"`
	Message  string    `json:"message"`
}

// Token is an API credential, kept only as a hash.
type Token struct {
	Name      string    `json:"name"`
	Hash      string    `json:"-"` // hex SHA-256 of the token value
	Role      string    `json:"role"`
	CreatedAt time.Time `json:"created_at"`
}

// NewRelease receives the app and its current release (nil before the
// first) inside the store's transaction and returns the release to add; the
// store numbers it and makes it the app's current release.
type NewRelease func(app App, current *Release) (Release, error)

// Store is the platform's declared state. Every method that changes state
// has committed durably when it returns nil.
type Store interface {
	CreateApp(ctx context.Context, a App) error
	GetApp(ctx context.Context, name string) (App, error)
	ListApps(ctx context.Context) ([]App, error)
	// DeleteApp removes the app with its releases, builds, domains and events.
	DeleteApp(ctx context.Context, name string) error
	// SetFormation merges counts into the app's formation.
	SetFormation(ctx context.Context, app string, counts map[string]int) (App, error)
	// SetRelease points the app at an existing release without creating one.
	SetRelease(ctx context.Context, app string, version int) error

	CreateBuild(ctx context.Context, b Build) error
	GetBuild(ctx context.Context, id string) (Build, error)

	// AddRelease creates the next release of app from fn, atomically.
	AddRelease(ctx context.Context, app string, fn NewRelease) (Release, error)
	GetRelease(ctx context.Context, app string, version int) (Release, error)
	ListReleases(ctx context.Context, app string) ([]Release, error)
	SetReleaseStatus(ctx context.Context, app string, version int, status, reason string) error

	AddDomain(ctx context.Context, d Domain) error
	RemoveDomain(ctx context.Context, app, host string) error
	ListDomains(ctx context.Context, app string) ([]Domain, error) // app "" lists all

	AddEvent(ctx context.Context, e Event) error
	ListEvents(ctx context.Context, app string, since time.Time, afterID int64) ([]Event, error)

	AddToken(ctx context.Context, t Token) error
	TokenByHash(ctx context.Context, hash string) (Token, error)
	CountTokens(ctx context.Context) (int, error)

	Close() error
}
