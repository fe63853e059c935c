package dashboard

import (
	"math"
	"strconv"
	"strings"
)

// chart is an SVG line chart drawn on the server: the template writes its
// paths, made only of numbers formatted here.
type chart struct {
	Title   string // what it shows, for the label
	W, H    int
	Lines   []chartLine
	Summary string // last and highest values, as text beside the chart
	Empty   bool   // nothing known over the range
	From    string // the time axis's left end, like "1 hour ago"; "" for none
}

type chartLine struct {
	Name  string
	Class string // a CSS class for its colour
	D     string // the path: M/L commands in the chart's coordinates
}

// series is one named column of a metrics answer.
type series struct {
	name, class string
	points      []*float64
}

// maxChartPoints bounds what a chart draws: a day of 10 s points is
// averaged down to this many.
const maxChartPoints = 240

// lineChart draws series on a common scale from 0 to their highest value;
// a missing point breaks the line.
func lineChart(title string, w, h int, format func(float64) string, ss ...series) chart {
	c := chart{Title: title, W: w, H: h}
	hi, last, lastOK := 0.0, 0.0, false
	reduced := make([][]*float64, len(ss))
	for i, s := range ss {
		reduced[i] = downsample(s.points, maxChartPoints)
		for _, p := range reduced[i] {
			if p != nil && *p > hi {
				hi = *p
			}
		}
	}
	any := false
	for i, s := range ss {
		pts := reduced[i]
		var d strings.Builder
		pen := false
		n := len(pts)
		for j, p := range pts {
			if p == nil || math.IsNaN(*p) || math.IsInf(*p, 0) {
				pen = false
				continue
			}
			any = true
			if i == 0 {
				last, lastOK = *p, true
			}
			x := 0.0
			if n > 1 {
				x = float64(j) * float64(w) / float64(n-1)
			}
			y := float64(h) - 1
			if hi > 0 {
				y = float64(h) - 1 - (*p/hi)*float64(h-2)
			}
			if pen {
				d.WriteString(" L")
			} else {
				if d.Len() > 0 {
					d.WriteByte(' ')
				}
				d.WriteString("M")
			}
			d.WriteString(num(x))
			d.WriteByte(' ')
			d.WriteString(num(y))
			pen = true
		}
		c.Lines = append(c.Lines, chartLine{Name: s.name, Class: s.class, D: d.String()})
	}
	c.Empty = !any
	if any {
		c.Summary = "max " + format(hi)
		if lastOK {
			c.Summary = "now " + format(last) + ", " + c.Summary
		}
	} else {
		c.Summary = "no data yet"
	}
	return c
}

// downsample averages pts into at most n buckets; a bucket with no value
// stays missing.
func downsample(pts []*float64, n int) []*float64 {
	if len(pts) <= n {
		return pts
	}
	out := make([]*float64, n)
	for b := range n {
		lo, hi := b*len(pts)/n, (b+1)*len(pts)/n
		sum, k := 0.0, 0
		for _, p := range pts[lo:hi] {
			if p != nil {
				sum += *p
				k++
			}
		}
		if k > 0 {
			v := sum / float64(k)
			out[b] = &v
		}
	}
	return out
}

func num(f float64) string { return strconv.FormatFloat(math.Round(f*10)/10, 'f', -1, 64) }

// Formats of chart values.
func perSecond(v float64) string { return short(v) + "/s" }
func seconds(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v < 1:
		return short(v*1000) + " ms"
	}
	return short(v) + " s"
}
func cores(v float64) string { return short(v) + " cores" }
func bytesText(v float64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	i := 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	return short(v) + " " + units[i]
}

// short writes v with about three significant digits.
func short(v float64) string {
	switch {
	case v == 0:
		return "0"
	case math.Abs(v) >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case math.Abs(v) >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}
