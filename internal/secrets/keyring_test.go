package secrets

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
)

func newKEK(t testing.TB) *LocalKEK {
	t.Helper()
	k, err := GenerateKEK()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newKeyring(t testing.TB, cfg Config) *Keyring {
	t.Helper()
	if cfg.KEK == nil {
		cfg.KEK = newKEK(t)
	}
	if cfg.Store == nil {
		cfg.Store = NewMemStore()
	}
	kr, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

func seal(t testing.TB, kr *Keyring, value string, aad []byte) Sealed {
	t.Helper()
	s, err := kr.Seal(context.Background(), []byte(value), aad)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustOpen(t testing.TB, kr *Keyring, s Sealed, aad []byte) string {
	t.Helper()
	got, err := kr.Open(context.Background(), s, aad)
	if err != nil {
		t.Fatalf("Open key %d: %v", s.KeyID, err)
	}
	return string(got)
}

func TestSealOpen(t *testing.T) {
	kr := newKeyring(t, Config{})
	aad := AAD("app-1", "STRIPE_KEY", "3")
	for _, v := range []string{"", "x", "sk_live_0123456789abcdef", strings.Repeat("v", 64<<10)} {
		s := seal(t, kr, v, aad)
		if len(v) > 4 && bytes.Contains(s.Box, []byte(v[:5])) {
			t.Errorf("sealed box holds the plaintext")
		}
		b, err := s.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var back Sealed
		if err := back.UnmarshalBinary(b); err != nil {
			t.Fatal(err)
		}
		if got := mustOpen(t, kr, back, aad); got != v {
			t.Errorf("Open = %.20q…, want %.20q…", got, v)
		}
	}
	a, b := seal(t, kr, "same", aad), seal(t, kr, "same", aad)
	if bytes.Equal(a.Box, b.Box) {
		t.Error("two seals of one value are equal: the nonce is not random")
	}
}

func TestAADIsUnambiguous(t *testing.T) {
	if bytes.Equal(AAD("ab", "c"), AAD("a", "bc")) || bytes.Equal(AAD("a"), AAD("a", "")) {
		t.Error("AAD encodes different parts alike")
	}
}

// TestTampering changes each part of a sealed value, or the context it is
// opened in, and expects ErrTampered with a message that names nothing
// secret; the other values still open.
func TestTampering(t *testing.T) {
	ctx := context.Background()
	kr := newKeyring(t, Config{})
	const value = "the-plaintext-value"
	aad := AAD("app-1", "DB_PASSWORD", "2")
	s := seal(t, kr, value, aad)
	other := seal(t, kr, "other-value", AAD("app-1", "OTHER", "1"))
	// A second data key, to move values between keys.
	kr2 := newKeyring(t, Config{KEK: kr.KEK(), Store: kr.store, MaxSeals: 1})
	seal(t, kr2, "x", nil)
	s3 := seal(t, kr2, "y", nil)
	if s3.KeyID == s.KeyID {
		t.Fatal("want a second data key")
	}
	if _, err := kr.Digest(ctx, []byte("d")); err != nil {
		t.Fatal(err)
	}
	var digestKeyID int64
	for id, dk := range kr.keys {
		if dk.Kind == KindDigest {
			digestKeyID = id
		}
	}

	flip := func(i int) Sealed {
		c := Sealed{KeyID: s.KeyID, Box: bytes.Clone(s.Box)}
		c.Box[i] ^= 0x10
		return c
	}
	tests := []struct {
		name string
		s    Sealed
		aad  []byte
	}{
		{"nonce bit", flip(0), aad},
		{"last nonce bit", flip(11), aad},
		{"ciphertext bit", flip(12), aad},
		{"tag bit", flip(len(s.Box) - 1), aad},
		{"cut short", Sealed{KeyID: s.KeyID, Box: s.Box[:len(s.Box)-1]}, aad},
		{"empty box", Sealed{KeyID: s.KeyID}, aad},
		{"other data key", Sealed{KeyID: s3.KeyID, Box: s.Box}, aad},
		{"unknown data key", Sealed{KeyID: 999, Box: s.Box}, aad},
		{"digest key", Sealed{KeyID: digestKeyID, Box: s.Box}, aad},
		{"other app", s, AAD("app-2", "DB_PASSWORD", "2")},
		{"other name", s, AAD("app-1", "DB_PASS", "2")},
		{"other version", s, AAD("app-1", "DB_PASSWORD", "3")},
		{"no aad", s, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := kr.Open(ctx, tt.s, tt.aad)
			if !errors.Is(err, ErrTampered) {
				t.Fatalf("Open = %q, %v; want ErrTampered", got, err)
			}
			if got != nil {
				t.Errorf("Open returned %q with its error", got)
			}
			if strings.Contains(err.Error(), value) || strings.Contains(err.Error(), "DB_PASSWORD") {
				t.Errorf("error %q names the value or the secret", err)
			}
		})
	}
	if got := mustOpen(t, kr, other, AAD("app-1", "OTHER", "1")); got != "other-value" {
		t.Errorf("after the tampered ones, another value opens as %q", got)
	}

	// The same in the marshalled form the store keeps.
	b, _ := s.MarshalBinary()
	for i := range b {
		c := bytes.Clone(b)
		c[i] ^= 0x01
		var m Sealed
		if err := m.UnmarshalBinary(c); err != nil {
			if !errors.Is(err, ErrTampered) {
				t.Errorf("byte %d flipped: Unmarshal error %v, want ErrTampered", i, err)
			}
			continue
		}
		if got, err := kr.Open(ctx, m, aad); !errors.Is(err, ErrTampered) {
			t.Errorf("byte %d flipped: Open = %q, %v; want ErrTampered", i, got, err)
		}
	}
	var m Sealed
	long := append([]byte{1, 0x81, 0x00}, s.Box...) // key 1, in a varint longer than needed
	for _, bad := range [][]byte{nil, {}, {2, 1}, {1}, {1, 0x80}, b[:20], long} {
		if err := m.UnmarshalBinary(bad); !errors.Is(err, ErrTampered) {
			t.Errorf("Unmarshal(%x) = %v, want ErrTampered", bad, err)
		}
	}
}

// TestRollover seals past the configured limit and checks that a new data
// key takes over, that no key seals more than the limit, that the stored
// counts are never below the seals made, and that every value opens.
func TestRollover(t *testing.T) {
	ctx := context.Background()
	store := NewMemStore()
	kek := newKEK(t)
	const max, batch = 5, 2
	kr := newKeyring(t, Config{KEK: kek, Store: store, MaxSeals: max, SealBatch: batch})

	made := map[int64]int64{}
	var sealed []Sealed
	sealN := func(kr *Keyring, n int) {
		for range n {
			s := seal(t, kr, fmt.Sprint("value-", len(sealed)), nil)
			made[s.KeyID]++
			sealed = append(sealed, s)
		}
	}
	sealN(kr, 12)
	var ids []int64
	for _, s := range sealed {
		if len(ids) == 0 || ids[len(ids)-1] != s.KeyID {
			ids = append(ids, s.KeyID)
		}
	}
	if fmt.Sprint(ids) != "[1 2 3]" {
		t.Errorf("data keys used in order: %v, want [1 2 3]", ids)
	}

	// A restart (a crash loses the unused reservation) and more seals.
	kr = newKeyring(t, Config{KEK: kek, Store: store, MaxSeals: max, SealBatch: batch})
	sealN(kr, 9)

	dks, _ := store.DataKeys(ctx)
	for _, dk := range dks {
		if made[dk.ID] > max {
			t.Errorf("data key %d sealed %d values, limit %d", dk.ID, made[dk.ID], max)
		}
		if dk.Seals < made[dk.ID] {
			t.Errorf("data key %d: stored count %d is below the %d seals made", dk.ID, dk.Seals, made[dk.ID])
		}
		if dk.Seals > made[dk.ID]+batch {
			t.Errorf("data key %d: stored count %d is more than a batch above the %d seals made", dk.ID, dk.Seals, made[dk.ID])
		}
	}
	for i, s := range sealed {
		if got, want := mustOpen(t, kr, s, nil), fmt.Sprint("value-", i); got != want {
			t.Errorf("value %d opens as %q, want %q", i, got, want)
		}
	}
	st := kr.Status()
	if st.CurrentKeyID != sealed[len(sealed)-1].KeyID || st.MaxSeals != max || st.DataKeys != len(dks) {
		t.Errorf("Status = %+v; want current key %d, %d keys, max %d", st, sealed[len(sealed)-1].KeyID, len(dks), max)
	}
}

func TestConfigLimits(t *testing.T) {
	for _, cfg := range []Config{{MaxSeals: DefaultMaxSeals + 1}, {MaxSeals: -1}, {SealBatch: -1}} {
		cfg.KEK, cfg.Store = newKEK(t), NewMemStore()
		if _, err := New(context.Background(), cfg); err == nil {
			t.Errorf("New(MaxSeals %d, SealBatch %d) succeeded", cfg.MaxSeals, cfg.SealBatch)
		}
	}
	kr := newKeyring(t, Config{})
	if st := kr.Status(); st.MaxSeals != 1<<24 {
		t.Errorf("default MaxSeals = %d, want 2^24", st.MaxSeals)
	}
}

// TestRotate rotates the KEK and checks that everything opens under the new
// one, in this keyring and a fresh one, and that the old one opens nothing.
func TestRotate(t *testing.T) {
	ctx := context.Background()
	store := NewMemStore()
	oldKEK, newKEK := newKEK(t), newKEK(t)
	kr := newKeyring(t, Config{KEK: oldKEK, Store: store, MaxSeals: 3, CacheSize: 1})
	var sealed []Sealed
	for i := range 10 {
		sealed = append(sealed, seal(t, kr, fmt.Sprint("value-", i), AAD("app", fmt.Sprint(i))))
	}
	digest, err := kr.Digest(ctx, []byte("value-0"))
	if err != nil {
		t.Fatal(err)
	}

	if err := kr.Rotate(ctx, newKEK); err != nil {
		t.Fatal(err)
	}
	if got := kr.Status().KEKID; got != newKEK.ID() {
		t.Errorf("KEK after rotation = %s, want %s", got, newKEK.ID())
	}
	fresh := newKeyring(t, Config{KEK: newKEK, Store: store})
	for i, s := range sealed {
		for _, k := range []*Keyring{kr, fresh} {
			if got, want := mustOpen(t, k, s, AAD("app", fmt.Sprint(i))), fmt.Sprint("value-", i); got != want {
				t.Errorf("value %d opens as %q, want %q", i, got, want)
			}
		}
	}
	if d, _ := fresh.Digest(ctx, []byte("value-0")); d != digest {
		t.Errorf("digest after rotation %s, before %s", d, digest)
	}
	s := seal(t, kr, "after", nil)
	if got := mustOpen(t, fresh, s, nil); got != "after" {
		t.Errorf("a value sealed after rotation opens as %q", got)
	}

	// The old KEK opens nothing: not a keyring, not a single data key.
	_, err = New(ctx, Config{KEK: oldKEK, Store: store})
	if !errors.Is(err, ErrWrongKEK) || !strings.Contains(err.Error(), newKEK.ID()) {
		t.Errorf("New with the old KEK: %v; want ErrWrongKEK naming %s", err, newKEK.ID())
	}
	dks, _ := store.DataKeys(ctx)
	if len(dks) < 5 {
		t.Fatalf("store holds %d data keys, want several", len(dks))
	}
	for _, dk := range dks {
		if dk.KEKID != newKEK.ID() {
			t.Errorf("data key %d is wrapped by %s after rotation", dk.ID, dk.KEKID)
		}
		if _, err := oldKEK.Unwrap(dk.Wrapped, wrapAAD(dk.Kind)); err == nil {
			t.Errorf("the old KEK unwraps data key %d", dk.ID)
		}
	}
	if err := kr.Rotate(ctx, newKEK); err == nil {
		t.Error("rotating to the KEK in use succeeded")
	}
}

// failingKEK wraps like its KEK but fails the nth Wrap.
type failingKEK struct {
	*LocalKEK
	n, calls int
}

func (f *failingKEK) Wrap(p, aad []byte) ([]byte, error) {
	f.calls++
	if f.calls == f.n {
		return nil, errors.New("kms unavailable")
	}
	return f.LocalKEK.Wrap(p, aad)
}

func TestRotateFailsWhole(t *testing.T) {
	ctx := context.Background()
	store := NewMemStore()
	oldKEK := newKEK(t)
	kr := newKeyring(t, Config{KEK: oldKEK, Store: store, MaxSeals: 1})
	a, b := seal(t, kr, "a", nil), seal(t, kr, "b", nil)
	before, _ := store.DataKeys(ctx)

	bad := &failingKEK{LocalKEK: newKEK(t), n: 2}
	if err := kr.Rotate(ctx, bad); err == nil || !strings.Contains(err.Error(), "kms unavailable") {
		t.Fatalf("Rotate = %v, want the KEK's error", err)
	}
	after, _ := store.DataKeys(ctx)
	if fmt.Sprint(before) != fmt.Sprint(after) {
		t.Error("a failed rotation changed the store")
	}
	if kr.Status().KEKID != oldKEK.ID() {
		t.Error("a failed rotation changed the keyring's KEK")
	}
	fresh := newKeyring(t, Config{KEK: oldKEK, Store: store, CacheSize: 1})
	if mustOpen(t, fresh, a, nil) != "a" || mustOpen(t, fresh, b, nil) != "b" {
		t.Error("values do not open after a failed rotation")
	}
}

// TestRotateOnline rotates while other goroutines seal and open: none of
// them fails.
func TestRotateOnline(t *testing.T) {
	ctx := context.Background()
	store := NewMemStore()
	kr := newKeyring(t, Config{KEK: newKEK(t), Store: store, MaxSeals: 7, SealBatch: 3, CacheSize: 2})
	var old []Sealed
	for i := range 20 {
		old = append(old, seal(t, kr, fmt.Sprint(i), nil))
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for g := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				v := fmt.Sprint("g", g, "-", i)
				s, err := kr.Seal(ctx, []byte(v), nil)
				if err == nil {
					var got []byte
					if got, err = kr.Open(ctx, s, nil); err == nil && string(got) != v {
						err = fmt.Errorf("opened %q, want %q", got, v)
					}
				}
				if err == nil {
					o := old[i%len(old)]
					if got, e := kr.Open(ctx, o, nil); e != nil || string(got) != fmt.Sprint(i%len(old)) {
						err = fmt.Errorf("old value %d: %q, %v", i%len(old), got, e)
					}
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	var keks []*LocalKEK
	for range 5 {
		k := newKEK(t)
		keks = append(keks, k)
		if err := kr.Rotate(ctx, k); err != nil {
			t.Error(err)
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	last := keks[len(keks)-1]
	if err := VerifyKEK(ctx, store, last); err != nil {
		t.Errorf("the last KEK does not open the store: %v", err)
	}
	for _, k := range keks[:len(keks)-1] {
		if err := VerifyKEK(ctx, store, k); !errors.Is(err, ErrWrongKEK) {
			t.Errorf("an earlier KEK: VerifyKEK = %v, want ErrWrongKEK", err)
		}
	}
}

func TestDigest(t *testing.T) {
	ctx := context.Background()
	store := NewMemStore()
	kek := newKEK(t)
	kr := newKeyring(t, Config{KEK: kek, Store: store, MaxSeals: 1})
	d1, err := kr.Digest(ctx, []byte("1234"))
	if err != nil {
		t.Fatal(err)
	}
	if len(d1) != DigestLen || strings.Trim(d1, "0123456789abcdef") != "" {
		t.Errorf("digest %q: want %d hex digits", d1, DigestLen)
	}
	seal(t, kr, "a", nil)
	seal(t, kr, "b", nil) // a rollover
	if d, _ := kr.Digest(ctx, []byte("1234")); d != d1 {
		t.Errorf("digest changed after a rollover: %s, was %s", d, d1)
	}
	if d, _ := kr.Digest(ctx, []byte("1235")); d == d1 {
		t.Error("two values have one digest")
	}
	again := newKeyring(t, Config{KEK: kek, Store: store})
	if d, _ := again.Digest(ctx, []byte("1234")); d != d1 {
		t.Errorf("digest changed after a restart: %s, was %s", d, d1)
	}
	// Another platform (another digest key) gives another digest: it is
	// not a plain hash anyone could compute from a guess.
	elsewhere := newKeyring(t, Config{})
	if d, _ := elsewhere.Digest(ctx, []byte("1234")); d == d1 {
		t.Error("another platform computes the same digest")
	}
	dks, _ := store.DataKeys(ctx)
	digestKeys := 0
	for _, dk := range dks {
		if dk.Kind == KindDigest {
			digestKeys++
		}
	}
	if digestKeys != 1 {
		t.Errorf("%d digest keys in the store, want 1", digestKeys)
	}
}

// TestKeyMadeElsewhere: a value sealed by another server under a data key
// this keyring has not read yet still opens.
func TestKeyMadeElsewhere(t *testing.T) {
	store := NewMemStore()
	kek := newKEK(t)
	a := newKeyring(t, Config{KEK: kek, Store: store})
	b := newKeyring(t, Config{KEK: kek, Store: store})
	s := seal(t, b, "from b", nil)
	if got := mustOpen(t, a, s, nil); got != "from b" {
		t.Errorf("opens as %q", got)
	}
}

func TestCacheIsBounded(t *testing.T) {
	kr := newKeyring(t, Config{MaxSeals: 1, CacheSize: 2})
	var sealed []Sealed
	for i := range 6 {
		sealed = append(sealed, seal(t, kr, fmt.Sprint(i), nil))
	}
	for i, s := range sealed {
		if got := mustOpen(t, kr, s, nil); got != fmt.Sprint(i) {
			t.Errorf("value %d opens as %q", i, got)
		}
	}
	if n := kr.cache.len(); n > 2 {
		t.Errorf("cache holds %d keys, limit 2", n)
	}
}

func TestWrongKEKAtStart(t *testing.T) {
	ctx := context.Background()
	store := NewMemStore()
	right := newKEK(t)
	kr := newKeyring(t, Config{KEK: right, Store: store})
	seal(t, kr, "v", nil)
	wrong := newKEK(t)
	_, err := New(ctx, Config{KEK: wrong, Store: store})
	if !errors.Is(err, ErrWrongKEK) {
		t.Fatalf("New with another KEK: %v, want ErrWrongKEK", err)
	}
	for _, want := range []string{right.ID(), wrong.ID(), "paddock keys import"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}

	// A data key whose wrapped bytes were changed, under the right KEK's ID.
	dks, _ := store.DataKeys(ctx)
	dk := dks[0]
	store.mu.Lock()
	for i := range store.keys {
		if store.keys[i].ID == dk.ID {
			store.keys[i].Wrapped[len(dk.Wrapped)-1] ^= 1
		}
	}
	store.mu.Unlock()
	if _, err := New(ctx, Config{KEK: right, Store: store}); !errors.Is(err, ErrWrongKEK) || !strings.Contains(err.Error(), "damaged") {
		t.Errorf("New over a damaged data key: %v, want ErrWrongKEK saying damaged", err)
	}
}
