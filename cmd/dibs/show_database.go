package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/dibs-backup/dibs/agent"
)

var showDatabaseCmd = &command{
	name:     "show_database",
	synopsis: "[--only peers|files|storage|recovery|probe|stats|posted_contracts|proposed_contracts] [--json]",
	help: `Print the node database: peers with quotas, use and liveness, stored files, what we
hold for others, recoveries. --json prints one JSON object whose keys are the sections
(for scripts; fields may be added, never renamed).`,
	flags: withOptions((*showDatabaseOptions).declare, runShowDatabase),
}

type showDatabaseOptions struct {
	only string
	json bool
}

func (o *showDatabaseOptions) declare(fs *flag.FlagSet) {
	fs.StringVar(&o.only, "only", "", "print just this section")
	fs.BoolVar(&o.json, "json", false, "print JSON for scripts")
}

func runShowDatabase(a *App, o showDatabaseOptions) error {
	return a.withNode(func(n *agent.Node) error {
		db, err := n.Database(o.only)
		if err != nil {
			return usagef("%s", err)
		}
		if o.json {
			enc := json.NewEncoder(a.Stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(db)
		}
		for _, s := range agent.Sections {
			if v, ok := db[s]; ok {
				printSection(a.Stdout, s, v)
				if files, ok := v.([]agent.FileRow); ok {
					warnNoSpares(a.Stdout, files)
				}
			}
		}
		return nil
	})
}

// printSection prints one section as a table, from its JSON form so that text and JSON
// always show the same fields.
func printSection(w io.Writer, name string, v any) {
	raw, _ := json.Marshal(v)
	var rows []map[string]any
	json.Unmarshal(raw, &rows)
	fmt.Fprintf(w, "== %s (%d)\n", name, len(rows))
	if len(rows) == 0 {
		return
	}
	// Keep the struct's field order: read the first object's keys in order.
	cols := orderedKeys(mustFirst(raw))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(cols, "\t"))
	for _, r := range rows {
		var cells []string
		for _, c := range cols {
			cell := r[c]
			if cell == nil || cell == "" { // every cell holds something: columns stay countable
				cells = append(cells, "-")
			} else if f, ok := cell.(float64); ok && (strings.HasSuffix(c, "_quota") || strings.HasSuffix(c, "_used") || c == "bytes" || c == "size") {
				cells = append(cells, agent.FormatSize(int64(f)))
			} else {
				cells = append(cells, fmt.Sprint(cell))
			}
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	tw.Flush()
}

// warnNoSpares says once, under the files table, how many files would be lost with any
// one peer that holds a piece of them (spares 0: stored on a single peer, or pieces lost
// and not repaired yet).
func warnNoSpares(w io.Writer, files []agent.FileRow) {
	names := map[string]bool{}
	for _, f := range files {
		if f.Spares != nil && *f.Spares == 0 && f.Status != agent.StatusLost {
			names[f.Name] = true
		}
	}
	if len(names) > 0 {
		fmt.Fprintf(w, "warning: %d stored names have no spare piece (spares 0): losing one peer that holds a piece of them loses them\n", len(names))
	}
}

func mustFirst(raw []byte) []byte {
	var arr []json.RawMessage
	if json.Unmarshal(raw, &arr) != nil || len(arr) == 0 {
		return []byte("{}")
	}
	return arr[0]
}

func orderedKeys(obj []byte) []string {
	dec := json.NewDecoder(strings.NewReader(string(obj)))
	var keys []string
	dec.Token() // {
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			break
		}
		keys = append(keys, t.(string))
		var skip json.RawMessage
		dec.Decode(&skip)
	}
	return keys
}
