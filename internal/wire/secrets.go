package wire

import (
	"log/slog"
	"time"
)

// Secret describes the current version of an app's secret, as GET
// /v1/apps/{app}/secrets lists it: never its value.
type Secret struct {
	Name    string `json:"name"`
	Version int    `json:"version"`
	// Digest is a short keyed digest of the value: two versions with the
	// same digest hold the same value; it tells nothing of the value.
	Digest    string    `json:"digest"`
	AsFile    bool      `json:"as_file"` // a file in $PADDOCK_SECRETS_DIR rather than an environment variable
	UpdatedBy string    `json:"updated_by"`
	UpdatedAt time.Time `json:"updated_at"`
}

// SecretVersion is one version of a secret, as GET
// /v1/apps/{app}/secrets/{name}/versions lists them, oldest first.
type SecretVersion struct {
	Version   int       `json:"version"`
	Digest    string    `json:"digest,omitempty"` // "" for a version that unset the secret
	AsFile    bool      `json:"as_file"`
	Deleted   bool      `json:"deleted"` // this version unset the secret
	CreatedBy string    `json:"created_by"`
	CreatedAt time.Time `json:"created_at"`
}

// SecretRequest is the body of PUT /v1/apps/{app}/secrets/{name}.
//
// The value travels in standard base64 (RFC 4648 §4, with padding) so that
// it may hold any bytes; its field says so by its name, so that a value
// sent as plain text is refused rather than decoded into other bytes.
type SecretRequest struct {
	Value     []byte `json:"value_base64"`         // 1 byte to 64 KiB once decoded
	AsFile    bool   `json:"as_file,omitempty"`    // give it to instances as a file, not an environment variable
	NoRestart bool   `json:"no_restart,omitempty"` // store it now; the app's next release rolls it out
}

// LogValue keeps the value out of logs.
func (r SecretRequest) LogValue() slog.Value {
	return slog.GroupValue(slog.String("value", "[REDACTED]"), slog.Bool("as_file", r.AsFile), slog.Bool("no_restart", r.NoRestart))
}

// String keeps the value out of anything that prints the request.
func (r SecretRequest) String() string {
	return "{value_base64: [REDACTED]}"
}

// GoString keeps the value out of %#v.
func (r SecretRequest) GoString() string { return r.String() }

// SecretChange answers PUT and DELETE /v1/apps/{app}/secrets/{name}: the
// version the change made and the release rolling it out (201 or 200), or
// no release when the change waits for the next one (202).
type SecretChange struct {
	App     string   `json:"app"`
	Name    string   `json:"name"`
	Version int      `json:"version"`
	Deleted bool     `json:"deleted"` // the change unset the secret
	Release *Release `json:"release,omitempty"`
}

// KeyStatus is the answer of GET /v1/keys and POST /v1/keys/rotate and
// /v1/keys/import: which key-encryption key (KEK) wraps the data keys, and
// the data keys. It holds ids and counts, never key material.
type KeyStatus struct {
	KEK       string    `json:"kek"`                  // the KEK's id
	KEKSource string    `json:"kek_source,omitempty"` // where the server got it: a key file, an environment variable
	MaxSeals  int64     `json:"max_seals,omitempty"`  // seals under one value key after which a new one is made
	DataKeys  []DataKey `json:"data_keys"`
}

// DataKey is a key that seals secrets (or keys their digests), stored
// only wrapped by a KEK.
type DataKey struct {
	ID        int64     `json:"id"`
	Kind      string    `json:"kind"` // "value" (seals values) or "digest"
	KEK       string    `json:"kek"`  // the id of the KEK that wraps it
	Seals     int64     `json:"seals"`
	Active    bool      `json:"active"` // new values are sealed with it
	CreatedAt time.Time `json:"created_at"`
}

// KeyExportRequest is the body of POST /v1/keys/export, whose answer is
// the backup's bytes.
type KeyExportRequest struct {
	// Passphrase, if not empty, seals the key in the backup under a key
	// derived from it; without one the backup holds the key in the clear.
	Passphrase string `json:"passphrase,omitempty"`
}

// LogValue keeps the passphrase out of logs.
func (r KeyExportRequest) LogValue() slog.Value { return slog.StringValue("[REDACTED]") }

// String keeps the passphrase out of anything that prints the request.
func (r KeyExportRequest) String() string { return "{passphrase: [REDACTED]}" }

// GoString keeps the passphrase out of %#v.
func (r KeyExportRequest) GoString() string { return r.String() }

// KeyImportRequest is the body of POST /v1/keys/import.
type KeyImportRequest struct {
	Backup     string `json:"backup"`               // the text `paddock keys export` wrote
	Passphrase string `json:"passphrase,omitempty"` // the backup's passphrase, if it has one
}

// LogValue keeps the backup and passphrase out of logs.
func (r KeyImportRequest) LogValue() slog.Value { return slog.StringValue("[REDACTED]") }

// String keeps the backup and passphrase out of anything that prints the
// request.
func (r KeyImportRequest) String() string { return "{backup: [REDACTED], passphrase: [REDACTED]}" }

// GoString keeps the backup and passphrase out of %#v.
func (r KeyImportRequest) GoString() string { return r.String() }
