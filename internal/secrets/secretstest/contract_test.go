package secretstest

import (
	"testing"

	"paddock.dev/paddock/internal/secrets"
)

func TestMemStore(t *testing.T) {
	KeyStore(t, func(t *testing.T) secrets.KeyStore { return secrets.NewMemStore() })
}
