package queue

import (
	"context"
	"io"
)

// Endpoint says where a transport moves files to or from. Transports read only the
// fields they need and never parse the files.
type Endpoint struct {
	// Peer is the peer's name in our peer list (the outgoing directory's name).
	Peer string
	// Key is the hex fingerprint of the key the files are addressed to (for a Sender) or
	// of our own key (for a Poller): relays and mailboxes file messages under it.
	Key string
	// Addr is the transport's address: "host:port" for direct HTTP, a relay URL, a mail
	// address, or a directory.
	Addr string
}

// Message is one opaque spool file handed to a transport.
type Message struct {
	Name string
	Size int64
	// Body reads the whole file from the start; a transport may call it again to retry.
	Body func() (io.ReadCloser, error)
}

// Sender moves files from our outgoing box to the next hop toward a peer.
type Sender interface {
	// Send delivers msg to dst. It returns nil only when the next hop has stored the file
	// durably; only then does the caller remove it from outgoing/. On error the file stays
	// queued and the caller retries later, unless IsPermanent(err). Sending one file twice
	// is harmless: the receiver drops the duplicate.
	Send(ctx context.Context, dst Endpoint, msg Message) error
}

// Sink commits one received file into our incoming box, durably, before it returns nil.
type Sink func(name string, r io.Reader) error

// Poller pulls files addressed to us from somewhere else: a peer's daemon, a mailbox, a relay.
type Poller interface {
	// Poll hands every file waiting for us at src to sink, one at a time, and has the far
	// copy removed only after sink returned nil for it. A file whose sink call failed, or
	// that was interrupted in transit, stays at src for the next poll. It returns the number
	// of files committed, with the first error that stopped it.
	Poll(ctx context.Context, src Endpoint, sink Sink) (int, error)
}
