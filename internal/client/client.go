// Package client is the Go client of the Paddock API. The CLI and the tests
// use it; it holds no logic the API does not. It speaks the types of
// internal/wire and imports none of the server's packages (a test keeps it
// so): a client depends on the protocol only.
package client

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"paddock.dev/paddock/internal/tlsca"
	"paddock.dev/paddock/internal/wire"
)

// Client calls one Paddock server.
type Client struct {
	base  string
	token string
	http  *http.Client
}

// New returns a client of the server c names. With c.CA set, the server's
// certificate must chain to that CA and no other.
func New(c Config) (*Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if c.CA != "" {
		pool, err := tlsca.Pool([]byte(c.CA))
		if err != nil {
			return nil, fmt.Errorf("the CLI config's CA: %w (log in again with `paddock login`)", err)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &Client{base: strings.TrimSuffix(c.Server, "/"), token: c.Token, http: &http.Client{Transport: tr}}, nil
}

// FetchCA fetches the CA certificate a server presents, without trusting
// it yet: the caller compares its fingerprint with one it knows, or asks.
func FetchCA(ctx context.Context, server string) ([]byte, string, error) {
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, "GET", strings.TrimSuffix(server, "/")+"/v1/ca", nil)
	if err != nil {
		return nil, "", err
	}
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return nil, "", fmt.Errorf("cannot reach %s: %w", server, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, "", fmt.Errorf("%s has no CA to pin (%s): it uses a certificate your system trusts, or plain HTTP", server, resp.Status)
	}
	pem, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return nil, "", err
	}
	fp, err := tlsca.Fingerprint(pem)
	if err != nil {
		return nil, "", fmt.Errorf("%s/v1/ca: %w", server, err)
	}
	return pem, fp, nil
}

// Error is an error answer of the API.
type Error struct {
	Status    int    // the HTTP status; 0 for an error inside a stream
	Code      string // stable, e.g. "not_found"
	Message   string
	RequestID string // the server's id of the request
}

func (e *Error) Error() string { return e.Message }

func errorOf(status int, e *wire.Error) *Error {
	return &Error{Status: status, Code: e.Code, Message: e.Message, RequestID: e.RequestID}
}

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
		var wrap wire.ErrorBody
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if json.Unmarshal(b, &wrap) != nil || wrap.Error == nil {
			return nil, &Error{Status: resp.StatusCode, Code: "http", Message: fmt.Sprintf("%s %s: %s", method, path, resp.Status)}
		}
		return nil, errorOf(resp.StatusCode, wrap.Error)
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
func (c *Client) Status(ctx context.Context) (wire.Status, error) {
	var out wire.Status
	return out, c.do(ctx, "GET", "/v1/status", nil, &out)
}

// Shutdown stops the server, and every app too when apps is true.
func (c *Client) Shutdown(ctx context.Context, apps bool) error {
	return c.do(ctx, "POST", "/v1/shutdown", wire.ShutdownRequest{Apps: apps}, nil)
}

// Apps lists apps.
func (c *Client) Apps(ctx context.Context) ([]wire.App, error) {
	var out []wire.App
	return out, c.do(ctx, "GET", "/v1/apps", nil, &out)
}

// CreateApp creates an app.
func (c *Client) CreateApp(ctx context.Context, name string, placement map[string]string) (wire.App, error) {
	var out wire.App
	return out, c.do(ctx, "POST", "/v1/apps", wire.CreateAppRequest{Name: name, Placement: placement}, &out)
}

// App describes an app.
func (c *Client) App(ctx context.Context, name string) (wire.AppInfo, error) {
	var out wire.AppInfo
	return out, c.do(ctx, "GET", appPath(name), nil, &out)
}

// DestroyApp removes an app and stops its instances.
func (c *Client) DestroyApp(ctx context.Context, name string) error {
	return c.do(ctx, "DELETE", appPath(name), nil, nil)
}

// Deploy uploads a Pack stream, passes each event of the build and rollout
// to fn, and returns the release it made.
func (c *Client) Deploy(ctx context.Context, app string, upload io.Reader, fn func(wire.DeployEvent)) (wire.Release, error) {
	return c.deploy(ctx, app, upload, "application/gzip", fn)
}

// DeployImage releases an image that exists already, with the process
// types of manifest (a paddock.toml; nil: one web process running the
// image's command), and streams the rollout like Deploy.
func (c *Client) DeployImage(ctx context.Context, app, image string, manifest []byte, fn func(wire.DeployEvent)) (wire.Release, error) {
	body, err := json.Marshal(wire.ImageDeploy{Image: image, Manifest: string(manifest)})
	if err != nil {
		return wire.Release{}, err
	}
	return c.deploy(ctx, app, bytes.NewReader(body), "application/json", fn)
}

func (c *Client) deploy(ctx context.Context, app string, body io.Reader, contentType string, fn func(wire.DeployEvent)) (wire.Release, error) {
	resp, err := c.request(ctx, "POST", appPath(app, "/deploys"), body, contentType)
	if err != nil {
		return wire.Release{}, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var ev wire.DeployEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return wire.Release{}, fmt.Errorf("deploy: unreadable event: %w", err)
		}
		switch ev.Type {
		case wire.DeployRelease:
			if ev.Release == nil {
				return wire.Release{}, errors.New("deploy: the server sent a release event without the release")
			}
			return *ev.Release, nil
		case wire.DeployError:
			var rel wire.Release
			if ev.Release != nil {
				rel = *ev.Release
			}
			if ev.Error == nil {
				return rel, errors.New("deploy: the server sent an error event without the error")
			}
			return rel, errorOf(0, ev.Error)
		default:
			fn(ev)
		}
	}
	if err := sc.Err(); err != nil {
		return wire.Release{}, fmt.Errorf("deploy: connection lost: %w", err)
	}
	return wire.Release{}, fmt.Errorf("deploy: the server closed the stream without a result; see `paddock releases %s`", app)
}

// Releases lists an app's releases, newest first.
func (c *Client) Releases(ctx context.Context, app string) ([]wire.Release, error) {
	var out []wire.Release
	return out, c.do(ctx, "GET", appPath(app, "/releases"), nil, &out)
}

// Release returns one release, waiting up to wait for its rollout to end.
func (c *Client) Release(ctx context.Context, app string, version int, wait time.Duration) (wire.Release, error) {
	var out wire.Release
	p := appPath(app, "/releases/", strconv.Itoa(version))
	if wait > 0 {
		p += "?wait=" + wait.String()
	}
	return out, c.do(ctx, "GET", p, nil, &out)
}

// Rollback makes a new release from an earlier one.
func (c *Client) Rollback(ctx context.Context, app string, version int) (wire.Release, error) {
	var out wire.Release
	return out, c.do(ctx, "POST", appPath(app, "/rollback"), wire.RollbackRequest{Version: strconv.Itoa(version)}, &out)
}

// Config returns an app's config vars.
func (c *Client) Config(ctx context.Context, app string) (map[string]string, error) {
	var out map[string]string
	return out, c.do(ctx, "GET", appPath(app, "/config"), nil, &out)
}

// SetConfig sets (non-nil) and unsets (nil) config vars in a new release.
func (c *Client) SetConfig(ctx context.Context, app string, vars wire.ConfigPatch) (wire.Release, error) {
	var out wire.Release
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
func (c *Client) Instances(ctx context.Context, app string) ([]wire.Instance, error) {
	var out []wire.Instance
	return out, c.do(ctx, "GET", appPath(app, "/instances"), nil, &out)
}

// RestartInstance replaces an instance of app (its ID, or the ID without
// the app's name as ps shows it).
func (c *Client) RestartInstance(ctx context.Context, app, id string) error {
	return c.do(ctx, "POST", appPath(app, "/instances/"+url.PathEscape(id)+"/restart"), nil, nil)
}

// LogQuery selects log lines.
type LogQuery struct {
	Process string
	Since   string // a duration ("10m") or an RFC 3339 time
	Tail    int
	Follow  bool
	Grep    string // a regular expression (RE2) the lines' text must match
}

// Logs passes an app's log lines to fn; with Follow it returns when ctx ends.
func (c *Client) Logs(ctx context.Context, app string, q LogQuery, fn func(wire.LogLine)) error {
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
	if q.Grep != "" {
		v.Set("grep", q.Grep)
	}
	resp, err := c.request(ctx, "GET", appPath(app, "/logs?"+v.Encode()), nil, "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var l wire.LogLine
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

// Events sends an app's platform events since since ("10m", an RFC 3339
// time, "" for the newest thousand) to fn; with follow, new ones too until
// ctx ends.
func (c *Client) Events(ctx context.Context, app, since string, follow bool, fn func(wire.Event)) error {
	v := url.Values{}
	if since != "" {
		v.Set("since", since)
	}
	if follow {
		v.Set("follow", "true")
	}
	resp, err := c.request(ctx, "GET", appPath(app, "/events?"+v.Encode()), nil, "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for {
		var e wire.Event
		if err := dec.Decode(&e); err != nil {
			if err == io.EOF || ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("events: %w", err)
		}
		fn(e)
	}
}

// Domains lists an app's custom domains.
func (c *Client) Domains(ctx context.Context, app string) ([]wire.Domain, error) {
	var out []wire.Domain
	return out, c.do(ctx, "GET", appPath(app, "/domains"), nil, &out)
}

// AddDomain routes host to app.
func (c *Client) AddDomain(ctx context.Context, app, host string) (wire.Domain, error) {
	var out wire.Domain
	return out, c.do(ctx, "POST", appPath(app, "/domains"), wire.DomainRequest{Host: host}, &out)
}

// RemoveDomain stops routing host to app.
func (c *Client) RemoveDomain(ctx context.Context, app, host string) error {
	return c.do(ctx, "DELETE", appPath(app, "/domains/", url.PathEscape(host)), nil, nil)
}

// WhoAmI returns who the token is.
func (c *Client) WhoAmI(ctx context.Context) (wire.Principal, error) {
	var out wire.Principal
	return out, c.do(ctx, "GET", "/v1/whoami", nil, &out)
}

// Login records a login with the token and returns who it is.
func (c *Client) Login(ctx context.Context) (wire.Principal, error) {
	var out wire.Principal
	return out, c.do(ctx, "POST", "/v1/login", struct{}{}, &out)
}

// Users lists users.
func (c *Client) Users(ctx context.Context) ([]wire.User, error) {
	var out []wire.User
	return out, c.do(ctx, "GET", "/v1/users", nil, &out)
}

// CreateUser creates a user with a role.
func (c *Client) CreateUser(ctx context.Context, name, role string) (wire.User, error) {
	var out wire.User
	return out, c.do(ctx, "POST", "/v1/users", wire.UserRequest{Name: name, Role: role}, &out)
}

// DisableUser disables a user; their tokens stop working at once.
func (c *Client) DisableUser(ctx context.Context, name string) error {
	return c.do(ctx, "POST", "/v1/users/"+url.PathEscape(name)+"/disable", struct{}{}, nil)
}

// TokenRequest describes a token to create.
type TokenRequest = wire.TokenRequest

// CreateToken creates a token; its value is in the answer and nowhere else.
func (c *Client) CreateToken(ctx context.Context, req TokenRequest) (wire.CreatedToken, error) {
	var out wire.CreatedToken
	return out, c.do(ctx, "POST", "/v1/tokens", req, &out)
}

// Tokens lists one's own tokens, or every token with all (admins).
func (c *Client) Tokens(ctx context.Context, all bool) ([]wire.Token, error) {
	var out []wire.Token
	p := "/v1/tokens"
	if all {
		p += "?all=true"
	}
	return out, c.do(ctx, "GET", p, nil, &out)
}

// RevokeToken revokes a token by name.
func (c *Client) RevokeToken(ctx context.Context, name string) error {
	return c.do(ctx, "DELETE", "/v1/tokens/"+url.PathEscape(name), nil, nil)
}

// Teams lists teams with their members.
func (c *Client) Teams(ctx context.Context) ([]wire.Team, error) {
	var out []wire.Team
	return out, c.do(ctx, "GET", "/v1/teams", nil, &out)
}

// CreateTeam creates a team.
func (c *Client) CreateTeam(ctx context.Context, name string) (wire.Team, error) {
	var out wire.Team
	return out, c.do(ctx, "POST", "/v1/teams", wire.NameRequest{Name: name}, &out)
}

// AddTeamMember adds a user to a team.
func (c *Client) AddTeamMember(ctx context.Context, team, user string) error {
	return c.do(ctx, "PUT", "/v1/teams/"+url.PathEscape(team)+"/members/"+url.PathEscape(user), struct{}{}, nil)
}

// RemoveTeamMember removes a user from a team.
func (c *Client) RemoveTeamMember(ctx context.Context, team, user string) error {
	return c.do(ctx, "DELETE", "/v1/teams/"+url.PathEscape(team)+"/members/"+url.PathEscape(user), nil, nil)
}

// Grant gives a team a role on an app; role "" takes it away.
func (c *Client) Grant(ctx context.Context, app, team, role string) error {
	return c.do(ctx, "PUT", appPath(app, "/grants/", url.PathEscape(team)), wire.GrantRequest{Role: role}, nil)
}

// AuditQuery selects audit events.
type AuditQuery struct {
	Since string // a duration ("1h") or an RFC 3339 time
	Actor string
	App   string
	Limit int
}

// Audit lists audit events, oldest first.
func (c *Client) Audit(ctx context.Context, q AuditQuery) ([]wire.AuditEvent, error) {
	v := url.Values{}
	if q.Since != "" {
		v.Set("since", q.Since)
	}
	if q.Actor != "" {
		v.Set("actor", q.Actor)
	}
	if q.App != "" {
		v.Set("app", q.App)
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	var out []wire.AuditEvent
	return out, c.do(ctx, "GET", "/v1/audit?"+v.Encode(), nil, &out)
}

// AuditExport copies every audit event to w as JSON lines.
func (c *Client) AuditExport(ctx context.Context, w io.Writer) error {
	resp, err := c.request(ctx, "GET", "/v1/audit/export", nil, "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(w, resp.Body)
	return err
}

// AuditVerify has the server check the audit chain and its checkpoints.
func (c *Client) AuditVerify(ctx context.Context) (wire.VerifyReport, error) {
	var out wire.VerifyReport
	return out, c.do(ctx, "POST", "/v1/audit/verify", struct{}{}, &out)
}

// HTTPClient returns the HTTP client, with the pinned CA, for raw requests.
func (c *Client) HTTPClient() *http.Client { return c.http }
