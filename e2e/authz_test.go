package e2e

import (
	"context"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"paddock.dev/paddock/internal/api"
	"paddock.dev/paddock/internal/client"
	"paddock.dev/paddock/internal/testenv"
)

// Who may call each route, stated here independently of the route table
// and of the policy's code. The principals: admin; dev and view, members of
// a team that is developer on app shop; other, a developer without access
// to shop; scoped, dev's token limited to app side; capped, an admin's
// token capped at viewer.
var (
	everyone = []string{"admin", "dev", "view", "other", "scoped", "capped"}
	admins   = []string{"admin"}
	creators = []string{"admin", "dev", "other"}
	readers  = []string{"admin", "dev", "view", "capped"}
	writers  = []string{"admin", "dev"}
)

var expected = map[string][]string{
	"GET /v1/status":                                   everyone,
	"GET /v1/whoami":                                   everyone,
	"POST /v1/login":                                   everyone,
	"POST /v1/shutdown":                                admins,
	"GET /metrics":                                     admins,
	"GET /v1/alerts":                                   everyone,
	"GET /v1/alerts/webhooks":                          admins,
	"POST /v1/alerts/webhooks":                         admins,
	"GET /v1/registry":                                 admins,
	"PUT /v1/registry/credentials/{kind}":              admins,
	"DELETE /v1/registry/credentials/{kind}":           admins,
	"DELETE /v1/alerts/webhooks/{webhook}":             admins,
	"GET /v1/alerts/rules":                             everyone,
	"POST /v1/apps/{app}/alerts/rules":                 writers,
	"DELETE /v1/apps/{app}/alerts/rules/{rule}":        writers,
	"GET /v1/apps":                                     everyone,
	"GET /v1/instances":                                everyone,
	"GET /v1/metrics/apps":                             everyone,
	"POST /v1/apps":                                    creators,
	"GET /v1/apps/{app}":                               readers,
	"DELETE /v1/apps/{app}":                            writers,
	"POST /v1/apps/{app}/deploys":                      writers,
	"GET /v1/apps/{app}/releases":                      readers,
	"GET /v1/apps/{app}/releases/{version}":            readers,
	"POST /v1/apps/{app}/rollback":                     writers,
	"GET /v1/apps/{app}/config":                        readers,
	"PATCH /v1/apps/{app}/config":                      writers,
	"GET /v1/apps/{app}/formation":                     readers,
	"PATCH /v1/apps/{app}/formation":                   writers,
	"GET /v1/apps/{app}/instances":                     readers,
	"POST /v1/apps/{app}/instances/{instance}/restart": writers,
	"GET /v1/apps/{app}/logs":                          readers,
	"GET /v1/apps/{app}/events":                        readers,
	"GET /v1/apps/{app}/metrics":                       readers,
	"GET /v1/apps/{app}/drains":                        readers,
	"POST /v1/apps/{app}/drains":                       writers,
	"DELETE /v1/apps/{app}/drains/{drain}":             writers,
	"GET /v1/apps/{app}/domains":                       readers,
	"POST /v1/apps/{app}/domains":                      writers,
	"DELETE /v1/apps/{app}/domains/{host}":             writers,
	"PUT /v1/apps/{app}/grants/{team}":                 admins,
	"GET /v1/users":                                    admins,
	"POST /v1/users":                                   admins,
	"POST /v1/users/{user}/disable":                    admins,
	"GET /v1/tokens":                                   everyone,
	"POST /v1/tokens":                                  everyone,
	"DELETE /v1/tokens/{token}":                        {"admin", "dev", "view", "other", "capped"}, // scoped revokes only itself
	"GET /v1/teams":                                    admins,
	"POST /v1/teams":                                   admins,
	"PUT /v1/teams/{team}/members/{user}":              admins,
	"DELETE /v1/teams/{team}/members/{user}":           admins,
	"GET /v1/audit":                                    admins,
	"GET /v1/audit/export":                             admins,
	"POST /v1/audit/verify":                            admins,

	// Secrets: viewers see names and versions; only developers of the app
	// and admins change or reveal them. Keys: admins.
	"GET /v1/apps/{app}/secrets":                 readers,
	"PUT /v1/apps/{app}/secrets/{name}":          writers,
	"DELETE /v1/apps/{app}/secrets/{name}":       writers,
	"GET /v1/apps/{app}/secrets/{name}/versions": readers,
	"POST /v1/apps/{app}/secrets/{name}/reveal":  writers,
	"GET /v1/keys":         admins,
	"POST /v1/keys/rotate": admins,
	"POST /v1/keys/export": admins,
	"POST /v1/keys/import": admins,

	// Volumes: an app's readers see them and their snapshots; its
	// developers change, snapshot, restore and delete them.
	"GET /v1/volumes":                                                  everyone,
	"GET /v1/apps/{app}/volumes":                                       readers,
	"POST /v1/apps/{app}/volumes":                                      writers,
	"GET /v1/apps/{app}/volumes/{volume}":                              readers,
	"PATCH /v1/apps/{app}/volumes/{volume}":                            writers,
	"DELETE /v1/apps/{app}/volumes/{volume}":                           writers,
	"PUT /v1/apps/{app}/volumes/{volume}/attachment":                   writers,
	"DELETE /v1/apps/{app}/volumes/{volume}/attachment":                writers,
	"GET /v1/apps/{app}/volumes/{volume}/snapshots":                    readers,
	"POST /v1/apps/{app}/volumes/{volume}/snapshots":                   writers,
	"DELETE /v1/apps/{app}/volumes/{volume}/snapshots/{snapshot}":      writers,
	"POST /v1/apps/{app}/volumes/{volume}/restore":                     writers,
	"POST /v1/apps/{app}/volumes/{volume}/snapshots/{snapshot}/verify": writers,
	"GET /v1/apps/{app}/volumes/{volume}/snapshots/{snapshot}/export":  writers,
	"POST /v1/apps/{app}/volumes/{volume}/import":                      writers,
	"GET /v1/backups":                                                  everyone,
	"PUT /v1/apps/{app}/volumes/{volume}/backups":                      writers,
	"DELETE /v1/apps/{app}/volumes/{volume}/backups":                   writers,
	"POST /v1/apps/{app}/volumes/{volume}/backups":                     writers,
}

// public routes answer without a token; nothing else may.
var public = []string{"GET /healthz", "GET /v1/ca"}

// principals in the order they are tried on each route: those who may
// change something last, so that a destroy by one leaves 404s, not 403s.
var principals = []string{"view", "other", "scoped", "capped", "dev", "admin"}

func mustToken(t *testing.T, c *client.Client, req client.TokenRequest) string {
	t.Helper()
	tok, err := c.CreateToken(context.Background(), req)
	if err != nil {
		t.Fatalf("create token %s: %v", req.Name, err)
	}
	return tok.Value
}

// TestEveryRouteDeclaresItsPermission walks the API's route table for every
// principal and checks each answer against the expected matrix.
func TestEveryRouteDeclaresItsPermission(t *testing.T) {
	p := testenv.Start(t)
	ctx := context.Background()
	admin := p.Client()
	for _, step := range []func() error{
		func() error { _, err := admin.CreateApp(ctx, "shop", nil); return err },
		func() error { _, err := admin.CreateApp(ctx, "side", nil); return err },
		func() error { _, err := admin.CreateUser(ctx, "dev", "developer"); return err },
		func() error { _, err := admin.CreateUser(ctx, "view", "viewer"); return err },
		func() error { _, err := admin.CreateUser(ctx, "other", "developer"); return err },
		func() error { _, err := admin.CreateTeam(ctx, "t1"); return err },
		func() error { return admin.AddTeamMember(ctx, "t1", "dev") },
		func() error { return admin.AddTeamMember(ctx, "t1", "view") },
		func() error { return admin.Grant(ctx, "shop", "t1", "developer") },
		func() error { return admin.Grant(ctx, "side", "t1", "developer") },
		func() error { _, err := admin.CreateVolume(ctx, "shop", "shop-data", "8MiB"); return err },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	tokens := map[string]string{
		"admin":  p.Token,
		"dev":    mustToken(t, admin, client.TokenRequest{Name: "dev", User: "dev"}),
		"view":   mustToken(t, admin, client.TokenRequest{Name: "view", User: "view"}),
		"other":  mustToken(t, admin, client.TokenRequest{Name: "other", User: "other"}),
		"scoped": mustToken(t, admin, client.TokenRequest{Name: "scoped", User: "dev", Apps: []string{"side"}}),
		"capped": mustToken(t, admin, client.TokenRequest{Name: "capped", Role: "viewer"}),
	}

	routes := api.Routes()
	// Destructive routes last.
	slices.SortStableFunc(routes, func(a, b api.Route) int {
		rank := func(r api.Route) int {
			if strings.HasPrefix(r.Pattern, "DELETE /v1/apps/{app}/volumes/") {
				return 1 // after the routes that need the volume
			}
			switch r.Pattern {
			case "DELETE /v1/apps/{app}":
				return 1
			case "POST /v1/shutdown":
				return 2
			}
			return 0
		}
		return rank(a) - rank(b)
	})
	params := strings.NewReplacer("{app}", "shop", "{version}", "1", "{host}", "x.example", "{team}", "t1", "{user}", "nobody", "{token}", "nonexistent", "{name}", "API_KEY", "{volume}", "shop-data", "{snapshot}", "nosuch", "{webhook}", "nosuch", "{drain}", "nosuch", "{rule}", "nosuch", "{instance}", "nosuch", "{kind}", "push")
	bodies := map[string]string{"PUT /v1/apps/{app}/grants/{team}": `{"role":"developer"}`, "POST /v1/shutdown": `{"apps":true}`,
		"PUT /v1/apps/{app}/secrets/{name}": `{"value_base64":"c2VjcmV0","no_restart":true}`, "POST /v1/keys/import": `{"backup":"not a key backup"}`}
	tr := p.ClientWith("").HTTPClient()
	seen := map[string]bool{}
	for _, rt := range routes {
		seen[rt.Pattern] = true
		if rt.Public != slices.Contains(public, rt.Pattern) {
			t.Errorf("route %s: public=%v, want public only for %v", rt.Pattern, rt.Public, public)
		}
		if rt.Public {
			continue
		}
		if rt.Perm == "" {
			t.Errorf("route %s declares no permission", rt.Pattern)
		}
		allowed, ok := expected[rt.Pattern]
		if !ok {
			t.Errorf("route %s is not in the expected table: say who may call it", rt.Pattern)
			continue
		}
		method, path, _ := strings.Cut(rt.Pattern, " ")
		path = params.Replace(path)
		for _, who := range principals {
			body := bodies[rt.Pattern]
			if body == "" && method != "GET" && method != "DELETE" {
				body = "{}"
			}
			req, _ := http.NewRequest(method, p.API+path, strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+tokens[who])
			resp, err := tr.Do(req)
			if err != nil {
				t.Fatalf("%s as %s: %v", rt.Pattern, who, err)
			}
			msg, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			want := slices.Contains(allowed, who)
			got := resp.StatusCode != http.StatusForbidden
			if got != want {
				t.Errorf("%s as %s: status %d %s; want allowed=%v", rt.Pattern, who, resp.StatusCode, msg, want)
			}
			if !got && !strings.Contains(string(msg), "forbidden") {
				t.Errorf("%s as %s: 403 without a clear message: %s", rt.Pattern, who, msg)
			}
			if got && resp.StatusCode >= 500 {
				t.Errorf("%s as %s: status %d %s", rt.Pattern, who, resp.StatusCode, msg)
			}
		}
	}
	for pattern := range expected {
		if !seen[pattern] {
			t.Errorf("expected route %s is not in the API", pattern)
		}
	}
}
