// Package audit is Paddock's tamper-evident audit trail: one hash-chained
// event per authenticated mutating API request, per denied request, per login
// or token event and per secret reveal, plus signed checkpoints of the head,
// and the verifier that checks both.
//
// The API middleware is the only writer (through [Log.Append]); the CLI's
// `paddock audit verify` calls [Verify]. Nothing else should import it.
//
// # Files
//
// A log lives in one folder (Config.Dir):
//
//	audit.log        the events, one JSON object per line, append-only, fsync'd
//	checkpoints.log  signed checkpoints {seq, hash, time, sig}, one per line
//	audit.key        the Ed25519 signing key's 32-byte seed, mode 0600
//
// Every event carries the hash of the previous one (Prev) and its own hash
// (Hash), a SHA-256 over a canonical encoding of all its other fields (see
// [HashEvent]). Changing, removing, inserting or reordering an event breaks the
// chain at that point and [Verify] names the first bad event.
//
// # What it does not protect against
//
// A hash chain alone cannot show that events were cut off the end: a shorter
// chain is still a valid chain. Truncation of the tail is detectable only
// against a signed checkpoint that covers a later seq than the chain's end; the
// background goroutine signs one every Config.CheckpointEvery and Close signs
// a last one. Checkpoints only anchor what they cover: events written after the
// newest checkpoint, or a checkpoint file cut together with the events, cannot
// be told apart from a log that simply stopped there. Ship checkpoints (or the
// head reported by Verify) off the machine to close that gap.
//
// An attacker who can read audit.key can rewrite everything — events and
// checkpoints alike — and the result verifies against the key in the folder.
// The key file is 0600; export [Log.PublicKey] and verify off-box with it
// ([Verify] with a non-nil key) to detect a replaced key.
//
// # Durability and failure
//
// Append returns only once its event is on disk (written and fsync'd).
// Concurrent callers are group-committed: while one fsync runs, the events of
// other callers are queued, and the next fsync covers all of them. If a write
// or an fsync fails, the log fails closed: that Append and every later one
// returns an error wrapping [ErrFailed] until the log is reopened, since after a
// failed fsync nothing about the file's tail can be trusted. An event whose
// Append returned an error may still be on disk (the write may have landed
// before the error): an event in the log means "attempted", not "succeeded".
//
// Open recovers the head from the last line of audit.log without reading the
// whole file. A torn last line (no trailing newline: a write cut short by a
// crash, never acknowledged) is truncated away; any other malformed last line
// is an error naming the line.
package audit

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// File names inside Config.Dir.
const (
	LogFile        = "audit.log"
	CheckpointFile = "checkpoints.log"
	KeyFile        = "audit.key"
)

// Outcomes of an event.
const (
	OutcomeOK     = "ok"
	OutcomeDenied = "denied"
	OutcomeFailed = "failed"
	OutcomeError  = "error"
	// OutcomeAllowed is written before a change is made (so that no change
	// goes unrecorded): the request was authorized and the change follows,
	// unless a later event with the same request ID says it failed.
	OutcomeAllowed = "allowed"
)

// Errors. Verify's Report.Err and Open's errors wrap one of these; test with
// errors.Is.
var (
	ErrClosed     = errors.New("audit log closed")
	ErrFailed     = errors.New("audit log failed a write and must be reopened")
	ErrInvalid    = errors.New("invalid audit event")
	ErrLocked     = errors.New("audit log is open elsewhere")
	ErrMalformed  = errors.New("malformed line")
	ErrMissing    = errors.New("audit files missing")
	ErrHash       = errors.New("hash does not match contents")
	ErrNotCanonic = errors.New("line is not in canonical form")
	ErrSeq        = errors.New("seq out of order")
	ErrChain      = errors.New("hash chain broken")
	ErrTruncated  = errors.New("events truncated")
	ErrSignature  = errors.New("bad checkpoint signature")
	ErrCheckpoint = errors.New("checkpoint does not match the chain")
)

// Event is one audit record. Append assigns Seq, Time, Prev and Hash; the
// caller fills in the rest. String fields longer than MaxField bytes are cut
// to MaxField (on a rune boundary) and invalid UTF-8 is replaced by U+FFFD,
// so what is hashed is exactly what is stored.
type Event struct {
	Seq       uint64    `json:"seq"`        // 1, 2, 3 … assigned by Append
	Time      time.Time `json:"time"`       // UTC, assigned by Append from Config.Now
	Actor     string    `json:"actor"`      // user name ("" for an unauthenticated request)
	Token     string    `json:"token"`      // token name, never its value
	Source    string    `json:"source"`     // client address
	Action    string    `json:"action"`     // required, e.g. "apps.create", "auth.login", "secrets.reveal"
	Target    string    `json:"target"`     // e.g. "app/shop"
	Outcome   string    `json:"outcome"`    // required: "ok", "allowed", "denied", "failed" or "error"
	RequestID string    `json:"request_id"` // the API's request id
	// ClientRequestID is the request id the client sent, recorded beside
	// the server's own and never in its place; "" when none was sent.
	ClientRequestID string `json:"client_request_id,omitempty"`
	Detail          string `json:"detail,omitempty"` // short, never a secret
	Prev            string `json:"prev"`             // hex SHA-256 of the previous event ("" for seq 1)
	Hash            string `json:"hash"`             // hex SHA-256 of HashEvent's encoding
}

// Config configures a Log.
type Config struct {
	// Dir holds audit.log, checkpoints.log and audit.key. Required; created
	// (0700) if missing. The key is generated on the first Open.
	Dir string
	// Now is the clock for event and checkpoint times. Nil means time.Now.
	Now func() time.Time
	// CheckpointEvery is how often the background goroutine signs a
	// checkpoint when the head moved. Zero means one minute; negative means
	// no background checkpoints (Checkpoint and Close still sign).
	CheckpointEvery time.Duration
	// Logger receives background checkpoint failures. Nil discards.
	Logger *slog.Logger
}

// Log is an open audit log. It is safe for concurrent use. Exactly one Log
// may have a folder open at a time (an exclusive lock on audit.log).
type Log struct {
	dir  string
	now  func() time.Time
	log  *slog.Logger
	key  ed25519.PrivateKey
	f    *os.File // audit.log, O_APPEND
	ckf  *os.File // checkpoints.log, O_APPEND
	stop chan struct{}
	done chan struct{}

	mu       sync.Mutex
	cond     *sync.Cond
	closed   bool
	err      error  // sticky write/fsync failure
	seq      uint64 // last assigned
	head     string // hash of the last assigned
	pending  []byte // lines assigned but not yet written
	spare    []byte // the previous batch's buffer, reused
	flushing bool   // a caller is writing+fsyncing a batch
	durSeq   uint64 // last durable seq
	durHead  string // hash of the last durable event
	durSize  int64  // bytes of audit.log that are durable
	syncs    uint64 // fsyncs done, for tests and benchmarks

	ckMu   sync.Mutex
	ckSeq  uint64 // seq of the newest checkpoint
	ckErr  error  // sticky checkpoint write/fsync failure
	ckDone bool   // files closed
}

// Open opens (or creates) the log in cfg.Dir, recovers its head and starts
// the checkpoint goroutine. It refuses a folder whose newest checkpoint covers
// more events than audit.log holds (ErrTruncated), whose newest checkpoint does
// not verify with audit.key (ErrSignature), or whose checkpoints exist without
// a key (ErrMissing): appending to such a log would hide the damage.
func Open(ctx context.Context, cfg Config) (*Log, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if cfg.Dir == "" {
		return nil, errors.New("open audit log: Config.Dir is empty")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.CheckpointEvery == 0 {
		cfg.CheckpointEvery = time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	l := &Log{dir: cfg.Dir, now: cfg.Now, log: cfg.Logger}
	l.cond = sync.NewCond(&l.mu)
	if err := l.open(); err != nil {
		l.closeFiles()
		return nil, fmt.Errorf("open audit log %s: %w", cfg.Dir, err)
	}
	l.stop = make(chan struct{})
	l.done = make(chan struct{})
	go l.loop(cfg.CheckpointEvery)
	return l, nil
}

func (l *Log) open() error {
	var err error
	l.f, err = os.OpenFile(filepath.Join(l.dir, LogFile), os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	if err := lockFile(l.f); err != nil {
		return err
	}
	l.ckf, err = os.OpenFile(filepath.Join(l.dir, CheckpointFile), os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	if err := syncDir(l.dir); err != nil {
		return err
	}
	last, size, err := recoverTail(l.f, LogFile, l.log)
	if err != nil {
		return err
	}
	l.durSize = size
	if last != nil {
		var e Event
		if err := parseEvent(last.line, &e); err != nil {
			return fmt.Errorf("%s line %d: %w", LogFile, last.number(l.f), err)
		}
		if got := HashEvent(e); got != e.Hash {
			return fmt.Errorf("%s line %d (seq %d): %w", LogFile, last.number(l.f), e.Seq, ErrHash)
		}
		l.seq, l.head = e.Seq, e.Hash
		l.durSeq, l.durHead = e.Seq, e.Hash
	}
	lastCk, _, err := recoverTail(l.ckf, CheckpointFile, l.log)
	if err != nil {
		return err
	}
	l.key, err = loadOrCreateKey(l.dir, lastCk != nil)
	if err != nil {
		return err
	}
	if lastCk != nil {
		var c checkpoint
		if err := parseCheckpoint(lastCk.line, &c); err != nil {
			return fmt.Errorf("%s line %d: %w", CheckpointFile, lastCk.number(l.ckf), err)
		}
		if !c.verify(l.key.Public().(ed25519.PublicKey)) {
			return fmt.Errorf("%s line %d: %w with %s", CheckpointFile, lastCk.number(l.ckf), ErrSignature, KeyFile)
		}
		if c.Seq > l.seq {
			return fmt.Errorf("%s ends at seq %d but checkpoint of %s covers seq %d: %w",
				LogFile, l.seq, c.Time.Format(time.RFC3339), c.Seq, ErrTruncated)
		}
		if c.Seq == l.seq && c.Hash != l.head {
			return fmt.Errorf("checkpoint of %s at seq %d: %w", c.Time.Format(time.RFC3339), c.Seq, ErrCheckpoint)
		}
		l.ckSeq = c.Seq
	}
	return nil
}

// Append writes e as the next event and returns it as stored (with Seq, Time,
// Prev and Hash). It returns only once the event is durable. An Action is
// required and Outcome must be one of the Outcome constants (ErrInvalid).
// ctx is checked before the event is queued; once queued, Append waits for
// the fsync (a queued event cannot be withdrawn).
func (l *Log) Append(ctx context.Context, e Event) (Event, error) {
	if err := ctx.Err(); err != nil {
		return Event{}, err
	}
	e = normalize(e)
	if err := validate(e); err != nil {
		return Event{}, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return Event{}, ErrClosed
	}
	if l.err != nil {
		return Event{}, fmt.Errorf("%w: %w", ErrFailed, l.err)
	}
	e.Seq = l.seq + 1
	e.Time = l.now().UTC().Round(0)
	e.Prev = l.head
	e.Hash = HashEvent(e)
	line, err := marshalEvent(e)
	if err != nil {
		return Event{}, fmt.Errorf("append audit event: %w", err)
	}
	l.seq, l.head = e.Seq, e.Hash
	l.pending = append(l.pending, line...)
	l.pending = append(l.pending, '\n')
	for l.durSeq < e.Seq && l.err == nil {
		if l.flushing {
			l.cond.Wait()
			continue
		}
		l.flush()
	}
	if l.durSeq < e.Seq {
		return Event{}, fmt.Errorf("%w: %w", ErrFailed, l.err)
	}
	return e, nil
}

// flush writes and fsyncs every pending line. Called with l.mu held; it
// releases the lock during the I/O so that other callers can queue the next
// batch meanwhile.
func (l *Log) flush() {
	l.flushing = true
	batch, seq, head := l.pending, l.seq, l.head
	l.pending = l.spare[:0]
	l.mu.Unlock()
	n, err := l.f.Write(batch)
	if err == nil {
		err = l.f.Sync()
	}
	l.mu.Lock()
	l.flushing = false
	l.syncs++
	if err != nil {
		l.err = err
		l.log.Error("audit log write failed", "err", err)
	} else {
		l.durSeq, l.durHead = seq, head
		l.durSize += int64(n)
		l.spare = batch
	}
	l.cond.Broadcast()
}

// durable returns the durable head and the size of audit.log it spans.
func (l *Log) durable() (seq uint64, head string, size int64, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return 0, "", 0, ErrClosed
	}
	return l.durSeq, l.durHead, l.durSize, nil
}

// PublicKey returns the checkpoint signing key's public half, for
// verification elsewhere ([Verify] with a non-nil key).
func (l *Log) PublicKey() ed25519.PublicKey {
	return l.key.Public().(ed25519.PublicKey)
}

// Close waits for queued events, stops the checkpoint goroutine, signs a
// final checkpoint and closes the files. It is idempotent; Append, List,
// Export and Checkpoint fail with ErrClosed afterwards.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	for l.flushing || (len(l.pending) > 0 && l.err == nil) {
		if !l.flushing {
			l.flush()
			continue
		}
		l.cond.Wait()
	}
	l.mu.Unlock()
	close(l.stop)
	<-l.done
	err := l.checkpoint()
	l.ckMu.Lock()
	defer l.ckMu.Unlock()
	l.ckDone = true
	return errors.Join(err, l.closeFiles())
}

func (l *Log) closeFiles() error {
	var errs []error
	for _, f := range []*os.File{l.f, l.ckf} {
		if f != nil {
			errs = append(errs, f.Close())
		}
	}
	return errors.Join(errs...)
}

func (l *Log) loop(every time.Duration) {
	defer close(l.done)
	if every < 0 {
		<-l.stop
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			if err := l.checkpoint(); err != nil {
				l.log.Error("audit checkpoint failed", "err", err)
			}
		}
	}
}
