package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// container is one container of a pod, and its supervisor.
//
// Its states, as reported in the container status:
//
//	waiting ContainerCreating ─> (pull) ─> waiting ErrImagePull / ImagePullBackOff ─┐
//	        │                                                                       │ retry with backoff
//	        ├─> (env) ─> waiting CreateContainerConfigError ─────────────────────────┤
//	        └─> running (started once the startup probe passes, ready while the
//	            readiness probe passes)
//	              ─> exit, or liveness / startup probe failure (process group
//	                 killed) ─> lastState terminated
//	                   ─> waiting CrashLoopBackOff for the backoff, restartCount+1,
//	                      then running again (restart policy Always, or
//	                      OnFailure after a failure)
//	                   ─> terminated for good (Never; OnFailure after success;
//	                      pod stopping)
type container struct {
	pod  *pod
	spec *corev1.Container
	// port is the port on 127.0.0.1 the process gets as PORT, and the
	// target of the pod's proxies for this container's ports.
	port int

	// Guarded by pod.mu.
	state    corev1.ContainerState
	last     corev1.ContainerState
	restarts int32
	ready    bool
	started  bool
	imageID  string
	inst     *instance // the running process, if any
	prev     *instance // the one before, for previous logs
	count    int       // instances started, for log file names
}

func newContainer(pd *pod, spec *corev1.Container, port int) *container {
	return &container{
		pod:   pd,
		spec:  spec,
		port:  port,
		state: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}},
	}
}

// errConfig marks an error in a container's configuration (a missing
// secret or key), reported as CreateContainerConfigError.
var errConfig = errors.New("container configuration")

// supervise runs the container until ctx ends or its restart policy says it
// is done.
func (c *container) supervise(ctx context.Context) {
	b := c.pod.prov.cfg.backoff
	delay := b.initial
	sleep := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		}
	}
	grow := func() { delay = min(2*delay, b.max) }
	for ctx.Err() == nil {
		auth, err := c.pod.pullAuth(ctx, c.spec.Image)
		var img *image
		if err == nil {
			img, err = c.pod.prov.images.pull(ctx, c.spec.Image, auth)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			c.pod.log.Warn("pull image", "container", c.spec.Name, "err", err)
			c.setWaiting("ErrImagePull", err.Error())
			if !sleep(delay) {
				return
			}
			c.setWaiting("ImagePullBackOff", fmt.Sprintf("Back-off pulling image %q: %v", c.spec.Image, err))
			if !sleep(delay) {
				return
			}
			grow()
			continue
		}
		run, err := c.pod.prepare(ctx, c, img)
		if err != nil {
			reason := "RunContainerError"
			if errors.Is(err, errConfig) {
				reason = "CreateContainerConfigError"
			}
			c.pod.log.Warn("prepare container", "container", c.spec.Name, "err", err)
			c.setWaiting(reason, err.Error())
			if !sleep(delay) {
				return
			}
			grow()
			continue
		}
		inst, err := c.start(run)
		if err != nil {
			c.pod.log.Warn("start container", "container", c.spec.Name, "err", err)
			c.exited(&instance{started: time.Now(), exitCode: 128, startErr: err})
		} else if inst == nil {
			return // the pod stopped meanwhile
		} else {
			probes := newProber(c, inst, run)
			probeCtx, stopProbes := context.WithCancel(ctx)
			probeDone := make(chan struct{})
			go func() {
				defer close(probeDone)
				probes.run(probeCtx)
			}()
			<-inst.done
			stopProbes()
			<-probeDone
			c.exited(inst)
			if time.Since(inst.started) >= b.reset {
				delay = b.initial
			}
		}
		if ctx.Err() != nil || !c.restart(inst) {
			return
		}
		c.pod.mu.Lock()
		c.restarts++
		c.state = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{
			Reason:  "CrashLoopBackOff",
			Message: fmt.Sprintf("back-off %s restarting failed container=%s pod=%s", delay, c.spec.Name, c.pod.spec.Name),
		}}
		c.pod.mu.Unlock()
		c.pod.markChanged()
		if !sleep(delay) {
			return
		}
		grow()
	}
}

// restart says whether the pod's restart policy restarts the container
// after inst ended (inst nil: it did not start).
func (c *container) restart(inst *instance) bool {
	switch c.pod.spec.Spec.RestartPolicy {
	case corev1.RestartPolicyNever:
		return false
	case corev1.RestartPolicyOnFailure:
		return inst == nil || inst.exitCode != 0
	}
	return true
}

func (c *container) setWaiting(reason, msg string) {
	c.pod.mu.Lock()
	c.state = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: msg}}
	c.ready = false
	c.pod.mu.Unlock()
	c.pod.markChanged()
}

// runSpec is how a container's process is started.
type runSpec struct {
	path string   // the executable, resolved
	args []string // argv, argv[0] as given
	dir  string
	env  []string
	// rootfs is the image's folder, for probes' commands.
	rootfs  string
	imageID string
}

// instance is one run of a container's process, in its own process group.
type instance struct {
	pid      int
	started  time.Time
	logPath  string
	done     chan struct{} // closed once exited and reaped
	exitCode int           // valid after done
	signaled syscall.Signal
	finished time.Time
	startErr error
	reason   string // why the node ended it, if it did: the status message
}

// start starts the process, or returns nil if the pod is stopping.
func (c *container) start(r *runSpec) (*instance, error) {
	c.pod.mu.Lock()
	c.count++
	n := c.count
	c.pod.mu.Unlock()
	logDir := filepath.Join(c.pod.dir, "logs", c.spec.Name)
	if err := os.MkdirAll(logDir, 0o700); err != nil {
		return nil, err
	}
	logPath := filepath.Join(logDir, strconv.Itoa(n)+".log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the child has its own copy

	cmd := &exec.Cmd{Path: r.path, Args: r.args, Dir: r.dir, Env: r.env, Stdout: logFile, Stderr: logFile}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(logFile, "start %s: %v\n", r.path, err)
		return nil, fmt.Errorf("start %s: %w", r.path, err)
	}
	inst := &instance{pid: cmd.Process.Pid, started: time.Now(), logPath: logPath, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		// The container ends with its main process, as in a pid namespace:
		// whatever it left in its group goes too.
		_ = syscall.Kill(-inst.pid, syscall.SIGKILL)
		inst.finished = time.Now()
		inst.exitCode = 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			inst.exitCode = ee.ExitCode()
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				inst.signaled = ws.Signal()
				inst.exitCode = 128 + int(ws.Signal())
			}
		} else if err != nil {
			inst.exitCode = 128
		}
		close(inst.done)
	}()

	c.pod.mu.Lock()
	stopping := c.pod.terminating
	if !stopping {
		c.prev, c.inst = c.inst, inst
		c.imageID = r.imageID
		c.ready = false
		c.started = false
		c.state = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(inst.started)}}
	}
	c.pod.mu.Unlock()
	if stopping {
		_ = syscall.Kill(-inst.pid, syscall.SIGKILL)
		<-inst.done
		return nil, nil
	}
	c.pod.log.Info("container started", "container", c.spec.Name, "pid", inst.pid, "port", c.port)
	c.pod.markChanged()
	return inst, nil
}

// exited records the end of inst.
func (c *container) exited(inst *instance) {
	var reason string
	switch {
	case inst.startErr != nil:
		reason = "StartError"
	case inst.exitCode == 0:
		reason = "Completed"
	default:
		reason = "Error"
	}
	term := &corev1.ContainerStateTerminated{
		ExitCode:    int32(inst.exitCode),
		Reason:      reason,
		StartedAt:   metav1.NewTime(inst.started),
		FinishedAt:  metav1.NewTime(inst.finished),
		ContainerID: containerID(inst),
		Message:     inst.reason,
	}
	if inst.startErr != nil {
		term.Message = inst.startErr.Error()
		term.FinishedAt = term.StartedAt
	}
	if inst.signaled != 0 {
		term.Signal = int32(inst.signaled)
	}
	c.pod.mu.Lock()
	c.state = corev1.ContainerState{Terminated: term}
	c.last = corev1.ContainerState{Terminated: term.DeepCopy()}
	c.ready = false
	c.pod.mu.Unlock()
	c.pod.log.Info("container exited", "container", c.spec.Name, "pid", inst.pid, "code", inst.exitCode, "reason", reason)
	c.pod.markChanged()
}

// kill ends the running instance for reason (a failed probe, shown as the
// terminated state's message; the reason stays Error or Completed, as a
// kubelet reports it): SIGTERM, then
// SIGKILL after the grace period.
func (c *container) kill(inst *instance, reason string, grace time.Duration) {
	c.pod.mu.Lock()
	inst.reason = reason
	c.pod.mu.Unlock()
	_ = syscall.Kill(-inst.pid, syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-inst.done:
	case <-t.C:
		_ = syscall.Kill(-inst.pid, syscall.SIGKILL)
	}
}

// signal sends sig to the running instance's process group, if any.
func (c *container) signal(sig syscall.Signal) {
	c.pod.mu.Lock()
	inst := c.inst
	c.pod.mu.Unlock()
	if inst == nil {
		return
	}
	select {
	case <-inst.done:
	default:
		_ = syscall.Kill(-inst.pid, sig)
	}
}

// containerID names an instance by its process id, so a test can find
// its process: process://<pid>.
func containerID(inst *instance) string {
	if inst.pid == 0 {
		return ""
	}
	return "process://" + strconv.Itoa(inst.pid)
}

// status is the container's status. Called with pod.mu held.
func (c *container) status() corev1.ContainerStatus {
	started := c.started
	cs := corev1.ContainerStatus{
		Name:                 c.spec.Name,
		Image:                c.spec.Image,
		ImageID:              c.imageID,
		State:                *c.state.DeepCopy(),
		LastTerminationState: *c.last.DeepCopy(),
		Ready:                c.ready,
		RestartCount:         c.restarts,
		Started:              &started,
		Resources:            c.spec.Resources.DeepCopy(),
	}
	if c.state.Running != nil && c.inst != nil {
		cs.ContainerID = containerID(c.inst)
	} else if c.state.Terminated != nil {
		cs.ContainerID = c.state.Terminated.ContainerID
	}
	return cs
}
