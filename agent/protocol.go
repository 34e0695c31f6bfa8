package agent

// The protocol between nodes. Every message is one file: an OpenPGP message signed by its
// sender and encrypted to its recipient, whose plaintext is a header and a payload. The
// envelope's fields (pgpmsg.Field*: Dibs-Version, Type, From, To, Message-Id, Date,
// In-Reply-To) are checked in process.go before any handler runs; below are the types,
// the fields and payloads each adds, and routeOf, which says what runs for each type. An
// answer carries In-Reply-To, the Message-Id of the message it answers.
//
// A handler runs inside the transaction that records the Message-Id, so a message acts
// once; an error quarantines the message, unless it is retryLater (process.go).
//
// The requests sent with requestTx stay pending until answered, and are sent again under a
// new Message-Id after resendAfter (requests.go): UNSTORE, RECOVER, RECOVER_ALL, CLEAR_DB
// and FORGET_YOU, each harmless to carry out twice. STORE and PROBE are not sent again: a
// piece whose STORE is unanswered for repairAfter is lost and placed elsewhere (repair.go),
// and a PROBE unanswered for probeTimeout counts as a timeout (ExpireProbes).

// Message types.
const (
	// HELLO: any node, by send_hello, to see that a peer hears it; no payload. The peer
	// answers with a HELLO that carries In-Reply-To and Software; that one is not answered.
	// Every verified message, HELLO or not, moves its sender's last_heard.
	TypeHello = "HELLO"

	// STORE: the owner, to place a piece (store, auto_check, repair). Piece-Id; payload:
	// the sealed piece (PIECE). The peer keeps it within the quota it granted the owner
	// and answers ACK (Op STORE, Piece-Id), again for a piece it already holds; over quota,
	// NACK (Op STORE, Piece-Id, Reason "over quota: ..."): the owner counts the piece lost,
	// and repair places it elsewhere. An ACK of a piece the owner gave up on meanwhile is
	// answered with an UNSTORE of it.
	TypeStore = "STORE"

	// UNSTORE: the owner, to free pieces no version uses any more (unstore_file, versions
	// beyond maxVersions, lost pieces repair replaced). Payload: piece ids, one per line.
	// The peer drops those it holds (one it lacks is gone already) and answers ACK
	// (Op UNSTORE, Count; payload: the ids), on which the owner closes its books on them.
	TypeUnstore = "UNSTORE"

	// STORAGE_LIST: the owner's daemon, once a day, to reconcile both sides' books.
	// Payload: the ids of the pieces the owner counts at the peer, one per line (an empty
	// list too). The peer drops the pieces it holds for the owner that the list does not
	// name, unless their STORE is newer than the list's Date (it may have crossed the
	// list), and answers ACK (Op STORAGE_LIST, Count: pieces dropped; payload: the listed
	// ids it does not hold). The owner counts those lost, and closes the books on the
	// pieces it was unstoring there.
	TypeStorageList = "STORAGE_LIST"

	// RECOVER: the owner, for recover_file and repair. Payload: ids of pieces the peer
	// holds, one per line. The peer answers a RECOVER_RESPONSE for each piece it holds,
	// and a NACK (Op RECOVER, Piece-Id, Reason "unknown piece") for each it does not,
	// which changes nothing: the other holders' pieces will do.
	TypeRecover = "RECOVER"

	// RECOVER_ALL: the owner, for recover_all, which needs only the key and the peer list;
	// no payload. The peer answers a RECOVER_RESPONSE for every piece it holds for the
	// owner, then FINISHED_RECOVER_ALL.
	TypeRecoverAll = "RECOVER_ALL"

	// RECOVER_RESPONSE: the peer, answering RECOVER or RECOVER_ALL. Piece-Id; payload: the
	// sealed piece as it holds it. The owner checks the piece, rebuilds its books from the
	// manifest if they were lost, keeps the shard, and assembles an object once it has k
	// shards of every segment. Not answered.
	TypeRecoverResponse = "RECOVER_RESPONSE"

	// FINISHED_RECOVER_ALL: the peer, after the RECOVER_RESPONSEs to a RECOVER_ALL.
	// Count: the pieces it sent, so that the owner knows when it has them all (checkJob).
	// Not answered.
	TypeFinishedAll = "FINISHED_RECOVER_ALL"

	// PROBE: the owner, to see that a peer still holds a piece (probe, and the daemon every
	// probePeriod). Piece-Id; Chunks: indexes of AEAD chunks of the sealed piece. The peer
	// answers PROBE_RESPONSE, or NACK (Op PROBE, Piece-Id, Reason "unknown piece",
	// "piece unreadable: ...", "piece damaged: ..." or why a chunk could not be read): the
	// probe failed, and the owner counts the piece lost.
	TypeProbe = "PROBE"

	// PROBE_RESPONSE: the peer, answering PROBE. Piece-Id; payload: the piece's preamble,
	// then each chunk asked after its index (probe.go). The owner checks the preamble
	// against the pin it kept and the chunks under the piece's session key; a wrong answer
	// fails the probe and marks the piece lost. Not answered.
	TypeProbeResponse = "PROBE_RESPONSE"

	// CLEAR_DB: the owner, by clear, which also empties its own books; no payload. The peer
	// drops everything it holds for the owner and answers ACK (Op CLEAR_DB, Count: the
	// pieces dropped).
	TypeClearDB = "CLEAR_DB"

	// FORGET_YOU: a peer, by forget, once it dropped everything it held for the owner; no
	// payload. The owner counts all its pieces there lost (repair places them elsewhere)
	// and answers ACK (Op FORGET_YOU).
	TypeForgetYou = "FORGET_YOU"

	// ACK: a request was carried out. Op: the request's type; the other fields and the
	// payload depend on Op (above). The request (In-Reply-To) is no longer pending, and
	// the route of Op says what else the ACK does (acked). Not answered.
	TypeAck = "ACK"

	// NACK: a request was refused. Op: the request's type; Reason: why, one line for
	// people; other fields by Op. It is logged and kept as the peer's last_refusal, the
	// request is no longer pending, and the route of Op says what else the NACK does
	// (refused; a refused STORE or PROBE is also kept as its file's last_refusal). Not
	// answered.
	TypeNack = "NACK"

	// PEER_CONTRACT_PROPOSAL: a stranger answering a contract we posted (propose_contract),
	// the one message taken from a key not in our peer list: its payload is the sender's
	// armored public key, which must have signed it. Contract, Local-Quota, Remote-Quota,
	// Talk, Listen (all as we, the poster, would see them), Host, Port, Email, Relay,
	// Peer-Name: the peer record it asks for. We check it against the contract as we
	// posted it, add the sender as a peer if it fits, and answer PEER_CONTRACT_RESPONSE
	// either way (proposals.go has the handshake).
	TypeContractProposal = "PEER_CONTRACT_PROPOSAL"

	// PEER_CONTRACT_RESPONSE: the poster, answering a proposal. Contract; Decision accept
	// or refuse; Reason (a refusal: a code such as remote_quota_range, then why). It is
	// left at the poster's daemon for the proposer to fetch, and taken only if signed by
	// the contract's key; on accept the proposer adds the poster as a peer. Not answered.
	TypeContractResponse = "PEER_CONTRACT_RESPONSE"

	// PIECE is not a message: it is the Type of a sealed piece, the payload of STORE and
	// RECOVER_RESPONSE, sealed by the owner to itself (its header: objects.go). No route
	// takes it, so a PIECE in incoming/ is quarantined as of an unknown type. A tombstone
	// (tombstone.go) is a PIECE too, which peers cannot tell from others by its contents.
	TypePiece = "PIECE"
)

// Header fields the agent adds to messages, besides the envelope's.
const (
	fieldPiece    = "Piece-Id" // the piece a STORE, PROBE or answer is about (the piece's own header too)
	fieldOp       = "Op"       // ACK, NACK: the type of the request answered
	fieldReason   = "Reason"   // NACK: why, one line
	fieldCount    = "Count"    // how many (ACK of UNSTORE, STORAGE_LIST, CLEAR_DB; FINISHED_RECOVER_ALL)
	fieldChunks   = "Chunks"   // PROBE: chunk indexes asked, comma separated (at most maxProbeChunks)
	fieldSoftware = "Software" // HELLO's answer: the sender's software and version
)

// route is what this node does with one message type.
type route struct {
	// handle acts on a message of this type when it arrives.
	handle handler
	// answers: a message of this type answers a request, which once handled is no longer
	// pending (answering, requests.go).
	answers bool
	// acked and refused act on an ACK or a NACK whose Op is this type; nil: nothing more
	// than closing the request.
	acked, refused handler
}

// routeOf is the protocol's table: the route of each message type, false for a type the
// protocol does not have (such a message is quarantined). It is a switch, not a map,
// because handleAck and handleNack look routes up in it.
func routeOf(typ string) (route, bool) {
	switch typ {
	case TypeHello:
		return route{handle: handleHello}, true
	case TypeStore:
		return route{handle: handleStore, acked: handleStoreAck, refused: handleStoreNack}, true
	case TypeUnstore:
		return route{handle: handleUnstore, acked: handleUnstoreAck}, true
	case TypeStorageList:
		return route{handle: handleStorageList, acked: handleStorageListAck}, true
	case TypeRecover:
		return route{handle: handleRecover, refused: handleRecoverNack}, true // a NACK: the piece is gone there, others will do (a drill notes it)
	case TypeRecoverAll:
		return route{handle: handleRecoverAll}, true
	case TypeRecoverResponse:
		return route{handle: handleRecoverResponse, answers: true}, true
	case TypeFinishedAll:
		return route{handle: handleFinishedAll, answers: true}, true
	case TypeProbe:
		return route{handle: handleProbe, refused: handleProbeNack}, true
	case TypeProbeResponse:
		return route{handle: handleProbeResponse, answers: true}, true
	case TypeClearDB:
		return route{handle: handleClearDB}, true
	case TypeForgetYou:
		return route{handle: handleForgetYou}, true
	case TypeAck:
		return route{handle: handleAck, answers: true}, true
	case TypeNack:
		return route{handle: handleNack, answers: true}, true
	case TypeContractProposal:
		return route{handle: handleContractProposal}, true
	case TypeContractResponse:
		return route{handle: handleContractResponse}, true
	}
	return route{}, false
}

// handlerFor is what runs for a message of type typ, false if the protocol has no such type.
func handlerFor(typ string) (handler, bool) {
	rt, ok := routeOf(typ)
	if !ok {
		return nil, false
	}
	if rt.answers {
		return answering(rt.handle), true
	}
	return rt.handle, true
}
