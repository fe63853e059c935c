package e2e

import (
	"context"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"paddock.dev/paddock/internal/api"
	"paddock.dev/paddock/internal/auth"
	"paddock.dev/paddock/internal/client"
	"paddock.dev/paddock/internal/testenv"
)

// expected states, independently of the policy's code, who may use each
// permission. The principals: admin; dev and view, members of a team that
// is developer on app shop; other, a developer without access to shop; and
// scoped, dev's token limited to app side.
var expected = map[auth.Perm][]string{
	auth.StatusRead:  {"admin", "dev", "view", "other", "scoped"},
	auth.SystemAdmin: {"admin"},
	auth.AppsList:    {"admin", "dev", "view", "other", "scoped"},
	auth.AppsCreate:  {"admin", "dev", "other"},
	auth.AppRead:     {"admin", "dev", "view"},
	auth.AppWrite:    {"admin", "dev"},
	auth.AppAdmin:    {"admin", "dev"},
	auth.TokensOwn:   {"admin", "dev", "view", "other", "scoped"},
	auth.UsersAdmin:  {"admin"},
	auth.AuditRead:   {"admin"},
}

// principals in the order they are tried on each route: those who may
// change something last, so that a destroy by one leaves 404s, not 403s.
var principals = []string{"view", "other", "scoped", "dev", "admin"}

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
		func() error { _, err := admin.CreateApp(ctx, "shop"); return err },
		func() error { _, err := admin.CreateApp(ctx, "side"); return err },
		func() error { _, err := admin.CreateUser(ctx, "dev", "developer"); return err },
		func() error { _, err := admin.CreateUser(ctx, "view", "viewer"); return err },
		func() error { _, err := admin.CreateUser(ctx, "other", "developer"); return err },
		func() error { _, err := admin.CreateTeam(ctx, "t1"); return err },
		func() error { return admin.AddTeamMember(ctx, "t1", "dev") },
		func() error { return admin.AddTeamMember(ctx, "t1", "view") },
		func() error { return admin.Grant(ctx, "shop", "t1", "developer") },
		func() error { return admin.Grant(ctx, "side", "t1", "developer") },
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
	}

	routes := api.Routes()
	// Destructive routes last.
	slices.SortStableFunc(routes, func(a, b api.Route) int {
		rank := func(r api.Route) int {
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
	params := strings.NewReplacer("{app}", "shop", "{version}", "1", "{host}", "x.example", "{team}", "t1", "{user}", "nobody", "{token}", "nonexistent")
	bodies := map[string]string{"PUT /v1/apps/{app}/grants/{team}": `{"role":"developer"}`, "POST /v1/shutdown": `{"apps":true}`}
	tr := p.ClientWith("").HTTPClient()
	for _, rt := range routes {
		if rt.Public {
			continue
		}
		allowed, ok := expected[rt.Perm]
		if !ok {
			t.Errorf("route %s declares permission %q, which the expected matrix does not know", rt.Pattern, rt.Perm)
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
		}
	}
}
