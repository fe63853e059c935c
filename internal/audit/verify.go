package audit

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// Report is the outcome of Verify.
type Report struct {
	Events      uint64 // events that verified, in order from seq 1
	Checkpoints int    // checkpoints whose signature and hash verified
	Head        string // hash of the last event that verified
	// Err is nil when the whole chain and every checkpoint verified. Else it
	// names the first problem and wraps one of ErrMalformed, ErrSeq, ErrHash,
	// ErrNotCanonic, ErrChain, ErrSignature, ErrCheckpoint, ErrTruncated or
	// ErrMissing.
	Err error
	// FirstBad is the seq of the first event that cannot be trusted: the
	// changed, missing or misplaced event; for a broken link between two
	// events the earlier one unless a checkpoint vouches for it; for a
	// checkpoint error the seq the checkpoint covers; for a truncated chain
	// the first missing seq. It is 0 when Err is nil or names no event.
	FirstBad uint64
}

// Verify checks the log in dir: every event's hash against its contents,
// every line's canonical form, every prev link, seqs without gaps from 1,
// and every checkpoint's signature and that the chain at its seq has its
// hash. pub is the key to check signatures with; nil means the key in dir
// (which proves nothing against an attacker who replaced it: pass the key
// exported by Log.PublicKey to detect that). Verify streams both files and
// holds one line of each in memory, whatever the log's size; a torn last
// line (a crash before the next Open) is ignored.
//
// Verify reads the files without locking them: run it against a live log and
// it checks the events written so far.
func Verify(ctx context.Context, dir string, pub ed25519.PublicKey) Report {
	var rep Report
	if pub == nil {
		var err error
		if pub, err = publicKeyIn(dir); err != nil {
			rep.Err = fmt.Errorf("%w: %w", ErrMissing, err)
			return rep
		}
	}
	if len(pub) != ed25519.PublicKeySize {
		rep.Err = fmt.Errorf("public key has %d bytes, want %d", len(pub), ed25519.PublicKeySize)
		return rep
	}
	ef, err := os.Open(filepath.Join(dir, LogFile))
	if err != nil {
		rep.Err = fmt.Errorf("%w: %w", ErrMissing, err)
		return rep
	}
	defer ef.Close()
	cf, err := os.Open(filepath.Join(dir, CheckpointFile))
	if err != nil {
		rep.Err = fmt.Errorf("%w: %w", ErrMissing, err)
		return rep
	}
	defer cf.Close()
	v := &verifier{ctx: ctx, pub: pub, events: newLineReader(ef), cks: newLineReader(cf)}
	v.run(&rep)
	return rep
}

type verifier struct {
	ctx    context.Context
	pub    ed25519.PublicKey
	events *lineReader
	cks    *lineReader

	ckN     int         // checkpoints read
	ck      *checkpoint // the next good checkpoint not yet matched, nil at the end
	ckBad   error       // the next checkpoint is bad: report once the chain reaches ckAt
	ckAt    uint64
	ckLast  uint64 // seq of the last checkpoint read
	ckMatch uint64 // seq of the last checkpoint that matched the chain
}

func (v *verifier) fail(rep *Report, bad uint64, err error) {
	rep.Err = err
	rep.FirstBad = bad
}

// verifyError reads as its message alone and matches its sentinel with
// errors.Is.
type verifyError struct {
	msg      string
	sentinel error
}

func (e *verifyError) Error() string { return e.msg }
func (e *verifyError) Unwrap() error { return e.sentinel }

func failure(sentinel error, format string, args ...any) error {
	return &verifyError{msg: fmt.Sprintf(format, args...), sentinel: sentinel}
}

func (v *verifier) run(rep *Report) {
	v.nextCheckpoint()
	var seq uint64 // last verified event
	var e Event
	for {
		if seq%4096 == 0 {
			if err := v.ctx.Err(); err != nil {
				rep.Err = err
				return
			}
		}
		line, err := v.events.next()
		if errors.Is(err, io.EOF) || errors.Is(err, errTorn) {
			break
		}
		want := seq + 1
		if err != nil {
			v.fail(rep, want, fmt.Errorf("event %d: %w", want, err))
			return
		}
		if err := parseEvent(line, &e); err != nil {
			v.fail(rep, want, fmt.Errorf("event %d: %w", want, err))
			return
		}
		if e.Seq != want {
			v.fail(rep, want, failure(ErrSeq, "event %d: seq %d follows %d (events missing or reordered)", want, e.Seq, seq))
			return
		}
		if HashEvent(e) != e.Hash {
			v.fail(rep, want, failure(ErrHash, "event %d: hash does not match its contents (changed after it was written)", want))
			return
		}
		if !canonical(line, e) {
			v.fail(rep, want, failure(ErrNotCanonic, "event %d: line is not in canonical form (changed after it was written)", want))
			return
		}
		if e.Prev != rep.Head {
			if seq == 0 {
				v.fail(rep, want, failure(ErrChain, "event 1: prev is not empty (events before it were removed)"))
				return
			}
			if v.ckMatch == seq { // a signature vouches for seq: the later one is bad
				v.fail(rep, want, failure(ErrChain, "event %d: prev is not the hash of event %d, which a checkpoint vouches for (event %d was changed and its hash recomputed)",
					want, seq, want))
				return
			}
			v.fail(rep, seq, failure(ErrChain, "event %d: its hash is not event %d's prev (event %d was changed and its hash recomputed, or event %d was replaced)",
				seq, want, seq, want))
			return
		}
		seq = e.Seq
		rep.Events, rep.Head = seq, e.Hash
		for v.ck != nil && v.ck.Seq == seq {
			if v.ck.Hash != e.Hash {
				v.fail(rep, seq, failure(ErrCheckpoint, "checkpoint %d of %s: the chain at seq %d has another hash (events were rewritten)",
					v.ckN, v.ck.Time.Format(time.RFC3339), seq))
				return
			}
			rep.Checkpoints++
			v.ckMatch = seq
			v.nextCheckpoint()
		}
		if v.ckBad != nil && v.ckAt <= seq {
			v.fail(rep, v.ckAt, v.ckBad)
			return
		}
	}
	switch {
	case v.ckBad != nil:
		v.fail(rep, v.ckAt, v.ckBad)
	case v.ck != nil:
		v.fail(rep, seq+1, failure(ErrTruncated, "chain ends at seq %d but checkpoint of %s covers seq %d (events were truncated)",
			seq, v.ck.Time.Format(time.RFC3339), v.ck.Seq))
	}
}

// nextCheckpoint reads the next checkpoint into v.ck, or records why it is
// bad in v.ckBad (reported when the chain reaches its seq, so that an earlier
// bad event is reported first).
func (v *verifier) nextCheckpoint() {
	v.ck = nil
	line, err := v.cks.next()
	if errors.Is(err, io.EOF) || errors.Is(err, errTorn) {
		return
	}
	v.ckN++
	if err != nil {
		v.ckBad, v.ckAt = fmt.Errorf("checkpoint %d: %w", v.ckN, err), 0
		return
	}
	var c checkpoint
	if err := parseCheckpoint(line, &c); err != nil {
		v.ckBad, v.ckAt = fmt.Errorf("checkpoint %d: %w", v.ckN, err), 0
		return
	}
	v.ckAt = c.Seq
	switch {
	case !c.verify(v.pub):
		v.ckBad = failure(ErrSignature, "checkpoint %d: bad signature", v.ckN)
	case !c.canonical(line):
		v.ckBad = failure(ErrNotCanonic, "checkpoint %d: line is not in canonical form", v.ckN)
	case c.Seq < v.ckLast:
		v.ckBad = failure(ErrCheckpoint, "checkpoint %d: seq %d is before the previous checkpoint's %d", v.ckN, c.Seq, v.ckLast)
	default:
		v.ckLast = c.Seq
		v.ck = &c
	}
}
