package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"paddock.dev/paddock/internal/client"
	"paddock.dev/paddock/internal/wire"
)

// maxKeyBackup is the largest file `keys import` sends.
const maxKeyBackup = 1 << 20

func (e *env) keysCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "The keys that encrypt secrets: status, rotate, export, import (admins)",
		Long: `Secrets are sealed by data keys, which are stored only wrapped by the
key-encryption key (KEK). Losing the KEK is the one way to lose every
secret: keep a backup made with 'keys export' away from this machine.`,
	}
	status := &cobra.Command{
		Use:   "status",
		Short: "Show the KEK's id and the data keys: kind, seals, which is active",
		Args:  cobra.NoArgs,
		RunE: e.withClient(func(cmd *cobra.Command, c *client.Client, _ []string) error {
			st, err := c.KeyStatus(cmd.Context())
			if err != nil {
				return err
			}
			if e.jsonOut {
				return e.printJSON(st)
			}
			return e.printKeyStatus(st)
		}),
	}
	e.addJSON(status)
	rotate := &cobra.Command{
		Use:   "rotate",
		Short: "Make a new KEK and re-wrap every data key with it, online",
		Args:  cobra.NoArgs,
		RunE: e.withClient(func(cmd *cobra.Command, c *client.Client, _ []string) error {
			st, err := c.RotateKeys(cmd.Context())
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "Rotated: the data keys are wrapped by KEK %s; the old KEK opens nothing.\n", st.KEK)
			fmt.Fprintln(e.stderr, "A key backup made before now holds the old KEK: make a new one with `paddock keys export --out FILE`.")
			return nil
		}),
	}
	cmd.AddCommand(status, rotate, e.keysExportCmd(), e.keysImportCmd())
	return cmd
}

func (e *env) printKeyStatus(st wire.KeyStatus) error {
	src := ""
	if st.KEKSource != "" {
		src = " (" + st.KEKSource + ")"
	}
	fmt.Fprintf(e.stdout, "KEK: %s%s\n\n", st.KEK, src)
	tw := e.table("DATA KEY", "KIND", "WRAPPED BY", "SEALS", "ACTIVE", "CREATED")
	for _, k := range st.DataKeys {
		active := "no"
		if k.Active {
			active = "yes"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\n", k.ID, k.Kind, k.KEK, k.Seals, active, k.CreatedAt.Local().Format(time.DateTime))
	}
	return tw.Flush()
}

func (e *env) keysExportCmd() *cobra.Command {
	var out string
	var force bool
	cmd := &cobra.Command{
		Use:   "export --out FILE [--force]",
		Short: "Write a backup of the keys to FILE (0600); keep it away from this machine",
		Long: `Write the backup that restores the secrets if the KEK is lost, to FILE,
readable by you alone (0600). An existing FILE is kept unless --force. With
the backup and a copy of the data folder, anyone reads every secret: keep
it apart from the machine and its backups. The export is audited.`,
		Args: cobra.NoArgs,
		RunE: e.withClient(func(cmd *cobra.Command, c *client.Client, _ []string) error {
			if !force {
				if _, err := os.Lstat(out); err == nil {
					return fmt.Errorf("%s exists: refusing to overwrite it (--force replaces it)", out)
				}
			}
			tmp, err := os.CreateTemp(filepath.Dir(out), ".paddock-keys-*.tmp") // 0600
			if err != nil {
				return err
			}
			defer os.Remove(tmp.Name())
			defer tmp.Close()
			if err := tmp.Chmod(0o600); err != nil {
				return err
			}
			if err := c.ExportKeys(cmd.Context(), tmp); err != nil {
				return err
			}
			if err := tmp.Sync(); err != nil {
				return err
			}
			if err := tmp.Close(); err != nil {
				return err
			}
			if err := place(tmp.Name(), out, force); err != nil {
				return err
			}
			fmt.Fprintf(e.stderr, "Wrote the key backup to %s (0600). Keep it away from this machine; `paddock keys import %s` restores it.\n", out, out)
			return nil
		}),
	}
	cmd.Flags().StringVar(&out, "out", "", "the file to write")
	cmd.Flags().BoolVar(&force, "force", false, "replace FILE if it exists")
	cmd.MarkFlagRequired("out")
	return cmd
}

// place moves the finished file tmp to path: over an existing one only
// with force; without, a file that appeared meanwhile is kept.
func place(tmp, path string, force bool) error {
	if force {
		if err := os.Rename(tmp, path); err != nil {
			return err
		}
	} else if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s exists: refusing to overwrite it (--force replaces it)", path)
		}
		return err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

func (e *env) keysImportCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "import FILE",
		Short: "Restore the keys from a backup `keys export` wrote",
		Args:  cobra.ExactArgs(1),
		RunE: e.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			b, err := readUpTo(f, maxKeyBackup)
			defer clear(b)
			switch {
			case errors.Is(err, errTooBig):
				return fmt.Errorf("%s is over 1 MiB: not a key backup", args[0])
			case err != nil:
				return err
			}
			if len(b) == 0 {
				return fmt.Errorf("%s is empty: not a key backup", args[0])
			}
			st, err := c.ImportKeys(cmd.Context(), b)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "Imported the keys of %s: the data keys are wrapped by KEK %s.\n", args[0], st.KEK)
			return nil
		}),
	}
}
