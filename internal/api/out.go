package api

import (
	"regexp"

	"paddock.dev/paddock/internal/audit"
	"paddock.dev/paddock/internal/auth"
	"paddock.dev/paddock/internal/deploy"
	"paddock.dev/paddock/internal/logs"
	"paddock.dev/paddock/internal/store"
	"paddock.dev/paddock/internal/wire"
)

// The conversions from the server's types to what the API answers. Each
// copies the fields a user may see, by name: a field added to a domain type
// (a uid, a folder) reaches no client until it is added here and to wire.

// DeployEvent is one line of a deploy's streamed answer.
type DeployEvent = wire.DeployEvent

func appOut(a store.App) wire.App {
	f := a.Formation
	if f == nil {
		f = map[string]int{}
	}
	return wire.App{Name: a.Name, Owner: a.Owner, CreatedAt: a.CreatedAt, Release: a.Release, Formation: f, Placement: a.Placement}
}

func appInfoOut(i deploy.AppInfo) wire.AppInfo {
	out := wire.AppInfo{App: appOut(i.App), URL: i.URL, Domains: listOut(i.Domains, domainOut), Nodes: i.Nodes}
	out.Processes = i.Process
	if i.Current != nil {
		rel := releaseOut(*i.Current)
		out.Current = &rel
	}
	if out.Processes == nil {
		out.Processes = map[string]int{}
	}
	return out
}

func releaseOut(r store.Release) wire.Release {
	if r.Config == nil {
		r.Config = map[string]string{}
	}
	if r.Secrets == nil {
		r.Secrets = map[string]int{}
	}
	return wire.Release{App: r.App, Version: r.Version, Build: r.Build, Artifact: r.Artifact, Manifest: r.Manifest,
		Config: r.Config, Secrets: r.Secrets, Description: r.Description, CreatedBy: r.CreatedBy, CreatedAt: r.CreatedAt,
		Status: r.Status, Reason: r.Reason}
}

func secretOut(i deploy.SecretInfo) wire.Secret {
	return wire.Secret{Name: i.Name, Version: i.Version, Digest: i.Digest, AsFile: i.AsFile, UpdatedBy: i.UpdatedBy, UpdatedAt: i.UpdatedAt}
}

// secretVersionOut copies a version's description; its sealed value stays
// behind.
func secretVersionOut(v store.SecretVersion) wire.SecretVersion {
	return wire.SecretVersion{Version: v.Version, Digest: v.Digest, AsFile: v.AsFile, Deleted: v.Deleted, CreatedBy: v.CreatedBy, CreatedAt: v.CreatedAt}
}

func keyStatusOut(k KeyStatus) wire.KeyStatus {
	return wire.KeyStatus{KEK: k.KEK, KEKSource: k.KEKSource, MaxSeals: k.MaxSeals, DataKeys: listOut(k.DataKeys, func(d DataKeyStatus) wire.DataKey {
		return wire.DataKey{ID: d.ID, Kind: d.Kind, KEK: d.KEK, Seals: d.Seals, Active: d.Active, CreatedAt: d.CreatedAt}
	})}
}

func domainOut(d store.Domain) wire.Domain {
	return wire.Domain{Host: d.Host, App: d.App, CreatedAt: d.CreatedAt}
}

// hostPath matches an absolute path of at least two parts in a message
// from the runtime (a cgroup folder in an error, say).
var hostPath = regexp.MustCompile(`/[^\s:'"()]+/[^\s:'"()]+`)

func instanceOut(in deploy.Instance) wire.Instance {
	return wire.Instance{ID: in.ID, App: in.App, Process: in.Process, Release: in.Release, State: string(in.State),
		Port: in.Port, PID: in.PID, Restarts: in.Restarts, StartedAt: in.StartedAt, LastExit: in.LastExit,
		Memory: in.Memory, MemoryLimit: hostPath.ReplaceAllString(in.MemoryLimit, "[path]"), MemoryEnforced: in.MemoryEnforced,
		MemoryUsed: in.MemoryUsed, Healthy: in.Healthy, Health: in.Health, Retiring: in.Retiring, Node: in.Node}
}

func lineOut(l logs.Line) wire.LogLine {
	return wire.LogLine{Time: l.Time, Source: l.Source, Stream: l.Stream, Text: l.Text}
}

func userOut(u store.User) wire.User {
	return wire.User{Name: u.Name, Role: u.Role, Disabled: u.Disabled, CreatedAt: u.CreatedAt}
}

func tokenOut(t store.Token) wire.Token {
	return wire.Token{ID: t.ID, Name: t.Name, User: t.User, Role: t.Role, Apps: t.Apps,
		CreatedAt: t.CreatedAt, ExpiresAt: t.ExpiresAt, LastUsed: t.LastUsed}
}

func teamOut(t store.Team) wire.Team {
	m := t.Members
	if m == nil {
		m = []string{}
	}
	return wire.Team{Name: t.Name, Members: m, CreatedAt: t.CreatedAt}
}

func grantOut(g store.Grant) wire.Grant {
	return wire.Grant{App: g.App, Team: g.Team, Role: g.Role}
}

func principalOut(p auth.Principal) wire.Principal {
	return wire.Principal{User: p.User, Token: p.Token, Role: p.Role.String(), Apps: p.Apps, ExpiresAt: p.ExpiresAt}
}

func eventOut(e audit.Event) wire.AuditEvent {
	return wire.AuditEvent{Seq: e.Seq, Time: e.Time, Actor: e.Actor, Token: e.Token, Source: e.Source, Action: e.Action,
		Target: e.Target, Outcome: e.Outcome, RequestID: e.RequestID, ClientRequestID: e.ClientRequestID,
		Detail: e.Detail, Prev: e.Prev, Hash: e.Hash}
}

// listOut converts a list, answering [] rather than null for none.
func listOut[T, U any](in []T, f func(T) U) []U {
	out := make([]U, 0, len(in))
	for _, v := range in {
		out = append(out, f(v))
	}
	return out
}
