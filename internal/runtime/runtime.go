// Package runtime defines how the platform runs app instances. The default
// implementation, process/, supervises local processes; every
// implementation reports instances as they are, never as they were asked to be.
package runtime

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"time"
)

// ErrNotFound is returned for an instance the runtime does not know.
var ErrNotFound = errors.New("instance not found")

// Spec is everything needed to start one instance.
type Spec struct {
	ID          string        `json:"id"`
	App         string        `json:"app"`
	AppID       int64         `json:"app_id"` // store.App.ID: never reused, unlike the name
	Process     string        `json:"process"`
	Release     int           `json:"release"`
	Artifact    string        `json:"artifact"` // content digest of the build artifact; "" runs the command in an empty folder
	Command     string        `json:"command"`  // run with /bin/sh -c
	Env         []string      `json:"env"`      // KEY=VALUE, without PORT
	Port        int           `json:"port"`     // given to the process as $PORT
	Memory      int64         `json:"memory"`   // bytes; 0 means no limit
	StopTimeout time.Duration `json:"stop_timeout"`
	// UID and GID run the process as that user, owner of its working
	// folder; 0 runs it as the runtime's own user.
	UID uint32 `json:"uid,omitempty"`
	GID uint32 `json:"gid,omitempty"`
	// Mounts are folders bound into the instance's working folder: its
	// volumes.
	Mounts []Mount `json:"mounts,omitempty"`
	// Secrets are given to the instance as environment variables or files;
	// a runtime keeps them in memory only, never writing their values to
	// disk.
	Secrets []Secret `json:"-"`
	// Check is a health check the runtime runs inside the instance, with
	// its user, environment and limits; nil: none.
	Check *Check `json:"check,omitempty"`
}

// Check is a command whose exit status says whether an instance is
// healthy: 0 is healthy. The runtime runs it soon after the process
// starts, then more often until it first passes, then every Interval.
type Check struct {
	Command  string        `json:"command"` // run with /bin/sh -c in the instance's folder
	Interval time.Duration `json:"interval"`
	Timeout  time.Duration `json:"timeout"` // killed after this, and failed
}

// CheckResult is the last result of an instance's Check.
type CheckResult struct {
	OK bool      `json:"ok"`
	At time.Time `json:"at"` // when it ended
	// Message is why it failed: the exit and the last line of output,
	// with the instance's secrets redacted.
	Message string `json:"message,omitempty"`
}

// Mount binds a folder of the host into an instance.
type Mount struct {
	Source string `json:"source"` // a folder of the host
	Target string `json:"target"` // where, relative to the instance's working folder
	Env    string `json:"env"`    // the environment variable that holds the absolute path
}

// Secret is one secret value an instance gets.
type Secret struct {
	Name   string `json:"name"`
	Value  []byte `json:"value"`
	AsFile bool   `json:"as_file,omitempty"` // a file in $PADDOCK_SECRETS_DIR, not an environment variable
}

// String, GoString and LogValue keep a secret's value out of logs and
// error messages.
func (s Secret) String() string { return s.Name + "=[REDACTED]" }

// GoString is String, for %#v.
func (s Secret) GoString() string { return s.String() }

// LogValue is String, for log/slog.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// State is what an instance is doing, as last reported by its supervisor.
//
//	starting ──► running ──► (exit) backoff ──► starting …
//	                 │                  └─► crashloop (restarts keep slowing down)
//	                 └── stop ──► stopping ──► stopped
//	supervisor gone without stopping ──► lost
type State string

// Instance states.
const (
	StateStarting  State = "starting"
	StateRunning   State = "running"
	StateBackoff   State = "backoff"   // exited; restarting after a delay
	StateCrashLoop State = "crashloop" // exited repeatedly soon after starting
	StateStopping  State = "stopping"
	StateStopped   State = "stopped"
	StateLost      State = "lost" // the supervisor died; nothing runs
)

// Instance is a running (or once running) copy of a process type.
type Instance struct {
	Spec
	State     State     `json:"state"`
	PID       int       `json:"pid,omitempty"`
	Restarts  int       `json:"restarts"`
	StartedAt time.Time `json:"started_at"` // when the current process started
	LastExit  string    `json:"last_exit,omitempty"`
	// Checked is the last result of the instance's Check, of its current
	// process; nil before the first.
	Checked *CheckResult `json:"checked,omitempty"`
	// MemoryLimit says how the memory limit is enforced, or why it is not.
	MemoryLimit    string `json:"memory_limit,omitempty"`
	MemoryEnforced bool   `json:"memory_enforced"`
	MemoryUsed     int64  `json:"memory_used,omitempty"`
	// Cgroup is the instance's cgroup (v2), which holds all its
	// processes, for their CPU time and memory; "" without one.
	Cgroup string `json:"-"`
	// Node is the cluster node a pod runs on; "" on one machine.
	Node string `json:"node,omitempty"`
}

// Runtime starts, stops and reports instances.
type Runtime interface {
	// Start starts an instance and returns once its supervisor runs.
	Start(ctx context.Context, s Spec) (Instance, error)
	// Stop stops an instance gracefully (SIGTERM, then SIGKILL after its
	// stop timeout), waits for it and forgets it.
	Stop(ctx context.Context, id string) error
	// List reports every instance the runtime knows, including ones started
	// by an earlier server process.
	List(ctx context.Context) ([]Instance, error)
	// LogFile returns the path of an instance's output log: in a folder
	// of its app's (by name and ID: a new app of a destroyed one's name
	// gets a folder of its own).
	LogFile(s Spec) string
}

// LogFolder names the folder of an app's logs, APP.ID: apps' names are
// used again after they are destroyed, their IDs never.
func LogFolder(app string, appID int64) string {
	return app + "." + strconv.FormatInt(appID, 10)
}
