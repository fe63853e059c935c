package node

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// firstProbeInterval is how often readiness and startup probes run until
// their first success.
const firstProbeInterval = 100 * time.Millisecond

// prober runs one container instance's probes as a kubelet does: the
// startup probe first (the container is started once it passes, or at
// once without one), then readiness and liveness side by side. A failed
// startup or liveness probe kills the instance; the supervisor restarts
// it.
type prober struct {
	c    *container
	inst *instance
	rs   *runSpec
	hc   *http.Client
}

func newProber(c *container, inst *instance, r *runSpec) *prober {
	return &prober{
		c:    c,
		inst: inst,
		rs:   r,
		hc: &http.Client{
			Transport: &http.Transport{
				TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // kubelets do not verify probes either
				DisableKeepAlives: true,
			},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
}

func (p *prober) run(ctx context.Context) {
	defer p.hc.CloseIdleConnections()
	spec := p.c.spec
	if spec.StartupProbe != nil {
		if !p.startup(ctx, spec.StartupProbe) {
			return
		}
	}
	p.set(func(c *container) { c.started = true })
	if spec.ReadinessProbe == nil {
		p.set(func(c *container) { c.ready = true })
	}
	var wg sync.WaitGroup
	if spec.ReadinessProbe != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.readiness(ctx, spec.ReadinessProbe)
		}()
	}
	if spec.LivenessProbe != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.liveness(ctx, spec.LivenessProbe)
		}()
	}
	wg.Wait()
}

// set changes the container's status under the pod's lock, if this
// instance is still the container's.
func (p *prober) set(f func(*container)) {
	p.c.pod.mu.Lock()
	if p.c.inst == p.inst && p.c.state.Running != nil {
		f(p.c)
	}
	p.c.pod.mu.Unlock()
	p.c.pod.markChanged()
}

func seconds(n int32, def time.Duration) time.Duration {
	if n <= 0 {
		return def
	}
	return time.Duration(n) * time.Second
}

func threshold(n int32) int {
	if n <= 0 {
		return 1
	}
	return int(n)
}

// wait sleeps d, false if ctx ended first.
func wait(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// startup probes until success (true), or kills the instance once the
// probe has had failureThreshold periods (false).
func (p *prober) startup(ctx context.Context, pr *corev1.Probe) bool {
	if !wait(ctx, seconds(pr.InitialDelaySeconds, 0)) {
		return false
	}
	period := seconds(pr.PeriodSeconds, 10*time.Second)
	deadline := time.Now().Add(period * time.Duration(threshold(pr.FailureThreshold)))
	for {
		err := p.probe(ctx, pr)
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		if time.Now().After(deadline) {
			p.c.pod.log.Info("startup probe failed", "container", p.c.spec.Name, "err", err)
			p.c.kill(p.inst, "Startup probe failed: "+err.Error(), p.grace(pr))
			return false
		}
		if !wait(ctx, min(firstProbeInterval, period)) {
			return false
		}
	}
}

func (p *prober) readiness(ctx context.Context, pr *corev1.Probe) {
	if !wait(ctx, seconds(pr.InitialDelaySeconds, 0)) {
		return
	}
	period := seconds(pr.PeriodSeconds, 10*time.Second)
	everReady := false
	ready := false
	successes, failures := 0, 0
	for {
		err := p.probe(ctx, pr)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			successes, failures = successes+1, 0
			// The first success makes the container ready at once, as
			// on a kubelet; later, successThreshold applies.
			if !ready && (!everReady || successes >= threshold(pr.SuccessThreshold)) {
				ready, everReady = true, true
				p.set(func(c *container) { c.ready = true })
			}
		} else {
			successes, failures = 0, failures+1
			if ready && failures >= threshold(pr.FailureThreshold) {
				ready = false
				p.c.pod.log.Info("readiness probe failed", "container", p.c.spec.Name, "err", err)
				p.set(func(c *container) { c.ready = false })
			}
		}
		next := period
		if !everReady {
			next = min(firstProbeInterval, period)
		}
		if !wait(ctx, next) {
			return
		}
	}
}

func (p *prober) liveness(ctx context.Context, pr *corev1.Probe) {
	if !wait(ctx, seconds(pr.InitialDelaySeconds, 0)) {
		return
	}
	period := seconds(pr.PeriodSeconds, 10*time.Second)
	failures := 0
	for {
		err := p.probe(ctx, pr)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			failures = 0
		} else if failures++; failures >= threshold(pr.FailureThreshold) {
			p.c.pod.log.Info("liveness probe failed", "container", p.c.spec.Name, "err", err)
			p.c.kill(p.inst, "Liveness probe failed: "+err.Error(), p.grace(pr))
			return
		}
		if !wait(ctx, period) {
			return
		}
	}
}

// grace is how long a container killed by a probe gets after SIGTERM.
func (p *prober) grace(pr *corev1.Probe) time.Duration {
	if pr.TerminationGracePeriodSeconds != nil {
		return time.Duration(*pr.TerminationGracePeriodSeconds) * time.Second
	}
	if g := p.c.pod.spec.Spec.TerminationGracePeriodSeconds; g != nil {
		return time.Duration(*g) * time.Second
	}
	return 30 * time.Second
}

// probe runs pr once.
func (p *prober) probe(ctx context.Context, pr *corev1.Probe) error {
	ctx, cancel := context.WithTimeout(ctx, seconds(pr.TimeoutSeconds, time.Second))
	defer cancel()
	switch {
	case pr.HTTPGet != nil:
		return p.httpGet(ctx, pr.HTTPGet)
	case pr.TCPSocket != nil:
		port, err := p.port(pr.TCPSocket.Port)
		if err != nil {
			return err
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			return err
		}
		return conn.Close()
	case pr.Exec != nil:
		return p.exec(ctx, pr.Exec.Command)
	}
	return fmt.Errorf("probe type not supported by this node")
}

// port maps a probe's port to where the process listens: a declared
// container port (by number or name) is the container's PORT; another
// number is taken as is.
func (p *prober) port(port intstr.IntOrString) (int, error) {
	if port.Type == intstr.String {
		for _, cp := range p.c.spec.Ports {
			if cp.Name == port.StrVal {
				return p.c.port, nil
			}
		}
		return 0, fmt.Errorf("no container port named %q", port.StrVal)
	}
	for _, cp := range p.c.spec.Ports {
		if int(cp.ContainerPort) == port.IntValue() {
			return p.c.port, nil
		}
	}
	return port.IntValue(), nil
}

func (p *prober) httpGet(ctx context.Context, g *corev1.HTTPGetAction) error {
	port, err := p.port(g.Port)
	if err != nil {
		return err
	}
	scheme := "http"
	if g.Scheme == corev1.URISchemeHTTPS {
		scheme = "https"
	}
	path := g.Path
	if path == "" || path[0] != '/' {
		path = "/" + path
	}
	url := scheme + "://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "kube-probe/1.36")
	for _, h := range g.HTTPHeaders {
		if h.Name == "Host" {
			req.Host = h.Value
			continue
		}
		req.Header.Add(h.Name, h.Value)
	}
	if g.Host != "" {
		req.Host = g.Host
	}
	resp, err := p.hc.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 10<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("HTTP probe failed with statuscode: %d", resp.StatusCode)
	}
	return nil
}

// exec runs the command with the container's env in its working folder,
// in a process group of its own that is killed at the timeout.
func (p *prober) exec(ctx context.Context, argv []string) error {
	if len(argv) == 0 {
		return fmt.Errorf("exec probe without a command")
	}
	r := p.rs
	lookup := func(string) (string, bool) { return "", false }
	exe, err := resolveCommand(argv[0], r.rootfs, r.dir, lookup)
	if err != nil {
		return err
	}
	cmd := &exec.Cmd{Path: exe, Args: argv, Dir: r.dir, Env: r.env}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		return err
	case <-ctx.Done():
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		return fmt.Errorf("exec probe timed out: %w", ctx.Err())
	}
}
