// Package secretstest holds the contract tests that every
// [secrets.KeyStore] must pass. A store's tests call [KeyStore] with a
// function that opens a new, empty store:
//
//	func TestKeyStore(t *testing.T) {
//		secretstest.KeyStore(t, func(t *testing.T) secrets.KeyStore {
//			return openTestStore(t)
//		})
//	}
//
// Only tests import it.
package secretstest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"paddock.dev/paddock/internal/secrets"
)

// KeyStore runs the contract against stores made by open, one per subtest.
func KeyStore(t *testing.T, open func(t *testing.T) secrets.KeyStore) {
	t.Run("Empty", func(t *testing.T) { testEmpty(t, open(t)) })
	t.Run("AddAndRead", func(t *testing.T) { testAddAndRead(t, open(t)) })
	t.Run("CountSeals", func(t *testing.T) { testCountSeals(t, open(t)) })
	t.Run("CountSealsConcurrently", func(t *testing.T) { testCountSealsConcurrently(t, open(t)) })
	t.Run("Rewrap", func(t *testing.T) { testRewrap(t, open(t)) })
	t.Run("RewrapFailsWhole", func(t *testing.T) { testRewrapFailsWhole(t, open(t)) })
	t.Run("Keyring", func(t *testing.T) { testKeyring(t, open(t)) })
}

func dataKey(i int) secrets.DataKey {
	kind := secrets.KindValue
	if i%3 == 2 {
		kind = secrets.KindDigest
	}
	return secrets.DataKey{
		ID:      1000 + int64(i), // ignored by AddDataKey
		Kind:    kind,
		Wrapped: []byte(fmt.Sprintf("wrapped-%d\x00\xff", i)),
		KEKID:   "0123456789abcdef",
		Seals:   int64(i * 10),
		Created: time.Date(2025, 3, 1, 12, 0, i, 123456000, time.UTC),
	}
}

func add(t *testing.T, s secrets.KeyStore, k secrets.DataKey) secrets.DataKey {
	t.Helper()
	got, err := s.AddDataKey(context.Background(), k)
	if err != nil {
		t.Fatalf("AddDataKey: %v", err)
	}
	return got
}

func read(t *testing.T, s secrets.KeyStore) map[int64]secrets.DataKey {
	t.Helper()
	dks, err := s.DataKeys(context.Background())
	if err != nil {
		t.Fatalf("DataKeys: %v", err)
	}
	m := make(map[int64]secrets.DataKey, len(dks))
	for _, dk := range dks {
		if _, dup := m[dk.ID]; dup {
			t.Fatalf("DataKeys returns ID %d twice", dk.ID)
		}
		m[dk.ID] = dk
	}
	return m
}

func sameKey(t *testing.T, what string, got, want secrets.DataKey) {
	t.Helper()
	if got.ID != want.ID || got.Kind != want.Kind || !bytes.Equal(got.Wrapped, want.Wrapped) ||
		got.KEKID != want.KEKID || got.Seals != want.Seals {
		t.Errorf("%s: got %+v, want %+v", what, got, want)
	}
	if d := got.Created.Sub(want.Created); d > time.Millisecond || d < -time.Millisecond {
		t.Errorf("%s: Created %v, want %v (to the millisecond)", what, got.Created, want.Created)
	}
}

func testEmpty(t *testing.T, s secrets.KeyStore) {
	if got := read(t, s); len(got) != 0 {
		t.Errorf("a new store holds %d data keys", len(got))
	}
}

func testAddAndRead(t *testing.T, s secrets.KeyStore) {
	var added []secrets.DataKey
	var last int64
	for i := range 5 {
		k := dataKey(i)
		got := add(t, s, k)
		if got.ID <= last {
			t.Errorf("key %d got ID %d after ID %d: IDs must grow", i, got.ID, last)
		}
		last = got.ID
		k.ID = got.ID
		sameKey(t, "AddDataKey's answer", got, k)
		added = append(added, k)
	}
	stored := read(t, s)
	if len(stored) != len(added) {
		t.Fatalf("DataKeys returns %d keys, want %d", len(stored), len(added))
	}
	for _, k := range added {
		sameKey(t, fmt.Sprint("key ", k.ID), stored[k.ID], k)
	}
	// What DataKeys returned is the caller's: changing it changes nothing.
	for _, dk := range stored {
		clear(dk.Wrapped)
	}
	for _, k := range added {
		sameKey(t, fmt.Sprint("key ", k.ID, " after the caller changed a copy"), read(t, s)[k.ID], k)
	}
}

func testCountSeals(t *testing.T, s secrets.KeyStore) {
	ctx := context.Background()
	k := add(t, s, dataKey(0))
	other := add(t, s, dataKey(1))
	for i, n := range []int64{1, 1024, 7} {
		total, err := s.CountSeals(ctx, k.ID, n)
		if err != nil {
			t.Fatal(err)
		}
		want := []int64{1, 1025, 1032}[i]
		if total != want {
			t.Errorf("CountSeals(+%d) = %d, want %d", n, total, want)
		}
	}
	stored := read(t, s)
	if stored[k.ID].Seals != 1032 || stored[other.ID].Seals != other.Seals {
		t.Errorf("stored seals %d and %d, want 1032 and %d", stored[k.ID].Seals, stored[other.ID].Seals, other.Seals)
	}
	if _, err := s.CountSeals(ctx, 99999, 1); err == nil {
		t.Error("CountSeals of a key that does not exist succeeded")
	}
}

func testCountSealsConcurrently(t *testing.T, s secrets.KeyStore) {
	ctx := context.Background()
	k := add(t, s, secrets.DataKey{Kind: secrets.KindValue, Wrapped: []byte("w"), KEKID: "k", Created: time.Now()})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			for range 50 {
				if _, err := s.CountSeals(ctx, k.ID, 3); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := read(t, s)[k.ID].Seals; got != 8*50*3 {
		t.Errorf("after 400 concurrent CountSeals of 3: %d seals, want 1200 (an increment was lost)", got)
	}
}

func testRewrap(t *testing.T, s secrets.KeyStore) {
	ctx := context.Background()
	var added []secrets.DataKey
	for i := range 4 {
		added = append(added, add(t, s, dataKey(i)))
	}
	seen := map[int64]bool{}
	err := s.RewrapDataKeys(ctx, func(dk secrets.DataKey) (secrets.DataKey, error) {
		seen[dk.ID] = true
		dk.Wrapped = append([]byte("new-"), dk.Wrapped...)
		dk.KEKID = "fedcba9876543210"
		// Only Wrapped and KEKID are stored.
		dk.Seals, dk.Kind, dk.Created = -1, "other", time.Time{}
		return dk, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	stored := read(t, s)
	for _, k := range added {
		if !seen[k.ID] {
			t.Errorf("RewrapDataKeys did not pass key %d to fn", k.ID)
		}
		want := k
		want.Wrapped = append([]byte("new-"), k.Wrapped...)
		want.KEKID = "fedcba9876543210"
		sameKey(t, fmt.Sprint("key ", k.ID, " after rewrap"), stored[k.ID], want)
	}
}

func testRewrapFailsWhole(t *testing.T, s secrets.KeyStore) {
	ctx := context.Background()
	for i := range 4 {
		add(t, s, dataKey(i))
	}
	before := read(t, s)
	calls := 0
	boom := errors.New("boom")
	err := s.RewrapDataKeys(ctx, func(dk secrets.DataKey) (secrets.DataKey, error) {
		calls++
		if calls == 3 {
			return secrets.DataKey{}, boom
		}
		dk.Wrapped, dk.KEKID = []byte("changed"), "changed"
		return dk, nil
	})
	if !errors.Is(err, boom) {
		t.Fatalf("RewrapDataKeys = %v, want fn's error", err)
	}
	after := read(t, s)
	for id, k := range before {
		sameKey(t, fmt.Sprint("key ", id, " after a failed rewrap"), after[id], k)
	}
}

// testKeyring runs a real keyring over the store: seals past a rollover,
// rotates, and opens everything with a fresh keyring.
func testKeyring(t *testing.T, s secrets.KeyStore) {
	ctx := context.Background()
	kek, err := secrets.GenerateKEK()
	if err != nil {
		t.Fatal(err)
	}
	kr, err := secrets.New(ctx, secrets.Config{KEK: kek, Store: s, MaxSeals: 3, SealBatch: 2})
	if err != nil {
		t.Fatal(err)
	}
	var sealed []secrets.Sealed
	for i := range 10 {
		v, err := kr.Seal(ctx, []byte(fmt.Sprint("value ", i)), secrets.AAD("app", fmt.Sprint(i)))
		if err != nil {
			t.Fatal(err)
		}
		sealed = append(sealed, v)
	}
	digest, err := kr.Digest(ctx, []byte("value 0"))
	if err != nil {
		t.Fatal(err)
	}
	next, _ := secrets.GenerateKEK()
	if err := kr.Rotate(ctx, next); err != nil {
		t.Fatal(err)
	}
	fresh, err := secrets.New(ctx, secrets.Config{KEK: next, Store: s})
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range sealed {
		got, err := fresh.Open(ctx, v, secrets.AAD("app", fmt.Sprint(i)))
		if err != nil || string(got) != fmt.Sprint("value ", i) {
			t.Errorf("value %d: %q, %v", i, got, err)
		}
	}
	if d, _ := fresh.Digest(ctx, []byte("value 0")); d != digest {
		t.Errorf("digest %s after rotation, %s before", d, digest)
	}
	if _, err := secrets.New(ctx, secrets.Config{KEK: kek, Store: s}); !errors.Is(err, secrets.ErrWrongKEK) {
		t.Errorf("the old KEK: %v, want ErrWrongKEK", err)
	}
}
