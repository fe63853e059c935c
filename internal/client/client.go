// Package client is the Go client of the Paddock API. The CLI and the tests
// use it; it holds no logic the API does not.
package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"paddock.dev/paddock/internal/api"
	"paddock.dev/paddock/internal/deploy"
	"paddock.dev/paddock/internal/logs"
	"paddock.dev/paddock/internal/store"
)

// Client calls one Paddock server.
type Client struct {
	base  string
	token string
	http  *http.Client
}

// New returns a client of the server at base (e.g. "http://127.0.0.1:7070").
func New(base, token string) *Client {
	return &Client{base: strings.TrimSuffix(base, "/"), token: token, http: &http.Client{}}
}

// Error is an error answer of the API.
type Error struct {
	Status    int    `json:"-"`
	Code      string `json:"code"`
	Message   string `json:"message"`
	RequestID string `json:"request_id"`
}

func (e *Error) Error() string { return e.Message }

func (c *Client) request(ctx context.Context, method, path string, body io.Reader, contentType string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the Paddock server at %s: %w (is `paddock up` running?)", c.base, err)
	}
	if resp.StatusCode >= 400 {
		defer resp.Body.Close()
		var wrap struct {
			Error *Error `json:"error"`
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if json.Unmarshal(b, &wrap) != nil || wrap.Error == nil {
			return nil, &Error{Status: resp.StatusCode, Code: "http", Message: fmt.Sprintf("%s %s: %s", method, path, resp.Status)}
		}
		wrap.Error.Status = resp.StatusCode
		return nil, wrap.Error
	}
	return resp, nil
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	ct := ""
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body, ct = bytes.NewReader(b), "application/json"
	}
	resp, err := c.request(ctx, method, path, body, ct)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	return nil
}

func appPath(app string, rest ...string) string {
	return "/v1/apps/" + url.PathEscape(app) + strings.Join(rest, "")
}

// Status returns the server's version and who the token is.
func (c *Client) Status(ctx context.Context) (map[string]string, error) {
	var out map[string]string
	return out, c.do(ctx, "GET", "/v1/status", nil, &out)
}

// Shutdown stops the server, and every app too when apps is true.
func (c *Client) Shutdown(ctx context.Context, apps bool) error {
	return c.do(ctx, "POST", "/v1/shutdown", map[string]bool{"apps": apps}, nil)
}

// Apps lists apps.
func (c *Client) Apps(ctx context.Context) ([]store.App, error) {
	var out []store.App
	return out, c.do(ctx, "GET", "/v1/apps", nil, &out)
}

// CreateApp creates an app.
func (c *Client) CreateApp(ctx context.Context, name string) (store.App, error) {
	var out store.App
	return out, c.do(ctx, "POST", "/v1/apps", map[string]string{"name": name}, &out)
}

// App describes an app.
func (c *Client) App(ctx context.Context, name string) (deploy.AppInfo, error) {
	var out deploy.AppInfo
	return out, c.do(ctx, "GET", appPath(name), nil, &out)
}

// DestroyApp removes an app and stops its instances.
func (c *Client) DestroyApp(ctx context.Context, name string) error {
	return c.do(ctx, "DELETE", appPath(name), nil, nil)
}

// Deploy uploads a Pack stream, passes each event of the build and rollout
// to fn, and returns the release it made.
func (c *Client) Deploy(ctx context.Context, app string, upload io.Reader, fn func(api.DeployEvent)) (store.Release, error) {
	resp, err := c.request(ctx, "POST", appPath(app, "/deploys"), upload, "application/gzip")
	if err != nil {
		return store.Release{}, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var ev api.DeployEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return store.Release{}, fmt.Errorf("deploy: unreadable event: %w", err)
		}
		switch ev.Type {
		case "release":
			return *ev.Release, nil
		case "error":
			var rel store.Release
			if ev.Release != nil {
				rel = *ev.Release
			}
			return rel, &Error{Status: ev.Error.Status, Code: ev.Error.Code, Message: ev.Error.Message}
		default:
			fn(ev)
		}
	}
	if err := sc.Err(); err != nil {
		return store.Release{}, fmt.Errorf("deploy: connection lost: %w", err)
	}
	return store.Release{}, fmt.Errorf("deploy: the server closed the stream without a result; see `paddock releases %s`", app)
}

// Releases lists an app's releases, newest first.
func (c *Client) Releases(ctx context.Context, app string) ([]store.Release, error) {
	var out []store.Release
	return out, c.do(ctx, "GET", appPath(app, "/releases"), nil, &out)
}

// Release returns one release, waiting up to wait for its rollout to end.
func (c *Client) Release(ctx context.Context, app string, version int, wait time.Duration) (store.Release, error) {
	var out store.Release
	p := appPath(app, "/releases/", strconv.Itoa(version))
	if wait > 0 {
		p += "?wait=" + wait.String()
	}
	return out, c.do(ctx, "GET", p, nil, &out)
}

// Rollback makes a new release from an earlier one.
func (c *Client) Rollback(ctx context.Context, app string, version int) (store.Release, error) {
	var out store.Release
	return out, c.do(ctx, "POST", appPath(app, "/rollback"), map[string]string{"version": strconv.Itoa(version)}, &out)
}

// Config returns an app's config vars.
func (c *Client) Config(ctx context.Context, app string) (map[string]string, error) {
	var out map[string]string
	return out, c.do(ctx, "GET", appPath(app, "/config"), nil, &out)
}

// SetConfig sets (non-nil) and unsets (nil) config vars in a new release.
func (c *Client) SetConfig(ctx context.Context, app string, vars map[string]*string) (store.Release, error) {
	var out store.Release
	return out, c.do(ctx, "PATCH", appPath(app, "/config"), vars, &out)
}

// Formation returns the declared instance count of each process type.
func (c *Client) Formation(ctx context.Context, app string) (map[string]int, error) {
	var out map[string]int
	return out, c.do(ctx, "GET", appPath(app, "/formation"), nil, &out)
}

// Scale sets instance counts.
func (c *Client) Scale(ctx context.Context, app string, counts map[string]int) (map[string]int, error) {
	var out map[string]int
	return out, c.do(ctx, "PATCH", appPath(app, "/formation"), counts, &out)
}

// Instances lists an app's instances as they run.
func (c *Client) Instances(ctx context.Context, app string) ([]deploy.Instance, error) {
	var out []deploy.Instance
	return out, c.do(ctx, "GET", appPath(app, "/instances"), nil, &out)
}

// LogQuery selects log lines.
type LogQuery struct {
	Process string
	Since   string // a duration ("10m") or an RFC 3339 time
	Tail    int
	Follow  bool
}

// Logs passes an app's log lines to fn; with Follow it returns when ctx ends.
func (c *Client) Logs(ctx context.Context, app string, q LogQuery, fn func(logs.Line)) error {
	v := url.Values{}
	if q.Process != "" {
		v.Set("process", q.Process)
	}
	if q.Since != "" {
		v.Set("since", q.Since)
	}
	if q.Tail > 0 {
		v.Set("tail", strconv.Itoa(q.Tail))
	}
	if q.Follow {
		v.Set("follow", "true")
	}
	resp, err := c.request(ctx, "GET", appPath(app, "/logs?"+v.Encode()), nil, "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var l logs.Line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return fmt.Errorf("logs: unreadable line: %w", err)
		}
		fn(l)
	}
	if ctx.Err() != nil {
		return nil
	}
	return sc.Err()
}

// Domains lists an app's custom domains.
func (c *Client) Domains(ctx context.Context, app string) ([]store.Domain, error) {
	var out []store.Domain
	return out, c.do(ctx, "GET", appPath(app, "/domains"), nil, &out)
}

// AddDomain routes host to app.
func (c *Client) AddDomain(ctx context.Context, app, host string) (store.Domain, error) {
	var out store.Domain
	return out, c.do(ctx, "POST", appPath(app, "/domains"), map[string]string{"host": host}, &out)
}

// RemoveDomain stops routing host to app.
func (c *Client) RemoveDomain(ctx context.Context, app, host string) error {
	return c.do(ctx, "DELETE", appPath(app, "/domains/", url.PathEscape(host)), nil, nil)
}
