package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"

	"paddock.dev/paddock/internal/testenv"
)

// TestDurability kills the server with SIGKILL in the middle of mutating
// calls, again and again, and checks that every change it acknowledged is
// there after each restart.
func TestDurability(t *testing.T) {
	p := testenv.Start(t)
	ctx := context.Background()
	p.MustRun("apps", "create", "cfg")

	type release struct{ version, value int }
	var (
		mu       sync.Mutex
		apps     []string
		releases []release
	)
	counter := 0
	for round := 0; round < 6; round++ {
		c := p.Client()
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				name := fmt.Sprintf("d%d-%d", round, i)
				if _, err := c.CreateApp(ctx, name, nil); err == nil {
					mu.Lock()
					apps = append(apps, name)
					mu.Unlock()
				}
			}
		}()
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				counter++
				v := counter
				mu.Unlock()
				s := strconv.Itoa(v)
				if rel, err := c.SetConfig(ctx, "cfg", map[string]*string{"N": &s}); err == nil {
					mu.Lock()
					releases = append(releases, release{rel.Version, v})
					mu.Unlock()
				}
			}
		}()
		time.Sleep(time.Duration(150+rand.IntN(350)) * time.Millisecond)
		p.Kill()
		close(stop)
		wg.Wait()
		p.Up()

		c = p.Client()
		list, err := c.Apps(ctx)
		if err != nil {
			t.Fatal(err)
		}
		have := map[string]bool{}
		for _, a := range list {
			have[a.Name] = true
		}
		mu.Lock()
		for _, name := range apps {
			if !have[name] {
				t.Errorf("round %d: app %s was acknowledged but is gone", round, name)
			}
		}
		for _, r := range releases {
			rel, err := c.Release(ctx, "cfg", r.version, 0)
			if err != nil {
				t.Errorf("round %d: release v%d was acknowledged but is gone: %v", round, r.version, err)
				continue
			}
			if got := rel.Config["N"]; got != strconv.Itoa(r.value) {
				t.Errorf("round %d: v%d has N=%s, want %d", round, r.version, got, r.value)
			}
		}
		t.Logf("round %d: %d apps and %d releases acknowledged so far, all present", round, len(apps), len(releases))
		mu.Unlock()
	}
	if len(apps) == 0 || len(releases) == 0 {
		t.Fatalf("no change was acknowledged (apps %d, releases %d): the test proved nothing", len(apps), len(releases))
	}
}
