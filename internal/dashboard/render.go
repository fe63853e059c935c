package dashboard

import (
	"bytes"
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"time"
)

// pageData is what every page's template gets.
type pageData struct {
	Title string
	Nav   string // the navigation entry to mark as current
	S     *session
	Flash *flash
	Page  any
	// Asset is the version the assets' URLs carry.
	Asset string
}

// pages are the templates, each rendered inside layout.html.
var pages = []string{"login", "overview", "app", "audit", "error"}

func parseTemplates(version string) (map[string]*template.Template, error) {
	funcs := template.FuncMap{
		"asset": func(name string) string { return "/static/" + name + "?v=" + version },
		"when": func(t time.Time) string {
			if t.IsZero() {
				return ""
			}
			return t.UTC().Format("2006-01-02 15:04:05Z")
		},
		"iso": func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
		"short": func(s string, n int) string {
			if len(s) <= n {
				return s
			}
			return s[:n] + "…"
		},
		"join":  strings.Join,
		"bytes": func(n uint64) string { return bytesText(float64(n)) },
	}
	out := map[string]*template.Template{}
	for _, p := range pages {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/charts.html", "templates/"+p+".html")
		if err != nil {
			return nil, fmt.Errorf("dashboard: parse template %s: %w", p, err)
		}
		out[p] = t
	}
	return out, nil
}

// render writes a page. It renders into a buffer first, so that a
// template failure sends an error page and not half a page.
func (h *Handler) render(w http.ResponseWriter, r *http.Request, status int, name string, d pageData) error {
	if d.Flash == nil {
		d.Flash = takeFlash(w, r) // the message of the last action, shown once
	}
	d.Asset = h.assetVersion
	var buf bytes.Buffer
	if err := h.tmpl[name].Execute(&buf, d); err != nil {
		h.log.Error("dashboard: render", "page", name, "err", err)
		http.Error(w, "the page could not be rendered: see the server log", http.StatusInternalServerError)
		return nil
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
	return nil
}

// renderError writes an error page with a message, the API's when the API
// refused.
func (h *Handler) renderError(w http.ResponseWriter, r *http.Request, s *session, status int, msg string) {
	if status >= 500 {
		h.log.Warn("dashboard: request failed", "path", r.URL.Path, "status", status, "err", msg)
	}
	title := http.StatusText(status)
	if status == http.StatusForbidden {
		title = "Not allowed"
	}
	h.render(w, r, status, "error", pageData{Title: title, S: s, Page: errorData{Status: status, Message: msg}})
}

type errorData struct {
	Status  int
	Message string
}
