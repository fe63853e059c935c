package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"
	"unicode/utf8"
)

// MaxField is the longest string field an event stores, in bytes. Longer
// values are cut; it keeps every line (and so every read buffer) bounded.
const MaxField = 1024

// maxLine bounds one line of audit.log or checkpoints.log: ten fields of
// MaxField bytes escaped at up to 6 bytes a byte, plus the keys, fit.
const maxLine = 128 << 10

const eventDomain = "paddock.audit.event.v1"

// HashEvent returns the hex SHA-256 of e's canonical encoding: the domain
// string "paddock.audit.event.v1", then Seq as 8 bytes big-endian, then each
// of Time (formatted with time.RFC3339Nano, as stored), Actor, Token, Source,
// Action, Target, Outcome, RequestID, Detail and Prev as a 4-byte big-endian
// length followed by its bytes, then ClientRequestID the same way if it is
// not empty (so events written before it existed keep their hashes).
// Length prefixes make the encoding unambiguous: no two different events
// encode the same. Hash itself is not covered.
func HashEvent(e Event) string {
	var buf [512]byte
	b := append(buf[:0], eventDomain...)
	b = binary.BigEndian.AppendUint64(b, e.Seq)
	b = appendField(b, e.Time.Format(time.RFC3339Nano))
	for _, s := range [...]string{e.Actor, e.Token, e.Source, e.Action, e.Target, e.Outcome, e.RequestID, e.Detail, e.Prev} {
		b = appendField(b, s)
	}
	if e.ClientRequestID != "" {
		b = appendField(b, e.ClientRequestID)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func appendField(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// normalize makes every string field what encoding/json will store: valid
// UTF-8 (each invalid byte becomes U+FFFD, as json.Marshal does) and at most
// MaxField bytes.
func normalize(e Event) Event {
	for _, p := range [...]*string{&e.Actor, &e.Token, &e.Source, &e.Action, &e.Target, &e.Outcome, &e.RequestID, &e.ClientRequestID, &e.Detail} {
		*p = clean(*p)
	}
	return e
}

func clean(s string) string {
	if utf8.ValidString(s) && len(s) <= MaxField {
		return s
	}
	var b []byte
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:]) // an invalid byte decodes as U+FFFD
		if len(b)+utf8.RuneLen(r) > MaxField {
			break
		}
		b = utf8.AppendRune(b, r)
		i += size
	}
	return string(b)
}

func validate(e Event) error {
	if e.Action == "" {
		return fmt.Errorf("%w: no action", ErrInvalid)
	}
	switch e.Outcome {
	case OutcomeOK, OutcomeAllowed, OutcomeDenied, OutcomeFailed, OutcomeError:
		return nil
	}
	return fmt.Errorf("%w: outcome %q", ErrInvalid, e.Outcome)
}

// marshalEvent is the one encoding of an event as a line (without the
// newline). Verify checks that every stored line is byte for byte what
// marshalEvent makes of its decoded contents, so a line cannot carry
// duplicate, unknown or differently-spelled keys that other readers would
// interpret differently.
func marshalEvent(e Event) ([]byte, error) {
	return json.Marshal(e)
}

// parseEvent decodes a line into e and checks the fields Open relies on.
func parseEvent(line []byte, e *Event) error {
	*e = Event{}
	if err := json.Unmarshal(line, e); err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if e.Seq == 0 || !isHash(e.Hash) || (e.Prev != "" && !isHash(e.Prev)) {
		return fmt.Errorf("%w: missing seq or bad hash", ErrMalformed)
	}
	return nil
}

// canonical reports whether line is exactly marshalEvent(e).
func canonical(line []byte, e Event) bool {
	b, err := marshalEvent(e)
	return err == nil && bytes.Equal(b, line)
}

func isHash(s string) bool {
	if len(s) != 2*sha256.Size {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
