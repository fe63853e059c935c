package cli

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"paddock.dev/paddock/internal/client"
	"paddock.dev/paddock/internal/wire"
)

// stdinForm is how a value reaches `secrets set`, shown wherever one is
// refused.
const stdinForm = `echo -n "$VALUE" | paddock secrets set %s %s`

func (e *env) secretsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "secrets APP",
		Short: "List an app's secrets (never their values); set, unset, reveal them",
		Long: `Secrets are values encrypted at rest and versioned, given to an app's
instances as environment variables or files, and shown only by an audited
reveal. The listing shows names, versions, digests (equal digests, equal
values) and who changed them when.`,
		Args: cobra.ExactArgs(1),
		RunE: e.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			list, err := c.Secrets(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if e.jsonOut {
				return e.printJSON(list)
			}
			tw := e.table("NAME", "VERSION", "DIGEST", "AS", "UPDATED", "BY")
			for _, s := range list {
				fmt.Fprintf(tw, "%s\tv%d\t%s\t%s\t%s\t%s\n", s.Name, s.Version, s.Digest, injectedAs(s.AsFile), s.UpdatedAt.Local().Format(time.DateTime), s.UpdatedBy)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if len(list) == 0 {
				fmt.Fprintf(e.stderr, "%s has no secrets. Set one with `%s`.\n", args[0], fmt.Sprintf(stdinForm, args[0], "NAME"))
			}
			return nil
		}),
	}
	e.addJSON(cmd)
	cmd.AddCommand(e.secretsSetCmd(), e.secretsUnsetCmd(), e.secretsHistoryCmd(), e.secretsRevealCmd())
	return cmd
}

func injectedAs(file bool) string {
	if file {
		return "file"
	}
	return "env"
}

func (e *env) secretsSetCmd() *cobra.Command {
	var fromFile string
	var opts client.SecretOptions
	cmd := &cobra.Command{
		Use:   "set APP NAME [--from-file FILE] [--as-file] [--no-restart]",
		Short: "Store a secret's value, read from stdin or a file, in a new release",
		Long: `Store the value as the secret's next version and roll it out in a new
release, like config set. The value comes from --from-file, else from
stdin: piped (taken byte for byte, so use echo -n), or typed at a
terminal without being shown. It is never an argument: arguments stay in
shell history and show in ps.

  echo -n "$STRIPE_KEY" | paddock secrets set shop STRIPE_KEY
  paddock secrets set shop TLS_KEY --from-file key.pem --as-file`,
		Args: secretSetArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			app, name := args[0], args[1]
			value, err := e.readSecret(app, name, fromFile)
			defer clear(value)
			if err != nil {
				return err
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			ch, err := c.SetSecret(cmd.Context(), app, name, value, opts)
			if err != nil {
				return err
			}
			return e.secretChanged(cmd, c, ch)
		},
	}
	// A flag error quotes what it could not parse, which may be a value
	// given on the command line by mistake: say what the flags are instead.
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, _ error) error {
		return fmt.Errorf("bad flag: secrets set takes --from-file FILE, --as-file and --no-restart; a value is never an argument: `%s`", fmt.Sprintf(stdinForm, "APP", "NAME"))
	})
	f := cmd.Flags()
	f.StringVar(&fromFile, "from-file", "", "read the value from this file, byte for byte")
	f.BoolVar(&opts.AsFile, "as-file", false, "give it to instances as a file in $PADDOCK_SECRETS_DIR, not an environment variable")
	f.BoolVar(&opts.NoRestart, "no-restart", false, "store it now; the app's next release rolls it out")
	return cmd
}

// secretSetArgs takes APP NAME and refuses a value among the arguments,
// without repeating it.
func secretSetArgs(_ *cobra.Command, args []string) error {
	app, name := "APP", "NAME"
	if len(args) > 0 && !strings.Contains(args[0], "=") {
		app = args[0]
	}
	if len(args) > 1 {
		name, _, _ = strings.Cut(args[1], "=")
	}
	for _, a := range args {
		if strings.Contains(a, "=") {
			return fmt.Errorf("a secret's value is never an argument (it would stay in your shell history and show in ps): pipe it in, `%s`, or use --from-file FILE", fmt.Sprintf(stdinForm, app, name))
		}
	}
	switch {
	case len(args) > 2:
		return fmt.Errorf("secrets set takes APP and NAME only; the value is never an argument: `%s`, or --from-file FILE", fmt.Sprintf(stdinForm, app, name))
	case len(args) < 2:
		return fmt.Errorf("give the app and the secret's name: `%s`", fmt.Sprintf(stdinForm, app, name))
	}
	return nil
}

// readSecret reads a secret's value from a file, a terminal (not echoed),
// or stdin, refusing an empty one and one over client.MaxSecret bytes.
func (e *env) readSecret(app, name, fromFile string) ([]byte, error) {
	var value []byte
	var err error
	switch f, tty := terminal(e.stdin); {
	case fromFile != "":
		var r *os.File
		if r, err = os.Open(fromFile); err != nil {
			return nil, err
		}
		defer r.Close()
		if value, err = readUpTo(r, client.MaxSecret); err != nil {
			return nil, fmt.Errorf("%s: %w", fromFile, secretReadError(err))
		}
		if len(value) == 0 {
			return nil, fmt.Errorf("%s is empty: a secret needs a value (to remove one, `paddock secrets unset %s %s`)", fromFile, app, name)
		}
		return value, nil
	case tty:
		fmt.Fprintf(e.stderr, "Value of %s (not shown; Enter ends it): ", name)
		restore := noEcho(f)
		value, err = bufio.NewReaderSize(f, client.MaxSecret+2).ReadSlice('\n')
		restore()
		fmt.Fprintln(e.stderr)
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("read the value: %w (more than %d bytes? use --from-file)", err, client.MaxSecret)
		}
		value = bytes.Clone(bytes.TrimSuffix(bytes.TrimSuffix(value, []byte("\n")), []byte("\r")))
	default:
		if value, err = readUpTo(e.stdin, client.MaxSecret); err != nil {
			return nil, fmt.Errorf("stdin: %w", secretReadError(err))
		}
		if bytes.HasSuffix(value, []byte("\n")) {
			fmt.Fprintf(e.stderr, "note: the value ends with a newline, which is kept; `echo -n` leaves it out\n")
		}
	}
	if len(value) == 0 {
		return nil, fmt.Errorf("no value given for %s: pipe it in, `%s`, or use --from-file FILE (to remove a secret, `paddock secrets unset %s %s`)", name, fmt.Sprintf(stdinForm, app, name), app, name)
	}
	return value, nil
}

// errTooBig: more than readUpTo's max.
var errTooBig = errors.New("too big")

// readUpTo reads all of r, refusing more than max bytes.
func readUpTo(r io.Reader, max int) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, int64(max)+1))
	if err != nil {
		return nil, err
	}
	if len(b) > max {
		clear(b)
		return nil, errTooBig
	}
	return b, nil
}

func secretReadError(err error) error {
	if errors.Is(err, errTooBig) {
		return fmt.Errorf("the value is over %d bytes (64 KiB), the most a secret holds", client.MaxSecret)
	}
	return err
}

// secretChanged says what a change of a secret made, and waits for the
// release that rolls it out.
func (e *env) secretChanged(cmd *cobra.Command, c *client.Client, ch wire.SecretChange) error {
	verb := "Set"
	if ch.Deleted {
		verb = "Unset"
	}
	if ch.Release == nil {
		fmt.Fprintf(e.stdout, "%s %s of %s (version %d). Not rolled out: the app's next release (a deploy, a config change, a restart) takes it.\n", verb, ch.Name, ch.App, ch.Version)
		return nil
	}
	fmt.Fprintf(e.stdout, "%s %s of %s (version %d).\n", verb, ch.Name, ch.App, ch.Version)
	return e.waitRelease(cmd, c, *ch.Release)
}

func (e *env) secretsUnsetCmd() *cobra.Command {
	var noRestart bool
	cmd := &cobra.Command{
		Use:   "unset APP NAME [--no-restart]",
		Short: "Remove a secret in a new release (its history stays)",
		Args:  cobra.ExactArgs(2),
		RunE: e.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			ch, err := c.UnsetSecret(cmd.Context(), args[0], args[1], noRestart)
			if err != nil {
				return err
			}
			return e.secretChanged(cmd, c, ch)
		}),
	}
	cmd.Flags().BoolVar(&noRestart, "no-restart", false, "remove it now; the app's next release rolls that out")
	return cmd
}

func (e *env) secretsHistoryCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "history APP NAME",
		Short: "List a secret's versions, oldest first: who changed it when (never values)",
		Args:  cobra.ExactArgs(2),
		RunE: e.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			versions, err := c.SecretHistory(cmd.Context(), args[0], args[1])
			if err != nil {
				return err
			}
			if e.jsonOut {
				return e.printJSON(versions)
			}
			tw := e.table("VERSION", "CHANGE", "DIGEST", "AS", "AT", "BY")
			for _, v := range versions {
				change, as := "set", injectedAs(v.AsFile)
				if v.Deleted {
					change, as = "unset", "-"
				}
				fmt.Fprintf(tw, "v%d\t%s\t%s\t%s\t%s\t%s\n", v.Version, change, dash(v.Digest), as, v.CreatedAt.Local().Format(time.DateTime), v.CreatedBy)
			}
			return tw.Flush()
		}),
	}
	e.addJSON(cmd)
	return cmd
}

func (e *env) secretsRevealCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "reveal APP NAME",
		Short: "Print a secret's value alone on stdout, with no newline added (audited)",
		Long: `Print the value of the secret's current version, byte for byte and
nothing else, so that it can be piped: paddock secrets reveal shop KEY | tool.
Developers of the app and admins may; every reveal, allowed or not, is an
audit event naming the app and the secret.`,
		Args: cobra.ExactArgs(2),
		RunE: e.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			value, err := c.RevealSecret(cmd.Context(), args[0], args[1])
			defer clear(value)
			if err != nil {
				return err
			}
			_, err = e.stdout.Write(value)
			return err
		}),
	}
}

// looksLikeCredential says whether a config key names what should be a
// secret.
func looksLikeCredential(key string) bool {
	k := strings.ToUpper(key)
	return strings.HasSuffix(k, "_KEY") || strings.HasSuffix(k, "_TOKEN") || strings.Contains(k, "PASSWORD") ||
		strings.Contains(k, "SECRET") || k == "DATABASE_URL"
}

// terminal returns r as a file if it is a terminal.
func terminal(r io.Reader) (*os.File, bool) {
	f, ok := r.(*os.File)
	if !ok {
		return nil, false
	}
	// /dev/null is a character device too: ask the terminal driver.
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return f, err == nil
}
