package main

import (
	"fmt"
	"time"

	"github.com/dibs-backup/dibs/agent"
)

var drillCmd = &command{
	name:     "drill",
	synopsis: "[--json]",
	help: `Start a restore drill: ask the peers for every piece of a random sample of stored
files (within drillBudget bytes of pieces), rebuild them into a scratch directory
(drill.tmp/, never recovery/) and check each against the hash kept when it was stored.
The command only seals the requests; the drill ends when process_message has every
answer (or drillTimeout after it began). A damaged or missing piece fails the drill,
even when the file could still be rebuilt from the others, and a failed drill is an
error report to dibsAdmin. Results: show_database --only stats (the drills table), the
status page and /metrics. The daemon runs one every drillPeriod. --json prints one line:
{"name", "files", "pieces", "peers", "bytes", "deadline"}.`,
	flags: withOptions((*jsonOptions).declare, runDrill),
}

func runDrill(a *App, o jsonOptions) error {
	return a.withNode(func(n *agent.Node) error {
		st, err := n.Drill()
		if err != nil {
			return err
		}
		if o.json {
			return a.printJSON(struct {
				Name     string `json:"name"`
				Files    int    `json:"files"`
				Pieces   int    `json:"pieces"`
				Peers    int    `json:"peers"`
				Bytes    int64  `json:"bytes"`
				Deadline string `json:"deadline"`
			}{st.Name, st.Files, st.Pieces, st.Peers, st.Bytes, st.Deadline.UTC().Format(time.RFC3339)})
		}
		fmt.Fprintf(a.Stdout, "drill: asked %s for %s (%d bytes) of %s; process_message checks them as they come, by %s at the latest (show_database --only stats)\n",
			agent.Count(st.Peers, "peer"), agent.Count(st.Pieces, "piece"), st.Bytes, agent.Count(st.Files, "stored file"), st.Deadline.UTC().Format(time.RFC3339))
		return nil
	})
}
