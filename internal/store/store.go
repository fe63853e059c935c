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
	ErrConflict = errors.New("changed meanwhile")
)

// App is a named unit with a current release and a formation.
type App struct {
	// ID is assigned by CreateApp from a counter: never 0 and never given
	// to another app, even after this one is deleted (it names the app's
	// user on the machine).
	ID        int64     `json:"id"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
	// Release is the version that should run; 0 before the first release.
	Release int `json:"release"`
	// Formation holds the instance counts set with scale, by process type.
	// A process type not listed runs the count its manifest declares.
	Formation map[string]int `json:"formation"`
	Owner     string         `json:"owner"` // the user who created it
	// Placement is node labels the app's instances require, by label; a
	// runtime that cannot honour them runs nothing rather than ignore them.
	Placement map[string]string `json:"placement,omitempty"`
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
	App      string `json:"app"`
	Version  int    `json:"version"`
	Build    string `json:"build,omitempty"` // build ID; empty for a config-only release before the first deploy
	Artifact string `json:"artifact,omitempty"`
	// Image is an image named by the deploy (deploy --image), which runs
	// instead of an artifact's: Kubernetes only.
	Image       string            `json:"image,omitempty"`
	Manifest    json.RawMessage   `json:"manifest,omitempty"` // the build's manifest.Manifest as JSON
	Config      map[string]string `json:"config"`
	Description string            `json:"description"`
	CreatedBy   string            `json:"created_by"`
	CreatedAt   time.Time         `json:"created_at"`
	Status      string            `json:"status"`
	Reason      string            `json:"reason,omitempty"`
	// Secrets pins the version of each secret the release's instances
	// get, by name.
	Secrets map[string]int `json:"secrets,omitempty"`
}

// SecretVersion is one version of an app's secret, sealed: the store never
// sees a secret's value. A version that unsets the secret is Deleted and
// holds no value.
type SecretVersion struct {
	App       string    `json:"app"`
	Name      string    `json:"name"`
	Version   int       `json:"version"`
	Sealed    []byte    `json:"-"`
	Digest    string    `json:"digest,omitempty"` // a short keyed digest of the value, to tell versions apart
	AsFile    bool      `json:"as_file,omitempty"`
	Deleted   bool      `json:"deleted,omitempty"`
	CreatedBy string    `json:"created_by"`
	CreatedAt time.Time `json:"created_at"`
}

// Volume is a named, sized persistent volume of an app, kept by a CSI
// plugin; the store records where it is and what uses it.
type Volume struct {
	Name      string    `json:"name"` // unique on the platform
	App       string    `json:"app"`
	Size      int64     `json:"size"`              // bytes
	CSIID     string    `json:"-"`                 // the plugin's volume ID
	Process   string    `json:"process,omitempty"` // the process type it is attached to; "" when detached
	Path      string    `json:"path,omitempty"`    // where instances find it, relative to their working folder
	CreatedAt time.Time `json:"created_at"`
	// PerInstance gives each instance of the process type a volume of its
	// own: this one to the first, NAME-1, NAME-2… (made as needed, kept
	// when scaled down) to the others, like a StatefulSet's claims.
	PerInstance bool `json:"per_instance,omitempty"`
	// Template is the per-instance volume this one was made for a further
	// instance of; "" for a volume made on its own.
	Template string `json:"template,omitempty"`
}

// Snapshot is a point-in-time, read-only copy of a volume.
type Snapshot struct {
	ID        string    `json:"id"`     // unique on the platform
	Volume    string    `json:"volume"` // the volume it was taken of
	Name      string    `json:"name,omitempty"`
	CSIID     string    `json:"-"` // the plugin's snapshot ID
	Size      int64     `json:"size"`
	CreatedAt time.Time `json:"created_at"`
	// Checksum is the SHA-256 of the snapshot's content manifest (every
	// file's path, mode, size and SHA-256), taken when it was made; ""
	// when none could be.
	Checksum string `json:"checksum,omitempty"`
	// VerifiedAt is when the content last matched Checksum.
	VerifiedAt time.Time `json:"verified_at,omitzero"`
	Backup     bool      `json:"backup,omitempty"` // made by a backup schedule, which prunes it
}

// BackupSchedule takes a volume's snapshots every Every and keeps the
// newest Keep of them; a backup counts once it is verified.
type BackupSchedule struct {
	Volume        string        `json:"volume"`
	App           string        `json:"app"`
	Every         time.Duration `json:"every"`
	Keep          int           `json:"keep"`
	VerifyRestore bool          `json:"verify_restore,omitempty"` // also restore each into a scratch volume and compare
	LastRun       time.Time     `json:"last_run,omitzero"`
	LastSuccess   time.Time     `json:"last_success,omitzero"`
	LastError     string        `json:"last_error,omitempty"` // of the last run; "" when it succeeded
}

// Webhook is where alerts are sent; Secret signs them and is kept sealed
// by the server's keyring.
type Webhook struct {
	ID        string    `json:"id"`
	URL       string    `json:"url"`
	Secret    []byte    `json:"-"` // sealed
	CreatedAt time.Time `json:"created_at"`
}

// Credential is a login the platform keeps for a service it uses, such
// as the image registry; its password is kept sealed by the server's
// keyring.
type Credential struct {
	Name      string    `json:"name"`
	Username  string    `json:"username"`
	Password  []byte    `json:"-"` // sealed
	UpdatedBy string    `json:"updated_by"`
	UpdatedAt time.Time `json:"updated_at"`
}

// AlertRule is a threshold on one of an app's metrics that someone set
// (see internal/alerts).
type AlertRule struct {
	ID        string        `json:"id"`
	App       string        `json:"app"`
	Metric    string        `json:"metric"`
	Above     bool          `json:"above"` // > when true, < when false
	Threshold float64       `json:"threshold"`
	For       time.Duration `json:"for"`
	CreatedBy string        `json:"created_by"`
	CreatedAt time.Time     `json:"created_at"`
}

// Drain forwards an app's log lines to a URL, which is kept sealed by the
// server's keyring (it may carry a token).
type Drain struct {
	ID        string    `json:"id"`
	App       string    `json:"app"`
	URL       []byte    `json:"-"` // sealed
	CA        []byte    `json:"-"` // PEM certificates to trust beside the system's; nil: the system's
	CreatedAt time.Time `json:"created_at"`
}

// DataKey is a key that seals secrets, kept only wrapped by the
// key-encryption key (KEK) whose ID it records.
type DataKey struct {
	ID      int64
	Kind    string // what it is for: "value" (sealing) or "digest"
	Wrapped []byte
	KEKID   string
	Seals   int64 // values sealed with it so far
	Created time.Time
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

// User is a person or a machine account. Users authenticate with tokens.
type User struct {
	Name      string    `json:"name"`
	Role      string    `json:"role"` // "admin", "developer" or "viewer"
	Disabled  bool      `json:"disabled"`
	CreatedAt time.Time `json:"created_at"`
}

// Token is an API credential of a user, kept only as a hash of its secret.
type Token struct {
	ID        string     `json:"id"`   // public part of the token value, unique
	Name      string     `json:"name"` // unique
	User      string     `json:"user"`
	Hash      string     `json:"-"`              // hex SHA-256 of the token's secret part
	Role      string     `json:"role,omitempty"` // caps the user's role; "" for the user's
	Apps      []string   `json:"apps,omitempty"` // only these apps; empty for every app the user may touch
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	LastUsed  *time.Time `json:"last_used,omitempty"`
	// Parent is the ID of the token that made this one; "" for the first.
	Parent string `json:"parent,omitempty"`
}

// Grant gives a team a role on an app.
type Grant struct {
	App  string `json:"app"`
	Team string `json:"team"`
	Role string `json:"role"`
}

// Team is a named group of users.
type Team struct {
	Name      string    `json:"name"`
	Members   []string  `json:"members"`
	CreatedAt time.Time `json:"created_at"`
}

// Access is everything authorization decides from, read in one
// transaction.
type Access struct {
	Users  []User
	Teams  []Team
	Grants []Grant
	Owners map[string]string // app -> the user who created it
}

// NewRelease receives the app and its current release (nil before the
// first) inside the store's transaction and returns the release to add; the
// store numbers it and makes it the app's current release.
type NewRelease func(app App, current *Release) (Release, error)

// Store is the platform's declared state. Every method that changes state
// has committed durably when it returns nil.
type Store interface {
	// CreateApp adds a with the next app ID and returns it as stored.
	CreateApp(ctx context.Context, a App) (App, error)
	GetApp(ctx context.Context, name string) (App, error)
	ListApps(ctx context.Context) ([]App, error)
	// LastAppID is the highest app ID handed out so far: an app with a
	// higher one is not this store's.
	LastAppID(ctx context.Context) (int64, error)
	// DeleteApp removes the app with its releases, builds, domains and
	// events; ErrConflict while it has volumes.
	DeleteApp(ctx context.Context, name string) error
	// SetFormation merges counts into the app's formation.
	SetFormation(ctx context.Context, app string, counts map[string]int) (App, error)
	// SetRelease points the app at an existing release without creating
	// one, if the app still points at from; else it returns ErrConflict.
	SetRelease(ctx context.Context, app string, from, to int) error

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

	// Bootstrap creates the first user and its token in one transaction.
	Bootstrap(ctx context.Context, u User, t Token) error
	CreateUser(ctx context.Context, u User) error
	GetUser(ctx context.Context, name string) (User, error)
	ListUsers(ctx context.Context) ([]User, error)
	SetUserDisabled(ctx context.Context, name string, disabled bool) error

	AddToken(ctx context.Context, t Token) error
	GetToken(ctx context.Context, id string) (Token, error)
	ListTokens(ctx context.Context, user string) ([]Token, error) // user "" lists all
	// RevokeToken deletes the token called name (owner "" matches any
	// user) and the tokens it made for its own user, and theirs: a stolen
	// token leaves no offspring behind once revoked.
	RevokeToken(ctx context.Context, name, owner string) error
	TouchToken(ctx context.Context, id string, at time.Time) error

	CreateTeam(ctx context.Context, t Team) error
	AddTeamMember(ctx context.Context, team, user string) error
	RemoveTeamMember(ctx context.Context, team, user string) error
	SetGrant(ctx context.Context, g Grant) error // replaces the team's role on the app; role "" removes it
	// Access returns users, teams, grants and app owners as one snapshot.
	Access(ctx context.Context) (Access, error)

	// AddSecretVersion stores a version; ErrExists if the app already has
	// that version of that name.
	AddSecretVersion(ctx context.Context, v SecretVersion) error
	// ListSecretVersions returns the versions of one secret of app, or of
	// all its secrets when name is "", by name then version.
	ListSecretVersions(ctx context.Context, app, name string) ([]SecretVersion, error)
	// LatestSecretVersions returns the newest version of each secret of
	// app (an unset one's is Deleted), by name.
	LatestSecretVersions(ctx context.Context, app string) ([]SecretVersion, error)
	// PinnedSecretVersions returns the given versions of app's secrets
	// (name -> version), by name; those missing are left out.
	PinnedSecretVersions(ctx context.Context, app string, pins map[string]int) ([]SecretVersion, error)

	// CreateVolume records a volume; ErrExists if the name is taken.
	CreateVolume(ctx context.Context, v Volume) error
	GetVolume(ctx context.Context, name string) (Volume, error)
	ListVolumes(ctx context.Context, app string) ([]Volume, error) // app "" lists all
	// UpdateVolume replaces a volume's record with what fn makes of it,
	// in one transaction.
	UpdateVolume(ctx context.Context, name string, fn func(Volume) (Volume, error)) (Volume, error)
	DeleteVolume(ctx context.Context, name string) error
	AddSnapshot(ctx context.Context, s Snapshot) error
	GetSnapshot(ctx context.Context, id string) (Snapshot, error)
	ListSnapshots(ctx context.Context, volume string) ([]Snapshot, error)
	DeleteSnapshot(ctx context.Context, id string) error
	// UpdateSnapshot replaces a snapshot's record with what fn makes of it
	// (its checksum and verification), in one transaction.
	UpdateSnapshot(ctx context.Context, id string, fn func(Snapshot) (Snapshot, error)) (Snapshot, error)

	AddDrain(ctx context.Context, d Drain) error
	ListDrains(ctx context.Context, app string) ([]Drain, error) // app "" lists all
	DeleteDrain(ctx context.Context, app, id string) error       // ErrNotFound if the app has no such drain

	AddAlertRule(ctx context.Context, r AlertRule) error
	ListAlertRules(ctx context.Context, app string) ([]AlertRule, error) // app "" lists all
	DeleteAlertRule(ctx context.Context, app, id string) error           // ErrNotFound if the app has no such rule

	AddWebhook(ctx context.Context, w Webhook) error
	ListWebhooks(ctx context.Context) ([]Webhook, error)
	DeleteWebhook(ctx context.Context, id string) error // ErrNotFound if there is none

	// PutCredential creates or replaces a credential.
	PutCredential(ctx context.Context, c Credential) error
	GetCredential(ctx context.Context, name string) (Credential, error) // ErrNotFound if there is none
	DeleteCredential(ctx context.Context, name string) error            // ErrNotFound if there is none

	// PutBackupSchedule creates or replaces a volume's backup schedule.
	PutBackupSchedule(ctx context.Context, b BackupSchedule) error
	// ListBackupSchedules returns app's schedules, or all when app is "".
	ListBackupSchedules(ctx context.Context, app string) ([]BackupSchedule, error)
	// DeleteBackupSchedule removes a volume's schedule; ErrNotFound if
	// it has none.
	DeleteBackupSchedule(ctx context.Context, volume string) error

	// DataKeys returns every data key.
	DataKeys(ctx context.Context) ([]DataKey, error)
	// AddDataKey stores a data key and returns it with its ID.
	AddDataKey(ctx context.Context, k DataKey) (DataKey, error)
	// CountSeals adds n to a data key's seal count, atomically, and
	// returns the new count.
	CountSeals(ctx context.Context, id int64, n int64) (int64, error)
	// RewrapDataKeys replaces every data key with what fn makes of it, in
	// one transaction: all of them or none.
	RewrapDataKeys(ctx context.Context, fn func(DataKey) (DataKey, error)) error

	Close() error
}
