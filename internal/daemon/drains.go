package daemon

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"path/filepath"
	"time"

	"paddock.dev/paddock/internal/drains"
	"paddock.dev/paddock/internal/runtime"
	"paddock.dev/paddock/internal/store"
	"paddock.dev/paddock/internal/wire"
)

// drainAPI keeps the apps' log drains in the store, their URLs sealed by
// the keyring (a URL may carry a token), and runs them.
type drainAPI struct {
	st   store.Store
	kr   keyring
	fwd  *drains.Forwarder
	logs string // the logs folder
}

func drainAAD(id string) []byte { return []byte("paddock drain\x00" + id) }

// all returns every drain with its URL open, for the forwarder.
func (d drainAPI) all(ctx context.Context) ([]drains.Drain, error) {
	list, err := d.st.ListDrains(ctx, "")
	if err != nil {
		return nil, err
	}
	out := make([]drains.Drain, 0, len(list))
	for _, dr := range list {
		u, err := d.kr.Open(ctx, dr.URL, drainAAD(dr.ID))
		if err != nil {
			continue // the server log says so at the keyring
		}
		out = append(out, drains.Drain{ID: dr.ID, App: dr.App, URL: string(u), CA: dr.CA})
	}
	return out, nil
}

func (d drainAPI) logDir(ctx context.Context, app string) (string, error) {
	a, err := d.st.GetApp(ctx, app)
	if err != nil {
		return "", err
	}
	return filepath.Join(d.logs, runtime.LogFolder(a.Name, a.ID)), nil
}

// shown is a drain's URL as it may be shown: scheme, host and path, no
// credentials, query or fragment.
func shown(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unreadable)"
	}
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
}

func (d drainAPI) out(ctx context.Context, dr store.Drain) wire.Drain {
	w := wire.Drain{ID: dr.ID, App: dr.App, CreatedAt: dr.CreatedAt}
	if u, err := d.kr.Open(ctx, dr.URL, drainAAD(dr.ID)); err == nil {
		w.URL = shown(string(u))
	}
	if st, ok := d.fwd.Status(dr.ID); ok {
		w.Sent, w.Dropped, w.LastError, w.FailingSince = st.Sent, st.Dropped, st.LastError, st.FailingAt
	}
	return w
}

// List returns app's drains with what they have done.
func (d drainAPI) List(ctx context.Context, app string) ([]wire.Drain, error) {
	list, err := d.st.ListDrains(ctx, app)
	if err != nil {
		return nil, err
	}
	out := make([]wire.Drain, 0, len(list))
	for _, dr := range list {
		out = append(out, d.out(ctx, dr))
	}
	return out, nil
}

// Add adds a drain to app and starts it.
func (d drainAPI) Add(ctx context.Context, app, rawURL string, ca []byte) (wire.Drain, error) {
	if _, err := drains.Check(rawURL); err != nil {
		return wire.Drain{}, err
	}
	if _, err := d.st.GetApp(ctx, app); err != nil {
		return wire.Drain{}, err
	}
	id := make([]byte, 6)
	rand.Read(id)
	dr := store.Drain{ID: "dr-" + hex.EncodeToString(id), App: app, CA: ca, CreatedAt: time.Now().UTC()}
	var err error
	if dr.URL, err = d.kr.Seal(ctx, []byte(rawURL), drainAAD(dr.ID)); err != nil {
		return wire.Drain{}, err
	}
	if err := d.st.AddDrain(ctx, dr); err != nil {
		return wire.Drain{}, err
	}
	d.fwd.Refresh(ctx)
	return d.out(ctx, dr), nil
}

// Remove stops and removes one of app's drains.
func (d drainAPI) Remove(ctx context.Context, app, id string) error {
	if err := d.st.DeleteDrain(ctx, app, id); err != nil {
		return err
	}
	d.fwd.Refresh(ctx)
	return nil
}
