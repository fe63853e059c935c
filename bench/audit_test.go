package bench

import (
	"fmt"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"paddock.dev/paddock/internal/audit"
)

// The audit log's throughput and verification cost, on real files with
// durable (fsync'd) appends:
//
//	go test -run '^$' -bench Audit -benchtime 1x ./bench/   # the 1M-event verify
//	go test -run '^$' -bench 'AuditAppend' ./bench/

func auditEvent(i int) audit.Event {
	return audit.Event{
		Actor: "alice", Token: "laptop", Source: "127.0.0.1:52144",
		Action: "apps.scale", Target: "app/shop", Outcome: audit.OutcomeOK,
		RequestID: fmt.Sprintf("req-%08d", i), Detail: "web=3 worker=1",
	}
}

func openAudit(b *testing.B) (*audit.Log, string) {
	b.Helper()
	dir := b.TempDir()
	l, err := audit.Open(b.Context(), audit.Config{Dir: dir, CheckpointEvery: -1})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	return l, dir
}

func BenchmarkAuditAppend(b *testing.B) {
	l, _ := openAudit(b)
	i := 0
	for b.Loop() {
		if _, err := l.Append(b.Context(), auditEvent(i)); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

func BenchmarkAuditAppendParallel(b *testing.B) {
	l, _ := openAudit(b)
	b.SetParallelism(32) // 32 × GOMAXPROCS concurrent requests
	var n atomic.Int64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := l.Append(b.Context(), auditEvent(int(n.Add(1)))); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkAuditVerify1M times Verify over a log of one million events and
// reports the peak live heap during it, which must stay small whatever the
// log's size. Building the log (concurrent durable appends, group-committed)
// is outside the timer.
func BenchmarkAuditVerify1M(b *testing.B) {
	const events, writers = 1_000_000, 500
	l, dir := openAudit(b)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := w; i < events; i += writers {
				if _, err := l.Append(b.Context(), auditEvent(i)); err != nil {
					b.Error(err)
					return
				}
			}
		})
		if w == writers/2 {
			if err := l.Checkpoint(b.Context()); err != nil {
				b.Fatal(err)
			}
		}
	}
	wg.Wait()
	if err := l.Close(); err != nil { // signs the final checkpoint
		b.Fatal(err)
	}
	b.Logf("built %d events in %v", events, time.Since(start).Round(time.Millisecond))

	stop := make(chan struct{})
	peak := make(chan uint64)
	go samplePeakHeap(stop, peak)
	for b.Loop() {
		rep := audit.Verify(b.Context(), dir, nil)
		if rep.Err != nil || rep.Events != events {
			b.Fatalf("Verify = %d events, err %v; want %d, nil", rep.Events, rep.Err, events)
		}
	}
	close(stop)
	b.ReportMetric(float64(events)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(<-peak)/(1<<20), "peak-heap-MB")
}

// samplePeakHeap reports the largest live heap seen until stop is closed.
func samplePeakHeap(stop <-chan struct{}, peak chan<- uint64) {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	var peakSeen uint64
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		metrics.Read(s)
		peakSeen = max(peakSeen, s[0].Value.Uint64())
		select {
		case <-stop:
			peak <- peakSeen
			return
		case <-t.C:
		}
	}
}
