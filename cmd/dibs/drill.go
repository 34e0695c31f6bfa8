package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/dibs-backup/dibs/agent"
)

var drillCmd = &command{
	name:     "drill",
	synopsis: "[--from_kit FILE] [--json]",
	help: `Start a restore drill: ask the peers for every piece of a random sample of stored
files (within drillBudget bytes of pieces), rebuild them into a scratch directory
(drill.tmp/, never recovery/) and check each against the hash kept when it was stored.
The command only seals the requests; the drill ends when process_message has every
answer (or drillTimeout after it began). A damaged or missing piece fails the drill,
even when the file could still be rebuilt from the others, and a failed drill is an
error report to dibsAdmin. Results: show_database --only stats (the drills table), the
status page and /metrics. The daemon runs one every drillPeriod.

With --from_kit FILE the drill is the disaster itself: a temporary node is made from the
recovery kit alone (drill.tmp/kit/) and runs recover_all there; this node only carries
its requests and answers. Every stored file's newest version must come back with its
stored hash. It fetches everything the peers hold, as recover_all does, and needs the
disk space of the whole backup while it runs. A kit with another key, or without one
of the peers, fails it.

--json prints one line: {"name", "files", "pieces", "peers", "bytes", "deadline"}.`,
	flags: withOptions((*drillOptions).declare, runDrill),
}

type drillOptions struct {
	fromKit string
	json    bool
}

func (o *drillOptions) declare(fs *flag.FlagSet) {
	fs.StringVar(&o.fromKit, "from_kit", "", "rehearse recovery from this recovery kit (export_recovery_kit)")
	fs.BoolVar(&o.json, "json", false, "print a one-line JSON summary for scripts")
}

func runDrill(a *App, o drillOptions) error {
	var kit *os.File
	if o.fromKit != "" {
		f, err := os.Open(o.fromKit)
		if err != nil {
			return usagef("--from_kit: %v (export_recovery_kit --out FILE writes one)", err)
		}
		defer f.Close()
		kit = f
	}
	return a.withNode(func(n *agent.Node) error {
		var st agent.DrillStarted
		var err error
		if kit != nil {
			st, err = n.DrillFromKit(kit)
		} else {
			st, err = n.Drill()
		}
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
		if kit != nil {
			fmt.Fprintf(a.Stdout, "drill from the kit: its node asked %s for everything they hold; send_message sends the requests, process_message checks what comes back, by %s at the latest (show_database --only stats)\n",
				agent.Count(st.Peers, "peer"), st.Deadline.UTC().Format(time.RFC3339))
			return nil
		}
		fmt.Fprintf(a.Stdout, "drill: asked %s for %s (%d bytes) of %s; process_message checks them as they come, by %s at the latest (show_database --only stats)\n",
			agent.Count(st.Peers, "peer"), agent.Count(st.Pieces, "piece"), st.Bytes, agent.Count(st.Files, "stored file"), st.Deadline.UTC().Format(time.RFC3339))
		return nil
	})
}
