package cli

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode/utf8"

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
	fmt.Fprintf(e.stdout, "KEK: %s%s\n", st.KEK, src)
	if st.MaxSeals > 0 {
		fmt.Fprintf(e.stdout, "A new value key is made after %d seals under one.\n", st.MaxSeals)
	}
	fmt.Fprintln(e.stdout)
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
	var force, withPass bool
	cmd := &cobra.Command{
		Use:   "export --out FILE [--passphrase] [--force]",
		Short: "Write a backup of the KEK to FILE (0600); keep it away from this machine",
		Long: `Write the backup that restores the secrets if the KEK is lost, to FILE,
readable by you alone (0600). An existing FILE is kept unless --force.
Without --passphrase the file holds the key in the clear: with it and a
copy of the data folder, anyone reads every secret. With --passphrase the
key is sealed under a passphrase, typed twice without echo on a terminal,
else read from the first line of stdin. The export is audited.`,
		Args: cobra.NoArgs,
		RunE: e.withClient(func(cmd *cobra.Command, c *client.Client, _ []string) error {
			if !force {
				if _, err := os.Lstat(out); err == nil {
					return fmt.Errorf("%s exists: refusing to overwrite it (--force replaces it)", out)
				}
			}
			var pass string
			if withPass {
				var err error
				if pass, err = e.readPassphrase(true); err != nil {
					return err
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
			if err := c.ExportKeys(cmd.Context(), pass, tmp); err != nil {
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
			if !withPass {
				fmt.Fprintln(e.stderr, "It holds the key in the clear: anyone with it and a copy of the data folder reads every secret (--passphrase seals it).")
			}
			return nil
		}),
	}
	f := cmd.Flags()
	f.StringVar(&out, "out", "", "the file to write")
	f.BoolVar(&force, "force", false, "replace FILE if it exists")
	f.BoolVar(&withPass, "passphrase", false, "seal the key under a passphrase (asked for, or the first line of stdin)")
	cmd.MarkFlagRequired("out")
	return cmd
}

// readPassphrase reads a passphrase: typed without echo on a terminal (twice
// when confirm), else the first line of stdin.
func (e *env) readPassphrase(confirm bool) (string, error) {
	f, tty := terminal(e.stdin)
	if !tty {
		line, err := bufio.NewReader(e.stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", err
		}
		pass := strings.TrimRight(line, "\r\n")
		if pass == "" {
			return "", errors.New("no passphrase on stdin: give it as its first line")
		}
		return pass, nil
	}
	ask := func(prompt string) (string, error) {
		fmt.Fprint(e.stderr, prompt)
		restore := noEcho(f)
		line, err := bufio.NewReader(f).ReadString('\n')
		restore()
		fmt.Fprintln(e.stderr)
		if err != nil && !errors.Is(err, io.EOF) {
			return "", err
		}
		return strings.TrimRight(line, "\r\n"), nil
	}
	pass, err := ask("Passphrase (not shown): ")
	if err != nil {
		return "", err
	}
	if pass == "" {
		return "", errors.New("no passphrase typed")
	}
	if confirm {
		again, err := ask("Passphrase again: ")
		if err != nil {
			return "", err
		}
		if again != pass {
			return "", errors.New("the passphrases differ; nothing written")
		}
	}
	return pass, nil
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
	var withPass bool
	var data string
	cmd := &cobra.Command{
		Use:   "import FILE [--passphrase]",
		Short: "Restore the KEK from a backup `keys export` wrote",
		Long: `Restore the KEK from FILE, after the server has checked that it opens
the store's data keys: a backup of another platform's key, a damaged file
or a wrong passphrase is refused and changes nothing. A backup made with
--passphrase needs it: typed without echo on a terminal, else the first
line of stdin.

With --data, the key goes straight into that data folder of a platform
that is not running: paddock up refuses to start without the key that
opens its secrets, so that is how a lost key file is restored.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
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
			case len(b) == 0:
				return fmt.Errorf("%s is empty: not a key backup", args[0])
			case !utf8.Valid(b):
				return fmt.Errorf("%s is not text: not a key backup (a backup is a PEM block: -----BEGIN PADDOCK KEY BACKUP-----)", args[0])
			}
			var pass string
			if withPass {
				if pass, err = e.readPassphrase(false); err != nil {
					return err
				}
			}
			if data != "" {
				if err := importKeyOffline(cmd.Context(), data, b, []byte(pass)); err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "Imported the key of %s into %s: paddock up can open its secrets.\n", args[0], data)
				return nil
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			st, err := c.ImportKeys(cmd.Context(), b, pass)
			if err != nil {
				var ce *client.Error
				if !withPass && errors.As(err, &ce) && ce.Code == "invalid" {
					return fmt.Errorf("%w (a backup made with a passphrase needs --passphrase)", err)
				}
				return err
			}
			fmt.Fprintf(e.stdout, "Imported the key of %s: the data keys are wrapped by KEK %s.\n", args[0], st.KEK)
			return nil
		},
	}
	cmd.Flags().BoolVar(&withPass, "passphrase", false, "the backup has a passphrase (asked for, or the first line of stdin)")
	cmd.Flags().StringVar(&data, "data", "", "import into this data folder of a platform that is not running, without a server")
	return cmd
}
