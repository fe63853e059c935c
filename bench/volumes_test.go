package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	csispec "github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"paddock.dev/paddock/internal/client"
	"paddock.dev/paddock/internal/testenv"
	"paddock.dev/paddock/internal/wire"
)

// BenchmarkVolume measures volumes on Paddock's own btrfs pool, all on one
// platform and in one run:
//
//	go test -run '^$' -bench Volume -benchtime 1x ./bench/
//
// Its parts:
//
//   - Snapshot1GiB: `volumes snapshot` of a volume holding 1 GiB, which
//     includes reading the snapshot back for its checksum manifest; the
//     manifest part alone (`volumes verify`) and the plugin's CSI
//     CreateSnapshot alone are reported beside it.
//   - RestoreInstant1GiB: `volumes restore` without --rate, a btrfs clone.
//   - RestoreCopyFull1GiB: `volumes restore --rate 100GiB/s`, a copy as fast
//     as it goes, checked against the snapshot's manifest: the whole call,
//     its copy phase, and the flush of the pool after it (the server
//     answers with the copy still in the page cache).
//   - Export1GiB, Import1GiB: `volumes export` to a file, and `volumes
//     import` of that file into a new volume, through the API over HTTPS.
//   - RestoreCopy50MiBps256MiB, RestoreCopy20MiBps256MiB: how close a paced
//     copy comes to the rate asked, in its copy phase and over the call.
//   - ServingLatency: the p50 and p99 latency of another app's web process,
//     through the router, and of a 4KiB write and fsync on the disk beneath
//     the pool, at idle, during a full-speed restore of 1 GiB and during one
//     paced at 50MiB/s, each with the flush after it.
//
// The data is random, one file per volume; with a large page cache most
// reads are served from memory. The pool is flushed before each
// measurement, so that the writeback of one stays out of the next. On
// btrfs only as root: elsewhere volumes are plain folders, whose restores
// are all copies.
func BenchmarkVolume(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("volumes are btrfs subvolumes only as root (loop device, mount); this measures btrfs")
	}
	p := testenv.Start(b)
	ctx := context.Background()
	c := p.Client()
	fillVolume(b, p, "store", 1<<30, "2GiB")
	fillVolume(b, p, "small", 256<<20, "512MiB")
	flushPool(b, p)
	for _, app := range []string{"store", "small"} {
		if _, err := c.Snapshot(ctx, app, app+"-data", "base"); err != nil {
			b.Fatal(err)
		}
		// Its checksum manifest, made after the answer, before measuring.
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
			if sn, err := c.VerifySnapshot(ctx, app, app+"-data", "base"); err == nil && sn.Checksum != "" {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("snapshot base of %s has no checksum manifest after a minute", app)
			}
		}
	}

	b.Run("Snapshot1GiB", func(b *testing.B) {
		plugin := csiController(b, p)
		var total, manifest, plain time.Duration
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			flushPool(b, p)
			b.StartTimer()
			start := time.Now()
			sn, err := c.Snapshot(ctx, "store", "store-data", "")
			if err != nil {
				b.Fatal(err)
			}
			total += time.Since(start)
			b.StopTimer()
			// The checksum manifest is made after the answer: the time until
			// the snapshot lists one.
			for sums := false; !sums; {
				list, err := c.Snapshots(ctx, "store", "store-data")
				if err != nil {
					b.Fatal(err)
				}
				for _, s := range list {
					sums = sums || (s.ID == sn.ID && s.Checksum != "")
				}
				if time.Since(start) > time.Minute {
					b.Fatalf("snapshot %s has no checksum manifest after a minute", sn.ID)
				}
				time.Sleep(10 * time.Millisecond)
			}
			manifest += time.Since(start)
			plain += csiSnapshot(b, plugin)
			b.StartTimer()
		}
		b.ReportMetric(ms(total)/float64(b.N), "ms/snapshot")
		b.ReportMetric(ms(manifest)/float64(b.N), "until-checksum-ms")
		b.ReportMetric(ms(plain)/float64(b.N), "csi-snapshot-ms")
	})

	b.Run("RestoreInstant1GiB", func(b *testing.B) {
		flushPool(b, p)
		b.ResetTimer()
		start := time.Now()
		for i := 0; i < b.N; i++ {
			if _, err := c.RestoreVolume(ctx, "store", "store-data", "base", ""); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(ms(time.Since(start))/float64(b.N), "ms/restore")
	})

	b.Run("RestoreCopyFull1GiB", func(b *testing.B) {
		var runs []copyRun
		for i := 0; i < b.N; i++ {
			runs = append(runs, restoreCopy(b, p, "store", "base", "100GiB/s"))
		}
		reportCopies(b, runs, 0)
	})

	stream := filepath.Join(b.TempDir(), "store.tar")
	b.Run("Export1GiB", func(b *testing.B) {
		var took time.Duration
		for i := 0; i < b.N; i++ {
			took += export(b, c, stream)
		}
		b.ReportMetric(mibps(int64(b.N)<<30, took), "MiB/s")
	})

	b.Run("Import1GiB", func(b *testing.B) {
		if _, err := os.Stat(stream); err != nil {
			export(b, c, stream)
		}
		b.ResetTimer()
		var took, flush time.Duration
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			flushPool(b, p)
			b.StartTimer()
			f, err := os.Open(stream)
			if err != nil {
				b.Fatal(err)
			}
			name := fmt.Sprintf("imported-%d", i)
			start := time.Now()
			_, err = c.ImportVolume(ctx, "store", name, "2GiB", "", f, nil)
			took += time.Since(start)
			f.Close()
			if err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			flush += flushPool(b, p)
			if err := c.DeleteVolume(ctx, "store", name, true); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
		b.ReportMetric(mibps(int64(b.N)<<30, took), "MiB/s")
		b.ReportMetric(ms(flush)/float64(b.N), "flush-after-ms")
	})

	for _, rate := range []int64{50, 20} {
		b.Run(fmt.Sprintf("RestoreCopy%dMiBps256MiB", rate), func(b *testing.B) {
			var runs []copyRun
			for i := 0; i < b.N; i++ {
				runs = append(runs, restoreCopy(b, p, "small", "base", fmt.Sprintf("%dMiB/s", rate)))
			}
			reportCopies(b, runs, rate)
		})
	}

	b.Run("ServingLatency", func(b *testing.B) {
		if _, err := c.CreateApp(ctx, "lat", nil); err != nil {
			b.Fatal(err)
		}
		deploy(b, p, "lat", prebuilt(b, 1))
		testenv.Eventually(b, 30*time.Second, func() error {
			if code, _, err := p.Get("lat.localhost", "/"); err != nil || code != 200 {
				return fmt.Errorf("lat answers %d %v", code, err)
			}
			return nil
		})
		load := startLoad(b, p, "lat.localhost")
		defer load.stop()
		var idle latencies
		// phase measures the latencies while store-data is restored at
		// rate and the pool flushed after, or for 10s of idle if rate is
		// "".
		phase := func(name, rate string, asked int64) {
			b.Run(name, func(b *testing.B) {
				flushPool(b, p)
				load.begin()
				var runs []copyRun
				for i := 0; i < b.N; i++ {
					if rate == "" {
						time.Sleep(10 * time.Second)
					} else {
						runs = append(runs, restoreCopy(b, p, "store", "base", rate))
					}
				}
				got := load.end()
				if runs != nil {
					reportCopies(b, runs, asked)
				}
				got.report(b, idle)
				if rate == "" {
					idle = got
				}
			})
		}
		phase("idle", "", 0)
		phase("restore-full", "100GiB/s", 0)
		phase("restore-50MiBps", "50MiB/s", 50)
	})
}

// export writes the snapshot base of store-data to the file stream and
// returns how long it took.
func export(b *testing.B, c *client.Client, stream string) time.Duration {
	b.Helper()
	os.Remove(stream)
	f, err := os.Create(stream)
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	err = c.ExportSnapshot(context.Background(), "store", "store-data", "base", f)
	took := time.Since(start)
	// On disk, so that its writeback stays out of what comes next.
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		b.Fatal(err)
	}
	return took
}

// fillVolume makes app with a volume app-data of size, attached to its web
// process, which writes n random bytes into it at its first start, then
// scales the process to 0 so that the volume may be restored. The volume
// must be btrfs, whose size is enforced.
func fillVolume(b *testing.B, p *testenv.Platform, app string, n int64, size string) {
	b.Helper()
	ctx := context.Background()
	c := p.Client()
	if _, err := c.CreateApp(ctx, app, nil); err != nil {
		b.Fatal(err)
	}
	if _, err := c.CreateVolume(ctx, app, app+"-data", size); err != nil {
		b.Fatal(err)
	}
	v, err := c.AttachVolume(ctx, app, app+"-data", wire.AttachRequest{Process: "web", Path: "data"})
	if err != nil {
		b.Fatal(err)
	}
	if !v.Enforced {
		b.Fatalf("volume %s is not on btrfs, as root: %s", v.Name, v.NotEnforced)
	}
	dir := prebuilt(b, 1)
	cmd := fmt.Sprintf(`d=$%s; [ -e $d/blob ] || head -c %d /dev/urandom > $d/blob && echo filled; exec ./hello`, v.Env, n)
	manifest := fmt.Sprintf("[processes.web]\ncommand = %q\n[processes.web.health]\npath = \"/healthz\"\ninterval = \"1s\"\n", cmd)
	if err := os.WriteFile(filepath.Join(dir, "paddock.toml"), []byte(manifest), 0o644); err != nil {
		b.Fatal(err)
	}
	deploy(b, p, app, dir)
	testenv.Eventually(b, 60*time.Second, func() error {
		if logs := p.MustRun("logs", app, "-n", "0"); !strings.Contains(logs, ": filled\n") {
			return fmt.Errorf("%s has not filled its volume:\n%s", app, logs)
		}
		return nil
	})
	if _, err := c.Scale(ctx, app, map[string]int{"web": 0}); err != nil {
		b.Fatal(err)
	}
	testenv.Eventually(b, 30*time.Second, func() error {
		if in, err := c.Instances(ctx, app); err != nil || len(in) != 0 {
			return fmt.Errorf("%s still runs %d instances (%v)", app, len(in), err)
		}
		return nil
	})
}

// copyRun is one restore by copy: the bytes copied, the whole call, its
// copy phase (from the first progress event to the answer), and the flush
// of the pool after it. Before the copy the server reads the snapshot
// through once for its manifest; after it, it checks the copy's checksum
// and swaps the volumes. It answers with the copy still in the page cache:
// the flush is what writing it to disk takes.
type copyRun struct {
	bytes   int64 // of file data
	whole   time.Duration
	copying time.Duration
	copied  int64 // bytes written in the copy phase
	flush   time.Duration
}

// restoreCopy restores app's volume app-data to snap by copy at rate,
// starting and ending with the pool flushed.
func restoreCopy(b *testing.B, p *testenv.Platform, app, snap, rate string) copyRun {
	b.Helper()
	flushPool(b, p)
	var r copyRun
	var first time.Time
	var firstDone int64
	start := time.Now()
	_, err := p.Client().RestoreVolumeCopy(context.Background(), app, app+"-data", snap, rate, func(done, total int64) {
		if first.IsZero() {
			first, firstDone = time.Now(), done
		}
		r.bytes = total
	})
	end := time.Now()
	if err != nil {
		b.Fatalf("restore %s to %s at %s: %v", app, snap, rate, err)
	}
	if first.IsZero() {
		b.Fatalf("restore %s to %s at %s: no progress came", app, snap, rate)
	}
	r.whole, r.copying, r.copied = end.Sub(start), end.Sub(first), r.bytes-firstDone
	r.flush = flushPool(b, p)
	return r
}

// reportCopies reports the rate of runs, whole and in their copy phase,
// and against asked (MiB/s) if not 0.
func reportCopies(b *testing.B, runs []copyRun, asked int64) {
	var sum copyRun
	for _, r := range runs {
		sum.bytes += r.bytes
		sum.whole += r.whole
		sum.copying += r.copying
		sum.copied += r.copied
		sum.flush += r.flush
	}
	n := float64(len(runs))
	whole, copying := mibps(sum.bytes, sum.whole), mibps(sum.copied, sum.copying)
	b.ReportMetric(ms(sum.whole)/n, "ms/restore")
	b.ReportMetric(whole, "MiB/s")
	b.ReportMetric(copying, "copy-MiB/s")
	b.ReportMetric(ms(sum.flush)/n, "flush-after-ms")
	if asked > 0 {
		b.ReportMetric(copying/float64(asked), "copy-achieved/asked")
		b.ReportMetric(whole/float64(asked), "achieved/asked")
	}
}

// flushPool writes what is cached for the storage pool's filesystem to
// disk (syncfs: a btrfs commit, and the loop device's image file) and
// returns how long that took. Before a measurement it keeps the writeback
// of the one before out of it.
func flushPool(b *testing.B, p *testenv.Platform) time.Duration {
	b.Helper()
	f, err := os.Open(filepath.Join(p.Data, "volumes", "pool", "mnt"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	start := time.Now()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		b.Fatalf("syncfs of the pool: %v", err)
	}
	return time.Since(start)
}

// csiController connects to the storage plugin the server runs.
func csiController(b *testing.B, p *testenv.Platform) csispec.ControllerClient {
	conn, err := grpc.NewClient("unix://"+filepath.Join(p.Data, "volumes", "csi.sock"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return csispec.NewControllerClient(conn)
}

// csiSnapshot times the plugin's CreateSnapshot alone, of the volume the
// newest snapshot is of, and deletes what it made.
func csiSnapshot(b *testing.B, plugin csispec.ControllerClient) time.Duration {
	b.Helper()
	ctx := context.Background()
	list, err := plugin.ListSnapshots(ctx, &csispec.ListSnapshotsRequest{})
	if err != nil {
		b.Fatal(err)
	}
	var newest *csispec.Snapshot
	for _, e := range list.Entries {
		if s := e.Snapshot; newest == nil || s.CreationTime.AsTime().After(newest.CreationTime.AsTime()) {
			newest = s
		}
	}
	if newest == nil {
		b.Fatal("the plugin lists no snapshots")
	}
	start := time.Now()
	resp, err := plugin.CreateSnapshot(ctx, &csispec.CreateSnapshotRequest{SourceVolumeId: newest.SourceVolumeId, Name: fmt.Sprintf("bench-%d", time.Now().UnixNano())})
	took := time.Since(start)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := plugin.DeleteSnapshot(ctx, &csispec.DeleteSnapshotRequest{SnapshotId: resp.Snapshot.SnapshotId}); err != nil {
		b.Fatal(err)
	}
	return took
}

// load sends GETs to an app through the router from two clients, each
// pausing 5ms between requests so that the load itself leaves the CPUs
// mostly free, and writes and fsyncs 4KiB every 10ms in the platform's
// folder, on the same disk as the pool's image. Latencies are kept between
// begin and end.
type load struct {
	mu      sync.Mutex
	on      bool
	got     latencies
	done    chan struct{}
	wg      sync.WaitGroup
	stopped bool
}

type latencies struct {
	http, fsync []time.Duration
	errors      int64
}

func startLoad(b *testing.B, p *testenv.Platform, host string) *load {
	l := &load{done: make(chan struct{})}
	f, err := os.Create(filepath.Join(p.Dir, "fsync-probe"))
	if err != nil {
		b.Fatal(err)
	}
	block := make([]byte, 4096)
	l.wg.Add(3)
	go func() {
		defer l.wg.Done()
		defer f.Close()
		for l.wait(10 * time.Millisecond) {
			start := time.Now()
			_, err := f.WriteAt(block, 0)
			if err == nil {
				err = f.Sync()
			}
			l.add(err, start, func(g *latencies, d time.Duration) { g.fsync = append(g.fsync, d) })
		}
	}()
	for range 2 {
		go func() {
			defer l.wg.Done()
			for l.wait(5 * time.Millisecond) {
				start := time.Now()
				code, _, err := p.Get(host, "/")
				if err == nil && code != 200 {
					err = fmt.Errorf("status %d", code)
				}
				l.add(err, start, func(g *latencies, d time.Duration) { g.http = append(g.http, d) })
			}
		}()
	}
	return l
}

// wait pauses d and says whether to go on.
func (l *load) wait(d time.Duration) bool {
	select {
	case <-l.done:
		return false
	case <-time.After(d):
		return true
	}
}

func (l *load) add(err error, start time.Time, keep func(*latencies, time.Duration)) {
	d := time.Since(start)
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.on {
		return
	}
	if err != nil {
		l.got.errors++
		return
	}
	keep(&l.got, d)
}

func (l *load) begin() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.on, l.got = true, latencies{}
}

func (l *load) end() latencies {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.on = false
	return l.got
}

func (l *load) stop() {
	if !l.stopped {
		l.stopped = true
		close(l.done)
		l.wg.Wait()
	}
}

// report reports the median and 99th percentile of the latencies, and
// the 99th against idle's when idle has any.
func (g latencies) report(b *testing.B, idle latencies) {
	if len(g.http) == 0 || len(g.fsync) == 0 {
		b.Fatalf("no latencies: %d requests, %d fsyncs, %d errors", len(g.http), len(g.fsync), g.errors)
	}
	httpP50, httpP99 := percentiles(g.http)
	fsyncP50, fsyncP99 := percentiles(g.fsync)
	b.ReportMetric(float64(httpP50.Microseconds()), "http-p50-µs")
	b.ReportMetric(float64(httpP99.Microseconds()), "http-p99-µs")
	b.ReportMetric(float64(fsyncP50.Microseconds()), "fsync-p50-µs")
	b.ReportMetric(float64(fsyncP99.Microseconds()), "fsync-p99-µs")
	b.ReportMetric(float64(len(g.http)), "requests")
	b.ReportMetric(float64(g.errors), "errors")
	if len(idle.http) > 0 {
		_, idleHTTP := percentiles(idle.http)
		_, idleFsync := percentiles(idle.fsync)
		b.ReportMetric(float64(httpP99)/float64(idleHTTP), "http-p99/idle")
		b.ReportMetric(float64(fsyncP99)/float64(idleFsync), "fsync-p99/idle")
	}
}

func percentiles(d []time.Duration) (p50, p99 time.Duration) {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2], s[len(s)*99/100]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func mibps(n int64, d time.Duration) float64 { return float64(n) / (1 << 20) / d.Seconds() }
