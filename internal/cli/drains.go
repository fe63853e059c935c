package cli

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"paddock.dev/paddock/internal/client"
)

func (e *env) drainsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "drains APP",
		Short: "Where an app's log lines are forwarded: syslog over TCP or TLS, or HTTPS",
		Long: `A drain forwards an app's output as it is written: to syslog://HOST:PORT or
syslog+tls://HOST:PORT as RFC 5424 messages (octet-counted), or to
https://HOST/PATH as JSON batches. A drain that cannot send backs off and
takes up where it stopped; the lines wait in the app's log files meanwhile,
and the app never waits. SENT and DROPPED count since the server started.`,
		Args: cobra.ExactArgs(1),
		RunE: e.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			ds, err := c.Drains(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if e.jsonOut {
				return e.printJSON(ds)
			}
			tw := e.table("ID", "URL", "SENT", "DROPPED", "FAILING SINCE", "LAST ERROR")
			for _, d := range ds {
				failing := "-"
				if !d.FailingSince.IsZero() {
					failing = d.FailingSince.Local().Format(time.DateTime)
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\n", d.ID, d.URL, d.Sent, d.Dropped, failing, d.LastError)
			}
			return tw.Flush()
		}),
	}
	e.addJSON(cmd)
	var caFile string
	add := &cobra.Command{
		Use:   "add APP URL [--ca FILE]",
		Short: "Forward an app's log lines to a URL",
		Args:  cobra.ExactArgs(2),
		RunE: e.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			var ca []byte
			if caFile != "" {
				var err error
				if ca, err = os.ReadFile(caFile); err != nil {
					return err
				}
			}
			d, err := c.AddDrain(cmd.Context(), args[0], args[1], string(ca))
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stderr, "The log lines of %s go to %s too (%s).\n", d.App, d.URL, d.ID)
			return nil
		}),
	}
	add.Flags().StringVar(&caFile, "ca", "", "PEM certificates to trust beside the system's, for a receiver with a private CA")
	remove := &cobra.Command{
		Use:   "remove APP ID",
		Short: "Stop forwarding to a drain",
		Args:  cobra.ExactArgs(2),
		RunE: e.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			return c.RemoveDrain(cmd.Context(), args[0], args[1])
		}),
	}
	cmd.AddCommand(add, remove)
	return cmd
}
