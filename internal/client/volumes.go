package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"paddock.dev/paddock/internal/wire"
)

func volumePath(app, volume string) string {
	return "/v1/apps/" + url.PathEscape(app) + "/volumes/" + url.PathEscape(volume)
}

// AllVolumes lists the volumes of every app the caller may read.
func (c *Client) AllVolumes(ctx context.Context) ([]wire.Volume, error) {
	var out []wire.Volume
	return out, c.do(ctx, "GET", "/v1/volumes", nil, &out)
}

// CreateVolume makes a volume of size ("1GiB") for app.
func (c *Client) CreateVolume(ctx context.Context, app, name, size string) (wire.Volume, error) {
	var out wire.Volume
	return out, c.do(ctx, "POST", "/v1/apps/"+url.PathEscape(app)+"/volumes", wire.VolumeRequest{Name: name, Size: size}, &out)
}

// Volume describes one volume of app.
func (c *Client) Volume(ctx context.Context, app, name string) (wire.Volume, error) {
	var out wire.Volume
	return out, c.do(ctx, "GET", volumePath(app, name), nil, &out)
}

// ResizeVolume grows a volume.
func (c *Client) ResizeVolume(ctx context.Context, app, name, size string) (wire.Volume, error) {
	var out wire.Volume
	return out, c.do(ctx, "PATCH", volumePath(app, name), wire.VolumeRequest{Size: size}, &out)
}

// AttachVolume attaches a volume to a process type.
func (c *Client) AttachVolume(ctx context.Context, app, name string, req wire.AttachRequest) (wire.Volume, error) {
	var out wire.Volume
	return out, c.do(ctx, "PUT", volumePath(app, name)+"/attachment", req, &out)
}

// DetachVolume detaches a volume from its process type.
func (c *Client) DetachVolume(ctx context.Context, app, name string) (wire.Volume, error) {
	var out wire.Volume
	return out, c.do(ctx, "DELETE", volumePath(app, name)+"/attachment", nil, &out)
}

// DeleteVolume deletes a volume; force deletes an attached one and its
// snapshots.
func (c *Client) DeleteVolume(ctx context.Context, app, name string, force bool) error {
	p := volumePath(app, name)
	if force {
		p += "?force=true"
	}
	return c.do(ctx, "DELETE", p, nil, nil)
}

// Snapshot takes a snapshot of a volume.
func (c *Client) Snapshot(ctx context.Context, app, volume, name string) (wire.Snapshot, error) {
	var out wire.Snapshot
	return out, c.do(ctx, "POST", volumePath(app, volume)+"/snapshots", wire.SnapshotRequest{Name: name}, &out)
}

// Snapshots lists a volume's snapshots, oldest first.
func (c *Client) Snapshots(ctx context.Context, app, volume string) ([]wire.Snapshot, error) {
	var out []wire.Snapshot
	return out, c.do(ctx, "GET", volumePath(app, volume)+"/snapshots", nil, &out)
}

// DeleteSnapshot deletes a snapshot (by ID or name).
func (c *Client) DeleteSnapshot(ctx context.Context, app, volume, snap string) error {
	return c.do(ctx, "DELETE", volumePath(app, volume)+"/snapshots/"+url.PathEscape(snap), nil, nil)
}

// RestoreVolume restores a volume to a snapshot, or into a new volume to.
func (c *Client) RestoreVolume(ctx context.Context, app, volume, snap, to string) (wire.Volume, error) {
	var out wire.Volume
	return out, c.do(ctx, "POST", volumePath(app, volume)+"/restore", wire.RestoreRequest{Snapshot: snap, To: to}, &out)
}

// RestoreVolumeCopy restores a volume to a snapshot by copying its files at
// most rate ("50MiB/s") fast, calling progress as the copy goes.
func (c *Client) RestoreVolumeCopy(ctx context.Context, app, volume, snap, rate string, progress func(done, total int64)) (wire.Volume, error) {
	b, err := json.Marshal(wire.RestoreRequest{Snapshot: snap, Rate: rate})
	if err != nil {
		return wire.Volume{}, err
	}
	resp, err := c.request(ctx, "POST", volumePath(app, volume)+"/restore", bytes.NewReader(b), "application/json")
	if err != nil {
		return wire.Volume{}, err
	}
	defer resp.Body.Close()
	return volumeEvents(resp, progress)
}

// ImportVolume makes volume name of app, of size ("10GiB"), from a stream
// ExportSnapshot wrote, at most rate fast ("" for no limit).
func (c *Client) ImportVolume(ctx context.Context, app, name, size, rate string, stream io.Reader, progress func(done, total int64)) (wire.Volume, error) {
	q := url.Values{"size": {size}}
	if rate != "" {
		q.Set("rate", rate)
	}
	resp, err := c.request(ctx, "POST", volumePath(app, name)+"/import?"+q.Encode(), stream, "application/x-tar")
	if err != nil {
		return wire.Volume{}, err
	}
	defer resp.Body.Close()
	return volumeEvents(resp, progress)
}

// volumeEvents reads the answer to a copy: a volume, or a stream of
// progress ending in a volume or an error.
func volumeEvents(resp *http.Response, progress func(done, total int64)) (wire.Volume, error) {
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/x-ndjson") {
		var v wire.Volume
		if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
			return v, fmt.Errorf("read answer: %w", err)
		}
		return v, nil
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var ev wire.VolumeEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return wire.Volume{}, fmt.Errorf("unreadable event: %w", err)
		}
		switch {
		case ev.Type == wire.VolumeDone && ev.Volume != nil:
			return *ev.Volume, nil
		case ev.Type == wire.VolumeError && ev.Error != nil:
			return wire.Volume{}, errorOf(0, ev.Error)
		case ev.Type == wire.VolumeProgress && progress != nil:
			progress(ev.Done, ev.Total)
		}
	}
	if err := sc.Err(); err != nil {
		return wire.Volume{}, fmt.Errorf("connection lost: %w", err)
	}
	return wire.Volume{}, errors.New("the server closed the stream without a result: see `paddock volumes show`")
}

// ExportSnapshot writes a snapshot's content and checksum manifest to w.
func (c *Client) ExportSnapshot(ctx context.Context, app, volume, snap string, w io.Writer) error {
	resp, err := c.request(ctx, "GET", volumePath(app, volume)+"/snapshots/"+url.PathEscape(snap)+"/export", nil, "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(w, resp.Body); err != nil {
		return fmt.Errorf("export cut short: %w", err)
	}
	return nil
}

// VerifySnapshot reads a snapshot's content again and checks it against
// its checksum manifest.
func (c *Client) VerifySnapshot(ctx context.Context, app, volume, snap string) (wire.Snapshot, error) {
	var out wire.Snapshot
	return out, c.do(ctx, "POST", volumePath(app, volume)+"/snapshots/"+url.PathEscape(snap)+"/verify", nil, &out)
}

// Backups lists the backup schedules of app, or of every app the caller
// may read when app is "".
func (c *Client) Backups(ctx context.Context, app string) ([]wire.BackupSchedule, error) {
	var out []wire.BackupSchedule
	p := "/v1/backups"
	if app != "" {
		p += "?app=" + url.QueryEscape(app)
	}
	return out, c.do(ctx, "GET", p, nil, &out)
}

// ScheduleBackups sets a volume's backup schedule.
func (c *Client) ScheduleBackups(ctx context.Context, app, volume string, req wire.ScheduleRequest) (wire.BackupSchedule, error) {
	var out wire.BackupSchedule
	return out, c.do(ctx, "PUT", volumePath(app, volume)+"/backups", req, &out)
}

// UnscheduleBackups stops a volume's backups; those taken stay.
func (c *Client) UnscheduleBackups(ctx context.Context, app, volume string) error {
	return c.do(ctx, "DELETE", volumePath(app, volume)+"/backups", nil, nil)
}

// BackupNow takes a verified backup of a volume at once.
func (c *Client) BackupNow(ctx context.Context, app, volume string) (wire.Snapshot, error) {
	var out wire.Snapshot
	return out, c.do(ctx, "POST", volumePath(app, volume)+"/backups", nil, &out)
}
