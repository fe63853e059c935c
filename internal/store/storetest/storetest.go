// Package storetest is the contract every store.Store implementation must
// pass. A backend's test calls Run with a function that opens a fresh,
// empty store.
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"paddock.dev/paddock/internal/store"
)

// Run runs the contract against stores made by open.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"apps", testApps},
		{"releases", testReleases},
		{"concurrent releases are numbered without gaps", testConcurrentReleases},
		{"domains", testDomains},
		{"events", testEvents},
		{"users and tokens", testTokens},
		{"revoking a token revokes its offspring", testTokenOffspring},
		{"teams and grants", testTeams},
		{"delete cascades", testDeleteCascades},
		{"app IDs are never reused", testAppIDs},
		{"secret versions and release pins", testSecrets},
		{"data keys", testDataKeys},
		{"volumes and snapshots", testVolumes},
		{"webhooks", testWebhooks},
		{"drains", testDrains},
		{"alert rules", testAlertRules},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() { s.Close() })
			tc.fn(t, s)
		})
	}
}

var now = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func testApps(t *testing.T, s store.Store) {
	ctx := context.Background()
	a, err := s.CreateApp(ctx, store.App{Name: "a", CreatedAt: now})
	if err != nil {
		t.Fatal(err)
	}
	if a.ID == 0 {
		t.Errorf("CreateApp: got ID 0, want one assigned")
	}
	if _, err := s.CreateApp(ctx, store.App{Name: "a", CreatedAt: now}); !errors.Is(err, store.ErrExists) {
		t.Errorf("second CreateApp: got %v, want ErrExists", err)
	}
	if _, err := s.GetApp(ctx, "b"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetApp of a missing app: got %v, want ErrNotFound", err)
	}
	if _, err := s.SetFormation(ctx, "a", map[string]int{"web": 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetFormation(ctx, "a", map[string]int{"worker": 1}); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetApp(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if got.Formation["web"] != 3 || got.Formation["worker"] != 1 || !got.CreatedAt.Equal(now) {
		t.Errorf("GetApp: got %+v, want web=3 worker=1 created %v", got, now)
	}
	list, err := s.ListApps(ctx)
	if err != nil || len(list) != 1 || list[0].Name != "a" {
		t.Errorf("ListApps: got %+v, %v", list, err)
	}
}

func addRelease(t *testing.T, s store.Store, build string, config map[string]string) store.Release {
	t.Helper()
	rel, err := s.AddRelease(context.Background(), "a", func(a store.App, cur *store.Release) (store.Release, error) {
		return store.Release{Build: build, Manifest: json.RawMessage(`{"processes":{}}`), Config: config, Description: "d", CreatedBy: "admin", CreatedAt: now}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return rel
}

func testReleases(t *testing.T, s store.Store) {
	ctx := context.Background()
	s.CreateApp(ctx, store.App{Name: "a", CreatedAt: now})
	r1 := addRelease(t, s, "b1", map[string]string{"K": "1"})
	r2 := addRelease(t, s, "b2", map[string]string{"K": "2"})
	if r1.Version != 1 || r2.Version != 2 || r2.Status != store.StatusPending {
		t.Fatalf("versions: got v%d, v%d (%s), want v1, v2 pending", r1.Version, r2.Version, r2.Status)
	}
	a, _ := s.GetApp(ctx, "a")
	if a.Release != 2 {
		t.Errorf("current release: got v%d, want v2", a.Release)
	}
	var seen *store.Release
	s.AddRelease(ctx, "a", func(a store.App, cur *store.Release) (store.Release, error) {
		seen = cur
		return store.Release{}, errors.New("refused")
	})
	if seen == nil || seen.Version != 2 || seen.Config["K"] != "2" {
		t.Errorf("AddRelease passed current %+v, want v2 with K=2", seen)
	}
	if a, _ := s.GetApp(ctx, "a"); a.Release != 2 {
		t.Errorf("a refused release changed the current one to v%d", a.Release)
	}
	if err := s.SetReleaseStatus(ctx, "a", 1, store.StatusFailed, "why"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetRelease(ctx, "a", 2, 1); err != nil {
		t.Fatal(err)
	}
	if err := s.SetRelease(ctx, "a", 2, 1); !errors.Is(err, store.ErrConflict) {
		t.Errorf("SetRelease from a release no longer current: got %v, want ErrConflict", err)
	}
	if err := s.SetRelease(ctx, "a", 1, 9); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("SetRelease to a missing version: got %v, want ErrNotFound", err)
	}
	rels, err := s.ListReleases(ctx, "a")
	if err != nil || len(rels) != 2 || rels[0].Version != 2 || rels[1].Status != store.StatusFailed || rels[1].Reason != "why" {
		t.Errorf("ListReleases: got %+v, %v", rels, err)
	}
	if _, err := s.ListReleases(ctx, "zz"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("ListReleases of a missing app: got %v, want ErrNotFound", err)
	}
}

func testConcurrentReleases(t *testing.T, s store.Store) {
	ctx := context.Background()
	s.CreateApp(ctx, store.App{Name: "a", CreatedAt: now})
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			addRelease(t, s, fmt.Sprint("b", i), nil)
		}()
	}
	wg.Wait()
	rels, _ := s.ListReleases(ctx, "a")
	for i, r := range rels {
		if want := 20 - i; r.Version != want {
			t.Fatalf("release %d: got v%d, want v%d", i, r.Version, want)
		}
	}
}

func testDomains(t *testing.T, s store.Store) {
	ctx := context.Background()
	s.CreateApp(ctx, store.App{Name: "a", CreatedAt: now})
	if err := s.AddDomain(ctx, store.Domain{Host: "x.com", App: "a", CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddDomain(ctx, store.Domain{Host: "x.com", App: "a", CreatedAt: now}); !errors.Is(err, store.ErrExists) {
		t.Errorf("duplicate domain: got %v, want ErrExists", err)
	}
	if err := s.AddDomain(ctx, store.Domain{Host: "y.com", App: "nope", CreatedAt: now}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("domain of a missing app: got %v, want ErrNotFound", err)
	}
	ds, _ := s.ListDomains(ctx, "")
	if len(ds) != 1 || ds[0].Host != "x.com" {
		t.Errorf("ListDomains: got %+v", ds)
	}
	if err := s.RemoveDomain(ctx, "a", "x.com"); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveDomain(ctx, "a", "x.com"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("removing a missing domain: got %v, want ErrNotFound", err)
	}
}

func testEvents(t *testing.T, s store.Store) {
	ctx := context.Background()
	s.CreateApp(ctx, store.App{Name: "a", CreatedAt: now})
	for i := 0; i < 3; i++ {
		s.AddEvent(ctx, store.Event{App: "a", Time: now.Add(time.Duration(i) * time.Minute), Message: fmt.Sprint("e", i)})
	}
	evs, err := s.ListEvents(ctx, "a", now.Add(time.Minute), 0)
	if err != nil || len(evs) != 2 || evs[0].Message != "e1" {
		t.Fatalf("ListEvents since: got %+v, %v", evs, err)
	}
	evs, _ = s.ListEvents(ctx, "a", time.Time{}, evs[0].ID)
	if len(evs) != 1 || evs[0].Message != "e2" {
		t.Errorf("ListEvents after an ID: got %+v", evs)
	}
	for i := 3; i < 10200; i++ {
		s.AddEvent(ctx, store.Event{App: "a", Time: now.Add(time.Duration(i) * time.Minute), Message: fmt.Sprint("e", i)})
	}
	evs, _ = s.ListEvents(ctx, "a", time.Time{}, 0)
	if n := len(evs); n == 0 || n > 10000 || evs[n-1].Message != "e10199" {
		t.Errorf("ListEvents of a long history: got %d events ending %+v, want at most 10000 ending with the newest", n, evs[len(evs)-1])
	}
}

func testTokens(t *testing.T, s store.Store) {
	ctx := context.Background()
	if err := s.AddToken(ctx, store.Token{ID: "i1", Name: "ci", User: "nobody", Hash: "h", CreatedAt: now}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("token of a missing user: got %v, want ErrNotFound", err)
	}
	if err := s.CreateUser(ctx, store.User{Name: "ann", Role: "developer", CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateUser(ctx, store.User{Name: "ann", Role: "viewer", CreatedAt: now}); !errors.Is(err, store.ErrExists) {
		t.Errorf("second CreateUser: got %v, want ErrExists", err)
	}
	exp := now.Add(time.Hour)
	tok := store.Token{ID: "i1", Name: "ci", User: "ann", Hash: "h1", Role: "viewer", Apps: []string{"a"}, CreatedAt: now, ExpiresAt: &exp}
	if err := s.AddToken(ctx, tok); err != nil {
		t.Fatal(err)
	}
	if err := s.AddToken(ctx, store.Token{ID: "i2", Name: "ci", User: "ann", Hash: "h2", CreatedAt: now}); !errors.Is(err, store.ErrExists) {
		t.Errorf("duplicate token name: got %v, want ErrExists", err)
	}
	if err := s.TouchToken(ctx, "i1", now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetToken(ctx, "i1")
	if err != nil || got.Hash != "h1" || got.Role != "viewer" || len(got.Apps) != 1 || !got.ExpiresAt.Equal(exp) || !got.LastUsed.Equal(now.Add(time.Minute)) {
		t.Errorf("GetToken: got %+v, %v", got, err)
	}
	if list, _ := s.ListTokens(ctx, "ann"); len(list) != 1 {
		t.Errorf("ListTokens: got %d, want 1", len(list))
	}
	if err := s.RevokeToken(ctx, "ci", "bob"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("revoking another user's token as its owner: got %v, want ErrNotFound", err)
	}
	if err := s.RevokeToken(ctx, "ci", "ann"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetToken(ctx, "i1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetToken after revoke: got %v, want ErrNotFound", err)
	}
	if err := s.SetUserDisabled(ctx, "ann", true); err != nil {
		t.Fatal(err)
	}
	if u, _ := s.GetUser(ctx, "ann"); !u.Disabled {
		t.Errorf("user not disabled")
	}
}

// testTokenOffspring: revoking a token revokes the tokens it made for its
// own user, and theirs, but not what it made for another user.
func testTokenOffspring(t *testing.T, s store.Store) {
	ctx := context.Background()
	for _, u := range []string{"ann", "bob"} {
		if err := s.CreateUser(ctx, store.User{Name: u, Role: "developer", CreatedAt: now}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tok := range []store.Token{
		{ID: "p", Name: "stolen", User: "ann"},
		{ID: "c", Name: "child", User: "ann", Parent: "p"},
		{ID: "g", Name: "grandchild", User: "ann", Parent: "c"},
		{ID: "b", Name: "bobs", User: "bob", Parent: "p"},
		{ID: "o", Name: "other", User: "ann"},
	} {
		tok.Hash, tok.CreatedAt = "h"+tok.ID, now
		if err := s.AddToken(ctx, tok); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.RevokeToken(ctx, "stolen", "ann"); err != nil {
		t.Fatal(err)
	}
	list, err := s.ListTokens(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, tok := range list {
		left = append(left, tok.Name)
	}
	if got, want := strings.Join(left, " "), "other bobs"; got != want {
		t.Errorf("tokens left: got %q, want %q", got, want)
	}
	if got, err := s.GetToken(ctx, "b"); err != nil || got.Parent != "p" {
		t.Errorf("GetToken(b): got parent %q, %v; want p", got.Parent, err)
	}
}

func testTeams(t *testing.T, s store.Store) {
	ctx := context.Background()
	s.CreateUser(ctx, store.User{Name: "ann", Role: "developer", CreatedAt: now})
	s.CreateApp(ctx, store.App{Name: "a", Owner: "ann", CreatedAt: now})
	if err := s.CreateTeam(ctx, store.Team{Name: "web", CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddTeamMember(ctx, "web", "nobody"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("adding a missing user: got %v, want ErrNotFound", err)
	}
	if err := s.AddTeamMember(ctx, "web", "ann"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetGrant(ctx, store.Grant{App: "a", Team: "web", Role: "viewer"}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetGrant(ctx, store.Grant{App: "a", Team: "web", Role: "developer"}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetGrant(ctx, store.Grant{App: "zz", Team: "web", Role: "viewer"}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("grant on a missing app: got %v, want ErrNotFound", err)
	}
	acc, err := s.Access(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(acc.Users) != 1 || len(acc.Teams) != 1 || len(acc.Teams[0].Members) != 1 || len(acc.Grants) != 1 || acc.Grants[0].Role != "developer" || acc.Owners["a"] != "ann" {
		t.Errorf("Access: got %+v", acc)
	}
	s.SetGrant(ctx, store.Grant{App: "a", Team: "web"})
	if err := s.RemoveTeamMember(ctx, "web", "ann"); err != nil {
		t.Fatal(err)
	}
	if acc, _ := s.Access(ctx); len(acc.Grants) != 0 || len(acc.Teams[0].Members) != 0 {
		t.Errorf("Access after removals: got %+v", acc)
	}
}

func testDeleteCascades(t *testing.T, s store.Store) {
	ctx := context.Background()
	s.CreateApp(ctx, store.App{Name: "a", CreatedAt: now})
	addRelease(t, s, "b", nil)
	s.AddDomain(ctx, store.Domain{Host: "x.com", App: "a", CreatedAt: now})
	s.AddEvent(ctx, store.Event{App: "a", Time: now, Message: "m"})
	if err := s.DeleteApp(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteApp(ctx, "a"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second DeleteApp: got %v, want ErrNotFound", err)
	}
	s.CreateApp(ctx, store.App{Name: "a", CreatedAt: now})
	if rels, _ := s.ListReleases(ctx, "a"); len(rels) != 0 {
		t.Errorf("a recreated app has %d old releases", len(rels))
	}
	if ds, _ := s.ListDomains(ctx, "a"); len(ds) != 0 {
		t.Errorf("a recreated app has %d old domains", len(ds))
	}
	if evs, _ := s.ListEvents(ctx, "a", time.Time{}, 0); len(evs) != 0 {
		t.Errorf("a recreated app has %d old events", len(evs))
	}
}

// testAppIDs: an app's ID names its user on the machine, so no app ever
// gets the ID of another, deleted or not, not even the newest one's.
func testAppIDs(t *testing.T, s store.Store) {
	ctx := context.Background()
	seen := map[int64]string{}
	for i, name := range []string{"a", "b", "a", "c", "c", "b"} {
		a, err := s.CreateApp(ctx, store.App{Name: name, CreatedAt: now})
		if err != nil {
			t.Fatalf("create %s (#%d): %v", name, i, err)
		}
		if prev, ok := seen[a.ID]; ok {
			t.Fatalf("app %s (#%d) got ID %d, already given to %s", name, i, a.ID, prev)
		}
		seen[a.ID] = name
		got, err := s.GetApp(ctx, name)
		if err != nil || got.ID != a.ID {
			t.Fatalf("GetApp(%s): got ID %d (%v), want %d", name, got.ID, err, a.ID)
		}
		// Delete the newest app each time: a rowid would come back.
		if err := s.DeleteApp(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
}

func testSecrets(t *testing.T, s store.Store) {
	ctx := context.Background()
	if _, err := s.CreateApp(ctx, store.App{Name: "a", CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	v1 := store.SecretVersion{App: "a", Name: "KEY", Version: 1, Sealed: []byte{1, 2, 3}, Digest: "d1", CreatedBy: "ann", CreatedAt: now}
	if err := s.AddSecretVersion(ctx, v1); err != nil {
		t.Fatal(err)
	}
	if err := s.AddSecretVersion(ctx, v1); !errors.Is(err, store.ErrExists) {
		t.Errorf("the same version twice: got %v, want ErrExists", err)
	}
	if err := s.AddSecretVersion(ctx, store.SecretVersion{App: "nope", Name: "KEY", Version: 1, CreatedAt: now}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a version of a missing app: got %v, want ErrNotFound", err)
	}
	for _, v := range []store.SecretVersion{
		{App: "a", Name: "KEY", Version: 2, Deleted: true, CreatedBy: "bob", CreatedAt: now},
		{App: "a", Name: "CERT", Version: 1, Sealed: []byte{9}, AsFile: true, CreatedBy: "ann", CreatedAt: now},
	} {
		if err := s.AddSecretVersion(ctx, v); err != nil {
			t.Fatal(err)
		}
	}
	all, err := s.ListSecretVersions(ctx, "a", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 3 || all[0].Name != "CERT" || !all[0].AsFile || all[1].Version != 1 || string(all[1].Sealed) != "\x01\x02\x03" || all[1].Digest != "d1" || !all[2].Deleted {
		t.Errorf("ListSecretVersions: got %+v", all)
	}
	one, err := s.ListSecretVersions(ctx, "a", "KEY")
	if err != nil || len(one) != 2 {
		t.Errorf("ListSecretVersions(KEY): got %+v, %v", one, err)
	}
	latest, err := s.LatestSecretVersions(ctx, "a")
	if err != nil || len(latest) != 2 || latest[0].Name != "CERT" || latest[0].Version != 1 || latest[1].Name != "KEY" || latest[1].Version != 2 || !latest[1].Deleted {
		t.Errorf("LatestSecretVersions: got %+v, %v; want CERT v1 and KEY v2 (deleted)", latest, err)
	}
	pinned, err := s.PinnedSecretVersions(ctx, "a", map[string]int{"KEY": 1, "CERT": 1, "NONE": 3})
	if err != nil || len(pinned) != 2 || pinned[0].Name != "CERT" || pinned[1].Name != "KEY" || pinned[1].Version != 1 || string(pinned[1].Sealed) != "\x01\x02\x03" {
		t.Errorf("PinnedSecretVersions: got %+v, %v; want CERT v1 and KEY v1", pinned, err)
	}
	rel, err := s.AddRelease(ctx, "a", func(store.App, *store.Release) (store.Release, error) {
		return store.Release{Config: map[string]string{}, Secrets: map[string]int{"KEY": 1, "CERT": 1}, CreatedAt: now}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.GetRelease(ctx, "a", rel.Version)
	if err != nil || got.Secrets["KEY"] != 1 || got.Secrets["CERT"] != 1 || len(got.Secrets) != 2 {
		t.Errorf("release pins: got %+v (%v), want KEY=1 CERT=1", got.Secrets, err)
	}
	if err := s.DeleteApp(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateApp(ctx, store.App{Name: "a", CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	if left, err := s.ListSecretVersions(ctx, "a", ""); err != nil || len(left) != 0 {
		t.Errorf("a new app of a deleted one's name: got %d secret versions (%v), want none", len(left), err)
	}
}

func testDataKeys(t *testing.T, s store.Store) {
	ctx := context.Background()
	k, err := s.AddDataKey(ctx, store.DataKey{Kind: "seal", Wrapped: []byte("w1"), KEKID: "kek1", Created: now})
	if err != nil || k.ID == 0 {
		t.Fatalf("AddDataKey: %+v, %v", k, err)
	}
	if _, err := s.AddDataKey(ctx, store.DataKey{Kind: "digest", Wrapped: []byte("w2"), KEKID: "kek1", Created: now}); err != nil {
		t.Fatal(err)
	}
	if n, err := s.CountSeals(ctx, k.ID, 5); err != nil || n != 5 {
		t.Fatalf("CountSeals: got %d, %v; want 5", n, err)
	}
	if _, err := s.CountSeals(ctx, 999, 1); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("CountSeals of a missing key: got %v, want ErrNotFound", err)
	}
	failing := errors.New("cannot wrap")
	if err := s.RewrapDataKeys(ctx, func(d store.DataKey) (store.DataKey, error) {
		if d.Kind == "digest" {
			return d, failing
		}
		d.Wrapped, d.KEKID = []byte("new"), "kek2"
		return d, nil
	}); !errors.Is(err, failing) {
		t.Fatalf("RewrapDataKeys with a failure: got %v", err)
	}
	keys, _ := s.DataKeys(ctx)
	if len(keys) != 2 || keys[0].KEKID != "kek1" || keys[1].KEKID != "kek1" {
		t.Errorf("a failed rewrap changed keys: %+v", keys)
	}
	if err := s.RewrapDataKeys(ctx, func(d store.DataKey) (store.DataKey, error) {
		d.Wrapped, d.KEKID = append([]byte("re-"), d.Wrapped...), "kek2"
		return d, nil
	}); err != nil {
		t.Fatal(err)
	}
	keys, err = s.DataKeys(ctx)
	if err != nil || len(keys) != 2 || keys[0].Seals != 5 || string(keys[0].Wrapped) != "re-w1" || keys[1].KEKID != "kek2" || keys[0].Kind != "seal" {
		t.Errorf("DataKeys after a rewrap: %+v, %v", keys, err)
	}
}

func testDrains(t *testing.T, s store.Store) {
	ctx := context.Background()
	if _, err := s.CreateApp(ctx, store.App{Name: "a", CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	d := store.Drain{ID: "dr-1", App: "a", URL: []byte("sealed"), CreatedAt: now}
	if err := s.AddDrain(ctx, d); err != nil {
		t.Fatal(err)
	}
	if err := s.AddDrain(ctx, store.Drain{ID: "dr-2", App: "nope", URL: []byte("x"), CreatedAt: now}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a drain of a missing app: %v, want ErrNotFound", err)
	}
	if list, err := s.ListDrains(ctx, ""); err != nil || len(list) != 1 || string(list[0].URL) != "sealed" || list[0].App != "a" {
		t.Errorf("ListDrains: %+v, %v", list, err)
	}
	if err := s.DeleteDrain(ctx, "b", "dr-1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("deleting a drain through another app: %v, want ErrNotFound", err)
	}
	if err := s.DeleteApp(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if list, err := s.ListDrains(ctx, ""); err != nil || len(list) != 0 {
		t.Errorf("a deleted app's drains: %+v, %v", list, err)
	}
}

func testAlertRules(t *testing.T, s store.Store) {
	ctx := context.Background()
	if _, err := s.CreateApp(ctx, store.App{Name: "a", CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	r := store.AlertRule{ID: "rule-1", App: "a", Metric: "p95", Above: true, Threshold: 0.5, For: 5 * time.Minute, CreatedBy: "ann", CreatedAt: now}
	if err := s.AddAlertRule(ctx, r); err != nil {
		t.Fatal(err)
	}
	if err := s.AddAlertRule(ctx, r); !errors.Is(err, store.ErrExists) {
		t.Errorf("a second rule of the ID: %v, want ErrExists", err)
	}
	if err := s.AddAlertRule(ctx, store.AlertRule{ID: "rule-2", App: "nope", Metric: "p95", CreatedAt: now}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a rule of a missing app: %v, want ErrNotFound", err)
	}
	if list, err := s.ListAlertRules(ctx, "a"); err != nil || len(list) != 1 || list[0] != r {
		t.Errorf("ListAlertRules: %+v, %v, want %+v", list, err, r)
	}
	if err := s.DeleteAlertRule(ctx, "b", "rule-1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("deleting a rule through another app: %v, want ErrNotFound", err)
	}
	if err := s.DeleteApp(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if list, err := s.ListAlertRules(ctx, ""); err != nil || len(list) != 0 {
		t.Errorf("a deleted app's rules: %+v, %v", list, err)
	}
}

func testWebhooks(t *testing.T, s store.Store) {
	ctx := context.Background()
	w := store.Webhook{ID: "wh-1", URL: "https://example.test/hook", Secret: []byte("sealed"), CreatedAt: now}
	if err := s.AddWebhook(ctx, w); err != nil {
		t.Fatal(err)
	}
	if err := s.AddWebhook(ctx, w); !errors.Is(err, store.ErrExists) {
		t.Errorf("a second webhook of the ID: %v, want ErrExists", err)
	}
	if list, err := s.ListWebhooks(ctx); err != nil || len(list) != 1 || list[0].URL != w.URL || string(list[0].Secret) != "sealed" {
		t.Errorf("ListWebhooks: %+v, %v", list, err)
	}
	if err := s.DeleteWebhook(ctx, "wh-1"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteWebhook(ctx, "wh-1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("DeleteWebhook of none: %v, want ErrNotFound", err)
	}
}

func testVolumes(t *testing.T, s store.Store) {
	ctx := context.Background()
	if _, err := s.CreateApp(ctx, store.App{Name: "a", CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	v := store.Volume{Name: "data", App: "a", Size: 1 << 30, CSIID: "csi-1", CreatedAt: now}
	if err := s.CreateVolume(ctx, v); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateVolume(ctx, v); !errors.Is(err, store.ErrExists) {
		t.Errorf("a second volume of the name: got %v, want ErrExists", err)
	}
	member := store.Volume{Name: "data-1", App: "a", Size: 1 << 30, CSIID: "csi-2", Template: "data", CreatedAt: now}
	if err := s.CreateVolume(ctx, member); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetVolume(ctx, "data-1"); err != nil || got != member {
		t.Errorf("GetVolume of a per-instance member: %+v, %v; want %+v", got, err, member)
	}
	if err := s.DeleteVolume(ctx, "data-1"); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateVolume(ctx, store.Volume{Name: "x", App: "nope", CreatedAt: now}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a volume of a missing app: got %v, want ErrNotFound", err)
	}
	got, err := s.UpdateVolume(ctx, "data", func(v store.Volume) (store.Volume, error) {
		v.Process, v.Path, v.Size, v.App, v.PerInstance = "web", "data", 2<<30, "other", true
		return v, nil
	})
	if err != nil || got.App != "a" || got.Process != "web" {
		t.Fatalf("UpdateVolume: %+v, %v", got, err)
	}
	if got, err := s.GetVolume(ctx, "data"); err != nil || got.Size != 2<<30 || got.Path != "data" || got.CSIID != "csi-1" || got.App != "a" || !got.PerInstance {
		t.Errorf("GetVolume: %+v, %v", got, err)
	}
	if err := s.DeleteApp(ctx, "a"); !errors.Is(err, store.ErrConflict) {
		t.Errorf("deleting an app with a volume: got %v, want ErrConflict", err)
	}
	sn := store.Snapshot{ID: "snap-1", Volume: "data", Name: "before", CSIID: "csi-s1", Size: 5, CreatedAt: now}
	if err := s.AddSnapshot(ctx, sn); err != nil {
		t.Fatal(err)
	}
	if err := s.AddSnapshot(ctx, store.Snapshot{ID: "snap-2", Volume: "nope", CreatedAt: now}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a snapshot of a missing volume: got %v, want ErrNotFound", err)
	}
	if err := s.DeleteVolume(ctx, "data"); !errors.Is(err, store.ErrConflict) {
		t.Errorf("deleting a volume with snapshots: got %v, want ErrConflict", err)
	}
	if list, err := s.ListSnapshots(ctx, "data"); err != nil || len(list) != 1 || list[0] != sn {
		t.Errorf("ListSnapshots: %+v, %v", list, err)
	}
	verified := now.Add(time.Minute)
	upd, err := s.UpdateSnapshot(ctx, "snap-1", func(sn store.Snapshot) (store.Snapshot, error) {
		sn.Checksum, sn.VerifiedAt, sn.Name, sn.Size = "sha256:ab", verified, "renamed", 99
		return sn, nil
	})
	if err != nil || upd.Checksum != "sha256:ab" || upd.Name != "before" {
		t.Errorf("UpdateSnapshot: %+v, %v", upd, err)
	}
	if got, err := s.GetSnapshot(ctx, "snap-1"); err != nil || got.Checksum != "sha256:ab" || !got.VerifiedAt.Equal(verified) || got.Size != 5 || got.Name != "before" {
		t.Errorf("GetSnapshot after UpdateSnapshot (only checksum and verification change): %+v, %v", got, err)
	}
	if _, err := s.UpdateSnapshot(ctx, "nope", func(sn store.Snapshot) (store.Snapshot, error) { return sn, nil }); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("UpdateSnapshot of a missing snapshot: got %v, want ErrNotFound", err)
	}
	b := store.BackupSchedule{Volume: "data", App: "a", Every: 6 * time.Hour, Keep: 28, VerifyRestore: true}
	if err := s.PutBackupSchedule(ctx, b); err != nil {
		t.Fatal(err)
	}
	if err := s.PutBackupSchedule(ctx, store.BackupSchedule{Volume: "nope", App: "a", Every: time.Hour, Keep: 1}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a schedule of a missing volume: got %v, want ErrNotFound", err)
	}
	b.LastRun, b.LastSuccess, b.LastError = verified, now, "snapshot failed"
	if err := s.PutBackupSchedule(ctx, b); err != nil {
		t.Fatal(err)
	}
	if list, err := s.ListBackupSchedules(ctx, "a"); err != nil || len(list) != 1 || list[0].Every != 6*time.Hour || list[0].Keep != 28 ||
		!list[0].VerifyRestore || !list[0].LastRun.Equal(verified) || list[0].LastError != "snapshot failed" {
		t.Errorf("ListBackupSchedules: %+v, %v", list, err)
	}
	if list, err := s.ListBackupSchedules(ctx, "other"); err != nil || len(list) != 0 {
		t.Errorf("ListBackupSchedules of another app: %+v, %v", list, err)
	}
	if err := s.DeleteSnapshot(ctx, "snap-1"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteVolume(ctx, "data"); err != nil {
		t.Fatal(err)
	}
	if list, err := s.ListBackupSchedules(ctx, ""); err != nil || len(list) != 0 {
		t.Errorf("a deleted volume's schedule is still listed: %+v, %v", list, err)
	}
	if err := s.DeleteBackupSchedule(ctx, "data"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("DeleteBackupSchedule of none: got %v, want ErrNotFound", err)
	}
	if list, err := s.ListVolumes(ctx, ""); err != nil || len(list) != 0 {
		t.Errorf("ListVolumes after delete: %+v, %v", list, err)
	}
	if err := s.DeleteApp(ctx, "a"); err != nil {
		t.Errorf("deleting the app once its volume is gone: %v", err)
	}
}
