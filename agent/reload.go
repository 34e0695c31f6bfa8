package agent

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// A running daemon takes edits of dibsrc.toml and peers.toml without a restart. The
// peer list is re-read where it is used, as in commands (Node.Peers); dibsrc.toml by
// the daemon's config watch (watchConfig). An edit that does not load is logged and the
// configuration in use is kept: a typo must not take a daemon's peers or options away.

// peerReload is the daemon's side of re-reading peers.toml.
type peerReload struct {
	keep    bool                   // keep the list in use when the file on disk does not load
	changed func(old, new []*Peer) // told of each new list (the daemon resets backoffs)
	failed  string                 // the last reload's error, logged once
	retry   time.Time              // a failed reload is tried again from then on
}

// peersRetryEvery spaces out re-reading a peers.toml that failed to load: the list is
// used for every file, and a broken file stays broken until someone edits it.
const peersRetryEvery = time.Second

// reloadKeepingLocked re-reads the peer list for a daemon: a peers.toml that does not
// load, or that drops peers the books still hold state for (a truncated file: see
// checkPeerList), is logged and the list in use is kept.
func (n *Node) reloadKeepingLocked() error {
	now := time.Now()
	if now.Before(n.reload.retry) {
		return nil
	}
	old, keys, byFP, kr, stat := n.peers, n.keys, n.byFP, n.keyring, n.peerStat
	_, err := loadPeers(n.Dir)
	if err == nil {
		// A key file that is not the peer's stays an error, as in commands: the peer's
		// files wait until its key is put back (TestPeerList_KeyFileMustMatchFingerprint).
		if err := n.readPeersLocked(); err != nil {
			return err
		}
		if err = n.checkDropped(old, n.peers); err != nil {
			n.peers, n.keys, n.byFP, n.keyring, n.peerStat = old, keys, byFP, kr, stat
		}
	}
	if err != nil {
		n.reload.retry = now.Add(peersRetryEvery)
		if msg := err.Error(); msg != n.reload.failed {
			n.reload.failed = msg
			n.Log.Error("peers.toml not reloaded: the peer list in use is kept", "err", err)
		}
		return nil
	}
	n.reload.failed, n.reload.retry = "", time.Time{}
	n.Log.Info("peers.toml reloaded", "peers", len(n.peers))
	if n.reload.changed != nil {
		n.reload.changed(old, n.peers)
	}
	return nil
}

// checkDropped refuses a new peer list that lacks a peer of the old one the books still
// know (delete_peer forgets the peer's state right after it writes the list: the retry
// then takes the list).
func (n *Node) checkDropped(old, cur []*Peer) error {
	var gone []string
	for _, p := range old {
		if !slices.ContainsFunc(cur, func(q *Peer) bool { return q.Name == p.Name }) {
			gone = append(gone, p.Name)
		}
	}
	if len(gone) == 0 {
		return nil
	}
	states, err := n.PeerStates()
	if err != nil {
		return err
	}
	var known []string
	for _, name := range gone {
		if _, ok := states[name]; ok {
			known = append(known, name)
		}
	}
	if len(known) > 0 {
		return fmt.Errorf("%s lacks peers the database knows (%s)", peersFile, strings.Join(known, ", "))
	}
	return nil
}
