package auth

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"paddock.dev/paddock/internal/store"
)

// ErrDenied is an authenticated request the policy refuses; the API
// answers 403.
var ErrDenied = errors.New("permission denied")

// Role is a level of rights; a higher role includes the lower ones.
type Role int

// Roles, lowest first. The zero Role is none.
const (
	Viewer Role = iota + 1
	Developer
	Admin
)

var roleNames = map[Role]string{Viewer: "viewer", Developer: "developer", Admin: "admin"}

func (r Role) String() string { return roleNames[r] }

// MarshalText writes the role's name.
func (r Role) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText reads a role's name.
func (r *Role) UnmarshalText(b []byte) error {
	v, err := ParseRole(string(b))
	*r = v
	return err
}

// ParseRole reads a role's name.
func ParseRole(s string) (Role, error) {
	for r, name := range roleNames {
		if name == s {
			return r, nil
		}
	}
	return 0, fmt.Errorf("unknown role %q: use admin, developer or viewer", s)
}

// Perm is what a route needs.
type Perm string

// Permissions. App permissions are checked against the app the request
// names; the others are global.
const (
	StatusRead  Perm = "status.read"  // who am I, server version: any valid token
	SystemAdmin Perm = "system.admin" // shut the platform down
	AppsList    Perm = "apps.list"    // list the apps one may see
	AppsCreate  Perm = "apps.create"  // developer
	AppRead     Perm = "app.read"     // viewer on the app: releases, ps, logs, config names and values
	AppWrite    Perm = "app.write"    // developer on the app: deploy, scale, config, rollback, domains
	AppAdmin    Perm = "app.admin"    // developer on the app: destroy; admin: grant
	TokensOwn   Perm = "tokens.own"   // list, create and revoke one's own tokens
	UsersAdmin  Perm = "users.admin"  // users, teams, other users' tokens
	AuditRead   Perm = "audit.read"   // admin

	// SecretsReveal is reading a secret's value: developer on the app. A
	// viewer sees secrets' names and versions only (AppRead).
	SecretsReveal Perm = "app.secrets.reveal"
	// KeysAdmin is the keyring's status, rotation, backup and restore: admin.
	KeysAdmin Perm = "keys.admin"
	// MetricsRead is the platform's metrics, every app's: admin.
	MetricsRead Perm = "metrics.read"
)

// global holds the least role each global permission needs.
var global = map[Perm]Role{
	StatusRead: Viewer, AppsList: Viewer, TokensOwn: Viewer,
	AppsCreate:  Developer,
	SystemAdmin: Admin, UsersAdmin: Admin, AuditRead: Admin, KeysAdmin: Admin, MetricsRead: Admin,
}

// onApp holds the least role on the app each app permission needs.
var onApp = map[Perm]Role{AppRead: Viewer, AppWrite: Developer, AppAdmin: Developer, SecretsReveal: Developer}

// Policy is the compiled, immutable authorization state. A nil or empty
// Policy denies everything; a deny (disabled user, token scope) wins over
// any grant.
type Policy struct {
	users map[string]userRights
}

type userRights struct {
	role     Role
	disabled bool
	apps     map[string]Role // the highest role on each app from teams and ownership
}

// Compile builds the policy from a snapshot of the store.
func Compile(a store.Access) *Policy {
	p := &Policy{users: map[string]userRights{}}
	members := map[string][]string{}
	for _, t := range a.Teams {
		members[t.Name] = t.Members
	}
	for _, u := range a.Users {
		role, err := ParseRole(u.Role)
		if err != nil {
			continue // an unknown role grants nothing
		}
		p.users[u.Name] = userRights{role: role, disabled: u.Disabled, apps: map[string]Role{}}
	}
	raise := func(user, app string, r Role) {
		if ur, ok := p.users[user]; ok && ur.apps[app] < r {
			ur.apps[app] = r
		}
	}
	for _, g := range a.Grants {
		r, err := ParseRole(g.Role)
		if err != nil {
			continue
		}
		for _, m := range members[g.Team] {
			raise(m, g.App, r)
		}
	}
	for app, owner := range a.Owners {
		raise(owner, app, Developer)
	}
	return p
}

// Decide returns nil if pr may use perm (on app, for app permissions), and
// an error wrapping ErrDenied that says why not.
func (p *Policy) Decide(pr Principal, perm Perm, app string) error {
	if p == nil {
		return fmt.Errorf("%w: no policy", ErrDenied)
	}
	u, ok := p.users[pr.User]
	switch {
	case !ok:
		return fmt.Errorf("%w: user %q is unknown", ErrDenied, pr.User)
	case u.disabled:
		return fmt.Errorf("%w: user %s is disabled", ErrDenied, pr.User)
	}
	role := min(u.role, pr.Role)
	if need, ok := global[perm]; ok {
		if len(pr.Apps) > 0 && perm != StatusRead && perm != AppsList && perm != TokensOwn {
			return fmt.Errorf("%w: token %s is limited to the apps %s", ErrDenied, pr.Token, strings.Join(pr.Apps, ", "))
		}
		if role < need {
			return fmt.Errorf("%w: %s needs the %s role; %s has %s", ErrDenied, perm, need, who(pr), role)
		}
		return nil
	}
	need, ok := onApp[perm]
	if !ok {
		return fmt.Errorf("%w: unknown permission %q", ErrDenied, perm)
	}
	if len(pr.Apps) > 0 && !slices.Contains(pr.Apps, app) {
		return fmt.Errorf("%w: token %s is limited to the apps %s, not %s", ErrDenied, pr.Token, strings.Join(pr.Apps, ", "), app)
	}
	if role < need {
		return fmt.Errorf("%w: %s on app %s needs the %s role; %s has %s", ErrDenied, perm, app, need, who(pr), role)
	}
	if role == Admin {
		return nil
	}
	onThis := min(u.apps[app], role)
	if onThis == 0 {
		return fmt.Errorf("%w: %s has no access to app %s: an admin can grant it with `paddock apps grant %s TEAM ROLE`", ErrDenied, who(pr), app, app)
	}
	if onThis < need {
		return fmt.Errorf("%w: %s on app %s needs the %s role; %s has %s on it", ErrDenied, perm, app, need, who(pr), onThis)
	}
	return nil
}

// Visible reports whether pr may see app at all (for filtering listings).
func (p *Policy) Visible(pr Principal, app string) bool {
	return p.Decide(pr, AppRead, app) == nil
}

func who(pr Principal) string {
	if pr.Token != "" {
		return fmt.Sprintf("user %s (token %s)", pr.User, pr.Token)
	}
	return "user " + pr.User
}
