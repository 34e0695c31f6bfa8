package pgpmsg

import "errors"

// Sentinel errors. Functions of this package wrap them with the operation and
// the cause ("pgpmsg: open: message not encrypted to us: ..."), so callers
// test with errors.Is and can use err.Error() as a one-line quarantine reason.
var (
	// ErrNotForUs: no session key in the message is encrypted to our key.
	ErrNotForUs = errors.New("message not encrypted to us")
	// ErrUnsigned: the message decrypts but carries no signature.
	ErrUnsigned = errors.New("message not signed")
	// ErrBadSignature: a signature is present but does not verify, or is
	// unacceptable (weak hash, wrong type, several signatures, from the future).
	ErrBadSignature = errors.New("bad signature")
	// ErrUnknownSigner: the signing key is not in the keyring of accepted peers.
	ErrUnknownSigner = errors.New("signer not a known peer")
	// ErrSignerMismatch: the signer is not the key named in the header's From.
	ErrSignerMismatch = errors.New("signer does not match From")
	// ErrWrongRecipient: the header's To does not name our key.
	ErrWrongRecipient = errors.New("To does not name us")
	// ErrMalformed: the input is not an OpenPGP message of the expected shape,
	// or the header block is invalid.
	ErrMalformed = errors.New("malformed message")
	// ErrTooLarge: a size limit (MaxHeaderSize, OpenOptions.MaxSize) was exceeded.
	ErrTooLarge = errors.New("message too large")
	// ErrTruncated: the message ends early or its integrity check (MDC) fails:
	// it was cut or damaged after encryption.
	ErrTruncated = errors.New("message truncated or corrupted")

	// ErrKeyProtected: a secret key is passphrase-protected; dibs needs an
	// unprotected key (export it with gpg --pinentry-mode loopback --passphrase '').
	ErrKeyProtected = errors.New("secret key is passphrase-protected")
	// ErrBadKey: key material is unreadable or unusable for dibs (wrong count,
	// no encryption subkey, not a v4 key, missing secret parts, ...).
	ErrBadKey = errors.New("unusable key")
)
