package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/rivo/uniseg"

	"github.com/dibs-backup/dibs/agent"
)

var showDatabaseCmd = &command{
	name:     "show_database",
	synopsis: "[--only peers|files|storage|recovery|probe|stats|posted_contracts|proposed_contracts] [--wide] [--json]",
	help: `Print the node database: peers with quotas, use and liveness, stored files, what we
hold for others, recoveries. The peers table shows the columns that fit a terminal (local
and remote as used/quota); --wide shows every field. --json prints one JSON object whose
keys are the sections (for scripts; fields may be added, never renamed).`,
	flags: withOptions((*showDatabaseOptions).declare, runShowDatabase),
}

type showDatabaseOptions struct {
	only string
	wide bool
	json bool
}

func (o *showDatabaseOptions) declare(fs *flag.FlagSet) {
	fs.StringVar(&o.only, "only", "", "print just this section")
	fs.BoolVar(&o.wide, "wide", false, "print every column of every table")
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
				printSection(a.Stdout, s, v, o.wide)
				if files, ok := v.([]agent.FileRow); ok {
					warnNoSpares(a.Stdout, files)
				}
				if d, ok := db["drills"]; ok && s == "stats" {
					printSection(a.Stdout, "drills", d, o.wide)
				}
			}
		}
		return nil
	})
}

// printSection prints one section as a table, from its JSON form so that text and JSON
// always show the same fields: every field with wide, else the section's narrow columns.
func printSection(w io.Writer, name string, v any, wide bool) {
	raw, _ := json.Marshal(v)
	var rows []map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber() // a float64 would print 21136432 as 2.1136432e+07
	dec.Decode(&rows)
	fmt.Fprintf(w, "== %s (%d)\n", name, len(rows))
	if len(rows) == 0 {
		return
	}
	cols, ok := narrowColumns[name]
	if wide || !ok {
		// Keep the struct's field order: read the first object's keys in order.
		cols = nil
		for _, k := range orderedKeys(mustFirst(raw)) {
			cols = append(cols, column{name: k})
		}
	}
	table := [][]string{make([]string, len(cols))}
	for i, c := range cols {
		table[0][i] = c.name
	}
	for _, r := range rows {
		cells := make([]string, len(cols))
		for i, c := range cols {
			cells[i] = c.cell(r)
		}
		table = append(table, cells)
	}
	writeTable(w, table)
}

// A column of a table: one field, or fields joined by "/" (local: local_used/local_quota).
type column struct {
	name   string
	fields []string // nil: the field name
}

// narrowColumns are the columns of a section whose every field would not fit a
// terminal; show_database --wide prints them all. The peers table is about 90 columns
// wide this way, 230 with --wide.
var narrowColumns = map[string][]column{
	"peers": {{name: "peer"}, {name: "talk"}, {name: "listen"},
		{name: "local", fields: []string{"local_used", "local_quota"}},
		{name: "remote", fields: []string{"remote_used", "remote_quota"}},
		{name: "last_heard"}, {name: "queue_depth"}},
	"drills": {{name: "started"}, {name: "state"}, {name: "checked", fields: []string{"checked", "files"}},
		{name: "bytes"}, {name: "bad_pieces"}, {name: "seconds"}, {name: "error"}},
}

// cell is the column's text in row r. Every cell holds something ("-" for nothing), so
// that the columns stay countable.
func (c column) cell(r map[string]any) string {
	if c.fields == nil {
		return formatCell(c.name, r[c.name])
	}
	parts := make([]string, len(c.fields))
	for i, f := range c.fields {
		parts[i] = formatCell(f, r[f])
	}
	return strings.Join(parts, "/")
}

// formatCell prints one field's value: sizes in DIBS units, nothing as "-".
func formatCell(field string, v any) string {
	switch v := v.(type) {
	case nil:
		return "-"
	case string:
		if v == "" {
			return "-"
		}
		return v
	case json.Number:
		if b, err := v.Int64(); err == nil && sizeField(field) {
			return agent.FormatSize(b)
		}
		return v.String()
	}
	return fmt.Sprint(v)
}

// sizeField reports whether a field holds bytes.
func sizeField(f string) bool {
	return strings.HasSuffix(f, "_quota") || strings.HasSuffix(f, "_used") || f == "bytes" || f == "size" ||
		strings.HasPrefix(f, "bytes_")
}

// writeTable prints rows with each column as wide as its widest cell, two spaces apart,
// the last one unpadded. Widths are what a terminal shows (uniseg.StringWidth): a wide
// East Asian character takes two cells and a combining mark none, where text/tabwriter
// would count runes and shift every column after such a name.
func writeTable(w io.Writer, rows [][]string) {
	var widths []int
	for _, r := range rows {
		for i, c := range r {
			if i == len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], uniseg.StringWidth(c))
		}
	}
	var b strings.Builder
	for _, r := range rows {
		b.Reset()
		for i, c := range r {
			b.WriteString(c)
			if i < len(r)-1 {
				b.WriteString(strings.Repeat(" ", widths[i]-uniseg.StringWidth(c)+2))
			}
		}
		b.WriteByte('\n')
		io.WriteString(w, b.String())
	}
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
		fmt.Fprintf(w, "warning: %s without a spare piece (spares 0): losing one peer that holds a piece of them loses them\n", agent.Count(len(names), "stored name"))
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
