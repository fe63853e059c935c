package dashboard

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"paddock.dev/paddock/internal/wire"
)

// Cookie names. The __Host- prefix makes the browser refuse them unless
// they are Secure, for this host only (no Domain) and for the whole site
// (Path=/): no other host or subdomain can set or overwrite them.
const (
	SessionCookie = "__Host-paddock_session"
	flashCookie   = "__Host-paddock_flash"
)

// csrfField is the name of the forms' hidden CSRF field.
const csrfField = "csrf"

// session is the signed-in user of a request.
type session struct {
	token string         // the session's API token
	who   wire.Principal // what the API says the token is
	csrf  string         // the value forms must carry back
}

// The session as its templates see it.
func (s *session) User() string   { return s.who.User }
func (s *session) Role() string   { return s.who.Role }
func (s *session) Token() string  { return s.who.Token }
func (s *session) CSRF() string   { return s.csrf }
func (s *session) MayWrite() bool { return s.mayWrite() }
func (s *session) MayAdmin() bool { return s.mayAdmin() }

// mayWrite says whether to show forms that change an app. It is a hint to
// spare the user a form that would be refused: the API decides, on every
// request, with the app's grants.
func (s *session) mayWrite() bool { return s.who.Role == "developer" || s.who.Role == "admin" }

// mayAdmin says whether to show the admin's pages in the navigation; the
// API decides.
func (s *session) mayAdmin() bool { return s.who.Role == "admin" }

// csrfToken is the HMAC of the session's token: a page of this origin has
// it, another site cannot compute it, and it changes with every session.
func (h *Handler) csrfToken(token string) string {
	m := hmac.New(sha256.New, h.key)
	m.Write([]byte("paddock dashboard csrf\x00"))
	m.Write([]byte(token))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// withSession serves f to a signed-in request, and sends anyone else to
// the login page. The session's token is checked by the API on every
// request: an expired or revoked session ends at once.
func (h *Handler) withSession(f func(w http.ResponseWriter, r *http.Request, s *session) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := r.Cookie(SessionCookie)
		if err != nil || c.Value == "" {
			h.toLogin(w, r, "")
			return
		}
		s := &session{token: c.Value}
		if err := h.call(r, s.token, http.MethodGet, "/v1/whoami", nil, &s.who); err != nil {
			var ae *APIError
			if errors.As(err, &ae) && ae.Status == http.StatusUnauthorized {
				clearCookie(w, SessionCookie)
				h.toLogin(w, r, "Your session has ended ("+ae.Message+"). Sign in again.")
				return
			}
			h.renderError(w, r, nil, statusOf(err), messageOf(err))
			return
		}
		s.csrf = h.csrfToken(s.token)
		if err := f(w, r, s); err != nil {
			h.renderError(w, r, s, statusOf(err), messageOf(err))
		}
	})
}

// toLogin sends a browser to the login page, or answers 401 to a script.
func (h *Handler) toLogin(w http.ResponseWriter, r *http.Request, msg string) {
	if r.Method != http.MethodGet || r.Header.Get("Accept") == "text/event-stream" {
		http.Error(w, "not signed in", http.StatusUnauthorized)
		return
	}
	if msg != "" {
		setFlash(w, flash{Kind: "error", Text: msg})
	}
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// sameOrigin refuses a state-changing request that a browser says comes
// from another site: Sec-Fetch-Site, when sent, must be same-origin, and
// Origin, when sent, must be this server's. Under Referrer-Policy
// no-referrer a browser sends "Origin: null" even for this origin's own
// forms; that is accepted only when Sec-Fetch-Site says same-origin.
func (h *Handler) sameOrigin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		site := r.Header.Get("Sec-Fetch-Site")
		if site != "" && site != "same-origin" {
			h.renderError(w, r, nil, http.StatusForbidden, "This form was sent from another site ("+site+"): refused.")
			return
		}
		origin := r.Header.Get("Origin")
		if origin == "null" && site == "same-origin" {
			origin = ""
		}
		if origin != "" && origin != selfOrigin(r) {
			h.renderError(w, r, nil, http.StatusForbidden, "This form was sent from another origin: refused.")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func selfOrigin(r *http.Request) string {
	scheme := "https"
	if r.TLS == nil {
		scheme = "http"
	}
	return scheme + "://" + r.Host
}

// csrfChecked serves f to a form that carries the session's CSRF token.
func (h *Handler) csrfChecked(f func(w http.ResponseWriter, r *http.Request, s *session) error) func(w http.ResponseWriter, r *http.Request, s *session) error {
	return func(w http.ResponseWriter, r *http.Request, s *session) error {
		r.Body = http.MaxBytesReader(w, r.Body, 256<<10)
		if err := r.ParseForm(); err != nil {
			return &APIError{Status: http.StatusBadRequest, Code: "bad_form", Message: "The form could not be read: " + err.Error()}
		}
		if !hmac.Equal([]byte(r.PostForm.Get(csrfField)), []byte(s.csrf)) {
			return &APIError{Status: http.StatusForbidden, Code: "csrf", Message: "This form is stale or was not sent by this dashboard: reload the page and try again."}
		}
		return f(w, r, s)
	}
}

func (h *Handler) loginPage(w http.ResponseWriter, r *http.Request) {
	h.render(w, r, http.StatusOK, "login", pageData{Title: "Sign in"})
}

// login makes a session from a pasted token: it asks the API who the token
// is, makes a new token for that user that lasts SessionTTL at most (the
// API gives it no more rights than the pasted one, and never a longer
// life), records the login, and keeps the new token in the cookie. The
// pasted token is never stored.
func (h *Handler) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	if err := r.ParseForm(); err != nil {
		h.render(w, r, http.StatusBadRequest, "login", pageData{Title: "Sign in", Flash: &flash{Kind: "error", Text: "The form could not be read."}})
		return
	}
	pasted := strings.TrimSpace(r.PostForm.Get("token"))
	fail := func(status int, msg string) {
		h.render(w, r, status, "login", pageData{Title: "Sign in", Flash: &flash{Kind: "error", Text: msg}})
	}
	if pasted == "" {
		fail(http.StatusUnprocessableEntity, "Paste a token: `paddock tokens create NAME` makes one.")
		return
	}
	var who wire.Principal
	if err := h.call(r, pasted, http.MethodGet, "/v1/whoami", nil, &who); err != nil {
		fail(statusOf(err), "That token was refused: "+messageOf(err))
		return
	}
	ttl := h.cfg.SessionTTL
	if who.ExpiresAt != nil {
		ttl = min(ttl, who.ExpiresAt.Sub(h.now()))
	}
	ttl = ttl.Truncate(time.Minute)
	if ttl < time.Minute {
		fail(http.StatusUnprocessableEntity, "That token expires in less than a minute: make a new one.")
		return
	}
	suffix := make([]byte, 4)
	rand.Read(suffix)
	req := wire.TokenRequest{Name: "dashboard-session-" + hex.EncodeToString(suffix), Expires: fmt.Sprintf("%dm", int(ttl/time.Minute))}
	var made wire.CreatedToken
	if err := h.call(r, pasted, http.MethodPost, "/v1/tokens", req, &made); err != nil {
		fail(statusOf(err), "A session could not be made from that token: "+messageOf(err))
		return
	}
	// auth.login in the audit log, as `paddock login` records it, under
	// the session's own token name.
	if err := h.call(r, made.Value, http.MethodPost, "/v1/login", nil, nil); err != nil {
		h.call(r, made.Value, http.MethodDelete, "/v1/tokens/"+url.PathEscape(made.Name), nil, nil)
		fail(statusOf(err), "The login could not be recorded: "+messageOf(err))
		return
	}
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: made.Value, Path: "/", MaxAge: int(ttl / time.Second),
		Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	setFlash(w, flash{Kind: "ok", Text: fmt.Sprintf("Signed in as %s. This session (token %s) lasts %s; `paddock tokens revoke %s` ends it.", who.User, made.Name, ttl, made.Name)})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// logout revokes the session's token and forgets the cookie.
func (h *Handler) logout(w http.ResponseWriter, r *http.Request, s *session) error {
	err := h.call(r, s.token, http.MethodDelete, "/v1/tokens/"+url.PathEscape(s.who.Token), nil, nil)
	clearCookie(w, SessionCookie)
	if err != nil {
		setFlash(w, flash{Kind: "error", Text: "Signed out here, but the session's token could not be revoked: " + messageOf(err)})
	} else {
		setFlash(w, flash{Kind: "ok", Text: "Signed out; the session's token " + s.who.Token + " is revoked."})
	}
	http.Redirect(w, r, "/login", http.StatusSeeOther)
	return nil
}

func clearCookie(w http.ResponseWriter, name string) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: "", Path: "/", MaxAge: -1, Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
}

// flash is a message shown once on the next page: what an action did, or
// why the API refused it.
type flash struct {
	Kind string `json:"k"` // "ok" or "error"
	Text string `json:"t"`
}

func setFlash(w http.ResponseWriter, f flash) {
	if len(f.Text) > 1500 {
		f.Text = f.Text[:1500] + "…"
	}
	b, _ := json.Marshal(f)
	http.SetCookie(w, &http.Cookie{Name: flashCookie, Value: base64.RawURLEncoding.EncodeToString(b), Path: "/", MaxAge: 60,
		Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
}

func takeFlash(w http.ResponseWriter, r *http.Request) *flash {
	c, err := r.Cookie(flashCookie)
	if err != nil {
		return nil
	}
	clearCookie(w, flashCookie)
	b, err := base64.RawURLEncoding.DecodeString(c.Value)
	if err != nil {
		return nil
	}
	var f flash
	if json.Unmarshal(b, &f) != nil || f.Text == "" {
		return nil
	}
	if f.Kind != "ok" {
		f.Kind = "error"
	}
	return &f
}

func statusOf(err error) int {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Status
	}
	return http.StatusInternalServerError
}

func messageOf(err error) string {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Message
	}
	return "The dashboard failed: " + err.Error()
}
