package audit

import (
	"bytes"
	"errors"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestAppendAssignsSeqTimeAndChain(t *testing.T) {
	dir := t.TempDir()
	c := newClock()
	l := openLog(t, dir, c)
	in := ev("alice", "apps.create", "app/shop")
	in.Seq, in.Prev, in.Hash = 99, "caller's", "caller's" // overwritten
	var prev string
	for i := uint64(1); i <= 3; i++ {
		got := mustAppend(t, l, in)
		if got.Seq != i {
			t.Errorf("Seq = %d, want %d", got.Seq, i)
		}
		if want := time.Date(2025, 1, 1, 0, 0, int(i), 0, time.UTC); !got.Time.Equal(want) || got.Time.Location() != time.UTC {
			t.Errorf("Time = %v, want %v in UTC", got.Time, want)
		}
		if got.Prev != prev {
			t.Errorf("Prev = %q, want %q", got.Prev, prev)
		}
		if want := HashEvent(got); got.Hash != want {
			t.Errorf("Hash = %q, want %q", got.Hash, want)
		}
		prev = got.Hash
	}
	if got, want := len(readLines(t, logPath(dir))), 3; got != want {
		t.Errorf("lines in %s = %d, want %d", LogFile, got, want)
	}
}

// TestHashEventKeepsOldEvents pins the hash of an event without a client
// request id, computed before that field existed: logs written by earlier
// versions must still verify.
func TestHashEventKeepsOldEvents(t *testing.T) {
	e := Event{Seq: 7, Time: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC), Actor: "ann", Token: "cli", Source: "127.0.0.1",
		Action: "apps.create", Target: "app/shop", Outcome: "allowed", RequestID: "0123456789abcdef", Prev: strings.Repeat("a", 64)}
	if got, want := HashEvent(e), "c2f871a1c1db770bbca4dd1085984bdbf90654c2174b6531341eac59ecd07847"; got != want {
		t.Errorf("HashEvent = %s, want %s (the hash of events without a client request id must not change)", got, want)
	}
	b, err := marshalEvent(e)
	if err != nil || strings.Contains(string(b), "client_request_id") {
		t.Errorf("marshalEvent = %s, %v; want no client_request_id key when it is empty", b, err)
	}
}

func TestHashEventCoversEveryField(t *testing.T) {
	base := Event{Seq: 1, Time: time.Unix(0, 0).UTC(), Actor: "a", Token: "t", Source: "s", Action: "x", Target: "g",
		Outcome: "ok", RequestID: "r", Detail: "d", Prev: strings.Repeat("0", 64)}
	edits := map[string]func(*Event){
		"seq":        func(e *Event) { e.Seq = 2 },
		"time":       func(e *Event) { e.Time = e.Time.Add(time.Nanosecond) },
		"time zone":  func(e *Event) { e.Time = e.Time.In(time.FixedZone("X", 3600)) }, // the same instant
		"actor":      func(e *Event) { e.Actor = "b" },
		"token":      func(e *Event) { e.Token = "u" },
		"source":     func(e *Event) { e.Source = "z" },
		"action":     func(e *Event) { e.Action = "y" },
		"target":     func(e *Event) { e.Target = "h" },
		"outcome":    func(e *Event) { e.Outcome = "denied" },
		"request id": func(e *Event) { e.RequestID = "q" },
		"client id":  func(e *Event) { e.ClientRequestID = "c" },
		"detail":     func(e *Event) { e.Detail = "" },
		"prev":       func(e *Event) { e.Prev = "" },
		"boundary":   func(e *Event) { e.Actor, e.Token = "at", "" }, // "a"+"t" vs "at"+"": length prefixes tell them apart
	}
	for name, edit := range edits {
		t.Run(name, func(t *testing.T) {
			e := base
			edit(&e)
			if HashEvent(e) == HashEvent(base) {
				t.Errorf("hash unchanged after editing %s", name)
			}
		})
	}
}

func TestAppendRejectsInvalidEvents(t *testing.T) {
	l := openLog(t, t.TempDir(), newClock())
	tests := []struct {
		name string
		e    Event
	}{
		{"no action", Event{Outcome: OutcomeOK}},
		{"no outcome", Event{Action: "apps.create"}},
		{"unknown outcome", Event{Action: "apps.create", Outcome: "maybe"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := l.Append(t.Context(), tt.e); !errors.Is(err, ErrInvalid) {
				t.Errorf("Append err = %v, want ErrInvalid", err)
			}
		})
	}
	if got := mustAppend(t, l, ev("alice", "apps.create", "app/shop")); got.Seq != 1 {
		t.Errorf("Seq after rejected events = %d, want 1", got.Seq)
	}
}

func TestAppendNormalizesFields(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, newClock())
	e := ev("bad\xffutf8", "apps.create", "app/shop")
	e.Detail = strings.Repeat("é", MaxField) // 2 bytes a rune
	got := mustAppend(t, l, e)
	if got.Actor != "bad\uFFFDutf8" {
		t.Errorf("Actor = %q, want %q", got.Actor, "bad\uFFFDutf8")
	}
	if want := strings.Repeat("é", MaxField/2); got.Detail != want {
		t.Errorf("len(Detail) = %d, want %d", len(got.Detail), len(want))
	}
	l.Close()
	if rep := Verify(t.Context(), dir, nil); rep.Err != nil {
		t.Errorf("Verify: %v", rep.Err)
	}
}

func TestCloseIsIdempotentAndFinal(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, newClock())
	mustAppend(t, l, ev("alice", "apps.create", "app/shop"))
	for i := range 2 {
		if err := l.Close(); err != nil {
			t.Fatalf("Close #%d: %v", i+1, err)
		}
	}
	if _, err := l.Append(t.Context(), ev("alice", "apps.create", "app/shop")); !errors.Is(err, ErrClosed) {
		t.Errorf("Append after Close err = %v, want ErrClosed", err)
	}
	if err := l.Checkpoint(t.Context()); !errors.Is(err, ErrClosed) {
		t.Errorf("Checkpoint after Close err = %v, want ErrClosed", err)
	}
	if _, err := l.List(t.Context(), Filter{}); !errors.Is(err, ErrClosed) {
		t.Errorf("List after Close err = %v, want ErrClosed", err)
	}
	if got, want := len(readLines(t, ckPath(dir))), 1; got != want {
		t.Errorf("checkpoints after Close = %d, want %d (the final one)", got, want)
	}
}

func TestCheckpointOnlyWhenTheHeadMoved(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, newClock())
	steps := []struct {
		appends int
		want    int // checkpoint lines after Checkpoint
	}{{0, 0}, {2, 1}, {0, 1}, {1, 2}}
	for i, s := range steps {
		for range s.appends {
			mustAppend(t, l, ev("alice", "apps.create", "app/shop"))
		}
		if err := l.Checkpoint(t.Context()); err != nil {
			t.Fatal(err)
		}
		if got := len(readLines(t, ckPath(dir))); got != s.want {
			t.Errorf("step %d: checkpoints = %d, want %d", i, got, s.want)
		}
	}
}

func TestBackgroundCheckpoint(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(t.Context(), Config{Dir: dir, CheckpointEvery: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	mustAppend(t, l, ev("alice", "apps.create", "app/shop"))
	for deadline := time.Now().Add(10 * time.Second); len(readLines(t, ckPath(dir))) == 0; {
		if time.Now().After(deadline) {
			t.Fatal("no background checkpoint after 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestKeyFile(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, newClock())
	st, err := os.Stat(keyPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := st.Mode().Perm(), os.FileMode(0o600); got != want {
		t.Errorf("key mode = %v, want %v", got, want)
	}
	pub := l.PublicKey()
	l.Close()
	l2 := openLog(t, dir, newClock())
	if !bytes.Equal(l2.PublicKey(), pub) {
		t.Error("PublicKey changed across Open")
	}
	l2.Close()
	if err := os.Chmod(keyPath(dir), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(t.Context(), Config{Dir: dir}); err == nil {
		t.Error("Open with a world-readable key succeeded, want an error")
	}
}

func TestOpenTwiceIsLocked(t *testing.T) {
	dir := t.TempDir()
	openLog(t, dir, newClock())
	if _, err := Open(t.Context(), Config{Dir: dir}); !errors.Is(err, ErrLocked) {
		t.Errorf("second Open err = %v, want ErrLocked", err)
	}
}

func TestConcurrentAppend(t *testing.T) {
	const writers, each = 50, 40
	dir := t.TempDir()
	l := openLog(t, dir, newClock())
	seqs := make(chan uint64, writers*each)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for range each {
				e, err := l.Append(t.Context(), ev("user"+string(rune('a'+w%26)), "apps.scale", "app/shop"))
				if err != nil {
					t.Error(err)
					return
				}
				seqs <- e.Seq
			}
		})
	}
	wg.Wait()
	close(seqs)
	seen := make(map[uint64]int)
	for s := range seqs {
		seen[s]++
	}
	for s := uint64(1); s <= writers*each; s++ {
		if seen[s] != 1 {
			t.Errorf("seq %d returned %d times, want 1", s, seen[s])
		}
	}
	if got, want := len(seen), writers*each; got != want {
		t.Errorf("distinct seqs = %d, want %d", got, want)
	}
	l.mu.Lock()
	syncs := l.syncs
	l.mu.Unlock()
	t.Logf("%d events in %d fsyncs", writers*each, syncs)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	rep := Verify(t.Context(), dir, nil)
	if rep.Err != nil || rep.Events != writers*each {
		t.Errorf("Verify = %d events, err %v; want %d, nil", rep.Events, rep.Err, writers*each)
	}
}

func TestList(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, newClock())
	in := []Event{
		ev("alice", "apps.create", "app/shop"),              // seq 1, 00:00:01
		ev("bob", "secrets.reveal", "app/shop/secrets/KEY"), // 2
		ev("alice", "apps.create", "app/shopping"),          // 3
		ev("carol", "auth.login", "user/carol"),             // 4
		ev("alice", "apps.delete", "app/shop"),              // 5, 00:00:05
	}
	for _, e := range in {
		mustAppend(t, l, e)
	}
	at := func(s int) time.Time { return time.Date(2025, 1, 1, 0, 0, s, 0, time.UTC) }
	tests := []struct {
		name string
		f    Filter
		want []uint64
	}{
		{"everything", Filter{}, []uint64{1, 2, 3, 4, 5}},
		{"actor", Filter{Actor: "alice"}, []uint64{1, 3, 5}},
		{"target prefix is a path prefix", Filter{Target: "app/shop"}, []uint64{1, 2, 5}},
		{"target prefix ending in a slash", Filter{Target: "app/"}, []uint64{1, 2, 3, 5}},
		{"since is inclusive", Filter{Since: at(3)}, []uint64{3, 4, 5}},
		{"limit keeps the newest", Filter{Limit: 2}, []uint64{4, 5}},
		{"combined", Filter{Actor: "alice", Target: "app/shop", Since: at(2), Limit: 5}, []uint64{5}},
		{"no match", Filter{Actor: "mallory"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := l.List(t.Context(), tt.f)
			if err != nil {
				t.Fatal(err)
			}
			var seqs []uint64
			for _, e := range got {
				seqs = append(seqs, e.Seq)
			}
			if !slices.Equal(seqs, tt.want) {
				t.Errorf("List(%+v) seqs = %v, want %v", tt.f, seqs, tt.want)
			}
		})
	}
}

func TestListLimitOverManyEvents(t *testing.T) {
	l := openLog(t, t.TempDir(), newClock())
	for range 25 {
		mustAppend(t, l, ev("alice", "apps.create", "app/shop"))
	}
	got, err := l.List(t.Context(), Filter{Limit: 4})
	if err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for _, e := range got {
		seqs = append(seqs, e.Seq)
	}
	if want := []uint64{22, 23, 24, 25}; !slices.Equal(seqs, want) {
		t.Errorf("seqs = %v, want %v", seqs, want)
	}
}

func TestExport(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, newClock())
	for range 3 {
		mustAppend(t, l, ev("alice", "apps.create", "app/shop"))
	}
	var got bytes.Buffer
	if err := l.Export(t.Context(), &got); err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(logPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Errorf("Export = %q, want %q", got.Bytes(), want)
	}
}
