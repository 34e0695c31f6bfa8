// Package relay is dibs's HTTP store-and-forward protocol: a node deposits sealed files for a
// recipient, and the recipient, after proving who it is, lists, downloads and deletes them.
//
// Every dibs daemon serves it on daemonPort for its own peers (a SpoolStore: peers push into
// incoming/, passive peers pull from outgoing/<peer>/), and `dibs relay_server` serves it for
// third parties that cannot accept connections (a DirStore, or on a NATS JetStream cluster the
// Store of package relay/jetstream). Same protocol, different Store.
// Files are opaque sealed OpenPGP messages: a relay never sees plaintext.
//
// The protocol, version 1, under a base URL such as http://host:6363 or https://relay.example/dibs:
//
//	GET    /dibs/v1/hello              no auth  → {"software","version","protocol":1,"key"}
//	POST   /dibs/v1/challenge          no auth  → {"nonce"}: 32 random bytes, base64, single use, 2 min
//	POST   /dibs/v1/session            {"key","nonce","signature","server"} → {"token","expires"}
//	PUT    /dibs/v1/files/<to>/<name>  deposit a file for fingerprint <to>; Content-Length required
//	GET    /dibs/v1/files              [{"name","size"}]: the files waiting for the caller's key
//	GET    /dibs/v1/files/<name>       one of them
//	DELETE /dibs/v1/files/<name>       remove it, once the caller has committed it locally
//	PUT    /dibs/v1/stranger/<name>    no auth: a stranger's file (a contract proposal), at most 64 KiB
//	GET    /dibs/v1/answer/<name>      no auth: the answer left for a stranger under <name>, or 404
//
// The two stranger paths serve a StrangerStore only (strangers.go): a daemon takes contract
// proposals from keys it does not know yet, and leaves its sealed answer under the
// proposal's random Message-Id.
//
// A session proves who is pulling or depositing: the signature is a detached OpenPGP signature,
// by the key named in "key", over exactly the bytes of SessionStatement: the nonce, the key's
// fingerprint and the server's host as the client addressed it. Naming the host stops a server
// we talk to from passing on another server's challenge and spending our signature there. The
// token (256 random bits, valid 10 minutes, bound to the key) then goes in
// "Authorization: Bearer <token>", and it is no bearer token: every request of the session
// also carries Dibs-Request-Seq (1, 2, ..., each taken once, up to 1024 out of order) and
// Dibs-Request-Signature, a detached signature by the session's key over RequestStatement
// (token hash, seq, method, path from /dibs/v1/ on, Content-Length). A token sniffed on a
// plain HTTP path opens nothing, and a request seen is neither replayed nor altered. The
// binding is to the key, not to the TLS connection, so it holds through forward proxies
// and TLS-intercepting or TLS-terminating ones, which a channel binding does not survive.
// Nobody sees, fetches or deletes files addressed to another key.
//
// Errors are JSON {"error": "..."} with the status: 400 bad request or name, 401 no or expired
// token, or a request unsigned, badly signed or replayed, 403 unknown key, bad signature, used
// nonce, or a deposit the store refuses, 404 no such file, 409 the file is busy (being
// delivered by another worker; retry), 411 no Content-Length, 408 the body did not arrive in
// time, 413 file larger than the server takes, 503 too many unauthenticated requests at once
// (Retry-After says when to try again), 507 the recipient's quota (or a daemon's incoming/) is
// full: try later.
//
// A slow client is cut off: a request's body must arrive within seconds, a file's (going
// either way) at 64 KiB/s at least after 30 s of grace (ServerOptions tunes both).
//
// The server does not do TLS: serve it with http.Server.ServeTLS (relay_server --tls_cert,
// --tls_key) or behind a TLS-terminating proxy. Without TLS, who exchanges files with whom,
// file names and sizes can be seen on the path, and an active attacker there can drop or
// spoil deposits; file contents stay sealed, and the signed requests keep the sessions.
package relay
