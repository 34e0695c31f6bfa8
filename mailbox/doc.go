// Package mailbox is the mail transport: a Sender that submits each spool file as one mail
// over SMTP, a Poller that fetches such mails from an IMAP mailbox, and ImportMaildir for mail
// that a local delivery agent already dropped into a Maildir.
//
// A dibs mail carries one file as its only attachment:
//
//	From, To, Date, Message-ID
//	Subject: dibs message <name>
//	X-Dibs-Message: <name>      marks the mail as ours; the spool file name
//	X-Dibs-Key: <fingerprint>   the recipient's key, so one mailbox can serve several nodes
//	X-Dibs-Size: <bytes>        the file's size: a truncated transfer is never taken as whole
//	multipart/mixed
//	  text/plain                 one line for a human who opens it
//	  application/octet-stream   the file, base64, filename=<name>
//
// The receiving side touches only mails that carry X-Dibs-Message (and, when a key is given,
// the matching X-Dibs-Key); everything else in the mailbox is never fetched, flagged or moved.
// Bodies are always fetched with BODY.PEEK, so not even \Seen changes. A mail leaves the
// mailbox (expunged, or moved to IMAPConfig.DoneMailbox) only after the Sink committed its
// file; a dropped connection or a failed Sink leaves it for the next poll.
//
// A mail that carries the dibs mark but cannot be used (no attachment, truncated, over the
// size cap, unparsable) is never handed to the Sink. On IMAP it is flagged $DibsBad, which
// later polls skip, so it can never block the mailbox; it stays for a human to look at. In a
// Maildir it is left as it is. Either way the poll goes on with the next mail and reports
// the bad ones at the end with an error that wraps ErrBadMail (marked permanent).
//
// Credentials never cross the network in clear text: TLS "none" with a user name is refused
// unless the server is a loopback address.
package mailbox
