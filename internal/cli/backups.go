package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"paddock.dev/paddock/internal/client"
	"paddock.dev/paddock/internal/wire"
)

func (e *env) volumesVerifyCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "verify NAME SNAPSHOT",
		Short: "Read a snapshot again and check it against its checksum manifest",
		Args:  cobra.ExactArgs(2),
		RunE: e.withVolume(func(cmd *cobra.Command, c *client.Client, app string, args []string) error {
			sn, err := c.VerifySnapshot(cmd.Context(), app, args[0], args[1])
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "Snapshot %s of %s holds what it held when made: %s\n", sn.ID, args[0], sn.Checksum)
			return nil
		}),
	}
}

func (e *env) volumesExportCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "export NAME SNAPSHOT [-o FILE]",
		Short: "Write a snapshot as a stream that `volumes import` takes, with its checksum manifest",
		Args:  cobra.ExactArgs(2),
		RunE: e.withVolume(func(cmd *cobra.Command, c *client.Client, app string, args []string) error {
			w := e.stdout
			if out != "" && out != "-" {
				f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
				if err != nil {
					return fmt.Errorf("%w (export never overwrites a file)", err)
				}
				defer f.Close()
				w = f
			} else if f, ok := w.(*os.File); ok && isTerminal(f) {
				return errors.New("the stream is binary: send it to a file with -o FILE or > FILE")
			}
			if err := c.ExportSnapshot(cmd.Context(), app, args[0], args[1], w); err != nil {
				if out != "" && out != "-" {
					os.Remove(out)
				}
				return err
			}
			return nil
		}),
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "write to this new file instead of standard output")
	return cmd
}

func (e *env) volumesImportCmd() *cobra.Command {
	var app, size, rate string
	cmd := &cobra.Command{
		Use:   "import NAME --app APP --size SIZE [FILE]",
		Short: "Make a volume from a stream `volumes export` wrote (standard input without FILE)",
		Long: `Import makes a new volume of the app from an exported stream. The volume
exists only once every file matches the stream's checksum manifest; a cut or
damaged stream leaves nothing behind. --rate writes at most that fast, so that
a large import leaves the disk to the apps that run.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: e.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			if app == "" || size == "" {
				return fmt.Errorf("give the new volume's app and size: paddock volumes import %s --app APP --size 1GiB FILE", args[0])
			}
			var in io.Reader = e.stdin
			if len(args) == 2 && args[1] != "-" {
				f, err := os.Open(args[1])
				if err != nil {
					return err
				}
				defer f.Close()
				in = f
			}
			p := e.progress("written")
			v, err := c.ImportVolume(cmd.Context(), app, args[0], size, rate, in, p.update)
			p.done()
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stderr, "Made volume %s of %s from the stream; its files match the stream's manifest.\n", v.Name, v.App)
			return e.printVolume(v)
		}),
	}
	cmd.Flags().StringVar(&app, "app", "", "the app the volume belongs to")
	cmd.Flags().StringVar(&size, "size", "", `its size: "1GiB", "512M"`)
	cmd.Flags().StringVar(&rate, "rate", "", `write at most this fast, e.g. "50MiB/s"`)
	e.addJSON(cmd)
	return cmd
}

// progress prints a copy's progress on one line of stderr.
type progress struct {
	e     *env
	what  string
	mu    sync.Mutex
	start time.Time
	shown bool
}

func (e *env) progress(what string) *progress {
	return &progress{e: e, what: what, start: time.Now()}
}

func (p *progress) update(done, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	secs := time.Since(p.start).Seconds()
	line := fmt.Sprintf("%s %s", bytesHuman(done), p.what)
	if total > 0 {
		line = fmt.Sprintf("%s of %s %s (%d%%)", bytesHuman(done), bytesHuman(total), p.what, done*100/total)
	}
	if secs > 0 {
		line += fmt.Sprintf(", %s/s", bytesHuman(int64(float64(done)/secs)))
	}
	fmt.Fprintf(p.e.stderr, "\r%-60s", line)
	p.shown = true
}

func (p *progress) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.shown {
		fmt.Fprintln(p.e.stderr)
	}
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func (e *env) backupsCmd() *cobra.Command {
	var app string
	list := func(cmd *cobra.Command, c *client.Client, _ []string) error {
		bs, err := c.Backups(cmd.Context(), app)
		if err != nil {
			return err
		}
		if e.jsonOut {
			return e.printJSON(bs)
		}
		tw := e.table("VOLUME", "APP", "EVERY", "KEEP", "BACKUPS", "LAST SUCCESS", "NEXT", "LAST ERROR")
		for _, b := range bs {
			last := "never"
			if !b.LastSuccess.IsZero() {
				last = b.LastSuccess.Local().Format(time.DateTime)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", b.Volume, b.App, shortDuration(b.Every), b.Keep, b.Backups, last,
				b.NextRun.Local().Format(time.DateTime), b.LastError)
		}
		return tw.Flush()
	}
	cmd := &cobra.Command{
		Use:   "backups",
		Short: "Scheduled, verified snapshots of volumes, with retention",
		Long: `A backup is a snapshot of a volume whose content is read back and checked
against its checksum manifest; only a verified backup counts. With
--verify-restore each is also restored into a scratch volume and compared.
A failed or missed backup is an event in the app's log. Backups stay on the
machine: export them (paddock volumes export) to move copies off it.`,
		Args: cobra.NoArgs,
		RunE: e.withClient(list),
	}
	cmd.Flags().StringVar(&app, "app", "", "only this app's volumes")
	e.addJSON(cmd)
	ls := &cobra.Command{Use: "list", Short: "List backup schedules and their last success", Args: cobra.NoArgs, RunE: e.withClient(list)}
	ls.Flags().StringVar(&app, "app", "", "only this app's volumes")
	e.addJSON(ls)

	var every time.Duration
	var keep int
	var verifyRestore bool
	schedule := &cobra.Command{
		Use:   "schedule VOLUME --every 6h --keep 28",
		Short: "Back a volume up at a fixed interval, keeping the newest backups",
		Args:  cobra.ExactArgs(1),
		RunE: e.withVolume(func(cmd *cobra.Command, c *client.Client, app string, args []string) error {
			b, err := c.ScheduleBackups(cmd.Context(), app, args[0], wire.ScheduleRequest{Every: every.String(), Keep: keep, VerifyRestore: verifyRestore})
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stderr, "Volume %s is backed up every %s, keeping %d; the next at %s.\n", b.Volume, shortDuration(b.Every), b.Keep, b.NextRun.Local().Format(time.DateTime))
			return nil
		}),
	}
	schedule.Flags().DurationVar(&every, "every", 0, "how often, e.g. 6h")
	schedule.Flags().IntVar(&keep, "keep", 0, "how many backups to keep")
	schedule.Flags().BoolVar(&verifyRestore, "verify-restore", false, "also restore each backup into a scratch volume and compare")
	schedule.MarkFlagRequired("every")
	schedule.MarkFlagRequired("keep")

	unschedule := &cobra.Command{
		Use:   "unschedule VOLUME",
		Short: "Stop a volume's backups; those taken stay",
		Args:  cobra.ExactArgs(1),
		RunE: e.withVolume(func(cmd *cobra.Command, c *client.Client, app string, args []string) error {
			if err := c.UnscheduleBackups(cmd.Context(), app, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(e.stderr, "Volume %s is no longer backed up; its backups stay (paddock volumes snapshots %s).\n", args[0], args[0])
			return nil
		}),
	}
	run := &cobra.Command{
		Use:   "run VOLUME",
		Short: "Take a verified backup of a volume now",
		Args:  cobra.ExactArgs(1),
		RunE: e.withVolume(func(cmd *cobra.Command, c *client.Client, app string, args []string) error {
			sn, err := c.BackupNow(cmd.Context(), app, args[0])
			if err != nil {
				return err
			}
			fmt.Fprintln(e.stdout, sn.ID)
			fmt.Fprintf(e.stderr, "Backup %s of %s taken and verified: %s\n", sn.ID, args[0], sn.Checksum)
			return nil
		}),
	}
	cmd.AddCommand(ls, schedule, unschedule, run)
	return cmd
}

// shortDuration writes "6h0m0s" as "6h".
func shortDuration(s string) string {
	d, err := time.ParseDuration(s)
	if err != nil {
		return s
	}
	out := d.String()
	if strings.HasSuffix(out, "m0s") {
		out = strings.TrimSuffix(out, "0s")
	}
	if strings.HasSuffix(out, "h0m") {
		out = strings.TrimSuffix(out, "0m")
	}
	return out
}
