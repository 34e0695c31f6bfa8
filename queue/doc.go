// Package queue is the spool: sealed message files waiting to move or to be processed.
//
// Layout under the node directory:
//
//	tmp/                   files being written; never read by anyone but their writer
//	incoming/<name>        received files, not yet processed
//	outgoing/<peer>/<name> files waiting for delivery to <peer>
//	quarantine/<name>      files that failed to open or to process (or their start)
//	quarantine/<name>.reason  why; then who sent it and what of it was kept
//	staged/<stage>/<box>/<name>  files written for a box but not in it yet (Stage)
//
// Every file enters a directory the same way: written to tmp/, fsynced, renamed into place,
// and the directory fsynced. A reader therefore never sees half a file, and a file whose Put
// returned nil survives a crash. A state change is a rename between directories.
//
// Files are opaque: the queue never parses them. A worker that acts on a file first claims it
// with an OS file lock (flock), so a cron command and a running daemon never act on one file
// twice; a claim dies with its process, so a crash never leaves a file stuck.
//
// A writer that must record a file before anyone sees it (a piece, in the owner's books)
// writes it into a Stage, records it, then releases it into its box. A stage is locked
// by its writer like a claim; SweepStages settles those whose writer died, releasing or
// removing each file as the writer's records say.
//
// Failure policy: a file leaves outgoing/ only when a Transport reports that the next hop
// stored it durably. Transport errors are temporary unless marked Permanent; the caller (the
// agent) decides when to retry. A file that cannot be opened or processed moves to
// quarantine/ with its reason, and processing goes on with the next file.
package queue
