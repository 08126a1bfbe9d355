package main

import (
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/blockrep/blockrep/api"
)

// writeTable renders a status for people: a node line, one row per volume,
// then one row per connected client. now dates the client ages.
func writeTable(w io.Writer, st api.Status, now time.Time) error {
	fmt.Fprintf(w, "node %s  id %s  version %s  up %s\n\n", st.Node, st.NodeID, st.Version, humanDuration(st.Uptime()))

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSIZE\tRO\tTLS\tCLIENTS\tPATH")
	nclients := 0
	for _, v := range st.Volumes {
		nclients += len(v.Clients)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", v.Name, humanSize(v.Size), yesNo(v.ReadOnly), v.TLS, len(v.Clients), v.Path)
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	if nclients == 0 {
		_, err := fmt.Fprintln(w, "\nno clients connected")
		return err
	}
	fmt.Fprintln(w)
	fmt.Fprintln(tw, "ID\tVOLUME\tREMOTE\tTLS\tSINCE\tREADS\tWRITES\tBYTES R/W")
	for _, v := range st.Volumes {
		for _, c := range v.Clients {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s ago\t%d\t%d\t%s/%s\n",
				c.ID, v.Name, c.Remote, yesNo(c.TLS), humanDuration(now.Sub(c.Since)),
				c.Reads, c.Writes, humanSize(int64(c.BytesRead)), humanSize(int64(c.BytesWritten)))
		}
	}
	return tw.Flush()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// humanSize renders bytes with binary units: exact values without a
// fraction ("1GiB"), others with one decimal ("1.5GiB"), small ones in bytes.
func humanSize(n int64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	k := 0
	for k+1 < len(units) && n>>(10*(k+1)) > 0 {
		k++
	}
	div := int64(1) << (10 * k)
	if n%div == 0 {
		return strconv.FormatInt(n/div, 10) + units[k]
	}
	return strconv.FormatFloat(float64(n)/float64(div), 'f', 1, 64) + units[k]
}

// humanDuration renders an age with its two largest units: "45s", "3m12s",
// "2h5m", "3d4h".
func humanDuration(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	s := int64(d / time.Second)
	switch {
	case s < 60:
		return fmt.Sprintf("%ds", s)
	case s < 3600:
		return fmt.Sprintf("%dm%ds", s/60, s%60)
	case s < 86400:
		return fmt.Sprintf("%dh%dm", s/3600, s%3600/60)
	default:
		return fmt.Sprintf("%dd%dh", s/86400, s%86400/3600)
	}
}
