package router

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// ErrNotRunning is returned by Client methods when no router listens on
// the state folder's socket.
var ErrNotRunning = errors.New("router is not running")

// Client talks to a running router over StateDir/admin.sock.
type Client struct{ StateDir string }

// answerWithin bounds each call: a router that does not answer within it
// (stopped, or stuck) counts as not answering.
const answerWithin = 10 * time.Second

func (c *Client) do(ctx context.Context, method, path string, body []byte, out any) error {
	ctx, cancel := context.WithTimeout(ctx, answerWithin)
	defer cancel()
	sock := filepath.Join(c.StateDir, socketFile)
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
		DisableKeepAlives: true,
	}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, method, "http://router"+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("router %s: %w: %w", path, ErrNotRunning, err)
		}
		return fmt.Errorf("router %s: %w", path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("router %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("router %s: %s: %s", path, resp.Status, bytes.TrimSpace(data))
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("router %s: %w", path, err)
		}
	}
	return nil
}

// Push sends the full routing table. It returns once the router uses t for
// every new request and has persisted it. A table older than the one in use
// is ignored, which is not an error.
func (c *Client) Push(ctx context.Context, t Table) error {
	body, err := json.Marshal(t)
	if err != nil {
		return err
	}
	return c.do(ctx, http.MethodPut, "/v1/table", body, nil)
}

// Status asks the router what it is doing.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	err := c.do(ctx, http.MethodGet, "/v1/status", nil, &st)
	return st, err
}

// Stats asks the router for every app's request counters.
func (c *Client) Stats(ctx context.Context) (map[string]AppStats, error) {
	var st map[string]AppStats
	err := c.do(ctx, http.MethodGet, "/v1/stats", nil, &st)
	return st, err
}

// ReadInfo reads StateDir/router.json without contacting the router: the
// PID, the listen address and the start time of the router that last
// started there. After a clean stop the PID is 0 and the address stays;
// after a crash the PID is the dead router's (check before signalling it).
func ReadInfo(stateDir string) (Status, error) {
	data, err := os.ReadFile(filepath.Join(stateDir, infoFile))
	if err != nil {
		return Status{}, fmt.Errorf("read router info: %w", err)
	}
	var st Status
	if err := json.Unmarshal(data, &st); err != nil {
		return Status{}, fmt.Errorf("read router info: %w", err)
	}
	return st, nil
}

// Held reports whether a router holds the state folder: one runs on it,
// answering or not (a router lets go once it starts to stop).
func Held(stateDir string) bool {
	f, err := os.Open(filepath.Join(stateDir, lockFile))
	if err != nil {
		return false
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return errors.Is(err, syscall.EWOULDBLOCK)
	}
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return false
}
