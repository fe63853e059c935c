package dashboard

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"paddock.dev/paddock/internal/wire"
)

// verifyEvery is how old a verification of the audit chain may be before a
// page asks for a new one. A verification reads the whole log and is an
// audited request: once per page view would cost both.
const verifyEvery = 5 * time.Minute

// verification is the audit chain's state as the API last reported it.
type verification struct {
	wire.VerifyReport
	At    time.Time
	Error string // why it could not be asked for
}

// auditStatus returns the chain's state for a user who may read the audit
// log: the last verification if recent, else a new one through the API
// with the session's token (which the API refuses to anyone without
// audit.read). A recent one is shown only to sessions the API gives the
// admin role on every app, the only ones it lets read the audit log.
func (h *Handler) auditStatus(r *http.Request, s *session, fresh bool) *verification {
	if !fresh && (!s.mayAdmin() || len(s.who.Apps) > 0) {
		return nil
	}
	h.verifiedMu.Lock()
	last := h.verified
	h.verifiedMu.Unlock()
	if !fresh && last != nil && h.now().Sub(last.At) < verifyEvery {
		return last
	}
	v := &verification{At: h.now()}
	if err := h.call(r, s.token, http.MethodPost, "/v1/audit/verify", nil, &v.VerifyReport); err != nil {
		v.Error = messageOf(err)
		return v
	}
	h.verifiedMu.Lock()
	h.verified = v
	h.verifiedMu.Unlock()
	return v
}

type auditData struct {
	Actor, App, Since, Query string
	Limit                    int
	Events                   []wire.AuditEvent
	Verify                   *verification
	Error                    string
}

// auditPage lists the audit trail, filtered by actor, app and time through
// the API and by any text on the page.
func (h *Handler) auditPage(w http.ResponseWriter, r *http.Request, s *session) error {
	q := r.URL.Query()
	d := auditData{Actor: q.Get("actor"), App: q.Get("app"), Since: q.Get("since"), Query: strings.TrimSpace(q.Get("q")), Limit: 200}
	if n, err := strconv.Atoi(q.Get("limit")); err == nil && n > 0 && n <= 5000 {
		d.Limit = n
	}
	v := url.Values{"limit": {strconv.Itoa(d.Limit)}}
	if d.Actor != "" {
		v.Set("actor", d.Actor)
	}
	if d.App != "" {
		v.Set("app", d.App)
	}
	if d.Since != "" {
		v.Set("since", d.Since)
	}
	var evs []wire.AuditEvent
	if err := h.call(r, s.token, http.MethodGet, "/v1/audit?"+v.Encode(), nil, &evs); err != nil {
		if statusOf(err) == http.StatusForbidden {
			return err
		}
		d.Error = messageOf(err)
	}
	needle := strings.ToLower(d.Query)
	for i := len(evs) - 1; i >= 0; i-- { // newest first
		e := evs[i]
		if needle != "" && !strings.Contains(strings.ToLower(strings.Join([]string{e.Actor, e.Token, e.Source, e.Action, e.Target, e.Outcome, e.Detail, e.RequestID}, "\x00")), needle) {
			continue
		}
		d.Events = append(d.Events, e)
	}
	d.Verify = h.auditStatus(r, s, false)
	return h.render(w, r, http.StatusOK, "audit", pageData{Title: "Audit", Nav: "audit", S: s, Page: d})
}

// verifyAudit asks the API to verify the chain now.
func (h *Handler) verifyAudit(w http.ResponseWriter, r *http.Request, s *session) error {
	v := h.auditStatus(r, s, true)
	switch {
	case v.Error != "":
		setFlash(w, flash{Kind: "error", Text: "The audit log could not be verified: " + v.Error})
	case v.OK:
		setFlash(w, flash{Kind: "ok", Text: "The audit chain is intact: " + strconv.FormatUint(v.Events, 10) + " events verified."})
	default:
		setFlash(w, flash{Kind: "error", Text: "The audit chain is BROKEN at event " + strconv.FormatUint(v.FirstBad, 10) + ": " + v.VerifyReport.Error})
	}
	http.Redirect(w, r, "/audit", http.StatusSeeOther)
	return nil
}
