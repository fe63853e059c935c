package cli

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"paddock.dev/paddock/internal/client"
)

func (e *env) appsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "apps",
		Short: "List apps; create, inspect and destroy them",
		Args:  cobra.NoArgs,
		RunE: e.withClient(func(cmd *cobra.Command, c *client.Client, _ []string) error {
			apps, err := c.Apps(cmd.Context())
			if err != nil {
				return err
			}
			if e.jsonOut {
				return e.printJSON(apps)
			}
			tw := e.table("NAME", "RELEASE", "CREATED")
			for _, a := range apps {
				rel := "-"
				if a.Release > 0 {
					rel = fmt.Sprintf("v%d", a.Release)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\n", a.Name, rel, a.CreatedAt.Local().Format(time.DateTime))
			}
			return tw.Flush()
		}),
	}
	e.addJSON(cmd)

	var place map[string]string
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create an app",
		Long: `Create an app.

With --place, the app's instances run only on nodes with those labels
(Kubernetes node labels, e.g. --place topology.kubernetes.io/region=eu-west):
a requirement, never a preference. It needs --runtime kubernetes.`,
		Args: cobra.ExactArgs(1),
		RunE: e.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			a, err := c.CreateApp(cmd.Context(), args[0], place)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "Created %s. Deploy it with `paddock deploy DIR --app %s`.\n", a.Name, a.Name)
			return nil
		}),
	}
	info := &cobra.Command{
		Use:   "info NAME",
		Short: "Show an app's release, processes and domains",
		Args:  cobra.ExactArgs(1),
		RunE: e.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			a, err := c.App(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if e.jsonOut {
				return e.printJSON(a)
			}
			fmt.Fprintf(e.stdout, "name:      %s\nurl:       %s\n", a.Name, a.URL)
			if a.Current != nil {
				fmt.Fprintf(e.stdout, "release:   v%d (%s) %s\n", a.Current.Version, a.Current.Status, a.Current.Description)
			} else {
				fmt.Fprintln(e.stdout, "release:   none yet")
			}
			var procs []string
			for p, n := range a.Processes {
				procs = append(procs, fmt.Sprintf("%s=%d", p, n))
			}
			sort.Strings(procs)
			fmt.Fprintf(e.stdout, "processes: %s\n", strings.Join(procs, " "))
			if len(a.Placement) > 0 {
				var labels []string
				for k, v := range a.Placement {
					labels = append(labels, k+"="+v)
				}
				sort.Strings(labels)
				fmt.Fprintf(e.stdout, "placement: %s\n", strings.Join(labels, " "))
			}
			if len(a.Nodes) > 0 {
				fmt.Fprintf(e.stdout, "nodes:     %s\n", strings.Join(a.Nodes, " "))
			}
			for _, d := range a.Domains {
				fmt.Fprintf(e.stdout, "domain:    %s\n", d.Host)
			}
			return nil
		}),
	}
	create.Flags().StringToStringVar(&place, "place", nil, "run only on nodes with this label, KEY=VALUE (repeat for more)")
	e.addJSON(info)
	var yes bool
	destroy := &cobra.Command{
		Use:   "destroy NAME",
		Short: "Destroy an app, its releases and instances",
		Args:  cobra.ExactArgs(1),
		RunE: e.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			if err := e.confirm(yes, "destroy app "+args[0]+" with its releases and instances", args[0]); err != nil {
				return err
			}
			if err := c.DestroyApp(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "Destroyed %s.\n", args[0])
			return nil
		}),
	}
	destroy.Flags().BoolVar(&yes, "yes", false, "do not ask for confirmation")
	cmd.AddCommand(create, info, destroy, e.grantCmd())
	return cmd
}

func (e *env) domainsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "domains APP",
		Short: "List an app's custom domains; add and remove them",
		Args:  cobra.ExactArgs(1),
		RunE: e.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			ds, err := c.Domains(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if e.jsonOut {
				return e.printJSON(ds)
			}
			tw := e.table("HOST", "ADDED")
			for _, d := range ds {
				fmt.Fprintf(tw, "%s\t%s\n", d.Host, d.CreatedAt.Local().Format(time.DateTime))
			}
			return tw.Flush()
		}),
	}
	e.addJSON(cmd)
	add := &cobra.Command{
		Use:   "add APP HOST",
		Short: "Route a host name to an app",
		Args:  cobra.ExactArgs(2),
		RunE: e.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			d, err := c.AddDomain(cmd.Context(), args[0], args[1])
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "Routing %s to %s.\n", d.Host, d.App)
			return nil
		}),
	}
	remove := &cobra.Command{
		Use:   "remove APP HOST",
		Short: "Stop routing a host name to an app",
		Args:  cobra.ExactArgs(2),
		RunE: e.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			if err := c.RemoveDomain(cmd.Context(), args[0], args[1]); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "No longer routing %s.\n", args[1])
			return nil
		}),
	}
	cmd.AddCommand(add, remove)
	return cmd
}
