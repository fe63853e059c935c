// Package drains forwards apps' log lines to where their teams keep logs:
// syslog over TCP or TLS (RFC 5424 messages, octet-counted framing as RFC
// 6587 has it) and HTTPS (JSON batches). The app's log files are the
// buffer on disk: a drain that cannot send stops reading them, backs off,
// and takes up where it stopped, within what the files keep. The app never
// waits for a drain.
package drains

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"sync"
	"syscall"
	"time"

	"paddock.dev/paddock/internal/logs"
)

// ErrBadURL is a drain URL that is not one.
var ErrBadURL = errors.New("invalid drain URL")

// Drain is where one app's lines go.
type Drain struct {
	ID, App string
	URL     string
	CA      []byte // PEM certificates to trust beside the system's
}

// Check says what is wrong with a drain's URL, if anything.
func Check(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %q: %v", ErrBadURL, raw, err)
	}
	switch u.Scheme {
	case "syslog", "syslog+tls":
		if u.Hostname() == "" || u.Port() == "" || u.Path != "" && u.Path != "/" {
			return nil, fmt.Errorf("%w: %q: give syslog://HOST:PORT or syslog+tls://HOST:PORT", ErrBadURL, raw)
		}
	case "https":
		if u.Host == "" {
			return nil, fmt.Errorf("%w: %q: give https://HOST/PATH", ErrBadURL, raw)
		}
	default:
		return nil, fmt.Errorf("%w: %q: the schemes are syslog://, syslog+tls:// and https://", ErrBadURL, raw)
	}
	return u, nil
}

// Status is what a drain has done since the server started.
type Status struct {
	Sent      int64     `json:"sent"`
	Dropped   int64     `json:"dropped"` // lines given up: more were waiting than a drain holds
	LastError string    `json:"last_error,omitempty"`
	FailingAt time.Time `json:"failing_since,omitzero"`
}

// Forwarder runs every drain.
type Forwarder struct {
	// Drains returns the drains there are now.
	Drains func(context.Context) ([]Drain, error)
	// LogDir returns the folder of an app's logs.
	LogDir func(ctx context.Context, app string) (string, error)
	Logger *slog.Logger
	// Hostname names this machine in syslog messages; default the host's.
	Hostname string
	// AllowLocal lets drains reach loopback and link-local addresses
	// (this machine's services, a cloud's metadata endpoint). Off, a
	// developer's drain cannot make the server talk to them.
	AllowLocal bool

	mu     sync.Mutex
	active map[string]*drainer
}

// maxPending is the most lines a drain holds in memory after a failed send;
// more wait in the log files until it sends again.
const maxPending = 10000

type drainer struct {
	d       Drain
	u       *url.URL
	follow  *logs.Follower
	pending []logs.Line
	next    time.Time // no attempt before
	backoff time.Duration
	conn    net.Conn // syslog
	client  *http.Client
	dialer  *net.Dialer
	st      Status
}

// ErrLocal is a drain that would reach this machine or a link-local
// address.
var ErrLocal = errors.New("a drain may not reach this machine's loopback or link-local addresses (start the server with --drains-local to allow it)")

// dialer connects to drains, checking the address it connects to (after
// DNS, so that a name cannot rebind to a forbidden one).
func dialer(allowLocal bool) *net.Dialer {
	d := &net.Dialer{Timeout: 10 * time.Second}
	if !allowLocal {
		d.Control = func(_, address string, _ syscall.RawConn) error {
			host, _, err := net.SplitHostPort(address)
			if err != nil {
				return err
			}
			ip, err := netip.ParseAddr(host)
			if err != nil {
				return err
			}
			ip = ip.Unmap()
			if ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || ip.IsUnspecified() || ip.IsMulticast() {
				return ErrLocal
			}
			return nil
		}
	}
	return d
}

// Run forwards until ctx ends, reading new lines every interval.
func (f *Forwarder) Run(ctx context.Context, interval time.Duration) {
	if f.Logger == nil {
		f.Logger = slog.New(slog.DiscardHandler)
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	var listed time.Time
	for {
		now := time.Now()
		if now.Sub(listed) >= 5*time.Second {
			f.refresh(ctx)
			listed = now
		}
		f.mu.Lock()
		ds := make([]*drainer, 0, len(f.active))
		for _, d := range f.active {
			ds = append(ds, d)
		}
		f.mu.Unlock()
		for _, d := range ds {
			f.step(ctx, d, now)
		}
		select {
		case <-ctx.Done():
			for _, d := range ds {
				if d.conn != nil {
					d.conn.Close()
				}
			}
			return
		case <-t.C:
		}
	}
}

// Refresh reads the drains now rather than at the next listing.
func (f *Forwarder) Refresh(ctx context.Context) { f.refresh(ctx) }

func (f *Forwarder) refresh(ctx context.Context) {
	list, err := f.Drains(ctx)
	if err != nil {
		f.Logger.Warn("list the log drains", "err", err)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.active == nil {
		f.active = map[string]*drainer{}
	}
	seen := map[string]bool{}
	for _, d := range list {
		seen[d.ID] = true
		if _, ok := f.active[d.ID]; ok {
			continue
		}
		u, err := Check(d.URL)
		if err != nil {
			continue
		}
		dir, err := f.LogDir(ctx, d.App)
		if err != nil {
			continue
		}
		dr := &drainer{d: d, u: u, follow: logs.NewFollower(dir, logs.Query{}), dialer: dialer(f.AllowLocal)}
		if dr.client, err = httpClient(d.CA, dr.dialer); err != nil {
			f.Logger.Warn("a log drain's certificates", "drain", d.ID, "err", err)
			continue
		}
		f.active[d.ID] = dr
	}
	for id, d := range f.active {
		if !seen[id] {
			if d.conn != nil {
				d.conn.Close()
			}
			delete(f.active, id)
		}
	}
}

// Status reports a drain's counts; ok is false for a drain not running.
func (f *Forwarder) Status(id string) (Status, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.active[id]
	if !ok {
		return Status{}, false
	}
	return d.st, true
}

func rootsWith(ca []byte) (*x509.CertPool, error) {
	if len(ca) == 0 {
		return nil, nil
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(ca) {
		return nil, errors.New("no PEM certificate in the CA given")
	}
	return pool, nil
}

func httpClient(ca []byte, d *net.Dialer) (*http.Client, error) {
	roots, err := rootsWith(ca)
	if err != nil {
		return nil, err
	}
	return &http.Client{Timeout: 10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}, DialContext: d.DialContext, Proxy: nil},
		// A redirect is an answer: the lines go where they were told to.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}, nil
}

// step reads a drain's new lines and sends what waits, unless it is
// backing off; while it backs off, lines wait in the log files.
func (f *Forwarder) step(ctx context.Context, d *drainer, now time.Time) {
	if now.Before(d.next) {
		return
	}
	d.pending = append(d.pending, d.follow.Poll(ctx)...)
	if over := len(d.pending) - maxPending; over > 0 {
		d.pending = d.pending[over:]
		f.status(d, func(st *Status) { st.Dropped += int64(over) })
	}
	for len(d.pending) > 0 {
		n := min(len(d.pending), 500)
		if err := d.send(ctx, d.pending[:n], f.hostname()); err != nil {
			d.backoff = min(max(d.backoff*2, time.Second), time.Minute)
			d.next = now.Add(d.backoff)
			f.status(d, func(st *Status) {
				if st.FailingAt.IsZero() {
					st.FailingAt = now
					f.Logger.Warn("a log drain cannot send; its lines wait", "app", d.d.App, "drain", d.d.ID, "err", err)
				}
				st.LastError = err.Error()
			})
			return
		}
		f.status(d, func(st *Status) { st.Sent += int64(n) })
		d.pending = d.pending[n:]
	}
	d.backoff = 0
	f.status(d, func(st *Status) { st.FailingAt, st.LastError = time.Time{}, "" })
}

// status changes a drain's status under the lock Status reads it with.
func (f *Forwarder) status(d *drainer, change func(*Status)) {
	f.mu.Lock()
	change(&d.st)
	f.mu.Unlock()
}

func (f *Forwarder) hostname() string {
	if f.Hostname == "" {
		return "paddock"
	}
	return f.Hostname
}

func (d *drainer) send(ctx context.Context, lines []logs.Line, host string) error {
	if d.u.Scheme == "https" {
		return d.post(ctx, lines)
	}
	if d.conn == nil {
		dialer := d.dialer
		if dialer == nil {
			dialer = &net.Dialer{Timeout: 10 * time.Second}
		}
		var err error
		if d.u.Scheme == "syslog+tls" {
			roots, rerr := rootsWith(d.d.CA)
			if rerr != nil {
				return rerr
			}
			d.conn, err = tls.DialWithDialer(dialer, "tcp", d.u.Host, &tls.Config{ServerName: d.u.Hostname(), RootCAs: roots, MinVersion: tls.VersionTLS12})
		} else {
			d.conn, err = dialer.DialContext(ctx, "tcp", d.u.Host)
		}
		if err != nil {
			d.conn = nil
			return err
		}
	}
	var b bytes.Buffer
	for _, l := range lines {
		msg := Syslog(l, d.d.App, host)
		b.WriteString(strconv.Itoa(len(msg)))
		b.WriteByte(' ')
		b.Write(msg)
	}
	d.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := d.conn.Write(b.Bytes()); err != nil {
		d.conn.Close()
		d.conn = nil
		return err
	}
	return nil
}

// Syslog writes a line as an RFC 5424 message: facility user, severity
// info for standard output and error for standard error; the app as
// APP-NAME and the instance as PROCID.
func Syslog(l logs.Line, app, host string) []byte {
	pri := 1*8 + 6
	if l.Stream == "err" {
		pri = 1*8 + 3
	}
	procid := l.Source
	if procid == "" {
		procid = "-"
	}
	return fmt.Appendf(nil, "<%d>1 %s %s %s %s - - %s", pri, l.Time.UTC().Format("2006-01-02T15:04:05.000000Z"),
		field(host, 255), field(app, 48), field(procid, 128), l.Text)
}

// field makes s a syslog header field: printable ASCII, no spaces, at most
// n bytes.
func field(s string, n int) string {
	b := []byte(s)
	for i, c := range b {
		if c <= ' ' || c > '~' {
			b[i] = '_'
		}
	}
	if len(b) > n {
		b = b[:n]
	}
	return string(b)
}

type jsonLine struct {
	Time   time.Time `json:"time"`
	App    string    `json:"app"`
	Source string    `json:"source"`
	Stream string    `json:"stream"`
	Text   string    `json:"text"`
}

func (d *drainer) post(ctx context.Context, lines []logs.Line) error {
	out := make([]jsonLine, len(lines))
	for i, l := range lines {
		out[i] = jsonLine{l.Time, d.d.App, l.Source, l.Stream, l.Text}
	}
	body, err := json.Marshal(out)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.u.String(), bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "paddock-drain")
	resp, err := d.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			return ue.Err // not the URL: it may hold a token
		}
		return err
	}
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		return fmt.Errorf("the drain answered %s", resp.Status)
	}
	return nil
}
