// Package cli is the paddock command: every subcommand a person types. It
// talks to the server only through internal/client, except `up`, which runs
// the server itself, and the hidden commands the server runs (shim, router).
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"paddock.dev/paddock/internal/client"
)

// Version is the version of this build, set with -ldflags.
var Version = "dev"

// Main runs the command line args (without the program name) and returns
// the exit code.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if code, ok := runShim(ctx, args, stderr); ok {
		return code
	}
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr}
	root := e.root()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	if err := root.ExecuteContext(ctx); err != nil {
		var ce *client.Error
		if errors.As(err, &ce) && ce.RequestID != "" {
			fmt.Fprintf(stderr, "error: %s (request id %s)\n", err, ce.RequestID)
		} else {
			fmt.Fprintf(stderr, "error: %s\n", err)
		}
		var ec exitCode
		if errors.As(err, &ec) {
			return int(ec)
		}
		return 1
	}
	return 0
}

type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit code %d", int(e)) }

// env is what every command shares.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	jsonOut        bool
}

func (e *env) root() *cobra.Command {
	root := &cobra.Command{
		Use:           "paddock",
		Short:         "A private Heroku with day-2 operations built in",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       Version,
	}
	root.AddCommand(
		e.upCmd(), e.downCmd(),
		e.appsCmd(), e.deployCmd(), e.scaleCmd(), e.psCmd(), e.restartCmd(),
		e.configCmd(), e.secretsCmd(), e.keysCmd(), e.releasesCmd(), e.rollbackCmd(), e.logsCmd(), e.eventsCmd(), e.domainsCmd(),
		e.loginCmd(), e.logoutCmd(), e.whoamiCmd(), e.usersCmd(), e.tokensCmd(), e.teamsCmd(), e.auditCmd(),
		e.volumesCmd(), e.backupsCmd(), e.alertsCmd(), e.registryCmd(), e.metricsCmd(), e.drainsCmd(),
		e.shimCmd(), e.cgexecCmd(), e.routerCmd(), e.csiCmd(),
	)
	return root
}

// client returns a client of the configured server.
func (e *env) client() (*client.Client, error) {
	c, err := client.LoadConfig()
	if err != nil {
		return nil, err
	}
	if c.Token == "" {
		return nil, errors.New("no token configured: set PADDOCK_TOKEN, or run `paddock up` on this machine, which writes the CLI config")
	}
	return client.New(c)
}

// withClient gives a command a client of the configured server.
func (e *env) withClient(fn func(cmd *cobra.Command, c *client.Client, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		c, err := e.client()
		if err != nil {
			return err
		}
		return fn(cmd, c, args)
	}
}

// addJSON adds --json to a listing.
func (e *env) addJSON(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&e.jsonOut, "json", false, "print JSON instead of a table")
}

func (e *env) printJSON(v any) error {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (e *env) table(header ...string) *tabwriter.Writer {
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	return tw
}

// confirm asks on a terminal, and refuses without --yes elsewhere.
func (e *env) confirm(yes bool, what, answer string) error {
	if yes {
		return nil
	}
	f, ok := e.stdin.(*os.File)
	if !ok {
		return fmt.Errorf("refusing to %s without --yes", what)
	}
	// /dev/null is a character device too: ask the terminal driver.
	if _, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err != nil {
		return fmt.Errorf("refusing to %s without --yes (no terminal to ask)", what)
	}
	fmt.Fprintf(e.stderr, "This will %s. Type %q to confirm: ", what, answer)
	var got string
	fmt.Fscanln(f, &got)
	if got != answer {
		return errors.New("not confirmed; nothing changed")
	}
	return nil
}

// defaultDataDir is $PADDOCK_DATA, else for root /var/lib/paddock (apps run
// as users of their own, who cannot enter /root), else
// $XDG_DATA_HOME/paddock, else ~/.local/share/paddock.
func defaultDataDir() string {
	if v := os.Getenv("PADDOCK_DATA"); v != "" {
		return v
	}
	if os.Geteuid() == 0 {
		return "/var/lib/paddock"
	}
	if v := os.Getenv("XDG_DATA_HOME"); v != "" {
		return filepath.Join(v, "paddock")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "paddock-data"
	}
	return filepath.Join(home, ".local", "share", "paddock")
}
