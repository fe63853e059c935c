// Package dashboard serves the platform's web pages: what runs where and
// how it is doing, and the day-2 actions a user's role allows.
//
// It holds no authority of its own. Every read and every action is a
// request to the API's handler, served in process with the session's token
// as its bearer, so permissions, audit events and error messages are
// exactly the CLI's. A session is an API token of its own, made from the
// token a person pastes at login (never with more rights, never outliving
// it), kept in a cookie the page's scripts cannot read; logging out revokes
// it, and so does `paddock tokens revoke`.
//
// Pages are rendered on the server with html/template, which escapes every
// string an app controls (names, log lines, config keys, event messages);
// charts are SVG drawn on the server; one small script follows logs over
// server-sent events. Assets are embedded; a strict Content-Security-Policy
// allows nothing but them. Only the composition root (internal/daemon) and
// tests import this package.
package dashboard

import (
	"crypto/rand"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Config configures a Handler.
type Config struct {
	// API is the API's handler; required. Every read and action of the
	// dashboard is a request to it.
	API http.Handler
	// SessionTTL is how long a session lasts at most; default 12h. A
	// session never outlives the token it was made from.
	SessionTTL time.Duration
	// Key signs the forms' CSRF tokens; default 32 random bytes made by
	// New (forms rendered before a restart are then refused, once).
	Key []byte
	// Parallel bounds the API calls one page makes at once; default 8.
	Parallel int
	Now      func() time.Time // default time.Now
	Logger   *slog.Logger     // default: discard
}

// Handler serves the dashboard.
type Handler struct {
	cfg    Config
	api    http.Handler
	log    *slog.Logger
	now    func() time.Time
	key    []byte
	tmpl   map[string]*template.Template
	static fs.FS
	// assetVersion names the assets' content in their URLs, so that they
	// may be cached for long.
	assetVersion string
	mux          *http.ServeMux

	// verified is the last audit chain verification a page asked the API
	// for: pages of users who may read the audit log show it, and ask for
	// a new one when it is older than verifyEvery.
	verifiedMu sync.Mutex
	verified   *verification
}

// New returns the dashboard's handler.
func New(cfg Config) (*Handler, error) {
	if cfg.API == nil {
		return nil, errors.New("dashboard: API is required")
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = 12 * time.Hour
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = 8
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	key := cfg.Key
	if len(key) == 0 {
		key = make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, fmt.Errorf("dashboard: make the CSRF key: %w", err)
		}
	}
	static, err := fs.Sub(staticFS, "static")
	if err != nil {
		return nil, err
	}
	h := &Handler{cfg: cfg, api: cfg.API, log: cfg.Logger, now: cfg.Now, key: key, static: static, mux: http.NewServeMux()}
	if h.assetVersion, err = versionOf(static); err != nil {
		return nil, err
	}
	if h.tmpl, err = parseTemplates(h.assetVersion); err != nil {
		return nil, err
	}
	h.routes()
	return h, nil
}

func (h *Handler) routes() {
	page := func(pattern string, f func(w http.ResponseWriter, r *http.Request, s *session) error) {
		h.mux.Handle(pattern, h.withSession(f))
	}
	action := func(pattern string, f func(w http.ResponseWriter, r *http.Request, s *session) error) {
		h.mux.Handle(pattern, h.sameOrigin(h.withSession(h.csrfChecked(f))))
	}
	h.mux.Handle("GET /static/", h.assets())
	h.mux.HandleFunc("GET /login", h.loginPage)
	h.mux.Handle("POST /login", h.sameOrigin(http.HandlerFunc(h.login)))
	action("POST /logout", h.logout)

	page("GET /{$}", h.overview)
	page("GET /apps/{app}", h.appPage)
	page("GET /apps/{app}/logs/stream", h.logStream)
	page("GET /audit", h.auditPage)
	action("POST /audit/verify", h.verifyAudit)

	action("POST /apps/{app}/rollback", h.rollback)
	action("POST /apps/{app}/scale", h.scale)
	action("POST /apps/{app}/restart", h.restart)
	action("POST /apps/{app}/config", h.setConfig)
	action("POST /apps/{app}/config/unset", h.unsetConfig)
	action("POST /apps/{app}/secrets", h.setSecret)
	action("POST /apps/{app}/secrets/unset", h.unsetSecret)
	action("POST /apps/{app}/volumes/{volume}/snapshots", h.snapshot)

	h.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		h.renderError(w, r, nil, http.StatusNotFound, "There is no page at "+r.URL.Path+".")
	})
}

// ServeHTTP serves the dashboard, every answer with its security headers.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", ContentSecurityPolicy)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Cross-Origin-Opener-Policy", "same-origin")
	hd.Set("Cross-Origin-Resource-Policy", "same-origin")
	if !strings.HasPrefix(r.URL.Path, "/static/") {
		hd.Set("Cache-Control", "no-store")
	}
	h.mux.ServeHTTP(w, r)
}

// ContentSecurityPolicy allows the page its own scripts, styles and images
// and nothing else: no inline script or style, no other origin, no frames.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// assets serves the embedded static files; a URL names the assets'
// version, so they are cached for a day.
func (h *Handler) assets() http.Handler {
	files := http.StripPrefix("/static/", http.FileServerFS(h.static))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(w, r) // no listings
			return
		}
		if r.URL.Query().Get("v") == h.assetVersion {
			w.Header().Set("Cache-Control", "public, max-age=86400, immutable")
		} else {
			w.Header().Set("Cache-Control", "no-cache")
		}
		files.ServeHTTP(w, r)
	})
}

// versionOf hashes every file of fsys.
func versionOf(fsys fs.FS) (string, error) {
	sum := sha256.New()
	err := fs.WalkDir(fsys, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(fsys, path)
		if err != nil {
			return err
		}
		fmt.Fprintf(sum, "%s\x00%d\x00", path, len(b))
		sum.Write(b)
		return nil
	})
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(sum.Sum(nil))[:12], nil
}

// AssetBytes is the total size of the embedded assets.
func AssetBytes() (int, error) {
	total := 0
	err := fs.WalkDir(staticFS, "static", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		total += int(info.Size())
		return nil
	})
	return total, err
}
