package deploy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"paddock.dev/paddock/internal/isolate"
	"paddock.dev/paddock/internal/manifest"
	"paddock.dev/paddock/internal/runtime"
)

// unhealthyAfter consecutive failed checks take a healthy instance out of
// the router, unless its manifest says otherwise; one success puts it
// (back) in.
const unhealthyAfter = 3

// newProbeClient returns the HTTP client of health checks: a new
// connection each time (a check proves the instance accepts them) and
// redirects taken as answers.
func newProbeClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// probe starts the health checks that are due. Each runs on its own and
// records its result; none blocks the reconciler.
func (s *Service) probe(ctx context.Context, insts []runtime.Instance) {
	now := s.now()
	for _, in := range insts {
		m, err := s.processManifest(ctx, in.App, in.AppID, in.Release)
		if err != nil {
			continue
		}
		spec, ok := m.Processes[in.Process]
		if !ok {
			continue
		}
		s.rec.mu.Lock()
		h := s.rec.health[in.ID]
		if h == nil {
			h = &health{firstSeen: now}
			s.rec.health[in.ID] = h
		}
		if h.started.IsZero() {
			// Admitted before its supervisor had started the process:
			// this is that process.
			h.started = in.StartedAt
		} else if !h.started.Equal(in.StartedAt) {
			// A new process (a restart): it proves itself again; a check
			// of the one before no longer counts.
			h.started, h.ok, h.probed, h.probing, h.fails, h.err = in.StartedAt, false, false, false, 0, ""
			h.gen++
		}
		interval := spec.Health.Interval
		if !h.ok {
			// A new or failing instance is checked often, so that it joins
			// the router as soon as it is ready.
			interval = min(interval, 250*time.Millisecond)
		}
		admitting := !h.ok
		due := in.State == runtime.StateRunning && !h.probing && now.Sub(h.lastProbe) >= interval
		if in.State != runtime.StateRunning {
			h.ok = false
		}
		gen := h.gen
		if due {
			h.probing, h.lastProbe = true, now
		}
		s.rec.mu.Unlock()
		if !due {
			continue
		}
		s.rec.wg.Add(1)
		go func() {
			defer s.rec.wg.Done()
			err := check(ctx, s.probes, in, spec)
			if err == nil && admitting && in.Process == "web" {
				// What answered must be the instance, not another app
				// that took its port.
				err = portOwner(in)
			}
			s.record(ctx, in, spec, gen, err)
		}()
	}
}

// admit checks a new instance quickly until it first passes, so that it
// serves as soon as it is ready: 2 ms after it started, then every 5 ms for
// 150 ms, then half as long again each time, until the reconciler's own
// checks (every 250 ms for an instance not yet healthy) take over.
func (s *Service) admit(ctx context.Context, in runtime.Instance, spec manifest.Process) {
	if spec.Health.Command != "" {
		return // the runtime runs it, as quickly, and reports to the reconciler
	}
	s.rec.mu.Lock()
	if _, ok := s.rec.health[in.ID]; !ok {
		s.rec.health[in.ID] = &health{firstSeen: s.now(), started: in.StartedAt}
	}
	s.rec.mu.Unlock()
	s.rec.wg.Add(1)
	go func() {
		defer s.rec.wg.Done()
		for n, wait := 0, 2*time.Millisecond; wait < 250*time.Millisecond; n++ {
			if n >= 30 { // 150 ms of checks 5 ms apart: back off
				wait = wait * 3 / 2
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			wait = max(wait, 5*time.Millisecond)
			s.rec.mu.Lock()
			h := s.rec.health[in.ID]
			if h == nil || h.ok {
				s.rec.mu.Unlock()
				return
			}
			if h.probing {
				s.rec.mu.Unlock()
				continue
			}
			gen := h.gen
			h.probing, h.lastProbe = true, s.now()
			s.rec.mu.Unlock()
			err := check(ctx, s.probes, in, spec)
			if err == nil && in.Process == "web" {
				err = portOwner(in) // the instance answered, not a squatter
			}
			s.record(ctx, in, spec, gen, err)
			if err == nil {
				return
			}
		}
	}()
}

// check runs one health check: an HTTP GET of the health path for web
// processes and any process that declares one, a TCP connect for other web
// processes, and for the rest, being up.
func check(ctx context.Context, probes *http.Client, in runtime.Instance, spec manifest.Process) error {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(in.Port))
	ctx, cancel := context.WithTimeout(ctx, spec.Health.Timeout)
	defer cancel()
	switch {
	case spec.Health.Command != "":
		// The runtime runs the command inside the instance and reports
		// its last result.
		r := in.Checked
		switch {
		case r == nil:
			return errors.New("health check command: no result yet")
		case !r.OK:
			return errors.New("health check command " + r.Message)
		case time.Since(r.At) > 3*spec.Health.Interval+spec.Health.Timeout:
			return fmt.Errorf("health check command: no result for %s", time.Since(r.At).Round(time.Second))
		}
		return nil
	case spec.Health.Path != "":
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+spec.Health.Path, nil)
		if err != nil {
			return err
		}
		req.Header.Set("User-Agent", "paddock-health-check")
		resp, err := probes.Do(req)
		if err != nil {
			return fmt.Errorf("GET %s: %w", spec.Health.Path, unwrapURL(err))
		}
		resp.Body.Close()
		if want := spec.Health.Status; want != 0 && resp.StatusCode != want {
			return fmt.Errorf("GET %s: %s, want %d", spec.Health.Path, resp.Status, want)
		}
		if resp.StatusCode >= 400 {
			return fmt.Errorf("GET %s: %s", spec.Health.Path, resp.Status)
		}
		return nil
	case in.Process == "web":
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return fmt.Errorf("nothing listens on $PORT (%d) yet", in.Port)
		}
		return c.Close()
	default:
		if time.Since(in.StartedAt) < time.Second {
			return fmt.Errorf("starting")
		}
		return nil
	}
}

func unwrapURL(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		next := u.Unwrap()
		if next == nil {
			return err
		}
		if _, isNet := next.(*net.OpError); isNet {
			return next
		}
		err = next
	}
}

// record records a check's result, unless the instance's process changed
// since the check began (gen): it says nothing of the new one.
func (s *Service) record(ctx context.Context, in runtime.Instance, spec manifest.Process, gen int, err error) {
	s.rec.mu.Lock()
	h := s.rec.health[in.ID]
	if h == nil || h.gen != gen {
		s.rec.mu.Unlock()
		return
	}
	h.probing, h.probed = false, true
	var msg string
	if err == nil {
		if !h.everOK {
			msg = fmt.Sprintf("instance %s is healthy", short(in.ID))
			key := in.App + "/" + in.Process
			if t, ok := s.rec.handover[key]; ok && len(in.Mounts) > 0 {
				msg += fmt.Sprintf("; its volume's cut-over took %s", s.now().Sub(t).Round(time.Millisecond))
				delete(s.rec.handover, key)
			}
		} else if !h.ok {
			msg = fmt.Sprintf("instance %s is healthy again", short(in.ID))
		}
		h.ok, h.everOK, h.fails, h.err = true, true, 0, ""
	} else {
		h.fails++
		h.err = err.Error()
		after := spec.Health.UnhealthyAfter
		if after == 0 {
			after = unhealthyAfter
		}
		if h.ok && h.fails >= after {
			h.ok = false
			msg = fmt.Sprintf("instance %s failed %d health checks: %v", short(in.ID), h.fails, err)
		}
	}
	s.rec.mu.Unlock()
	if msg != "" {
		s.event(ctx, in.App, in.Process, in.ID, msg)
		s.Kick()
	}
}

// portOwner checks that every listener on the instance's port belongs to
// the instance's user.
func portOwner(in runtime.Instance) error {
	owners, err := isolate.ListenerOwners()
	if err != nil {
		return err
	}
	return ownedBy(owners, in)
}

// ownedBy checks that every listener on the instance's port that takes the
// router's and the health checks' connections (to 127.0.0.1), among owners
// (isolate.ListenerOwners), belongs to the instance's user.
func ownedBy(owners map[int][]isolate.Listener, in runtime.Instance) error {
	want := in.UID
	if want == 0 {
		want = uint32(os.Getuid())
	}
	for _, l := range owners[in.Port] {
		if l.Takes() && l.UID != want {
			return fmt.Errorf("port %d is held by a process of another user (uid %d)", in.Port, l.UID)
		}
	}
	return nil
}
