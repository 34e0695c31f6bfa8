// Package pgpmsg owns dibs identities and keyrings, the message header codec,
// and sealing (sign+encrypt) and opening (decrypt+verify) of messages.
//
// A dibs message is one OpenPGP message (RFC 4880 / 9580, v4 keys,
// SEIPDv1 with MDC so that GnuPG 2.2 can read it, binary literal data, no
// compression), signed by the sender and encrypted to the recipient. Its
// plaintext is a header block — "Name: value" lines ended by an empty line,
// with Dibs-Version, Type, From and To (key fingerprints), Message-Id and
// Date — followed by the payload bytes. Open accepts a message only when it
// decrypts with our key, was read to the end with an intact MDC, carries
// exactly one good signature by a key in the caller's keyring of peers,
// that signer is the header's From, the header is valid, and its To is us;
// the payload (spilled to a temporary file beyond a memory limit) is handed
// over only after all these checks pass. Replay and age checks on
// Message-Id and Date are the caller's.
//
// Two variants serve a node's own pieces. A bound message (SealBound) is
// signed hash-then-sign: its signature covers the header and the head of
// the payload, and the header carries the SHA-256 of the rest, which Open
// (with OpenOptions.Bound) checks before it hands anything over; a shard,
// whose hash the erasure code keeps anyway, is then hashed once, not twice.
// And the chunks of a SEIPDv2 message authenticate one by one, so that its
// recipient can check a few of them without the rest (ChunkScanner,
// ChunkChecker): how a peer proves it still holds a piece.
package pgpmsg
