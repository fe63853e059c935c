package daemon

import (
	"context"
	"path/filepath"
	"testing"

	"paddock.dev/paddock/internal/secrets"
	"paddock.dev/paddock/internal/secrets/secretstest"
	"paddock.dev/paddock/internal/store/sqlite"
)

// TestKeyStore: the platform's store keeps data keys as the keyring needs.
func TestKeyStore(t *testing.T) {
	secretstest.KeyStore(t, func(t *testing.T) secrets.KeyStore {
		st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "paddock.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return keyStore{st}
	})
}
