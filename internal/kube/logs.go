package kube

import (
	"bufio"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"paddock.dev/paddock/internal/logs"
)

// Pods' output is kept on this machine as instances' is, in the app's log
// folder, one file per pod: so that logs, logs -f, --grep, drains and the
// last lines of a failed rollout work the same on both runtimes. A
// follower per running pod streams its log through the API server (the
// kubelet's log endpoint) and writes each line through the app's redactor.

// Flusher is a writer that may hold output back until Flush: a redactor
// holds a line that may end in part of a secret.
type Flusher interface {
	io.Writer
	Flush() error
}

// Redactor wraps a pod's log file in the redaction of its app's secrets.
type Redactor func(ctx context.Context, app string, w io.Writer) (Flusher, error)

const (
	// logLimit bounds a pod's log file, as an instance's (twice this with
	// its rotated file).
	logLimit = 8 << 20
	// shipEvery is how often the shipper looks for pods to follow.
	shipEvery = time.Second
)

// ShipLogs follows every pod's output into its log file until ctx ends.
func (r *Runtime) ShipLogs(ctx context.Context, redact Redactor) {
	var wg sync.WaitGroup
	defer wg.Wait()
	following := map[string]context.CancelFunc{} // pod UID -> stop
	tick := time.NewTicker(shipEvery)
	defer tick.Stop()
	for {
		seen := map[string]bool{}
		for _, p := range r.allPods() {
			id := string(p.UID)
			seen[id] = true
			if following[id] != nil || !started(p) {
				continue
			}
			fctx, cancel := context.WithCancel(ctx)
			following[id] = cancel
			wg.Add(1)
			go func() {
				defer wg.Done()
				r.follow(fctx, p, redact)
			}()
		}
		for id, cancel := range following {
			if !seen[id] {
				cancel()
				delete(following, id)
			}
		}
		select {
		case <-ctx.Done():
			for _, cancel := range following {
				cancel()
			}
			return
		case <-tick.C:
		}
	}
}

func (r *Runtime) allPods() []*corev1.Pod {
	var out []*corev1.Pod
	for ns, w := range r.watches() {
		for _, o := range list(w.pods, ns) {
			out = append(out, o.(*corev1.Pod))
		}
	}
	return out
}

// started reports whether a pod's container has run: only then has it a
// log to stream.
func started(p *corev1.Pod) bool {
	for _, cs := range p.Status.ContainerStatuses {
		if cs.State.Running != nil || cs.State.Terminated != nil || cs.RestartCount > 0 {
			return true
		}
	}
	return false
}

// follow streams a pod's output into its log file until ctx ends. A
// stream ends when the container exits; the next one starts after the
// last line written, by its timestamp, so a restart loses and repeats
// nothing.
func (r *Runtime) follow(ctx context.Context, p *corev1.Pod, redact Redactor) {
	in := instance(p, nil)
	// The app is its namespace's, whatever the pod's labels say.
	in.App = strings.TrimPrefix(p.Namespace, r.cfg.NamespacePrefix)
	file, err := logs.Open(r.LogFile(in.Spec), logLimit)
	if err != nil {
		r.log.Warn("kubernetes: open a pod's log file", "pod", p.Namespace+"/"+p.Name, "err", err)
		return
	}
	defer file.Close()
	var out io.Writer = file.Stream("stdout")
	if redact != nil {
		f, err := redact(ctx, in.App, out)
		if err != nil {
			r.log.Warn("kubernetes: pod output not kept: its app's secrets cannot be opened to redact it", "pod", p.Namespace+"/"+p.Name, "err", err)
			return
		}
		defer f.Flush()
		out = f
	}
	var last time.Time
	for ctx.Err() == nil {
		opts := &corev1.PodLogOptions{Follow: true, Timestamps: true}
		if !last.IsZero() {
			opts.SinceTime = &metav1.Time{Time: last.Truncate(time.Second)}
		}
		stream, err := r.cs.CoreV1().Pods(p.Namespace).GetLogs(p.Name, opts).Stream(ctx)
		if err == nil {
			last = copyLines(stream, out, last)
			stream.Close()
			if f, ok := out.(Flusher); ok {
				f.Flush()
			}
		}
		if r.finished(p) {
			return // its containers run no more: the stream had all
		}
		select {
		case <-ctx.Done():
		case <-time.After(shipEvery):
		}
	}
}

// finished reports whether a pod has ended for good (Succeeded or Failed),
// by the watch's latest view of it.
func (r *Runtime) finished(p *corev1.Pod) bool {
	r.mu.Lock()
	w := r.apps[p.Namespace]
	r.mu.Unlock()
	if w == nil {
		return true
	}
	o, ok, _ := w.pods.GetIndexer().GetByKey(p.Namespace + "/" + p.Name)
	if !ok {
		return true
	}
	phase := o.(*corev1.Pod).Status.Phase
	return phase == corev1.PodSucceeded || phase == corev1.PodFailed
}

// copyLines writes the text of each "TIMESTAMP TEXT" line stamped after
// after (what an earlier stream wrote), and returns the timestamp of the
// last line written. A line longer than its buffer is written in pieces,
// so output without newlines costs bounded memory.
func copyLines(r io.Reader, w io.Writer, after time.Time) time.Time {
	last := after
	br := bufio.NewReaderSize(r, logs.MaxLine)
	inLine, skip := false, false
	for {
		chunk, err := br.ReadSlice('\n')
		if len(chunk) > 0 {
			if !inLine {
				ts, text, _ := strings.Cut(string(chunk), " ")
				t, perr := time.Parse(time.RFC3339Nano, ts)
				skip = perr == nil && !t.After(after)
				if perr != nil {
					text = string(chunk)
				} else if !skip {
					last = t
				}
				chunk = []byte(text)
			}
			if !skip {
				w.Write(chunk)
			}
			inLine = len(chunk) > 0 && chunk[len(chunk)-1] != '\n'
		}
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
		case err != nil:
			return last
		}
	}
}
