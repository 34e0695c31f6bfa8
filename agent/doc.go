// Package agent is the node: its directory, key, options, peers and database, the
// backup protocol it speaks with its peers, and the daemon that runs it.
//
// Which file owns what:
//
//	node.go        Node: Init and Open of a DIBS_DIR, its keys and peer list
//	options.go     dibsrc.toml: the option table, parsing, bounds and lookups
//	peers.go       Peer: talk and listen methods, peers.toml
//	peerops.go     add_peer, edit_peer, delete_peer
//	db.go          withDB: the node's use of the database (opening, the lock order)
//	objects.go     the sealed piece's header (PieceInfo, openPiece) and object helpers
//
//	protocol.go    the protocol's reference: message types, header fields, and routeOf,
//	               the table of what runs for each type
//	process.go     process_message: open, verify, check Date and replay, then dispatch
//	handlers.go    Request, the handler type, HELLO
//	requests.go    requests waiting for an answer, and their resending
//	outbox.go      replies and requests queued in the database, sealed into outgoing/
//
//	store.go       store: the owner's side of STORE (walk, pack, erasure-code, seal)
//	held.go        the peer's side of STORE and UNSTORE (storage/<peer>/), the owner's
//	               handling of ACK and NACK, unstore_file and version pruning
//	tombstone.go   what a drop from a pack leaves: pack rewrites (prune) and tombstones
//	recover.go     recover_file, recover_all and the recovery jobs; assembling objects
//	repair.go      marking pieces lost, and rebuilding them on other peers
//	probe.go       probe: PROBE, its answer and its timeout
//	sync.go        the storage-list exchange (STORAGE_LIST)
//	clear.go       clear (CLEAR_DB), forget (FORGET_YOU), cleanup
//	auto.go        auto_check
//
//	routing.go     send_message and poll_passives: which talk method delivers a file,
//	               retries across methods, polling; Transports, Sink
//	transports/    the default transports (relay client, SMTP, IMAP) built from options,
//	               in a package of their own so that agent does not import mailbox
//	carry.go       export_messages, import_messages (sneakernet)
//	daemon.go      start_daemon, stop_daemon: serving, the send and process loops
//	periodic.go    the daemon's periodic work and maintain (after every auto_check)
//
//	kit.go         export_recovery_kit, import_recovery_kit
//	show.go        show_database: its sections and row types, peers
//	showstore.go   show_database: files, storage, recovery, probe and stats
//	size.go        DIBS size units
//
// books/ is the database: the bbolt schema, the record types (objects, pieces, file
// versions, held pieces, peer state, recovery jobs, probes, outbox, requests, the replay
// table) and typed accessors on a transaction; nothing else imports bbolt.
// demo/ runs `dibs demo`.
package agent
