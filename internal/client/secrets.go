package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"

	"paddock.dev/paddock/internal/wire"
)

// MaxSecret is the largest secret value the server takes.
const MaxSecret = 64 << 10

// Secrets lists an app's secrets: names, versions, digests; never values.
func (c *Client) Secrets(ctx context.Context, app string) ([]wire.Secret, error) {
	var out []wire.Secret
	return out, c.do(ctx, "GET", appPath(app, "/secrets"), nil, &out)
}

// SecretOptions say how a secret reaches the instances and when.
type SecretOptions struct {
	AsFile    bool // a file in $PADDOCK_SECRETS_DIR rather than an environment variable
	NoRestart bool // no release now: the app's next release rolls it out
}

// SetSecret stores value as the next version of an app's secret and,
// unless opts.NoRestart, rolls it out in a new release (in the answer).
func (c *Client) SetSecret(ctx context.Context, app, name string, value []byte, opts SecretOptions) (wire.SecretChange, error) {
	var out wire.SecretChange
	req := wire.SecretRequest{Value: value, AsFile: opts.AsFile, NoRestart: opts.NoRestart}
	return out, c.do(ctx, "PUT", secretPath(app, name), req, &out)
}

// UnsetSecret removes an app's secret in a new version and, unless
// noRestart, rolls that out in a new release.
func (c *Client) UnsetSecret(ctx context.Context, app, name string, noRestart bool) (wire.SecretChange, error) {
	var out wire.SecretChange
	p := secretPath(app, name)
	if noRestart {
		p += "?no_restart=true"
	}
	return out, c.do(ctx, "DELETE", p, nil, &out)
}

// SecretHistory lists the versions of an app's secret, oldest first.
func (c *Client) SecretHistory(ctx context.Context, app, name string) ([]wire.SecretVersion, error) {
	var out []wire.SecretVersion
	return out, c.do(ctx, "GET", secretPath(app, name)+"/versions", nil, &out)
}

// RevealSecret returns the value of an app's secret. The server records
// every reveal, allowed or not, in the audit log.
func (c *Client) RevealSecret(ctx context.Context, app, name string) ([]byte, error) {
	resp, err := c.request(ctx, "POST", secretPath(app, name)+"/reveal", nil, "")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxSecret+1))
	if err != nil {
		return nil, fmt.Errorf("reveal %s: read answer: %w", name, err)
	}
	if len(b) > MaxSecret {
		clear(b)
		return nil, fmt.Errorf("reveal %s: the answer is over %d bytes, which no secret is", name, MaxSecret)
	}
	return b, nil
}

func secretPath(app, name string) string {
	return appPath(app, "/secrets/", url.PathEscape(name))
}

// KeyStatus describes the keyring: the KEK's id and the data keys.
func (c *Client) KeyStatus(ctx context.Context) (wire.KeyStatus, error) {
	var out wire.KeyStatus
	return out, c.do(ctx, "GET", "/v1/keys", nil, &out)
}

// RotateKeys has the server make a new KEK and re-wrap every data key.
func (c *Client) RotateKeys(ctx context.Context) (wire.KeyStatus, error) {
	var out wire.KeyStatus
	return out, c.do(ctx, "POST", "/v1/keys/rotate", struct{}{}, &out)
}

// ExportKeys copies a backup of the KEK to w: sealed under passphrase, or
// with the key in the clear when passphrase is empty.
func (c *Client) ExportKeys(ctx context.Context, passphrase string, w io.Writer) error {
	b, err := json.Marshal(wire.KeyExportRequest{Passphrase: passphrase})
	if err != nil {
		return err
	}
	defer clear(b)
	resp, err := c.request(ctx, "POST", "/v1/keys/export", bytes.NewReader(b), "application/json")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(w, resp.Body); err != nil {
		return fmt.Errorf("export the keys: %w", err)
	}
	return nil
}

// ImportKeys restores the KEK from a backup ExportKeys wrote.
func (c *Client) ImportKeys(ctx context.Context, backup []byte, passphrase string) (wire.KeyStatus, error) {
	var out wire.KeyStatus
	return out, c.do(ctx, "POST", "/v1/keys/import", wire.KeyImportRequest{Backup: string(backup), Passphrase: passphrase}, &out)
}
