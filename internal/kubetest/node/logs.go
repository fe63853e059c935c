package node

import (
	"context"
	"errors"
	"io"
	"os"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/errdefs"
	"github.com/virtual-kubelet/virtual-kubelet/node/api"
)

// logPollInterval is how often a followed log is checked for more output.
const logPollInterval = 50 * time.Millisecond

// GetContainerLogs streams a container's output (stdout and stderr in one
// file per run): the current run's, or with Previous the run before. With
// Follow it streams until that run ends or ctx ends. Tail and LimitBytes
// apply; timestamps and since are not supported.
func (p *provider) GetContainerLogs(ctx context.Context, namespace, podName, containerName string, opts api.ContainerLogOpts) (io.ReadCloser, error) {
	pd := p.get(namespace, podName)
	if pd == nil {
		return nil, errdefs.NotFoundf("pod %s/%s not found", namespace, podName)
	}
	var c *container
	for _, cc := range pd.containers {
		if cc.spec.Name == containerName {
			c = cc
		}
	}
	if c == nil {
		return nil, errdefs.NotFoundf("container %s is not valid for pod %s", containerName, podName)
	}
	pd.mu.Lock()
	inst := c.inst
	if opts.Previous {
		inst = c.prev
	}
	pd.mu.Unlock()
	if inst == nil {
		if opts.Previous {
			return nil, errdefs.InvalidInputf("previous terminated container %q in pod %q not found", containerName, podName)
		}
		return nil, errdefs.InvalidInputf("container %q in pod %q is waiting to start", containerName, podName)
	}

	f, err := os.Open(inst.logPath)
	if err != nil {
		return nil, err
	}
	start, err := tailOffset(f, opts.Tail)
	if err != nil {
		f.Close()
		return nil, err
	}
	if _, err := f.Seek(start, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	var r io.Reader = f
	if opts.Follow && !opts.Previous {
		r = &follower{ctx: ctx, f: f, done: inst.done}
	}
	if opts.LimitBytes > 0 {
		r = io.LimitReader(r, int64(opts.LimitBytes))
	}
	return readCloser{r, f}, nil
}

type readCloser struct {
	io.Reader
	io.Closer
}

// tailOffset is the offset of the last n lines of f (all of it if n is 0,
// as the kubelet API's tailLines unset; kubectl sends -1 for all).
func tailOffset(f *os.File, n int) (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	size := fi.Size()
	if n <= 0 || size == 0 {
		return 0, nil
	}
	// Read backwards in blocks, counting newlines; a last line without
	// newline counts as a line.
	const block = 32 << 10
	lines := 0
	buf := make([]byte, block)
	end := size
	last := make([]byte, 1)
	if _, err := f.ReadAt(last, size-1); err != nil {
		return 0, err
	}
	if last[0] == '\n' {
		end-- // the final newline ends the last line, it does not start one
	}
	for end > 0 {
		from := max(end-block, 0)
		chunk := buf[:end-from]
		if _, err := f.ReadAt(chunk, from); err != nil && !errors.Is(err, io.EOF) {
			return 0, err
		}
		for i := len(chunk) - 1; i >= 0; i-- {
			if chunk[i] == '\n' {
				lines++
				if lines == n {
					return from + int64(i) + 1, nil
				}
			}
		}
		end = from
	}
	return 0, nil
}

// follower reads a growing file until the run that writes it has ended
// and everything is read, or ctx ends.
type follower struct {
	ctx  context.Context
	f    *os.File
	done <-chan struct{}
}

func (fl *follower) Read(b []byte) (int, error) {
	for {
		n, err := fl.f.Read(b)
		if n > 0 {
			return n, nil
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return 0, err
		}
		select {
		case <-fl.done:
			// Ended: one more read catches output written before the end.
			n, err := fl.f.Read(b)
			if n > 0 {
				return n, nil
			}
			if err == nil {
				err = io.EOF
			}
			return 0, err
		default:
		}
		t := time.NewTimer(logPollInterval)
		select {
		case <-fl.ctx.Done():
			t.Stop()
			return 0, io.EOF
		case <-fl.done:
			t.Stop()
		case <-t.C:
		}
	}
}
