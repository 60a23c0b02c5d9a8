package main

import (
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"time"

	"uvs/bench/floodmeasure"
	"uvs/bench/report"
)

// halfOpen is how long UVS keeps an entry in SYN_RECV (conntrack's
// timeout table, as IPVS): the lifetime of a forged SYN's entry.
const halfOpen = 60 * time.Second

// defaultCapacity is `director run`'s default --capacity.
const defaultCapacity = 1 << 20

type floodReport struct {
	machine report.Machine
	date    time.Time
	command string
	cfg     *config
	results []*result
	total   time.Duration
}

func (rp *floodReport) markdown(w io.Writer) {
	c := rp.cfg
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	p("# SYN flood from forged sources — %s\n\n", rp.date.Format("2006-01-02 15:04:05"))
	p("%d cores, %s, %s. `%s`", rp.machine.Cores, rp.machine.CPU, rp.machine.Kernel, rp.command)
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		p(" (load average at the start: %s; the machine is shared)", strings.Join(strings.Fields(string(b))[:3], " "))
	}
	p(". Total time %v.\n\n", rp.total)
	rate := "unpaced (as fast as the machine sends)"
	if c.Rate > 0 {
		rate = fmt.Sprintf("paced at %.0f SYN/s", c.Rate)
	}
	capText := fmt.Sprintf("the director's default --capacity (%d)", defaultCapacity)
	if c.capacity > 0 {
		capText = fmt.Sprintf("`director run --capacity %d`", c.capacity)
	}
	p("- **Flood:** TCP SYNs to %s:80 from sources drawn at random from %s (random ports and sequence numbers), "+
		"%s, for %v (at most %d SYNs), from %d AF_PACKET socket(s) on the client's eth0 straight to the director's MAC (`bench/synflood`). "+
		"The real servers answer them; the director routes those SYN-ACKs back through the client, which drops them.\n",
		"198.18.0.1", c.Sources, rate, c.Duration, c.Count, c.Senders)
	p("- **UVS:** %s; the director built from %s.\n", capText, c.built)
	p("- **Legitimate clients** (from the client's own address, for the whole measurement: %v before the flood, the flood, and after it): "+
		"%d established keep-alive connections, each a request every %v (a connection that errs, is reset or waits %v for an answer is dead); "+
		"%.0f new connections per second, one request each, %v timeout. All fetch a 612-byte file from nginx.\n",
		c.Pre, c.Keepalive, c.KAInterval, c.KATimeout, c.NewRate, c.NewTimeout)
	p("- **Recovery** is the time from the end of the flood to the first of %d new connections in a row that all succeed (measured up to %v after the flood).\n\n", floodmeasure.RecoveryRun, c.After)

	p("| path | SYNs sent | flood ÷ table capacity per half-open lifetime (60 s) | new connections served during the flood | after the flood | recovery | keep-alive connections surviving | table before / peak / end of flood / +10 s | balancer RSS before / peak / +10 s |\n")
	p("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rp.results {
		if r.Err != "" {
			p("| %s | **failed** | | | | | | | |\n", r.label)
			continue
		}
		ratio := "n/a"
		if strings.HasPrefix(r.path, "uvs-") {
			capa := c.capacity
			if capa == 0 {
				capa = defaultCapacity
			}
			ratio = fmt.Sprintf("%.1f ×", r.Flood.Rate()*halfOpen.Seconds()/float64(capa))
		}
		p("| %s | %d (%.0f/s) | %s | %s | %s | %s | %d / %d | %s | %s |\n",
			r.label, r.Flood.Sent, r.Flood.Rate(), ratio, floodmeasure.Pct(r.During), floodmeasure.Pct(r.Post), r.RecoveryText(),
			r.KASurvived, r.KATotal, tableText(r), rssText(r))
	}
	p("\n")
	for _, r := range rp.results {
		rp.detail(w, r)
	}
}

func tableText(r *result) string {
	v := func(s floodmeasure.Snapshot) string {
		if !s.TableOK {
			return "?"
		}
		return fmt.Sprint(s.Table)
	}
	after := "?"
	if r.HasAfter10 {
		after = v(r.After10)
	}
	return fmt.Sprintf("%s / %d / %s / %s", v(r.Before), r.PeakTable, v(r.AtEnd), after)
}

func mb(kb int64) string { return fmt.Sprintf("%.0f MB", float64(kb)/1024) }

func rssText(r *result) string {
	if !r.Before.RSSOK {
		return "n/a (kernel)"
	}
	after := "?"
	if r.HasAfter10 && r.After10.RSSOK {
		after = mb(r.After10.RSS)
	}
	return fmt.Sprintf("%s / %s (VmHWM %s) / %s", mb(r.Before.RSS), mb(r.PeakRSS), mb(r.Final.HWM), after)
}

// delta is what each drop counter added from a to b.
func delta(a, b floodmeasure.Snapshot) map[string]float64 {
	out := map[string]float64{}
	for k, v := range b.Drops {
		if d := v - a.Drops[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

func (rp *floodReport) detail(w io.Writer, r *result) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	p("## %s\n\n", r.label)
	if r.Err != "" {
		p("Failed: `%s`\n\n", strings.ReplaceAll(firstLines(r.Err, 8), "`", "'"))
		return
	}
	p("- Flood: %d SYNs sent in %.1f s (%.0f/s)", r.Flood.Sent, r.Flood.Elapsed.Seconds(), r.Flood.Rate())
	if r.Flood.Refused > 0 {
		p(", %d refused by the client's socket", r.Flood.Refused)
	}
	if r.FloodErr != "" {
		p("; error: %s", r.FloodErr)
	}
	p(".\n")
	p("- New connections: before the flood %s, during %s, after %s; recovery %s", floodmeasure.Pct(r.Pre), floodmeasure.Pct(r.During), floodmeasure.Pct(r.Post), r.RecoveryText())
	if r.LastFail >= 0 {
		p(", last failure %.1f s after the flood", r.LastFail.Seconds())
	}
	p(".")
	if len(r.ErrKinds) > 0 {
		var ks []string
		for k, n := range r.ErrKinds {
			ks = append(ks, fmt.Sprintf("%s %d", k, n))
		}
		slices.Sort(ks)
		p(" Failures from the flood's start on: %s.", strings.Join(ks, ", "))
	}
	p("\n")
	var maxLat time.Duration
	for _, k := range r.KA {
		maxLat = max(maxLat, k.MaxLat)
	}
	p("- Keep-alive: %d of %d connections served every request (%d requests served in all; slowest answer on a surviving connection %v).", r.KASurvived, r.KATotal, r.KAServed, maxLat.Round(time.Millisecond))
	var dead []string
	for i, k := range r.KA {
		if k.Err != "" {
			dead = append(dead, fmt.Sprintf("#%d at %+.1f s (%s)", i+1, k.EndedAt.Sub(r.FloodStart).Seconds(), floodmeasure.ErrKind(k.Err)))
		}
	}
	if len(dead) > 0 {
		p(" Died (time from the flood's start): %s.", strings.Join(dead, ", "))
	}
	p("\n")
	p("- %s: before %s, peak %d, end of flood %s, 10 s after %s, at the end %s.\n", r.TableName, tableOr(r.Before), r.PeakTable, tableOr(r.AtEnd), tableOr(r.After10), tableOr(r.Final))
	if r.Before.RSSOK {
		p("- Balancer memory (VmRSS): before %s, sampled peak %s, VmHWM %s, 10 s after %s, at the end %s.\n", mb(r.Before.RSS), mb(r.PeakRSS), mb(r.Final.HWM), mb(r.After10.RSS), mb(r.Final.RSS))
	}
	during, all := delta(r.Before, r.AtEnd), delta(r.Before, r.Final)
	if len(all) > 0 {
		var keys []string
		for k := range all {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		p("\n| drops by reason | during the flood | flood start to end of measurement |\n|---|---:|---:|\n")
		for _, k := range keys {
			p("| %s | %.0f | %.0f |\n", k, during[k], all[k])
		}
	} else {
		p("- No drops counted.\n")
	}
	rp.timeline(w, r)
	p("\n")
}

func tableOr(s floodmeasure.Snapshot) string {
	if !s.TableOK {
		return "?"
	}
	return fmt.Sprint(s.Table)
}

// timeline is the run in 5-second steps from the flood's start.
func (rp *floodReport) timeline(w io.Writer, r *result) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	const step = 5 * time.Second
	// The two drop reasons that grew most, as columns.
	all := delta(r.Before, r.Final)
	var reasons []string
	for k := range all {
		reasons = append(reasons, k)
	}
	slices.SortFunc(reasons, func(a, b string) int {
		if all[a] != all[b] {
			if all[a] > all[b] {
				return -1
			}
			return 1
		}
		return strings.Compare(a, b)
	})
	if len(reasons) > 2 {
		reasons = reasons[:2]
	}
	p("\n<details><summary>timeline (5 s steps; t from the flood's start, which lasted %.1f s)</summary>\n\n", r.FloodEnd.Sub(r.FloodStart).Seconds())
	p("| t (s) | new connections served | %s (last) | RSS (last) |", r.TableName)
	for _, k := range reasons {
		p(" %s (added) |", k)
	}
	p("\n|---:|---:|---:|---:|")
	for range reasons {
		p("---:|")
	}
	p("\n")
	first := -int(math.Floor(float64(r.FloodStart.Sub(r.Start)) / float64(step)))
	last := int(math.Ceil(float64(r.End.Sub(r.FloodStart)) / float64(step)))
	prev := r.Before
	if len(r.Samples) > 0 {
		prev = r.Samples[0]
	}
	for i := first; i < last; i++ {
		from := r.FloodStart.Add(time.Duration(i) * step)
		to := from.Add(step)
		var nc floodmeasure.Ratio
		for _, a := range r.Attempts {
			if !a.Start.Before(from) && a.Start.Before(to) {
				nc.Total++
				if a.Err == "" {
					nc.OK++
				}
			}
		}
		var cur *floodmeasure.Snapshot
		for j := range r.Samples {
			s := &r.Samples[j]
			if !s.At.Before(from) && s.At.Before(to) {
				cur = s
			}
		}
		tbl, rss := "", ""
		if cur != nil {
			tbl = tableOr(*cur)
			if cur.RSSOK {
				rss = mb(cur.RSS)
			}
		}
		p("| %+d | %d/%d | %s | %s |", i*int(step/time.Second), nc.OK, nc.Total, tbl, rss)
		for _, k := range reasons {
			if cur != nil && cur.Drops != nil && prev.Drops != nil {
				p(" %.0f |", cur.Drops[k]-prev.Drops[k])
			} else {
				p(" |")
			}
		}
		p("\n")
		if cur != nil && cur.Drops != nil {
			prev = *cur
		}
	}
	p("\n</details>\n")
}

func firstLines(s string, n int) string {
	ls := strings.Split(s, "\n")
	if len(ls) > n {
		ls = ls[:n]
	}
	return strings.Join(ls, " ")
}
