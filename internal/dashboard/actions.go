package dashboard

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"paddock.dev/paddock/internal/wire"
)

// The actions: each form is one API request with the session's token,
// then a redirect back to the app's page with what happened, or the API's
// message when it refused.

func appPath(r *http.Request) string { return "/v1/apps/" + url.PathEscape(r.PathValue("app")) }

// done redirects back to the app's page, at anchor, with a message.
func done(w http.ResponseWriter, r *http.Request, anchor string, err error, ok string) error {
	if err != nil {
		setFlash(w, flash{Kind: "error", Text: messageOf(err)})
	} else {
		setFlash(w, flash{Kind: "ok", Text: ok})
	}
	http.Redirect(w, r, "/apps/"+url.PathEscape(r.PathValue("app"))+"#"+anchor, http.StatusSeeOther)
	return nil
}

func (h *Handler) rollback(w http.ResponseWriter, r *http.Request, s *session) error {
	version := r.PostForm.Get("version")
	var rel wire.Release
	err := h.call(r, s.token, http.MethodPost, appPath(r)+"/rollback", wire.RollbackRequest{Version: version}, &rel)
	return done(w, r, "releases", err, fmt.Sprintf("Rolled back to %s: release v%d is rolling out.", version, rel.Version))
}

func (h *Handler) scale(w http.ResponseWriter, r *http.Request, s *session) error {
	proc := r.PostForm.Get("process")
	n, err := strconv.Atoi(strings.TrimSpace(r.PostForm.Get("count")))
	if err != nil || n < 0 {
		return done(w, r, "instances", fmt.Errorf("give a number of instances for %s, 0 or more", proc), "")
	}
	err = h.call(r, s.token, http.MethodPatch, appPath(r)+"/formation", wire.Formation{proc: n}, nil)
	return done(w, r, "instances", err, fmt.Sprintf("Scaled %s to %d.", proc, n))
}

func (h *Handler) restart(w http.ResponseWriter, r *http.Request, s *session) error {
	id := r.PostForm.Get("instance")
	err := h.call(r, s.token, http.MethodPost, appPath(r)+"/instances/"+url.PathEscape(id)+"/restart", nil, nil)
	return done(w, r, "instances", err, fmt.Sprintf("Restarting %s: another starts in its place.", id))
}

func (h *Handler) setConfig(w http.ResponseWriter, r *http.Request, s *session) error {
	key, value := strings.TrimSpace(r.PostForm.Get("key")), r.PostForm.Get("value")
	err := h.call(r, s.token, http.MethodPatch, appPath(r)+"/config", wire.ConfigPatch{key: &value}, nil)
	return done(w, r, "config", err, fmt.Sprintf("Set %s: a new release is rolling out.", key))
}

func (h *Handler) unsetConfig(w http.ResponseWriter, r *http.Request, s *session) error {
	key := r.PostForm.Get("key")
	err := h.call(r, s.token, http.MethodPatch, appPath(r)+"/config", wire.ConfigPatch{key: nil}, nil)
	return done(w, r, "config", err, fmt.Sprintf("Unset %s: a new release is rolling out.", key))
}

// setSecret stores a secret's value. The value only passes through: it is
// never rendered, logged or kept.
func (h *Handler) setSecret(w http.ResponseWriter, r *http.Request, s *session) error {
	name := strings.TrimSpace(r.PostForm.Get("name"))
	req := wire.SecretRequest{Value: []byte(r.PostForm.Get("value")), AsFile: r.PostForm.Get("as_file") == "on"}
	if name == "" {
		return done(w, r, "secrets", fmt.Errorf("give the secret a name"), "")
	}
	var ch wire.SecretChange
	err := h.call(r, s.token, http.MethodPut, appPath(r)+"/secrets/"+url.PathEscape(name), req, &ch)
	clear(req.Value)
	return done(w, r, "secrets", err, fmt.Sprintf("Set secret %s (version %d).", name, ch.Version))
}

func (h *Handler) unsetSecret(w http.ResponseWriter, r *http.Request, s *session) error {
	name := r.PostForm.Get("name")
	err := h.call(r, s.token, http.MethodDelete, appPath(r)+"/secrets/"+url.PathEscape(name), nil, nil)
	return done(w, r, "secrets", err, fmt.Sprintf("Unset secret %s.", name))
}

func (h *Handler) snapshot(w http.ResponseWriter, r *http.Request, s *session) error {
	vol := r.PathValue("volume")
	var snap wire.Snapshot
	err := h.call(r, s.token, http.MethodPost, appPath(r)+"/volumes/"+url.PathEscape(vol)+"/snapshots",
		wire.SnapshotRequest{Name: strings.TrimSpace(r.PostForm.Get("name"))}, &snap)
	return done(w, r, "volumes", err, fmt.Sprintf("Took snapshot %s of %s.", snap.ID, vol))
}

// logStream follows an app's logs as server-sent events: each line is an
// event "line" holding the API's JSON of it; a refusal is an event
// "failure" holding the API's message. The page's script puts the text in
// the page as text, never as markup.
func (h *Handler) logStream(w http.ResponseWriter, r *http.Request, s *session) error {
	q := url.Values{"follow": {"true"}, "tail": {"100"}}
	if p := r.URL.Query().Get("process"); p != "" {
		q.Set("process", p)
	}
	rc := http.NewResponseController(w)
	hd := w.Header()
	hd.Set("Content-Type", "text/event-stream; charset=utf-8")
	hd.Set("X-Accel-Buffering", "no")
	event := func(name string, data []byte) error {
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", name, data); err != nil {
			return err
		}
		return rc.Flush()
	}
	ctx, cancel := context.WithCancel(r.Context())
	started := false
	// start begins the answer with an event "hello": the page then clears
	// what an earlier connection showed, as the tail comes again.
	start := func() error {
		if started {
			return nil
		}
		started = true
		w.WriteHeader(http.StatusOK)
		return event("hello", []byte("{}"))
	}
	// A comment now and then keeps proxies and the browser from timing
	// the stream out while an app is quiet.
	beat := time.NewTicker(20 * time.Second)
	defer beat.Stop()
	lines := make(chan []byte, 64)
	errc := make(chan error, 1)
	ready := make(chan struct{})
	ended := make(chan struct{})
	defer func() { cancel(); <-ended }() // the follow ends with the page's stream
	go func() {
		defer close(ended)
		errc <- h.stream(ctx, r, s.token, appPath(r)+"/logs?"+q.Encode(), func() { close(ready) }, func(line []byte) error {
			select {
			case lines <- append([]byte(nil), line...):
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	for {
		select {
		case <-ready:
			ready = nil
			if err := start(); err != nil {
				return nil
			}
		case line := <-lines:
			if err := start(); err != nil {
				return nil
			}
			if err := event("line", line); err != nil {
				return nil
			}
		case <-beat.C:
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil || rc.Flush() != nil {
				return nil
			}
		case err := <-errc:
			// Lines sent before the end are in the channel still.
			for len(lines) > 0 {
				event("line", <-lines)
			}
			if err != nil {
				h.log.Info("dashboard log stream refused", "app", r.PathValue("app"), "started", started, "err", err)
				b, _ := json.Marshal(map[string]string{"message": messageOf(err)})
				event("failure", b)
			}
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}
