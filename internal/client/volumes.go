package client

import (
	"context"
	"net/url"

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

// AttachVolume attaches a volume to a process type at path.
func (c *Client) AttachVolume(ctx context.Context, app, name, process, path string) (wire.Volume, error) {
	var out wire.Volume
	return out, c.do(ctx, "PUT", volumePath(app, name)+"/attachment", wire.AttachRequest{Process: process, Path: path}, &out)
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
