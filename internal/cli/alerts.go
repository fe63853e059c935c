package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"paddock.dev/paddock/internal/client"
)

func (e *env) alertsCmd() *cobra.Command {
	list := func(cmd *cobra.Command, c *client.Client, _ []string) error {
		as, err := c.Alerts(cmd.Context())
		if err != nil {
			return err
		}
		if e.jsonOut {
			return e.printJSON(as)
		}
		tw := e.table("RULE", "APP", "SUBJECT", "SINCE", "MESSAGE")
		for _, a := range as {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", a.Rule, a.App, a.Subject, a.Since.Local().Format(time.DateTime), a.Message)
		}
		return tw.Flush()
	}
	cmd := &cobra.Command{
		Use:   "alerts",
		Short: "Alerts firing now, and the webhooks they are sent to",
		Long: `The platform raises alerts on its own: an instance in a crash loop, an app
with no healthy web instance, memory near its limit, a volume nearly full, a
failed backup, more than 5% of 5xx answers or a 95th percentile over a
second in the last five minutes. Each fires once and resolves once, as an event of its app and
a POST to every webhook, signed: X-Paddock-Signature is "sha256=" and the hex
HMAC-SHA256, under the webhook's secret, of X-Paddock-Timestamp, a dot and
the body.`,
		Args: cobra.NoArgs,
		RunE: e.withClient(list),
	}
	e.addJSON(cmd)
	ls := &cobra.Command{Use: "list", Short: "List the alerts firing now", Args: cobra.NoArgs, RunE: e.withClient(list)}
	e.addJSON(ls)
	var hook string
	add := &cobra.Command{
		Use:   "add --webhook URL",
		Short: "Send alerts to a webhook too (admins); prints its secret once",
		Args:  cobra.NoArgs,
		RunE: e.withClient(func(cmd *cobra.Command, c *client.Client, _ []string) error {
			if hook == "" {
				return fmt.Errorf("give the webhook: paddock alerts add --webhook https://…")
			}
			w, err := c.AddWebhook(cmd.Context(), hook)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stderr, "Alerts go to %s (%s) too. Its signing secret, shown this once, is on standard output.\n", w.URL, w.ID)
			fmt.Fprintln(e.stdout, w.Secret)
			return nil
		}),
	}
	add.Flags().StringVar(&hook, "webhook", "", "the URL to POST alerts to")
	remove := &cobra.Command{
		Use:   "remove ID",
		Short: "Stop sending alerts to a webhook (admins)",
		Args:  cobra.ExactArgs(1),
		RunE: e.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			return c.RemoveWebhook(cmd.Context(), args[0])
		}),
	}
	webhooks := &cobra.Command{
		Use:   "webhooks",
		Short: "List the webhooks alerts go to (admins)",
		Args:  cobra.NoArgs,
		RunE: e.withClient(func(cmd *cobra.Command, c *client.Client, _ []string) error {
			ws, err := c.Webhooks(cmd.Context())
			if err != nil {
				return err
			}
			if e.jsonOut {
				return e.printJSON(ws)
			}
			tw := e.table("ID", "URL", "CREATED")
			for _, w := range ws {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", w.ID, w.URL, w.CreatedAt.Local().Format(time.DateTime))
			}
			return tw.Flush()
		}),
	}
	e.addJSON(webhooks)
	cmd.AddCommand(ls, add, remove, webhooks)
	return cmd
}
