package cli

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"paddock.dev/paddock/internal/client"
	"paddock.dev/paddock/internal/wire"
)

// maxRegistryPassword is the longest registry password (or token) taken.
const maxRegistryPassword = 4096

func (e *env) registryCmd() *cobra.Command {
	show := func(cmd *cobra.Command, c *client.Client, _ []string) error {
		reg, err := c.Registry(cmd.Context())
		if err != nil {
			return err
		}
		return e.printRegistry(reg)
	}
	cmd := &cobra.Command{
		Use:   "registry",
		Short: "The image registry apps' images are pushed to on Kubernetes, and its logins (admins)",
		Long: `On Kubernetes, Paddock pushes each release's image to the registry of
` + "`paddock up --registry`" + ` and the cluster's nodes pull it from there. The
registry's logins are kept sealed in the store, like secrets, and never
shown: the push login is Paddock's own; the pull login, if set, is the one
every app namespace's pull secret holds (without one, the push login is).
Give the nodes a read-only login, so that the cluster holds no password that
may push:

  echo -n "$PUSH_TOKEN" | paddock registry login --username paddock-ci
  echo -n "$PULL_TOKEN" | paddock registry login --pull --username paddock-nodes

A new login is used at once: by the next push, and by each app's pull
secret within the next reconcile pass.`,
		Args: cobra.NoArgs,
		RunE: e.withClient(show),
	}
	e.addJSON(cmd)
	var pull bool
	var username string
	login := &cobra.Command{
		Use:   "login --username U [--pull]",
		Short: "Keep the registry login to push with (or with --pull, the nodes' login), its password read from stdin",
		Args:  cobra.NoArgs,
		RunE: e.withClient(func(cmd *cobra.Command, c *client.Client, _ []string) error {
			if username == "" {
				return errors.New("give the registry user name: `echo -n \"$PASSWORD\" | paddock registry login --username U`")
			}
			password, err := e.readPassword()
			if err != nil {
				return err
			}
			reg, err := c.SetRegistryLogin(cmd.Context(), kindOf(pull), username, password)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stderr, "Registry %s login kept for %s.\n", kindOf(pull), username)
			return e.printRegistry(reg)
		}),
	}
	login.Flags().StringVar(&username, "username", "", "the registry user name")
	login.Flags().BoolVar(&pull, "pull", false, "the login the cluster's nodes pull with (default: the one Paddock pushes with)")
	e.addJSON(login)
	var logoutPull bool
	logout := &cobra.Command{
		Use:   "logout [--pull]",
		Short: "Forget the registry login to push with (or with --pull, the nodes' login)",
		Args:  cobra.NoArgs,
		RunE: e.withClient(func(cmd *cobra.Command, c *client.Client, _ []string) error {
			if err := c.DeleteRegistryLogin(cmd.Context(), kindOf(logoutPull)); err != nil {
				return err
			}
			fmt.Fprintf(e.stderr, "Registry %s login forgotten.\n", kindOf(logoutPull))
			return nil
		}),
	}
	logout.Flags().BoolVar(&logoutPull, "pull", false, "the nodes' login")
	cmd.AddCommand(login, logout)
	return cmd
}

func kindOf(pull bool) string {
	if pull {
		return "pull"
	}
	return "push"
}

func (e *env) printRegistry(reg wire.Registry) error {
	if e.jsonOut {
		return e.printJSON(reg)
	}
	fmt.Fprintf(e.stdout, "Repository: %s\n", reg.Repository)
	line := func(what string, c *wire.RegistryCredential, none string) {
		if c == nil {
			fmt.Fprintf(e.stdout, "%s %s\n", what, none)
			return
		}
		fmt.Fprintf(e.stdout, "%s %s (set by %s at %s)\n", what, c.Username, c.UpdatedBy, c.UpdatedAt.Local().Format(time.DateTime))
	}
	line("Push login:", reg.Push, "none (pushes without logging in)")
	line("Pull login:", reg.Pull, "none (the nodes use the push login)")
	return nil
}

// readPassword reads a password from a terminal (not echoed) or stdin,
// without its final newline.
func (e *env) readPassword() (string, error) {
	var b []byte
	var err error
	if f, tty := terminal(e.stdin); tty {
		fmt.Fprint(e.stderr, "Password (not shown): ")
		restore := noEcho(f)
		b, err = bufio.NewReaderSize(f, maxRegistryPassword+2).ReadSlice('\n')
		restore()
		fmt.Fprintln(e.stderr)
		if err != nil && !errors.Is(err, io.EOF) {
			return "", fmt.Errorf("read the password: %w", err)
		}
		b = bytes.Clone(b)
	} else if b, err = readUpTo(e.stdin, maxRegistryPassword+2); err != nil {
		return "", fmt.Errorf("stdin: the password: %w (at most %d bytes)", err, maxRegistryPassword)
	}
	b = bytes.TrimSuffix(bytes.TrimSuffix(b, []byte("\n")), []byte("\r"))
	if len(b) == 0 {
		return "", errors.New("no password given: pipe it in, `echo -n \"$PASSWORD\" | paddock registry login --username U`")
	}
	return string(b), nil
}
