package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"
)

const checkpointDomain = "paddock.audit.checkpoint.v1"

// checkpoint is one line of checkpoints.log: the head {Seq, Hash} at Time,
// signed. Sig is the hex Ed25519 signature of message().
type checkpoint struct {
	Seq  uint64    `json:"seq"`
	Hash string    `json:"hash"`
	Time time.Time `json:"time"`
	Sig  string    `json:"sig"`
}

// message is what a checkpoint signs: the domain string
// "paddock.audit.checkpoint.v1", Seq as 8 bytes big-endian, then Hash and
// Time (time.RFC3339Nano) each as a 4-byte big-endian length and its bytes.
func (c checkpoint) message() []byte {
	b := append([]byte(checkpointDomain), make([]byte, 0, 128)...)
	b = binary.BigEndian.AppendUint64(b, c.Seq)
	b = appendField(b, c.Hash)
	return appendField(b, c.Time.Format(time.RFC3339Nano))
}

func (c checkpoint) verify(pub ed25519.PublicKey) bool {
	sig, err := hex.DecodeString(c.Sig)
	return err == nil && len(sig) == ed25519.SignatureSize && ed25519.Verify(pub, c.message(), sig)
}

func parseCheckpoint(line []byte, c *checkpoint) error {
	*c = checkpoint{}
	if err := json.Unmarshal(line, c); err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if c.Seq == 0 || !isHash(c.Hash) {
		return fmt.Errorf("%w: missing seq or bad hash", ErrMalformed)
	}
	return nil
}

func (c checkpoint) canonical(line []byte) bool {
	b, err := json.Marshal(c)
	return err == nil && bytes.Equal(b, line)
}

// Checkpoint signs the durable head {seq, hash, time} and appends it to
// checkpoints.log, fsync'd. It does nothing when the log is empty or the head
// has not moved since the last checkpoint.
func (l *Log) Checkpoint(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	l.mu.Lock()
	closed := l.closed
	l.mu.Unlock()
	if closed {
		return ErrClosed
	}
	return l.checkpoint()
}

func (l *Log) checkpoint() error {
	l.ckMu.Lock()
	defer l.ckMu.Unlock()
	if l.ckDone {
		return ErrClosed
	}
	if l.ckErr != nil {
		return fmt.Errorf("%w: %w", ErrFailed, l.ckErr)
	}
	l.mu.Lock()
	seq, head := l.durSeq, l.durHead
	l.mu.Unlock()
	if seq == 0 || seq == l.ckSeq {
		return nil
	}
	c := checkpoint{Seq: seq, Hash: head, Time: l.now().UTC().Round(0)}
	c.Sig = hex.EncodeToString(ed25519.Sign(l.key, c.message()))
	line, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	_, err = l.ckf.Write(append(line, '\n'))
	if err == nil {
		err = l.ckf.Sync()
	}
	if err != nil {
		// A partial line may be on disk: later lines appended after it
		// would be malformed, so stop until Open truncates it.
		l.ckErr = err
		return fmt.Errorf("checkpoint: %w", err)
	}
	l.ckSeq = seq
	return nil
}
