// Package maildoor is the mail side of `dibs relay_server`: an SMTP door that takes dibs
// mails for the relay's users into a relay.Store, and an IMAP door where each user sees the
// files waiting for it as mails in INBOX, in the form mailbox sends them. With the HTTP
// door (package relay) that makes one store with three doors: a file deposited through any
// of them is collected through any other.
//
// It lives under agent because only agent and its subpackages may import both
// relay and mailbox; it imports neither agent nor anything above them, and only
// cmd/dibs imports it.
//
// Users are the users file (users.go): a key of the relay's allow file, a mail address,
// a password hash. The SMTP door takes a mail only
//   - for one recipient that is a user (a domain that is no user's is refused as
//     relaying: the relay passes no mail on, whoever asks);
//   - from a depositor the store lets deposit for that recipient: the authenticated user
//     (AUTH, over TLS or from loopback), else the user whose address is the envelope
//     sender (a mail relayed by a corporate server to the relay as the domain's MX);
//   - that is a dibs mail for the recipient's key (X-Dibs-Message, X-Dibs-Key,
//     X-Dibs-Size) whose attachment is an OpenPGP message encrypted to that key (the
//     key ids are read from its first packets, nothing is decrypted);
//   - within the size limit and the recipient's quota.
//
// Anything else is refused at MAIL, RCPT or DATA with an SMTP code: 5xx where sending again
// cannot help, 4xx (over quota, busy, an internal failure) where it can. A mail is
// accepted (250) only once its file is durable in the store; nothing is dropped silently.
package maildoor
