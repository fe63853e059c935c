package deploy

import (
	"net/netip"
	"strings"
	"testing"

	"paddock.dev/paddock/internal/isolate"
	"paddock.dev/paddock/internal/runtime"
)

// TestOwnedBy: only a listener that takes connections to 127.0.0.1 on the
// instance's port, and belongs to another user, counts against the
// instance: another app binding 127.0.0.2 or ::1 on the same port does
// not get it evicted.
func TestOwnedBy(t *testing.T) {
	in := runtime.Instance{Spec: runtime.Spec{Port: 25000, UID: 7}}
	l := func(addr string, uid uint32) isolate.Listener {
		return isolate.Listener{Addr: netip.MustParseAddr(addr), UID: uid}
	}
	for _, tc := range []struct {
		name      string
		listeners []isolate.Listener
		want      string
	}{
		{"its own", []isolate.Listener{l("127.0.0.1", 7)}, ""},
		{"its own on every address", []isolate.Listener{l("::", 7)}, ""},
		{"another user's on 127.0.0.1", []isolate.Listener{l("127.0.0.1", 8)}, "uid 8"},
		{"another user's on every address", []isolate.Listener{l("0.0.0.0", 8)}, "uid 8"},
		{"another user's on ::ffff:127.0.0.1", []isolate.Listener{l("127.0.0.1", 7), l("::ffff:127.0.0.1", 9)}, "uid 9"},
		{"another user's elsewhere", []isolate.Listener{l("127.0.0.1", 7), l("127.0.0.2", 8), l("::1", 8)}, ""},
		{"nothing yet", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ownedBy(map[int][]isolate.Listener{25000: tc.listeners, 25001: {l("0.0.0.0", 99)}}, in)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("got %v, want none", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("got %v, want an error naming %s", err, tc.want)
			}
		})
	}
}
