package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"paddock.dev/paddock/internal/archive"
	"paddock.dev/paddock/internal/client"
	"paddock.dev/paddock/internal/manifest"
	"paddock.dev/paddock/internal/wire"
)

func (e *env) deployCmd() *cobra.Command {
	var app, image string
	cmd := &cobra.Command{
		Use:   "deploy [DIR]",
		Short: "Build a folder with paddock.toml or a Procfile, release it and roll it out",
		Long: `Pack DIR (default: the current folder), skipping what .gitignore and
.paddockignore name, upload it, stream the build's output, and wait for the
new release to roll out. A release whose instances never become healthy is
rolled back and the command exits non-zero with the reason and the last log
lines. The app is --app, else the manifest's name, else the folder's name.

With --image REF (Kubernetes only), nothing is built: the image runs, with
the process types of DIR's paddock.toml if DIR is given, else one web
process running the image's own command.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if image != "" {
				return e.deployImage(cmd, app, image, args)
			}
			dir := "."
			if len(args) == 1 {
				dir = args[0]
			}
			abs, err := filepath.Abs(dir)
			if err != nil {
				return err
			}
			m, err := manifest.Load(abs)
			if err != nil {
				return err
			}
			if app == "" {
				app = m.Name
			}
			if app == "" {
				app = filepath.Base(abs)
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			pr, pw := io.Pipe()
			packed := make(chan error, 1)
			go func() {
				err := archive.Pack(cmd.Context(), abs, pw)
				packed <- err
				pw.CloseWithError(err)
			}()
			fmt.Fprintf(e.stderr, "-----> Deploying %s to %s\n", dir, app)
			rel, err := c.Deploy(cmd.Context(), app, pr, func(ev wire.DeployEvent) {
				switch ev.Type {
				case wire.DeployOutput:
					fmt.Fprintf(e.stderr, "       %s\n", ev.Text)
				default:
					fmt.Fprintf(e.stderr, "-----> %s\n", ev.Text)
				}
			})
			pr.Close()
			if err != nil {
				select {
				case perr := <-packed:
					if perr != nil {
						return perr
					}
				default:
				}
				return err
			}
			info, _ := c.App(cmd.Context(), app)
			fmt.Fprintf(e.stdout, "Released v%d of %s: %s\n", rel.Version, app, info.URL)
			return nil
		},
	}
	cmd.Flags().StringVar(&app, "app", "", "app to deploy to")
	cmd.Flags().StringVar(&image, "image", "", "deploy this image (REGISTRY/REPOSITORY:TAG or @sha256:DIGEST) rather than build a folder; Kubernetes only")
	return cmd
}

// deployImage releases an existing image, with DIR's paddock.toml if DIR
// is given.
func (e *env) deployImage(cmd *cobra.Command, app, image string, args []string) error {
	var toml []byte
	if len(args) == 1 {
		var err error
		if toml, err = os.ReadFile(filepath.Join(args[0], manifest.TOMLFile)); err != nil {
			return fmt.Errorf("deploy --image with a folder takes its %s: %w", manifest.TOMLFile, err)
		}
		if _, err := manifest.Parse(toml); err != nil {
			return err
		}
	}
	if app == "" {
		return errors.New("deploy --image needs --app: an image names no app")
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stderr, "-----> Deploying image %s to %s\n", image, app)
	rel, err := c.DeployImage(cmd.Context(), app, image, toml, func(ev wire.DeployEvent) {
		fmt.Fprintf(e.stderr, "-----> %s\n", ev.Text)
	})
	if err != nil {
		return err
	}
	info, _ := c.App(cmd.Context(), app)
	fmt.Fprintf(e.stdout, "Released v%d of %s: %s\n", rel.Version, app, info.URL)
	return nil
}

func (e *env) scaleCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "scale APP PROCESS=COUNT...",
		Short: "Set how many instances of each process type run",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			counts := map[string]int{}
			for _, a := range args[1:] {
				p, n, ok := strings.Cut(a, "=")
				count, err := strconv.Atoi(n)
				if !ok || err != nil {
					return fmt.Errorf("%q: write PROCESS=COUNT, like web=3", a)
				}
				counts[p] = count
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			f, err := c.Scale(cmd.Context(), args[0], counts)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "Scaled %s to %s.\n", args[0], formation(f))
			return nil
		},
	}
}

func formation(f map[string]int) string {
	var parts []string
	for p, n := range f {
		parts = append(parts, fmt.Sprintf("%s=%d", p, n))
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

func (e *env) restartCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "restart APP INSTANCE",
		Short: "Replace an instance: it leaves the router and stops, and another starts in its place",
		Long: `Replace an instance (as ps names it): it leaves the router, finishes the
requests it is serving and stops, and the platform starts another in its
place. An app with one web instance is unavailable until the new one is
healthy; scale it to two first for no interruption.`,
		Args: cobra.ExactArgs(2),
		RunE: e.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			if err := c.RestartInstance(cmd.Context(), args[0], args[1]); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "Restarting %s of %s: see paddock ps %s\n", args[1], args[0], args[0])
			return nil
		}),
	}
}

func (e *env) psCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ps APP",
		Short: "List an app's instances as they run",
		Args:  cobra.ExactArgs(1),
		RunE: e.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			list, err := c.Instances(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if e.jsonOut {
				return e.printJSON(list)
			}
			// On Kubernetes a pod's node says where it runs; its PID is
			// another machine's.
			onNodes := slices.ContainsFunc(list, func(in wire.Instance) bool { return in.Node != "" })
			where := "PID"
			if onNodes {
				where = "NODE"
			}
			tw := e.table("INSTANCE", "RELEASE", "STATE", "HEALTH", "PORT", where, "RESTARTS", "UP", "MEMORY")
			for _, in := range list {
				health := "healthy"
				switch {
				case in.Retiring:
					health = "draining"
				case !in.Healthy && in.Health != "":
					health = "failing: " + in.Health
				case !in.Healthy:
					health = "not yet"
				}
				up := "-"
				if in.State == "running" {
					up = time.Since(in.StartedAt).Round(time.Second).String()
				}
				mem := "no limit"
				if in.Memory > 0 {
					mem = in.MemoryLimit
					if in.MemoryUsed > 0 {
						mem = fmt.Sprintf("%d MiB of %s", in.MemoryUsed>>20, in.MemoryLimit)
					}
					if !in.MemoryEnforced {
						mem = fmt.Sprintf("%d MiB NOT ENFORCED: %s", in.Memory>>20, in.MemoryLimit)
					}
				}
				state := string(in.State)
				if in.LastExit != "" && in.State != "running" {
					state += " (" + in.LastExit + ")"
				}
				at := strconv.Itoa(in.PID)
				if onNodes {
					at = in.Node
				}
				fmt.Fprintf(tw, "%s\tv%d\t%s\t%s\t%d\t%s\t%d\t%s\t%s\n", shortID(in.ID), in.Release, state, health, in.Port, at, in.Restarts, up, mem)
			}
			return tw.Flush()
		}),
	}
	e.addJSON(cmd)
	return cmd
}

func shortID(id string) string {
	if _, rest, ok := strings.Cut(id, "."); ok {
		return rest
	}
	return id
}

func (e *env) releasesCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "releases APP",
		Short: "List an app's releases, newest first",
		Args:  cobra.ExactArgs(1),
		RunE: e.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			rels, err := c.Releases(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if e.jsonOut {
				return e.printJSON(rels)
			}
			a, err := c.App(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			tw := e.table("VERSION", "STATUS", "CREATED", "BY", "SECRETS", "DESCRIPTION")
			for i, r := range rels {
				v := fmt.Sprintf("v%d", r.Version)
				if r.Version == a.Release {
					v += " *"
				}
				var before map[string]int // the release before r: next in the list, newest first
				if i+1 < len(rels) {
					before = rels[i+1].Secrets
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", v, r.Status, r.CreatedAt.Local().Format(time.DateTime), r.CreatedBy,
					secretChanges(before, r.Secrets), r.Description)
			}
			return tw.Flush()
		}),
	}
	e.addJSON(cmd)
	return cmd
}

// secretChanges names the secrets a release set (+), changed (~) or
// unset (-) from the release before it: names only, "-" for none.
func secretChanges(before, after map[string]int) string {
	var out []string
	for name, v := range after {
		switch old, ok := before[name]; {
		case !ok:
			out = append(out, "+"+name)
		case old != v:
			out = append(out, "~"+name)
		}
	}
	for name := range before {
		if _, ok := after[name]; !ok {
			out = append(out, "-"+name)
		}
	}
	if len(out) == 0 {
		return "-"
	}
	sort.Slice(out, func(i, j int) bool { return out[i][1:] < out[j][1:] })
	return strings.Join(out, " ")
}

func parseVersion(s string) (int, error) {
	n, err := strconv.Atoi(strings.TrimPrefix(s, "v"))
	if err != nil || n < 1 {
		return 0, fmt.Errorf("%q is not a release version: write it like v3", s)
	}
	return n, nil
}

func (e *env) rollbackCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "rollback APP VERSION",
		Short: "Roll out an earlier release's build and config as a new release",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := parseVersion(args[1])
			if err != nil {
				return err
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			rel, err := c.Rollback(cmd.Context(), args[0], v)
			if err != nil {
				return err
			}
			return e.waitRelease(cmd, c, rel)
		},
	}
}

// waitRelease waits for a release's rollout and says how it ended.
func (e *env) waitRelease(cmd *cobra.Command, c *client.Client, rel wire.Release) error {
	fmt.Fprintf(e.stderr, "Created v%d (%s); rolling out...\n", rel.Version, rel.Description)
	for rel.Status == wire.ReleasePending {
		var err error
		if rel, err = c.Release(cmd.Context(), rel.App, rel.Version, time.Minute); err != nil {
			return err
		}
		if a, err := c.App(cmd.Context(), rel.App); err == nil && a.Release > rel.Version {
			return fmt.Errorf("v%d was superseded by v%d", rel.Version, a.Release)
		}
	}
	if rel.Status == wire.ReleaseFailed {
		return fmt.Errorf("v%d failed: %s", rel.Version, rel.Reason)
	}
	fmt.Fprintf(e.stdout, "v%d of %s is live.\n", rel.Version, rel.App)
	return nil
}

func (e *env) configCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config APP",
		Short: "Show an app's config vars; set and unset them",
		Args:  cobra.ExactArgs(1),
		RunE: e.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			cfg, err := c.Config(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if e.jsonOut {
				return e.printJSON(cfg)
			}
			var keys []string
			for k := range cfg {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				fmt.Fprintf(e.stdout, "%s=%s\n", k, cfg[k])
			}
			return nil
		}),
	}
	e.addJSON(cmd)
	get := &cobra.Command{
		Use:   "get APP KEY",
		Short: "Print one config var's value",
		Args:  cobra.ExactArgs(2),
		RunE: e.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			cfg, err := c.Config(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			v, ok := cfg[args[1]]
			if !ok {
				return fmt.Errorf("%s has no config var %s", args[0], args[1])
			}
			fmt.Fprintln(e.stdout, v)
			return nil
		}),
	}
	set := &cobra.Command{
		Use:   "set APP KEY=VALUE...",
		Short: "Set config vars in a new release and roll it out",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			vars := map[string]*string{}
			var keys []string
			for _, a := range args[1:] {
				k, v, ok := strings.Cut(a, "=")
				if !ok {
					return fmt.Errorf("%q: write KEY=VALUE", a)
				}
				vars[k] = &v
				keys = append(keys, k)
			}
			for _, k := range keys {
				if looksLikeCredential(k) {
					fmt.Fprintf(e.stderr, "warning: %s looks like a credential, and config vars are plain settings any viewer of %s reads. "+
						"Keep it a secret instead (encrypted, shown only by an audited reveal): `paddock config unset %s %s`, then `%s`.\n",
						k, args[0], args[0], k, fmt.Sprintf(stdinForm, args[0], k))
				}
			}
			return e.changeConfig(cmd, args[0], vars)
		},
	}
	unset := &cobra.Command{
		Use:   "unset APP KEY...",
		Short: "Remove config vars in a new release and roll it out",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			vars := map[string]*string{}
			for _, k := range args[1:] {
				vars[k] = nil
			}
			return e.changeConfig(cmd, args[0], vars)
		},
	}
	cmd.AddCommand(get, set, unset)
	return cmd
}

func (e *env) changeConfig(cmd *cobra.Command, app string, vars map[string]*string) error {
	c, err := e.client()
	if err != nil {
		return err
	}
	rel, err := c.SetConfig(cmd.Context(), app, vars)
	if err != nil {
		return err
	}
	return e.waitRelease(cmd, c, rel)
}

func (e *env) eventsCmd() *cobra.Command {
	var since string
	var follow bool
	cmd := &cobra.Command{
		Use:   "events [APP]",
		Short: "The platform's events: deploys, starts, exits, health, scales, config and secret changes, backups",
		Long: `Events of one app, or of every app you may read (without APP, and
without --follow), oldest first.`,
		Args: cobra.MaximumNArgs(1),
		RunE: e.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			var apps []string
			if len(args) == 1 {
				apps = args
			} else {
				if follow {
					return errors.New("--follow follows one app: paddock events APP -f")
				}
				list, err := c.Apps(cmd.Context())
				if err != nil {
					return err
				}
				for _, a := range list {
					apps = append(apps, a.Name)
				}
			}
			var all []wire.Event
			for _, app := range apps {
				err := c.Events(cmd.Context(), app, since, follow, func(ev wire.Event) {
					if follow {
						e.printEvent(ev)
					} else {
						all = append(all, ev)
					}
				})
				if err != nil {
					return err
				}
			}
			slices.SortStableFunc(all, func(a, b wire.Event) int { return a.Time.Compare(b.Time) })
			for _, ev := range all {
				e.printEvent(ev)
			}
			return nil
		}),
	}
	cmd.Flags().StringVar(&since, "since", "", "only events since this long ago (1h, 7d) or this time (RFC 3339)")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new events")
	e.addJSON(cmd)
	return cmd
}

func (e *env) printEvent(ev wire.Event) {
	if e.jsonOut {
		e.printJSON(ev)
		return
	}
	who := ev.App
	if ev.Instance != "" {
		who = ev.Instance
	}
	fmt.Fprintf(e.stdout, "%s %s: %s\n", ev.Time.Local().Format("2006-01-02T15:04:05.000"), who, ev.Message)
}

func (e *env) logsCmd() *cobra.Command {
	var q client.LogQuery
	cmd := &cobra.Command{
		Use:   "logs APP",
		Short: "Show an app's output, build output and platform events in time order",
		Args:  cobra.ExactArgs(1),
		RunE: e.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			return c.Logs(cmd.Context(), args[0], q, func(l wire.LogLine) {
				if e.jsonOut {
					e.printJSON(l)
					return
				}
				fmt.Fprintf(e.stdout, "%s %s: %s\n", l.Time.Local().Format("2006-01-02T15:04:05.000"), l.Source, l.Text)
			})
		}),
	}
	f := cmd.Flags()
	f.BoolVarP(&q.Follow, "follow", "f", false, "keep printing new lines")
	f.StringVar(&q.Process, "process", "", "only this process type's output")
	f.StringVar(&q.Since, "since", "", "only lines since this long ago (10m, 1d) or this time (RFC 3339)")
	f.IntVarP(&q.Tail, "num", "n", 100, "the last N lines (0: all)")
	f.StringVar(&q.Grep, "grep", "", "only lines that match this regular expression (RE2 syntax); -n counts matching lines")
	e.addJSON(cmd)
	return cmd
}
