package wire

import "time"

// Volume is a persistent volume of an app.
type Volume struct {
	Name      string `json:"name"`
	App       string `json:"app"`
	Size      int64  `json:"size"`              // bytes
	Used      *int64 `json:"used,omitempty"`    // bytes, when an instance has it mounted
	Process   string `json:"process,omitempty"` // the process type it is attached to
	Path      string `json:"path,omitempty"`    // where instances find it, relative to their working folder
	Env       string `json:"env"`               // the variable that holds its absolute path in instances
	Snapshots int    `json:"snapshots"`
	Enforced  bool   `json:"size_enforced"`
	// NotEnforced says why writes past the size are not refused, when
	// they are not.
	NotEnforced string    `json:"size_not_enforced,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
}

// VolumeRequest creates a volume ("name", "size") or resizes one ("size").
type VolumeRequest struct {
	Name string `json:"name,omitempty"`
	Size string `json:"size"` // "1GiB", "512M", a number of bytes
}

// AttachRequest attaches a volume to a process type.
type AttachRequest struct {
	Process string `json:"process"`
	Path    string `json:"path"`
}

// Snapshot is a snapshot of a volume.
type Snapshot struct {
	ID        string    `json:"id"`
	Volume    string    `json:"volume"`
	Name      string    `json:"name,omitempty"`
	Size      int64     `json:"size"`
	CreatedAt time.Time `json:"created_at"`
}

// SnapshotRequest takes a snapshot, with an optional name.
type SnapshotRequest struct {
	Name string `json:"name,omitempty"`
}

// RestoreRequest restores a volume to a snapshot (by ID or name), in place
// or ("to") into a new volume.
type RestoreRequest struct {
	Snapshot string `json:"snapshot"`
	To       string `json:"to,omitempty"`
}
