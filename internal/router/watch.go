package router

import (
	"errors"
	"os"
	"time"
)

// A client that goes away while its request waits at a backend must not
// leave the backend working for nobody, nor the router holding both
// sockets (CLOSE-WAIT piling up). Nobody reads a client connection while
// its request is at a backend, so the router would only notice at its
// first write. Watching every request would cost a goroutine or a timer
// each; instead the maintenance loop (once a second) starts a watcher for
// a request that has waited longer than watchAfter: it reads the client
// connection into its buffer (pipelined bytes are kept for later) and, on
// EOF or an error, closes the backend connection, which ends the exchange.
//
// Watch states of a client connection (clientConn.watch):
//
//	none ──request sent──► waiting ──response head──► none
//	                          │ (maintenance loop, after watchAfter)
//	                          ▼
//	                       reading ──response head──► stopping ──watcher done──► none
//	                          │
//	                          └─ EOF or error: gone; backend connection closed
//
// A request without a body is marked waiting just before it is written:
// writing it and waiting for its answer are one step (rawIO.sendWait).
// A request whose body is still being copied is not watched: the body
// copy sees the client go away itself, and once it is sent, the response
// header timeout bounds the wait.

const (
	watchNone int32 = iota
	watchWaiting
	watchReading
	watchStopping
)

// watchAfter is how long a request waits at a backend before its client
// is watched.
const watchAfter = time.Second

// startWaiting marks the request just sent (c.cur) as waiting for its
// response.
func (c *clientConn) startWaiting(now int64) {
	c.waitSince.Store(now)
	c.watch.Store(watchWaiting)
}

// stopWatch ends the waiting state, stopping a watcher that reads the
// client and waiting for it to return.
func (c *clientConn) stopWatch() {
	if c.watch.CompareAndSwap(watchWaiting, watchNone) || c.watch.Load() == watchNone {
		return
	}
	c.watch.Store(watchStopping)
	c.c.SetReadDeadline(aLongTimeAgo)
	<-c.watchDone
	c.r.rdl = deadlinePast
	c.watch.Store(watchNone)
}

// maybeWatch starts a watcher if the connection's request has waited
// longer than watchAfter. Only the maintenance loop calls it.
func (c *clientConn) maybeWatch(now int64) {
	if c.watch.Load() != watchWaiting || now-c.waitSince.Load() < int64(watchAfter) {
		return
	}
	bc := c.cur.Load()
	if bc == nil || !c.watch.CompareAndSwap(watchWaiting, watchReading) {
		return
	}
	go c.watchClient(bc)
}

// watchClient reads the client connection until it is stopped, the
// buffer is full, or the client is gone.
func (c *clientConn) watchClient(bc *bconn) {
	defer func() { c.watchDone <- struct{}{} }()
	// The connection may have a read deadline (the idle one): clear it,
	// then check that stopWatch did not set one in the past meanwhile.
	c.r.rdl = 0
	c.c.SetReadDeadline(time.Time{})
	if c.watch.Load() == watchStopping {
		return
	}
	for {
		if c.r.r == 0 && c.r.w == len(c.r.buf) {
			return // full of pipelined requests: nothing more to learn
		}
		err := c.r.fill(len(c.r.buf))
		if err == nil {
			continue
		}
		if errors.Is(err, os.ErrDeadlineExceeded) || err == errHeadTooLarge {
			return // stopped
		}
		c.gone.Store(true)
		bc.c.Close()
		return
	}
}

// maintain runs the proxy's periodic work until stop is closed: watching
// the clients of slow requests every second, and closing backend
// connections idle for 90 s every 30 s.
func (p *proxy) maintain(stop <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for tick := 1; ; tick++ {
		select {
		case <-t.C:
		case <-stop:
			return
		}
		now := time.Now().UnixNano()
		p.mu.Lock()
		for cc := p.all.head; cc != nil; cc = cc.links[allList].next {
			cc.maybeWatch(now)
		}
		p.mu.Unlock()
		if tick%30 == 0 {
			p.set.sweep(90 * time.Second)
		}
	}
}
