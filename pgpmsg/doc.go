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
package pgpmsg
