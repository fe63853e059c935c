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
// # Printing
//
// Types that hold key material or secret values ([LocalKEK], [Keyring],
// [Redactor], [Writer]) print as [REDACTED] with every fmt verb and in
// log/slog, and no error of this package contains a key or a value.
package secrets
