package cli

import (
	"fmt"
	"math"
	"strings"

	"github.com/spf13/cobra"

	"paddock.dev/paddock/internal/client"
)

func (e *env) metricsCmd() *cobra.Command {
	var since string
	var width int
	cmd := &cobra.Command{
		Use:   "metrics APP [--since 1h]",
		Short: "An app's request rate, errors, latency, CPU and memory, as small charts",
		Long: `The platform keeps a point every 10 seconds for a day of each app's request
and error rates and latency percentiles (through the router), and of the CPU
and memory of its instances. --json gives the series.`,
		Args: cobra.ExactArgs(1),
		RunE: e.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			m, err := c.Metrics(cmd.Context(), args[0], since)
			if err != nil {
				return err
			}
			if e.jsonOut {
				return e.printJSON(m)
			}
			fmt.Fprintf(e.stdout, "%s since %s, a point every %ds\n", m.App, m.Start.Local().Format("2006-01-02 15:04:05"), m.Step)
			for _, s := range []struct{ name, title, unit string }{
				{"requests_per_second", "requests", "/s"},
				{"errors_per_second", "5xx", "/s"},
				{"p50_seconds", "p50", "s"},
				{"p95_seconds", "p95", "s"},
				{"p99_seconds", "p99", "s"},
				{"cpu_cores", "cpu", " cores"},
				{"memory_bytes", "memory", "B"},
			} {
				fmt.Fprintln(e.stdout, chart(s.title, s.unit, m.Series[s.name], width))
			}
			return nil
		}),
	}
	cmd.Flags().StringVar(&since, "since", "1h", "how far back, up to 30d: a point every 10s for up to 24h, every 5 minutes beyond")
	cmd.Flags().IntVar(&width, "width", 60, "columns of each chart")
	e.addJSON(cmd)
	return cmd
}

// chart draws a series as one line of block characters, each column the
// mean of its points, with the last value and the range.
func chart(title, unit string, pts []*float64, width int) string {
	width = max(width, 10)
	cols := make([]float64, 0, width)
	per := max(1, (len(pts)+width-1)/width)
	lo, hi, last := math.Inf(1), math.Inf(-1), math.NaN()
	for i := 0; i < len(pts); i += per {
		sum, n := 0.0, 0
		for _, p := range pts[i:min(i+per, len(pts))] {
			if p != nil {
				sum += *p
				n++
				last = *p
			}
		}
		v := math.NaN()
		if n > 0 {
			v = sum / float64(n)
			lo, hi = min(lo, v), max(hi, v)
		}
		cols = append(cols, v)
	}
	const blocks = "▁▂▃▄▅▆▇█"
	levels := []rune(blocks)
	var b strings.Builder
	for _, v := range cols {
		switch {
		case math.IsNaN(v):
			b.WriteRune(' ')
		case hi == lo:
			b.WriteRune(levels[0])
		default:
			b.WriteRune(levels[int((v-lo)/(hi-lo)*float64(len(levels)-1))])
		}
	}
	if math.IsInf(lo, 1) {
		return fmt.Sprintf("%-8s %s  no data", title, b.String())
	}
	return fmt.Sprintf("%-8s %s  last %s%s (%s–%s)", title, b.String(), short(last), unit, short(lo), short(hi))
}

// short writes a value with a few significant digits and an SI prefix.
func short(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	for _, u := range []struct {
		f float64
		s string
	}{{1e9, "G"}, {1e6, "M"}, {1e3, "k"}} {
		if math.Abs(v) >= u.f {
			return fmt.Sprintf("%.3g%s", v/u.f, u.s)
		}
	}
	if v != 0 && math.Abs(v) < 0.01 {
		return fmt.Sprintf("%.2gm", v*1000)
	}
	return fmt.Sprintf("%.3g", v)
}
