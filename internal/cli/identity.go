package cli

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"paddock.dev/paddock/internal/client"
)

func (e *env) usersCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "users",
		Short: "List users; create and disable them (admins)",
		Args:  cobra.NoArgs,
		RunE: e.withClient(func(cmd *cobra.Command, c *client.Client, _ []string) error {
			users, err := c.Users(cmd.Context())
			if err != nil {
				return err
			}
			if e.jsonOut {
				return e.printJSON(users)
			}
			tw := e.table("NAME", "ROLE", "STATE", "CREATED")
			for _, u := range users {
				state := "active"
				if u.Disabled {
					state = "disabled"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", u.Name, u.Role, state, u.CreatedAt.Local().Format(time.DateTime))
			}
			return tw.Flush()
		}),
	}
	e.addJSON(cmd)
	var role string
	create := &cobra.Command{
		Use:   "create NAME --role ROLE",
		Short: "Create a user with a role: admin, developer or viewer",
		Args:  cobra.ExactArgs(1),
		RunE: e.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			u, err := c.CreateUser(cmd.Context(), args[0], role)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "Created user %s (%s). Give them a token with `paddock tokens create --user %s --name NAME`.\n", u.Name, u.Role, u.Name)
			return nil
		}),
	}
	create.Flags().StringVar(&role, "role", "", "admin, developer or viewer")
	create.MarkFlagRequired("role")
	disable := &cobra.Command{
		Use:   "disable NAME",
		Short: "Disable a user: every token of theirs stops working at once",
		Args:  cobra.ExactArgs(1),
		RunE: e.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			if err := c.DisableUser(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "Disabled %s.\n", args[0])
			return nil
		}),
	}
	cmd.AddCommand(create, disable)
	return cmd
}

func (e *env) tokensCmd() *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "tokens",
		Short: "List your API tokens (never their values); create and revoke them",
		Args:  cobra.NoArgs,
		RunE: e.withClient(func(cmd *cobra.Command, c *client.Client, _ []string) error {
			toks, err := c.Tokens(cmd.Context(), all)
			if err != nil {
				return err
			}
			if e.jsonOut {
				return e.printJSON(toks)
			}
			tw := e.table("NAME", "USER", "ROLE", "APPS", "CREATED", "LAST USED", "EXPIRES")
			for _, t := range toks {
				role, apps, used, exp := t.Role, strings.Join(t.Apps, ","), "never", "never"
				if role == "" {
					role = "(user's)"
				}
				if apps == "" {
					apps = "(all)"
				}
				if t.LastUsed != nil {
					used = t.LastUsed.Local().Format(time.DateTime)
				}
				if t.ExpiresAt != nil {
					exp = t.ExpiresAt.Local().Format(time.DateTime)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.Name, t.User, role, apps, t.CreatedAt.Local().Format(time.DateTime), used, exp)
			}
			return tw.Flush()
		}),
	}
	cmd.Flags().BoolVar(&all, "all", false, "every user's tokens (admins)")
	e.addJSON(cmd)
	var req client.TokenRequest
	create := &cobra.Command{
		Use:   "create --name NAME [--user USER] [--expires 30d] [--role ROLE] [--app APP]...",
		Short: "Create a token; prints its value alone on stdout, once",
		Args:  cobra.NoArgs,
		RunE: e.withClient(func(cmd *cobra.Command, c *client.Client, _ []string) error {
			tok, err := c.CreateToken(cmd.Context(), req)
			if err != nil {
				return err
			}
			fmt.Fprintln(e.stdout, tok.Value)
			scope := "every app the user may touch"
			if len(tok.Apps) > 0 {
				scope = "apps " + strings.Join(tok.Apps, ", ")
			}
			exp := "never expires"
			if tok.ExpiresAt != nil {
				exp = "expires " + tok.ExpiresAt.Local().Format(time.DateTime)
			}
			fmt.Fprintf(e.stderr, "Token %s for user %s: %s; %s. It is shown only this once.\n", tok.Name, tok.User, scope, exp)
			return nil
		}),
	}
	f := create.Flags()
	f.StringVar(&req.Name, "name", "", "the token's name, unique")
	f.StringVar(&req.User, "user", "", "whose token (admins; default: yours)")
	f.StringVar(&req.Expires, "expires", "", "lifetime, like 30d or 12h (default: never, or when the token making it expires)")
	f.StringVar(&req.Role, "role", "", "a role below the user's, to cap the token")
	f.StringArrayVar(&req.Apps, "app", nil, "limit the token to this app (repeat for more)")
	create.MarkFlagRequired("name")
	revoke := &cobra.Command{
		Use:   "revoke NAME",
		Short: "Revoke a token; it stops working at the next request",
		Args:  cobra.ExactArgs(1),
		RunE: e.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			if err := c.RevokeToken(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "Revoked %s.\n", args[0])
			return nil
		}),
	}
	cmd.AddCommand(create, revoke)
	return cmd
}

func (e *env) teamsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "teams",
		Short: "List teams; create them and manage members (admins)",
		Args:  cobra.NoArgs,
		RunE: e.withClient(func(cmd *cobra.Command, c *client.Client, _ []string) error {
			teams, err := c.Teams(cmd.Context())
			if err != nil {
				return err
			}
			if e.jsonOut {
				return e.printJSON(teams)
			}
			tw := e.table("TEAM", "MEMBERS")
			for _, t := range teams {
				fmt.Fprintf(tw, "%s\t%s\n", t.Name, strings.Join(t.Members, ", "))
			}
			return tw.Flush()
		}),
	}
	e.addJSON(cmd)
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a team",
		Args:  cobra.ExactArgs(1),
		RunE: e.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			if _, err := c.CreateTeam(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "Created team %s. Add people with `paddock teams add-member %s USER`.\n", args[0], args[0])
			return nil
		}),
	}
	add := &cobra.Command{
		Use:   "add-member TEAM USER",
		Short: "Add a user to a team",
		Args:  cobra.ExactArgs(2),
		RunE: e.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			if err := c.AddTeamMember(cmd.Context(), args[0], args[1]); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "Added %s to %s.\n", args[1], args[0])
			return nil
		}),
	}
	remove := &cobra.Command{
		Use:   "remove-member TEAM USER",
		Short: "Remove a user from a team",
		Args:  cobra.ExactArgs(2),
		RunE: e.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			if err := c.RemoveTeamMember(cmd.Context(), args[0], args[1]); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "Removed %s from %s.\n", args[1], args[0])
			return nil
		}),
	}
	cmd.AddCommand(create, add, remove)
	return cmd
}

func (e *env) grantCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "grant APP TEAM ROLE",
		Short: "Give a team a role on an app: viewer or developer (none takes it away)",
		Args:  cobra.ExactArgs(3),
		RunE: e.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			role := args[2]
			if role == "none" {
				role = ""
			}
			if err := c.Grant(cmd.Context(), args[0], args[1], role); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "Team %s has %s on %s.\n", args[1], args[2], args[0])
			return nil
		}),
	}
}

func (e *env) loginCmd() *cobra.Command {
	var fingerprint, token string
	cmd := &cobra.Command{
		Use:   "login [SERVER]",
		Short: "Store a server, its CA and a token in the CLI config (0600)",
		Long: `Pin the server's CA and store a token. The CA's SHA-256 fingerprint is
checked against --ca-fingerprint, or shown for you to confirm on a terminal
(the server's admin sees it in the server's log and tls/ folder). The token
comes from --token, PADDOCK_TOKEN, or a prompt.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, _ := client.LoadConfig()
			if len(args) == 1 {
				cfg.Server = args[0]
				if !strings.Contains(cfg.Server, "://") {
					cfg.Server = "https://" + cfg.Server
				}
				cfg.CA = ""
			}
			if cfg.Server == "" {
				return errors.New("which server? `paddock login https://HOST:7070`")
			}
			if strings.HasPrefix(cfg.Server, "https://") && cfg.CA == "" {
				pem, fp, err := client.FetchCA(cmd.Context(), cfg.Server)
				if err != nil {
					return err
				}
				switch {
				case fingerprint != "":
					if !strings.EqualFold(strings.ReplaceAll(fingerprint, ":", ""), fp) {
						return fmt.Errorf("the server's CA has fingerprint %s, not %s: refusing to trust it", fp, fingerprint)
					}
				default:
					if err := e.confirm(false, "trust the CA with SHA-256 fingerprint "+fp+" for "+cfg.Server, "yes"); err != nil {
						return fmt.Errorf("%w (or pass --ca-fingerprint)", err)
					}
				}
				cfg.CA = string(pem)
			}
			if token == "" {
				token = os.Getenv("PADDOCK_TOKEN")
			}
			if token == "" {
				fmt.Fprint(e.stderr, "Token: ")
				restore := noEcho(e.stdin)
				line, err := bufio.NewReader(e.stdin).ReadString('\n')
				restore()
				fmt.Fprintln(e.stderr)
				if err != nil && line == "" {
					return errors.New("no token given: pass --token or PADDOCK_TOKEN, or type it at the prompt")
				}
				token = strings.TrimSpace(line)
			}
			cfg.Token = token
			c, err := client.New(cfg)
			if err != nil {
				return err
			}
			p, err := c.Login(cmd.Context())
			if err != nil {
				return err
			}
			if err := client.SaveConfig(cfg); err != nil {
				return err
			}
			path, _ := client.ConfigPath()
			fmt.Fprintf(e.stdout, "Logged in to %s as %s (token %s, %s). Saved in %s.\n", cfg.Server, p.User, p.Token, p.Role, path)
			return nil
		},
	}
	cmd.Flags().StringVar(&fingerprint, "ca-fingerprint", "", "the SHA-256 fingerprint the server's CA must have")
	cmd.Flags().StringVar(&token, "token", "", "the token (default: PADDOCK_TOKEN, else a prompt)")
	return cmd
}

func (e *env) logoutCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "logout",
		Short: "Remove the token from the CLI config",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := client.LoadConfig()
			if err != nil {
				return err
			}
			cfg.Token = ""
			if err := client.SaveConfig(cfg); err != nil {
				return err
			}
			fmt.Fprintln(e.stdout, "Logged out. The token itself still works until revoked: `paddock tokens revoke NAME`.")
			return nil
		},
	}
}

func (e *env) whoamiCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "whoami",
		Short: "Show the user, token, role and scope the CLI acts as",
		Args:  cobra.NoArgs,
		RunE: e.withClient(func(cmd *cobra.Command, c *client.Client, _ []string) error {
			p, err := c.WhoAmI(cmd.Context())
			if err != nil {
				return err
			}
			if e.jsonOut {
				return e.printJSON(p)
			}
			scope := "all apps the user may touch"
			if len(p.Apps) > 0 {
				scope = strings.Join(p.Apps, ", ")
			}
			fmt.Fprintf(e.stdout, "user:  %s\ntoken: %s\nrole:  %s\napps:  %s\n", p.User, p.Token, p.Role, scope)
			return nil
		}),
	}
	e.addJSON(cmd)
	return cmd
}

func (e *env) auditCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "The tamper-evident audit trail: list, verify, export (admins)",
	}
	var q client.AuditQuery
	list := &cobra.Command{
		Use:   "list",
		Short: "List audit events, oldest first",
		Args:  cobra.NoArgs,
		RunE: e.withClient(func(cmd *cobra.Command, c *client.Client, _ []string) error {
			evs, err := c.Audit(cmd.Context(), q)
			if err != nil {
				return err
			}
			if e.jsonOut {
				return e.printJSON(evs)
			}
			tw := e.table("SEQ", "TIME", "ACTOR", "TOKEN", "SOURCE", "ACTION", "TARGET", "OUTCOME", "REQUEST")
			for _, ev := range evs {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", ev.Seq, ev.Time.Local().Format(time.DateTime), dash(ev.Actor), dash(ev.Token), ev.Source, ev.Action, dash(ev.Target), ev.Outcome, ev.RequestID)
			}
			return tw.Flush()
		}),
	}
	lf := list.Flags()
	lf.StringVar(&q.Since, "since", "", "events since this long ago (1h) or this time (RFC 3339)")
	lf.StringVar(&q.Actor, "actor", "", "only this user's events")
	lf.StringVar(&q.App, "app", "", "only events on this app")
	e.addJSON(list)
	verify := &cobra.Command{
		Use:   "verify",
		Short: "Check the hash chain and the signed checkpoints; exit 1 naming the first bad event",
		Args:  cobra.NoArgs,
		RunE: e.withClient(func(cmd *cobra.Command, c *client.Client, _ []string) error {
			rep, err := c.AuditVerify(cmd.Context())
			if err != nil {
				return err
			}
			if !rep.OK {
				return fmt.Errorf("audit log NOT intact: %s", rep.Error)
			}
			fmt.Fprintf(e.stdout, "audit log intact: %d events, %d signed checkpoints, head %s\n", rep.Events, rep.Checkpoints, rep.Head)
			return nil
		}),
	}
	export := &cobra.Command{
		Use:   "export",
		Short: "Write every audit event as JSON lines to stdout",
		Args:  cobra.NoArgs,
		RunE: e.withClient(func(cmd *cobra.Command, c *client.Client, _ []string) error {
			return c.AuditExport(cmd.Context(), e.stdout)
		}),
	}
	cmd.AddCommand(list, verify, export)
	return cmd
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// noEcho turns off echoing of what is typed when r is a terminal, so a
// token typed at a prompt is not shown; it returns what puts echo back.
func noEcho(r io.Reader) (restore func()) {
	f, ok := r.(*os.File)
	if !ok {
		return func() {}
	}
	fd := int(f.Fd())
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return func() {}
	}
	quiet := *t
	quiet.Lflag &^= unix.ECHO
	unix.IoctlSetTermios(fd, unix.TCSETS, &quiet)
	return func() { unix.IoctlSetTermios(fd, unix.TCSETS, t) }
}
