// Package secrets is Paddock's cryptographic core for secret values: the
// key-encryption key (KEK), envelope encryption of values under data keys
// (the [Keyring]), backups of the KEK, and the [Redactor] that scrubs secret
// values out of instance output.
//
// It holds no state of its own on disk other than the KEK file; data keys
// live in the store through the small [KeyStore] interface. The daemon builds
// a Keyring at start ([OpenLocal], or [New] with a KEK of its choosing) and
// passes it to the packages that seal and open values; the instance
// supervisor builds a Redactor from the values it injects.
//
// # Keys
//
//	KEK (32 bytes, file or env var, or a KMS later)
//	 └─ wraps data keys (32 bytes each, stored wrapped in the store)
//	     ├─ value keys: AES-256-GCM seal secret values; a new one is made
//	     │  after Config.MaxSeals seals, old ones stay to open old values
//	     └─ the digest key: HMAC-SHA256 key behind [Keyring.Digest]
//
// Rotating the KEK re-wraps every data key in one store transaction; no
// value is re-encrypted and digests do not change.
//
// Every primitive is the standard library's: crypto/aes with crypto/cipher
// GCM (random 96-bit nonces), crypto/hmac with crypto/sha256, crypto/hkdf,
// crypto/pbkdf2 and crypto/rand.
//
// # Several servers on one store
//
// A data key made by another server is read from the store when a value
// sealed under it is first opened, and two servers that make a digest key
// at once both settle on the one with the smaller ID. A KEK rotation
// changes the KEK of the server that runs it only: the others keep opening
// values under the data keys they have cached, fail with [ErrWrongKEK] on
// any other, and would wrap a new data key under the old KEK, until they
// are restarted with the new one. The local KEK is made for one server per
// store; a KMS KEK would lift this.
//
// # Printing
//
// Types that hold key material or secret values ([LocalKEK], [Keyring],
// [Redactor], [Writer]) print as [REDACTED] with every fmt verb and in
// log/slog, and no error of this package contains a key or a value.
package secrets
