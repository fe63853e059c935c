package deploy

import (
	"context"
	"path/filepath"
	"regexp"
	"sort"
	"time"

	"paddock.dev/paddock/internal/logs"
	"paddock.dev/paddock/internal/runtime"
	"paddock.dev/paddock/internal/store"
)

// LogQuery selects an app's log lines.
type LogQuery struct {
	Process string         // only this process type's instances (and no build output or events)
	Since   time.Time      // zero: from the start of what is kept
	Tail    int            // the last Tail lines; 0 for all
	Follow  bool           // keep sending new lines until ctx is done
	Grep    *regexp.Regexp // only lines whose text it matches; nil: all
}

// appLogLimit bounds what an app's logs keep on disk.
const appLogLimit = 64 << 20

// logDir is the folder of the logs of the app called app whose ID is id,
// shared with the runtime.
func (s *Service) logDir(app string, id int64) string {
	return filepath.Join(s.cfg.Logs, runtime.LogFolder(app, id))
}

// Logs sends app's instance output, build output and platform events to
// emit in time order.
func (s *Service) Logs(ctx context.Context, app string, q LogQuery, emit func(logs.Line) error) error {
	a, err := s.st.GetApp(ctx, app)
	if err != nil {
		return err
	}
	dir := s.logDir(app, a.ID)
	lq := logs.Query{Since: q.Since, Tail: q.Tail, Grep: q.Grep}
	if q.Process != "" {
		lq.Source = q.Process + "."
	}
	var follower *logs.Follower
	if q.Follow {
		follower = logs.NewFollower(dir, lq)
	}
	var events []logs.Line
	var lastEvent int64
	if q.Process == "" {
		evs, err := s.st.ListEvents(ctx, app, q.Since, 0)
		if err != nil {
			return err
		}
		for _, e := range evs {
			events = append(events, eventLine(e))
			lastEvent = e.ID
		}
	}
	if err := logs.Read(dir, lq, events, emit); err != nil {
		return err
	}
	if !q.Follow {
		return nil
	}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		lines := follower.Poll(ctx)
		if q.Process == "" {
			evs, err := s.st.ListEvents(ctx, app, q.Since, lastEvent)
			if err != nil {
				return err
			}
			for _, e := range evs {
				if lq.Keep(e.Message) {
					lines = append(lines, eventLine(e))
				}
				lastEvent = e.ID
			}
			sort.SliceStable(lines, func(i, j int) bool { return lines[i].Time.Before(lines[j].Time) })
		}
		for _, l := range lines {
			if err := emit(l); err != nil {
				return err
			}
		}
	}
}

func eventLine(e store.Event) logs.Line {
	return logs.Line{Time: e.Time, Source: "paddock", Stream: "paddock", Text: e.Message}
}

// Events sends the platform's events of app since since to emit, oldest
// first (the newest thousand at most), and with follow the new ones as
// they come until ctx ends.
func (s *Service) Events(ctx context.Context, app string, since time.Time, follow bool, emit func(store.Event) error) error {
	a, err := s.st.GetApp(ctx, app)
	if err != nil {
		return err
	}
	var last int64
	for {
		// The app followed, not a new one of its name: the caller was
		// allowed this one.
		if cur, err := s.st.GetApp(ctx, app); err != nil || cur.ID != a.ID {
			return nil
		}
		evs, err := s.st.ListEvents(ctx, app, since, last)
		if err != nil {
			return err
		}
		for _, e := range evs {
			if err := emit(e); err != nil {
				return err
			}
			last = e.ID
		}
		if !follow {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(250 * time.Millisecond):
		}
	}
}
