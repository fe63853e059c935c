package cli

import (
	"fmt"
	"strings"
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
		Long: `The platform raises alerts on its own, by built-in rules on from the start
(see ` + "`paddock alerts rules`" + `): an instance in a crash loop, an app with no
healthy web instance, memory near its limit, a volume nearly full, a failed
backup, more than 5% of 5xx answers or a 95th percentile over a second in the
last five minutes, a certificate that expires within 14 days. Rules of your
own watch an app's metrics:

  paddock alerts add shop --when "p95 > 500ms" --for 5m
  paddock alerts add shop --when "error_rate > 2%"
  paddock alerts add shop --when "requests < 1" --for 10m

METRIC is one of requests, errors (per second), error_rate, p50, p95, p99,
cpu (cores, or % of one), memory (all the app's instances); a rule holds
while the metric's value over the last minute is past its threshold.

Each alert fires once and resolves once, as an event of its app and a POST
to every webhook, signed: X-Paddock-Signature is "sha256=" and the hex
HMAC-SHA256, under the webhook's secret, of X-Paddock-Timestamp, a dot and
the body.`,
		Args: cobra.NoArgs,
		RunE: e.withClient(list),
	}
	e.addJSON(cmd)
	ls := &cobra.Command{Use: "list", Short: "List the alerts firing now", Args: cobra.NoArgs, RunE: e.withClient(list)}
	e.addJSON(ls)
	var hook, when string
	var holdFor time.Duration
	add := &cobra.Command{
		Use:   "add APP --when CONDITION [--for D] | add --webhook URL",
		Short: "Set a rule on an app's metrics, or send alerts to a webhook too (admins; prints its secret once)",
		Args:  cobra.MaximumNArgs(1),
		RunE: e.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			switch {
			case hook != "" && (when != "" || len(args) > 0):
				return fmt.Errorf("add a rule (paddock alerts add APP --when …) or a webhook (paddock alerts add --webhook URL), one at a time")
			case hook != "":
				w, err := c.AddWebhook(cmd.Context(), hook)
				if err != nil {
					return err
				}
				fmt.Fprintf(e.stderr, "Alerts go to %s (%s) too. Its signing secret, shown this once, is on standard output.\n", w.URL, w.ID)
				fmt.Fprintln(e.stdout, w.Secret)
				return nil
			case when == "" || len(args) == 0:
				return fmt.Errorf("give the app and the rule's condition, e.g. paddock alerts add shop --when \"p95 > 500ms\" --for 5m; or a webhook: paddock alerts add --webhook https://…")
			}
			r, err := c.AddAlertRule(cmd.Context(), args[0], when, holdFor)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "Added %s on %s: alert when %s for %s.\n", r.ID, r.App, r.When, r.For)
			return nil
		}),
	}
	add.Flags().StringVar(&hook, "webhook", "", "the URL to POST alerts to")
	add.Flags().StringVar(&when, "when", "", `the rule's condition: "METRIC > THRESHOLD" or "METRIC < THRESHOLD"`)
	add.Flags().DurationVar(&holdFor, "for", time.Minute, "how long the condition holds before the alert fires")
	remove := &cobra.Command{
		Use:   "remove APP RULE | remove WEBHOOK",
		Short: "Remove a rule set on an app, or stop sending alerts to a webhook (admins)",
		Args:  cobra.RangeArgs(1, 2),
		RunE: e.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			if len(args) == 2 {
				return c.RemoveAlertRule(cmd.Context(), args[0], args[1])
			}
			if strings.HasPrefix(args[0], "rule-") {
				return fmt.Errorf("a rule is removed with its app: paddock alerts remove APP %s", args[0])
			}
			return c.RemoveWebhook(cmd.Context(), args[0])
		}),
	}
	rules := &cobra.Command{
		Use:   "rules [APP]",
		Short: "List the built-in rules and those set on apps",
		Args:  cobra.MaximumNArgs(1),
		RunE: e.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			app := ""
			if len(args) == 1 {
				app = args[0]
			}
			rs, err := c.AlertRules(cmd.Context(), app)
			if err != nil {
				return err
			}
			if e.jsonOut {
				return e.printJSON(rs)
			}
			tw := e.table("ID", "APP", "FOR", "WHEN")
			for _, r := range rs {
				a, d := r.App, r.For.String()
				if r.Builtin {
					a, d = "(every app)", "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.ID, a, d, r.When)
			}
			return tw.Flush()
		}),
	}
	e.addJSON(rules)
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
	cmd.AddCommand(ls, add, remove, rules, webhooks)
	return cmd
}
