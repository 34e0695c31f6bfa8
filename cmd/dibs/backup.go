package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"path/filepath"

	"github.com/dibs-backup/dibs/agent"
)

var storeCmd = &command{
	name:     "store",
	synopsis: "--name ITEM [--as SNAME] [--json]",
	help: `Store a file or a directory tree, incrementally: unchanged files are skipped (stat cache),
changed ones become new versions (up to maxVersions). The stored name is ITEM's absolute
path, or SNAME. ITEM itself is followed if it is a symlink; links inside a tree are stored
as links. Pieces are sealed into outgoing/; send_message delivers them. With a single
peer it warns that losing that peer loses the files. On a terminal, stderr shows a bar
of the entries looked at and the bytes of the changed files read. --json prints one
line: {"name", "entries", "unchanged", "stored", "bytes", "objects", "pieces",
"deleted", "warnings"}.`,
	required: []string{"name"},
	flags:    withOptions((*storeOptions).declare, runStore),
}

type storeOptions struct {
	name string
	as   stringFlag // --as "" is refused, not taken for "not given"
	json bool
}

func (o *storeOptions) declare(fs *flag.FlagSet) {
	fs.StringVar(&o.name, "name", "", "the file or directory to store")
	fs.Var(&o.as, "as", "store it under this stored name instead of its absolute path")
	fs.BoolVar(&o.json, "json", false, "print a one-line JSON summary for scripts")
}

func runStore(a *App, o storeOptions) error {
	if o.as.given && o.as.value == "" {
		return usagef("--as needs a stored name (leave it out to store under the absolute path)")
	}
	return a.withNode(func(n *agent.Node) error {
		a.withProgress(n, "store")
		res, err := n.Store(a.Ctx, o.name, o.as.value)
		a.printStoreWarnings(res.Warnings)
		if err != nil {
			return err // a summary would read as a success
		}
		if o.json {
			sname := o.as.value
			if sname == "" {
				sname, _ = filepath.Abs(o.name)
			}
			sname, _ = agent.StoredName(sname)
			warnings := res.Warnings
			if warnings == nil {
				warnings = []string{}
			}
			return a.printJSON(storeSummary{Name: sname, Entries: res.Entries, Unchanged: res.Unchanged, Stored: res.Stored,
				Bytes: res.Bytes, Objects: res.Objects, Pieces: res.Pieces, Deleted: res.Deleted, Warnings: warnings})
		}
		a.printStore(res)
		return nil
	})
}

// storeSummary is store --json's line.
type storeSummary struct {
	Name      string   `json:"name"` // the stored name
	Entries   int      `json:"entries"`
	Unchanged int      `json:"unchanged"`
	Stored    int      `json:"stored"` // new versions
	Bytes     int64    `json:"bytes"`  // content bytes coded and sealed
	Objects   int      `json:"objects"`
	Pieces    int      `json:"pieces"`
	Deleted   int      `json:"deleted"` // found gone locally
	Warnings  []string `json:"warnings"`
}

// printJSON prints v as one line of JSON: the summary of a command run with --json.
func (a *App) printJSON(v any) error {
	return json.NewEncoder(a.Stdout).Encode(v)
}

var autoCheckCmd = &command{
	name:     "auto_check",
	synopsis: "[--sync]",
	help: `Store everything linked or placed in autoBackupDir, as /autoBackup/<entry>/...; entries
removed from it are marked deleted (still recoverable until keepDeleted). Then the upkeep:
expire unanswered probes, send unanswered requests again, repair; its line says what it did.
Once a day it also sends each peer the list of pieces we count there (the storage-list
exchange); --sync sends the lists now.`,
	flags:   withOptions((*autoCheckOptions).declare, runAutoCheck),
	reports: true,
}

type autoCheckOptions struct{ sync bool }

func (o *autoCheckOptions) declare(fs *flag.FlagSet) {
	fs.BoolVar(&o.sync, "sync", false, "exchange storage lists with the peers now, not only when a day has passed")
}

func runAutoCheck(a *App, o autoCheckOptions) error {
	return a.withNode(func(n *agent.Node) error {
		synced := 0
		if o.sync { // first: then the exchange is not due again within the auto_check
			var err error
			if synced, err = n.SyncPeers(); err != nil {
				return err
			}
		}
		res, err := n.AutoCheck(a.Ctx)
		a.printStoreWarnings(res.Warnings)
		if err != nil {
			return err
		}
		a.printStore(res.StoreResult)
		a.printUpkeep(res.Upkeep)
		if synced += res.StorageLists; synced > 0 || o.sync {
			fmt.Fprintf(a.Stdout, "sent our storage list to %s\n", agent.Count(synced, "peer"))
		}
		return nil
	})
}

var unstoreFileCmd = &command{
	name:     "unstore_file",
	synopsis: "--file SNAME",
	help: `Drop a stored file or tree, every version, and ask the peers to delete its pieces.
A small file shares a pack with others: a tombstone kept with the peers records the
drop, so that recover_all does not bring it back, and the pack is rewritten once
packPrunePercent of it is unstored.`,
	required: []string{"file"},
	flags:    withOptions((*unstoreOptions).declare, runUnstore),
}

type unstoreOptions struct{ file string }

func (o *unstoreOptions) declare(fs *flag.FlagSet) {
	fs.StringVar(&o.file, "file", "", "the stored name (as store printed it)")
}

func runUnstore(a *App, o unstoreOptions) error {
	return a.withNode(func(n *agent.Node) error {
		res, err := n.Unstore(o.file)
		if err != nil {
			return err
		}
		fmt.Fprintf(a.Stdout, "unstored %s of %s\n", agent.Count(res.Versions, "version"), agent.Count(res.Names, "name"))
		return nil
	})
}

var recoverFileCmd = &command{
	name:     "recover_file",
	synopsis: "--file SNAME [--version N] [--json]",
	help: `Ask the peers for the pieces of a stored file or tree (its newest version, or version N).
It appears under DIBS_DIR/recovery/SNAME once enough answers are processed
(show_database --only recovery shows progress). The command only seals the requests
(on a terminal, its bar counts them); process_message's bar shows the answers being
processed. --json prints one line: {"name", "version" (0: the newest), "dir"}.`,
	required: []string{"file"},
	flags:    withOptions((*recoverFileOptions).declare, runRecoverFile),
}

type recoverFileOptions struct {
	file    string
	version int
	json    bool
}

func (o *recoverFileOptions) declare(fs *flag.FlagSet) {
	fs.StringVar(&o.file, "file", "", "the stored name")
	fs.IntVar(&o.version, "version", 0, "the version to recover (default: the newest)")
	fs.BoolVar(&o.json, "json", false, "print a one-line JSON summary for scripts")
}

func runRecoverFile(a *App, o recoverFileOptions) error {
	if o.version < 0 {
		return usagef("--version must be 1 or more")
	}
	return a.withNode(func(n *agent.Node) error {
		a.withProgress(n, "recover_file requests")
		job, err := n.RecoverFile(o.file, o.version)
		if err != nil {
			return err
		}
		if o.json {
			return a.printJSON(struct {
				Name    string `json:"name"`
				Version int    `json:"version"`
				Dir     string `json:"dir"`
			}{job, o.version, filepath.Join(n.Dir, "recovery", filepath.FromSlash(job))})
		}
		fmt.Fprintf(a.Stdout, "asked the peers for %s; it will appear under %s/recovery%s\n", job, n.Dir, job)
		return nil
	})
}

var recoverAllCmd = &command{
	name:     "recover_all",
	synopsis: "[--json]",
	help: `Ask every peer for everything it holds for us. Needs only the key and the peer list
(import_recovery_kit): the files and the file database are rebuilt from the pieces.
The command only seals the requests (on a terminal, its bar counts them);
process_message's bar shows the answers being processed. --json prints one line:
{"peers" (the peers asked), "dir"}.`,
	flags: withOptions((*jsonOptions).declare, runRecoverAll),
}

// jsonOptions is the flags of a command whose only flag is --json.
type jsonOptions struct{ json bool }

func (o *jsonOptions) declare(fs *flag.FlagSet) {
	fs.BoolVar(&o.json, "json", false, "print a one-line JSON summary for scripts")
}

func runRecoverAll(a *App, o jsonOptions) error {
	return a.withNode(func(n *agent.Node) error {
		a.withProgress(n, "recover_all requests")
		if err := n.RecoverAll(); err != nil {
			return err
		}
		if o.json {
			peers, err := n.Peers()
			if err != nil {
				return err
			}
			names := []string{}
			for _, p := range peers {
				names = append(names, p.Name)
			}
			return a.printJSON(struct {
				Peers []string `json:"peers"`
				Dir   string   `json:"dir"`
			}{names, filepath.Join(n.Dir, "recovery")})
		}
		fmt.Fprintf(a.Stdout, "asked every peer; files appear under %s/recovery/ as answers are processed\n", n.Dir)
		return nil
	})
}

var probeCmd = &command{
	name:     "probe",
	synopsis: "[--file SNAME] [--json]",
	help: `Challenge the peers holding a random (or the named) stored file: each must answer with
three random 64 KiB chunks of its piece, which only we can authenticate. Results:
show_database --only probe. --json prints one line: {"name", "pieces" (challenged)}.`,
	flags: withOptions((*probeOptions).declare, runProbe),
}

type probeOptions struct {
	file string
	json bool
}

func (o *probeOptions) declare(fs *flag.FlagSet) {
	fs.StringVar(&o.file, "file", "", "the stored name to probe")
	fs.BoolVar(&o.json, "json", false, "print a one-line JSON summary for scripts")
}

func runProbe(a *App, o probeOptions) error {
	return a.withNode(func(n *agent.Node) error {
		res, err := n.Probe(o.file)
		if err != nil {
			return err
		}
		if o.json {
			return a.printJSON(struct {
				Name   string `json:"name"`
				Pieces int    `json:"pieces"`
			}{res.Name, res.Pieces})
		}
		fmt.Fprintf(a.Stdout, "probing %s of %s\n", agent.Count(res.Pieces, "piece"), res.Name)
		return nil
	})
}

var clearCmd = &command{
	name:     "clear",
	synopsis: "",
	help: `Ask every peer to drop everything it stores for us, and forget what we stored. Peers
that are down get the request when they are reachable (it waits in the spool).`,
	flags: noFlags(runClear),
}

func runClear(a *App) error {
	return a.withNode(func(n *agent.Node) error {
		k, err := n.Clear()
		if err != nil {
			return err
		}
		fmt.Fprintf(a.Stdout, "asked %s to drop everything they store for us\n", agent.Count(k, "peer"))
		return nil
	})
}

var forgetCmd = &command{
	name:     "forget",
	synopsis: "--peer NAME",
	help:     "Drop everything we store for that peer and tell it so (FORGET_YOU).",
	required: []string{"peer"},
	flags:    withOptions((*forgetOptions).declare, runForget),
}

type forgetOptions struct{ peer string }

func (o *forgetOptions) declare(fs *flag.FlagSet) { fs.StringVar(&o.peer, "peer", "", "the peer") }

func runForget(a *App, o forgetOptions) error {
	return a.withNode(func(n *agent.Node) error {
		k, err := n.Forget(o.peer)
		if err != nil {
			return err
		}
		fmt.Fprintf(a.Stdout, "dropped %s held for %s\n", agent.Count(k, "piece"), o.peer)
		return nil
	})
}

var cleanupCmd = &command{
	name:     "cleanup",
	synopsis: "",
	help: `Remove empty storage directories, quarantined files older than maxMsgAge (and the
oldest beyond quarantineMaxBytes), leftovers of interrupted writes and recoveries, and
versions of files deleted locally longer ago than keepDeleted; count unanswered probes
as timeouts.`,
	flags: noFlags(runCleanup),
}

func runCleanup(a *App) error {
	return a.withNode(func(n *agent.Node) error {
		res, err := n.Cleanup()
		fmt.Fprintf(a.Stdout, "removed %s, %s, %s, %s, %s; %s timed out\n",
			agent.Count(res.EmptyDirs, "empty directory"), agent.Count(res.Quarantined, "quarantined file"),
			agent.Count(res.Temp, "temporary file"), agent.Count(res.Staging, "recovery leftover"),
			agent.Count(res.Versions, "old version"), agent.Count(res.Probes, "probe"))
		return err
	})
}

var mergeStatsCmd = &command{
	name:     "merge_stats",
	synopsis: "",
	help: `Fold recorded statistics into the database and print them. dibs records probe answers
and liveness in the database as messages are processed, so this only expires probes left
unanswered past probeTimeout and prints the stats section.`,
	flags:   noFlags(runMergeStats),
	reports: true,
}

func runMergeStats(a *App) error {
	return a.withNode(func(n *agent.Node) error {
		if _, err := n.ExpireProbes(); err != nil {
			return err
		}
		db, err := n.Database("stats")
		if err != nil {
			return err
		}
		enc := json.NewEncoder(a.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(db["stats"])
	})
}

func (a *App) printStoreWarnings(warnings []string) {
	for _, w := range warnings {
		fmt.Fprintf(a.Stderr, "dibs: warning: %s\n", w)
	}
}

func (a *App) printStore(res agent.StoreResult) {
	fmt.Fprintf(a.Stdout, "looked at %s: %d unchanged, %s (%s in %s, %s), %d deleted locally\n",
		agent.Count(res.Entries, "entry"), res.Unchanged, agent.Count(res.Stored, "new version"), agent.FormatSize(res.Bytes),
		agent.Count(res.Objects, "object"), agent.Count(res.Pieces, "piece"), res.Deleted)
}

// printUpkeep says what auto_check's upkeep did after storing.
func (a *App) printUpkeep(u agent.Upkeep) {
	r := u.Repair
	fmt.Fprintf(a.Stdout, "upkeep: %s timed out, %s sent again; repair: %s counted lost, %s placed again, %s being fetched back, %s short of peers, %s moved off unreliable peers\n",
		agent.Count(u.ProbesExpired, "probe"), agent.Count(u.Resent, "request"), agent.Count(r.MarkedLost, "piece"),
		agent.Count(r.Rebuilt, "piece"), agent.Count(r.Fetching, "object"), agent.Count(r.Short, "segment"), agent.Count(r.Moved, "piece"))
}
