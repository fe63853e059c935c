package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"paddock.dev/paddock/internal/client"
	"paddock.dev/paddock/internal/wire"
)

func (e *env) volumesCmd() *cobra.Command {
	var app string
	cmd := &cobra.Command{
		Use:   "volumes",
		Short: "Persistent volumes: create, attach, resize, snapshot, restore, delete",
		Long: `A volume is a named, sized folder of an app's data that outlives its
instances. Attached to a process type, each instance finds it at its path in
the working folder, named in PADDOCK_VOLUME_<NAME>; one instance writes it
at a time.`,
		Args: cobra.NoArgs,
		RunE: e.withClient(func(cmd *cobra.Command, c *client.Client, _ []string) error {
			return e.listVolumes(cmd.Context(), c, app)
		}),
	}
	cmd.Flags().StringVar(&app, "app", "", "only this app's volumes")
	e.addJSON(cmd)
	list := &cobra.Command{
		Use:   "list",
		Short: "List volumes",
		Args:  cobra.NoArgs,
		RunE: e.withClient(func(cmd *cobra.Command, c *client.Client, _ []string) error {
			return e.listVolumes(cmd.Context(), c, app)
		}),
	}
	list.Flags().StringVar(&app, "app", "", "only this app's volumes")
	e.addJSON(list)
	cmd.AddCommand(list, e.volumesCreateCmd(), e.volumesShowCmd(), e.volumesAttachCmd(), e.volumesDetachCmd(),
		e.volumesResizeCmd(), e.volumesSnapshotCmd(), e.volumesSnapshotsCmd(), e.volumesRestoreCmd(),
		e.volumesCloneCmd(), e.volumesDeleteCmd(), e.volumesVerifyCmd(), e.volumesExportCmd(), e.volumesImportCmd())
	return cmd
}

func (e *env) listVolumes(ctx context.Context, c *client.Client, app string) error {
	vols, err := c.AllVolumes(ctx)
	if err != nil {
		return err
	}
	var out []wire.Volume
	for _, v := range vols {
		if app == "" || v.App == app {
			out = append(out, v)
		}
	}
	if e.jsonOut {
		if out == nil {
			out = []wire.Volume{}
		}
		return e.printJSON(out)
	}
	tw := e.table("NAME", "APP", "SIZE", "USED", "ATTACHED", "SNAPSHOTS")
	for _, v := range out {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\n", v.Name, v.App, bytesHuman(v.Size), usedHuman(v), attached(v), v.Snapshots)
	}
	return tw.Flush()
}

func bytesHuman(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1fGiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1fKiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%dB", n)
}

func usedHuman(v wire.Volume) string {
	if v.Used == nil {
		return "-"
	}
	return bytesHuman(*v.Used)
}

func attached(v wire.Volume) string {
	switch {
	case v.Template != "":
		return "an instance's, of " + v.Template
	case v.Process == "":
		return "-"
	case v.PerInstance:
		return v.Process + ":" + v.Path + " (one per instance)"
	}
	return v.Process + ":" + v.Path
}

// volumeApp finds the app of a volume the caller may read.
func volumeApp(ctx context.Context, c *client.Client, name string) (string, error) {
	vols, err := c.AllVolumes(ctx)
	if err != nil {
		return "", err
	}
	for _, v := range vols {
		if v.Name == name {
			return v.App, nil
		}
	}
	return "", fmt.Errorf("no volume %s among those you may see: `paddock volumes` lists them", name)
}

// withVolume runs fn with the app of the volume named by the first argument.
func (e *env) withVolume(fn func(cmd *cobra.Command, c *client.Client, app string, args []string) error) func(*cobra.Command, []string) error {
	return e.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
		app, err := volumeApp(cmd.Context(), c, args[0])
		if err != nil {
			return err
		}
		return fn(cmd, c, app, args)
	})
}

func (e *env) printVolume(v wire.Volume) error {
	if e.jsonOut {
		return e.printJSON(v)
	}
	fmt.Fprintf(e.stdout, "Name:       %s\nApp:        %s\nSize:       %s\nUsed:       %s\nAttached:   %s\nEnv:        %s\nSnapshots:  %d\nCreated:    %s\n",
		v.Name, v.App, bytesHuman(v.Size), usedHuman(v), attached(v), v.Env, v.Snapshots, v.CreatedAt.Local().Format(time.DateTime))
	if !v.Enforced {
		fmt.Fprintf(e.stdout, "Size:       NOT ENFORCED: %s\n", v.NotEnforced)
	}
	return nil
}

func (e *env) volumesCreateCmd() *cobra.Command {
	var app, size string
	cmd := &cobra.Command{
		Use:   "create NAME --app APP --size SIZE",
		Short: "Make a volume for an app",
		Args:  cobra.ExactArgs(1),
		RunE: e.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			if app == "" || size == "" {
				return fmt.Errorf("give the volume's app and size: paddock volumes create %s --app APP --size 1GiB", args[0])
			}
			v, err := c.CreateVolume(cmd.Context(), app, args[0], size)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stderr, "Made volume %s (%s) for %s. Attach it with `paddock volumes attach %s %s --process web --path data`.\n", v.Name, bytesHuman(v.Size), v.App, v.Name, v.App)
			return e.printVolume(v)
		}),
	}
	cmd.Flags().StringVar(&app, "app", "", "the app the volume belongs to")
	cmd.Flags().StringVar(&size, "size", "", `its size: "1GiB", "512M"`)
	e.addJSON(cmd)
	return cmd
}

func (e *env) volumesShowCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "show NAME",
		Short: "Size, use, attachment and snapshots of a volume",
		Args:  cobra.ExactArgs(1),
		RunE: e.withVolume(func(cmd *cobra.Command, c *client.Client, app string, args []string) error {
			v, err := c.Volume(cmd.Context(), app, args[0])
			if err != nil {
				return err
			}
			return e.printVolume(v)
		}),
	}
	e.addJSON(cmd)
	return cmd
}

func (e *env) volumesAttachCmd() *cobra.Command {
	var process, path string
	var perInstance bool
	cmd := &cobra.Command{
		Use:   "attach NAME APP --process P --path DIR",
		Short: "Attach a volume to a process type; instances started from then on get it",
		Args:  cobra.ExactArgs(2),
		RunE: e.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			if process == "" || path == "" {
				return fmt.Errorf("give the process type and the path: paddock volumes attach %s %s --process web --path data", args[0], args[1])
			}
			v, err := c.AttachVolume(cmd.Context(), args[1], args[0], wire.AttachRequest{Process: process, Path: path, PerInstance: perInstance})
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stderr, "Attached %s to %s of %s at %s: instances started from now on get it (scale or release to roll it out).\n", v.Name, v.Process, v.App, v.Path)
			if v.PerInstance {
				fmt.Fprintf(e.stderr, "Each instance has a volume of its own: the first %s, the others %s-1, %s-2… of the same size, made as needed and kept when scaled down.\n", v.Name, v.Name, v.Name)
			}
			return nil
		}),
	}
	cmd.Flags().StringVar(&process, "process", "", "the process type")
	cmd.Flags().StringVar(&path, "path", "", "where, relative to the instance's working folder")
	cmd.Flags().BoolVar(&perInstance, "per-instance", false, "give each instance a volume of its own (NAME, NAME-1, NAME-2…), so that the process can run several")
	return cmd
}

func (e *env) volumesDetachCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "detach NAME",
		Short: "Detach a volume from its process type",
		Args:  cobra.ExactArgs(1),
		RunE: e.withVolume(func(cmd *cobra.Command, c *client.Client, app string, args []string) error {
			_, err := c.DetachVolume(cmd.Context(), app, args[0])
			return err
		}),
	}
}

func (e *env) volumesResizeCmd() *cobra.Command {
	var size string
	cmd := &cobra.Command{
		Use:   "resize NAME --size SIZE",
		Short: "Grow a volume, online",
		Args:  cobra.ExactArgs(1),
		RunE: e.withVolume(func(cmd *cobra.Command, c *client.Client, app string, args []string) error {
			if size == "" {
				return fmt.Errorf("give the new size: paddock volumes resize %s --size 2GiB", args[0])
			}
			v, err := c.ResizeVolume(cmd.Context(), app, args[0], size)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stderr, "Volume %s has %s now.\n", v.Name, bytesHuman(v.Size))
			return nil
		}),
	}
	cmd.Flags().StringVar(&size, "size", "", "the new size, larger than the old")
	return cmd
}

func (e *env) volumesSnapshotCmd() *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "snapshot NAME [--name LABEL]",
		Short: "Take a read-only snapshot of a volume",
		Args:  cobra.ExactArgs(1),
		RunE: e.withVolume(func(cmd *cobra.Command, c *client.Client, app string, args []string) error {
			sn, err := c.Snapshot(cmd.Context(), app, args[0], name)
			if err != nil {
				return err
			}
			fmt.Fprintln(e.stdout, sn.ID)
			fmt.Fprintf(e.stderr, "Took snapshot %s of %s. Its content's checksum manifest is made now, reading about a GiB a second: `paddock volumes snapshots %s` shows it, `paddock volumes verify %s %s` checks it.\n", sn.ID, args[0], args[0], args[0], sn.ID)
			return nil
		}),
	}
	cmd.Flags().StringVar(&name, "name", "", "a name for it")
	return cmd
}

func (e *env) volumesSnapshotsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "snapshots NAME",
		Short: "List a volume's snapshots",
		Args:  cobra.ExactArgs(1),
		RunE: e.withVolume(func(cmd *cobra.Command, c *client.Client, app string, args []string) error {
			list, err := c.Snapshots(cmd.Context(), app, args[0])
			if err != nil {
				return err
			}
			if e.jsonOut {
				return e.printJSON(list)
			}
			tw := e.table("ID", "NAME", "SIZE", "CREATED", "VERIFIED", "CHECKSUM")
			for _, s := range list {
				name, verified := s.Name, "never"
				if s.Backup {
					name = "(backup)"
				}
				if !s.VerifiedAt.IsZero() {
					verified = s.VerifiedAt.Local().Format(time.DateTime)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.ID, name, bytesHuman(s.Size), s.CreatedAt.Local().Format(time.DateTime), verified, s.Checksum)
			}
			return tw.Flush()
		}),
	}
	e.addJSON(cmd)
	return cmd
}

func (e *env) volumesRestoreCmd() *cobra.Command {
	var to, rate string
	cmd := &cobra.Command{
		Use:   "restore NAME SNAPSHOT [--to NEW]",
		Short: "Bring a volume back to a snapshot, or restore it into a new volume",
		Long: `Restore fills a new volume with the snapshot and only then swaps it in: a
crash in between leaves the old data. A volume in use must be stopped first
(scale its process to 0), or restored --to a new volume.

Where the storage can (btrfs), a restore takes no time and copies nothing.
With --rate, the snapshot's files are copied into the new volume at most
that fast, so that the copy leaves the disk to the apps that run, and the
copy is checked against the snapshot's checksum manifest before the swap.`,
		Args: cobra.ExactArgs(2),
		RunE: e.withVolume(func(cmd *cobra.Command, c *client.Client, app string, args []string) error {
			var v wire.Volume
			var err error
			switch {
			case rate != "" && to != "":
				return errors.New("--rate copies in place; restore --to a new volume without it, or clone then import")
			case rate != "":
				p := e.progress("copied")
				v, err = c.RestoreVolumeCopy(cmd.Context(), app, args[0], args[1], rate, p.update)
				p.done()
			default:
				v, err = c.RestoreVolume(cmd.Context(), app, args[0], args[1], to)
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stderr, "Volume %s holds snapshot %s now.\n", v.Name, args[1])
			return nil
		}),
	}
	cmd.Flags().StringVar(&to, "to", "", "restore into a new volume of this name, leaving the volume as it is")
	cmd.Flags().StringVar(&rate, "rate", "", `copy at most this fast, e.g. "50MiB/s"`)
	return cmd
}

func (e *env) volumesCloneCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "clone NAME SNAPSHOT NEW",
		Short: "Make a new volume of the same app from a snapshot",
		Args:  cobra.ExactArgs(3),
		RunE: e.withVolume(func(cmd *cobra.Command, c *client.Client, app string, args []string) error {
			v, err := c.RestoreVolume(cmd.Context(), app, args[0], args[1], args[2])
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stderr, "Made volume %s from snapshot %s of %s.\n", v.Name, args[1], args[0])
			return nil
		}),
	}
}

func (e *env) volumesDeleteCmd() *cobra.Command {
	var yes, force bool
	cmd := &cobra.Command{
		Use:   "delete NAME [--force]",
		Short: "Delete a volume and its data (refused while attached or with snapshots, unless --force)",
		Args:  cobra.ExactArgs(1),
		RunE: e.withVolume(func(cmd *cobra.Command, c *client.Client, app string, args []string) error {
			if err := e.confirm(yes, "delete volume "+args[0]+" and its data", args[0]); err != nil {
				return err
			}
			if err := c.DeleteVolume(cmd.Context(), app, args[0], force); err != nil {
				return err
			}
			fmt.Fprintf(e.stderr, "Deleted volume %s.\n", args[0])
			return nil
		}),
	}
	cmd.Flags().BoolVar(&yes, "yes", false, "do not ask for confirmation")
	cmd.Flags().BoolVar(&force, "force", false, "delete it even attached, with its snapshots")
	return cmd
}
