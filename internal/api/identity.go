package api

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"paddock.dev/paddock/internal/audit"
	"paddock.dev/paddock/internal/auth"
	"paddock.dev/paddock/internal/store"
	"paddock.dev/paddock/internal/wire"
)

var identName = regexp.MustCompile(`^[a-z][a-z0-9._-]*$`)

func validIdentName(s string) bool { return len(s) <= 64 && identName.MatchString(s) }

func checkName(kind, name string) error {
	if !validIdentName(name) {
		return invalid("%s name %q: use 1 to 64 lowercase letters, digits, dots, dashes and underscores, starting with a letter", kind, name)
	}
	return nil
}

func (s *Server) ca(w http.ResponseWriter, r *http.Request) error {
	if len(s.cfg.CA) == 0 {
		return &Error{Status: http.StatusNotFound, Code: "not_found", Message: "this server runs without its own CA"}
	}
	w.Header().Set("Content-Type", "application/x-pem-file")
	_, err := w.Write(s.cfg.CA)
	return err
}

func (s *Server) whoami(w http.ResponseWriter, r *http.Request) error {
	return writeJSON(w, http.StatusOK, principalOut(principal(r)))
}

// login records that a client stored this token; `paddock login` calls it.
func (s *Server) login(w http.ResponseWriter, r *http.Request) error {
	return writeJSON(w, http.StatusOK, principalOut(principal(r)))
}

func (s *Server) reloadPolicy(r *http.Request) error {
	// The change is committed: the policy must follow even if the client left.
	if err := s.cfg.Authz.Reload(context.WithoutCancel(r.Context())); err != nil {
		return fmt.Errorf("reload policy: %w", err)
	}
	return nil
}

func (s *Server) listUsers(w http.ResponseWriter, r *http.Request) error {
	users, err := s.st.ListUsers(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, listOut(users, userOut))
}

func (s *Server) createUser(w http.ResponseWriter, r *http.Request) error {
	var req wire.UserRequest
	if err := readJSON(w, r, &req); err != nil {
		return err
	}
	if err := checkName("user", req.Name); err != nil {
		return err
	}
	if _, err := auth.ParseRole(req.Role); err != nil {
		return invalid("%v", err)
	}
	u := store.User{Name: req.Name, Role: req.Role, CreatedAt: s.now().UTC()}
	if err := s.st.CreateUser(r.Context(), u); err != nil {
		return err
	}
	if err := s.reloadPolicy(r); err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, userOut(u))
}

func (s *Server) disableUser(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("user")
	if name == principal(r).User {
		return invalid("you cannot disable yourself: ask another admin")
	}
	if err := s.st.SetUserDisabled(r.Context(), name, true); err != nil {
		return err
	}
	if err := s.reloadPolicy(r); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	user := p.User
	if r.URL.Query().Get("all") == "true" {
		if err := s.cfg.Authz.Policy().Decide(p, auth.UsersAdmin, ""); err != nil {
			return err
		}
		user = ""
	}
	if len(p.Apps) > 0 {
		// An app-scoped token manages only itself: its user's other
		// tokens are not its business.
		tok, err := s.st.GetToken(r.Context(), p.TokenID)
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, []wire.Token{tokenOut(tok)})
	}
	toks, err := s.st.ListTokens(r.Context(), user)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, listOut(toks, tokenOut))
}

// parseExpiry reads "30d", "12h", "90m".
func parseExpiry(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil || days <= 0 || days > 3650 {
			return 0, invalid("expires %q: give a number of days like 30d (at most 3650d)", s)
		}
		return time.Duration(days) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, invalid("expires %q: give a duration like 30d, 12h or 90m", s)
	}
	return d, nil
}

// createToken makes a token. A token never has more rights than its user,
// nor more than the token that makes it: not a higher role, not a wider
// app scope, not a longer life.
func (s *Server) createToken(w http.ResponseWriter, r *http.Request) error {
	var req wire.TokenRequest
	if err := readJSON(w, r, &req); err != nil {
		return err
	}
	p := principal(r)
	if req.User == "" {
		req.User = p.User
	}
	if err := checkName("token", req.Name); err != nil {
		return err
	}
	if req.User != p.User {
		if err := s.cfg.Authz.Policy().Decide(p, auth.UsersAdmin, ""); err != nil {
			return fmt.Errorf("%w (only an admin makes tokens for other users)", err)
		}
	}
	u, err := s.st.GetUser(r.Context(), req.User)
	if err != nil {
		return err
	}
	userRole, _ := auth.ParseRole(u.Role)
	limit := min(userRole, p.Role)
	if req.Role == "" && limit < userRole {
		req.Role = limit.String()
	}
	if req.Role != "" {
		role, err := auth.ParseRole(req.Role)
		if err != nil {
			return invalid("%v", err)
		}
		if role > limit {
			return invalid("a token never has more rights than its user or the token that makes it: at most %s here, not %s", limit, role)
		}
	}
	if len(p.Apps) > 0 {
		if len(req.Apps) == 0 {
			req.Apps = p.Apps
		}
		for _, a := range req.Apps {
			if !slices.Contains(p.Apps, a) {
				return &Error{Status: http.StatusForbidden, Code: "forbidden", Message: fmt.Sprintf("token %s is limited to the apps %s, so the tokens it makes are too: not %s", p.Token, strings.Join(p.Apps, ", "), a)}
			}
		}
	}
	for _, a := range req.Apps {
		if _, err := s.st.GetApp(r.Context(), a); err != nil {
			return err
		}
	}
	now := s.now().UTC()
	var expires *time.Time
	if req.Expires != "" {
		d, err := parseExpiry(req.Expires)
		if err != nil {
			return err
		}
		t := now.Add(d)
		expires = &t
	}
	if p.ExpiresAt != nil {
		switch {
		case expires == nil:
			t := p.ExpiresAt.UTC()
			expires = &t
		case expires.After(*p.ExpiresAt):
			return invalid("a token never outlives the token that makes it: %s expires at %s, so give --expires %s or less",
				p.Token, p.ExpiresAt.UTC().Format(time.RFC3339), shortDuration(p.ExpiresAt.Sub(now)))
		}
	}
	value, id, hash := auth.NewToken()
	tok := store.Token{ID: id, Name: req.Name, User: req.User, Hash: hash, Role: req.Role, Apps: req.Apps, CreatedAt: now, ExpiresAt: expires, Parent: p.TokenID}
	if err := s.st.AddToken(r.Context(), tok); err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, wire.CreatedToken{Token: tokenOut(tok), Value: value})
}

// shortDuration writes d rounded down to whole minutes, like 29d23h59m.
func shortDuration(d time.Duration) string {
	d = d.Truncate(time.Minute)
	if d <= 0 {
		return "0m (it has expired)"
	}
	days := d / (24 * time.Hour)
	d -= days * 24 * time.Hour
	out := strings.TrimSuffix(d.String(), "0s")
	if strings.HasSuffix(out, "h0m") {
		out = strings.TrimSuffix(out, "0m")
	}
	if days > 0 {
		out = strconv.Itoa(int(days)) + "d" + out
	}
	return out
}

// revokeToken revokes one of the caller's tokens, or anyone's for an
// admin. An app-scoped token revokes only itself.
func (s *Server) revokeToken(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	name := r.PathValue("token")
	if len(p.Apps) > 0 && name != p.Token {
		return &Error{Status: http.StatusForbidden, Code: "forbidden", Message: fmt.Sprintf(
			"token %s is limited to the apps %s: it may revoke only itself; revoke %s with a token of %s's that is not limited to apps",
			p.Token, strings.Join(p.Apps, ", "), name, p.User)}
	}
	owner := p.User
	if s.cfg.Authz.Policy().Decide(p, auth.UsersAdmin, "") == nil {
		owner = "" // an admin revokes anyone's token
	}
	if err := s.st.RevokeToken(r.Context(), name, owner); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) listTeams(w http.ResponseWriter, r *http.Request) error {
	acc, err := s.st.Access(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, listOut(acc.Teams, teamOut))
}

func (s *Server) createTeam(w http.ResponseWriter, r *http.Request) error {
	var req wire.NameRequest
	if err := readJSON(w, r, &req); err != nil {
		return err
	}
	if err := checkName("team", req.Name); err != nil {
		return err
	}
	t := store.Team{Name: req.Name, Members: []string{}, CreatedAt: s.now().UTC()}
	if err := s.st.CreateTeam(r.Context(), t); err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, teamOut(t))
}

func (s *Server) addMember(w http.ResponseWriter, r *http.Request) error {
	if err := s.st.AddTeamMember(r.Context(), r.PathValue("team"), r.PathValue("user")); err != nil {
		return err
	}
	if err := s.reloadPolicy(r); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) removeMember(w http.ResponseWriter, r *http.Request) error {
	if err := s.st.RemoveTeamMember(r.Context(), r.PathValue("team"), r.PathValue("user")); err != nil {
		return err
	}
	if err := s.reloadPolicy(r); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) grant(w http.ResponseWriter, r *http.Request) error {
	var req wire.GrantRequest
	if err := readJSON(w, r, &req); err != nil {
		return err
	}
	if req.Role != "" {
		role, err := auth.ParseRole(req.Role)
		if err != nil {
			return invalid("%v", err)
		}
		if role == auth.Admin {
			return invalid("a team gets viewer or developer on an app; admin is a user's role")
		}
	}
	g := store.Grant{App: r.PathValue("app"), Team: r.PathValue("team"), Role: req.Role}
	if err := s.st.SetGrant(r.Context(), g); err != nil {
		return err
	}
	if err := s.reloadPolicy(r); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, grantOut(g))
}

func (s *Server) auditList(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	f := audit.Filter{Actor: q.Get("actor")}
	if app := q.Get("app"); app != "" {
		f.Target = "app/" + app
	}
	if v := q.Get("since"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t, terr := time.Parse(time.RFC3339, v)
			if terr != nil {
				return invalid("since=%q: give a duration like 1h or a time like 2026-01-02T15:04:05Z", v)
			}
			f.Since = t
		} else {
			f.Since = s.now().Add(-d)
		}
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return invalid("limit=%q: give a number", v)
		}
		f.Limit = n
	}
	evs, err := s.cfg.Audit.List(r.Context(), f)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, listOut(evs, eventOut))
}

func (s *Server) auditExport(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "application/x-ndjson")
	return s.cfg.Audit.Export(r.Context(), w)
}

func (s *Server) auditVerify(w http.ResponseWriter, r *http.Request) error {
	rep := s.cfg.Audit.Verify(r.Context())
	out := wire.VerifyReport{Events: rep.Events, Checkpoints: rep.Checkpoints, Head: rep.Head, OK: rep.Err == nil, FirstBad: rep.FirstBad}
	if rep.Err != nil {
		out.Error = rep.Err.Error()
	}
	return writeJSON(w, http.StatusOK, out)
}
