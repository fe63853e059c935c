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
	// PerInstance: each instance of the process type has a volume of its
	// own, this one the first; Template names the per-instance volume this
	// one was made for a further instance of.
	PerInstance bool   `json:"per_instance,omitempty"`
	Template    string `json:"template,omitempty"`
}

// VolumeRequest creates a volume ("name", "size") or resizes one ("size").
type VolumeRequest struct {
	Name string `json:"name,omitempty"`
	Size string `json:"size"` // "1GiB", "512M", a number of bytes
}

// AttachRequest attaches a volume to a process type.
type AttachRequest struct {
	Process     string `json:"process"`
	Path        string `json:"path"`
	PerInstance bool   `json:"per_instance,omitempty"` // a volume of its own for each instance
}

// Snapshot is a snapshot of a volume.
type Snapshot struct {
	ID        string    `json:"id"`
	Volume    string    `json:"volume"`
	Name      string    `json:"name,omitempty"`
	Size      int64     `json:"size"`
	CreatedAt time.Time `json:"created_at"`
	// Checksum is the SHA-256 of its content's manifest, taken when it was
	// made; VerifiedAt is when the content last matched it.
	Checksum   string    `json:"checksum,omitempty"`
	VerifiedAt time.Time `json:"verified_at,omitzero"`
	Backup     bool      `json:"backup,omitempty"` // taken by a backup schedule
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
	// Rate restores in place by copying the snapshot's files at most this
	// fast ("50MiB" a second), answered as a stream of VolumeEvents;
	// without it a plugin that can restore at once (btrfs) does.
	Rate string `json:"rate,omitempty"`
}

// VolumeEvent is a line of the streamed answer to a copy (an import, a
// paced restore): progress, then the volume or an error.
type VolumeEvent struct {
	Type   string  `json:"type"`            // "progress", "volume" or "error"
	Done   int64   `json:"done,omitempty"`  // progress: bytes copied so far
	Total  int64   `json:"total,omitempty"` // progress: bytes to copy, when known
	Volume *Volume `json:"volume,omitempty"`
	Error  *Error  `json:"error,omitempty"`
}

// Volume events.
const (
	VolumeProgress = "progress"
	VolumeDone     = "volume"
	VolumeError    = "error"
)

// BackupSchedule is a volume's schedule of backups.
type BackupSchedule struct {
	Volume        string    `json:"volume"`
	App           string    `json:"app"`
	Every         string    `json:"every"` // "6h0m0s"
	Keep          int       `json:"keep"`
	VerifyRestore bool      `json:"verify_restore,omitempty"`
	Backups       int       `json:"backups"` // verified backups kept
	LastRun       time.Time `json:"last_run,omitzero"`
	LastSuccess   time.Time `json:"last_success,omitzero"`
	LastError     string    `json:"last_error,omitempty"`
	NextRun       time.Time `json:"next_run"`
}

// ScheduleRequest sets a volume's backup schedule.
type ScheduleRequest struct {
	Every         string `json:"every"` // a Go duration: "6h", "30m"
	Keep          int    `json:"keep"`
	VerifyRestore bool   `json:"verify_restore,omitempty"`
}
