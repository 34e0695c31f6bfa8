package agent

import (
	"bytes"
	"fmt"
	"io"
	"os"

	"github.com/dibs-backup/dibs/agent/books"
	"github.com/dibs-backup/dibs/pgpmsg"
	"github.com/dibs-backup/dibs/queue"
)

// PeerEdit holds the fields add_peer and edit_peer may set; nil means "leave as is".
type PeerEdit struct {
	Email, Comment, Talk, Listen, Host, Relay *string
	Port                                      *int
	LocalQuota, RemoteQuota                   *int64
	// Key is the peer's armored public key, if given.
	Key io.Reader
}

func (e *PeerEdit) apply(p *Peer) {
	set := func(dst *string, src *string) {
		if src != nil {
			*dst = *src
		}
	}
	set(&p.Email, e.Email)
	set(&p.Comment, e.Comment)
	set(&p.Talk, e.Talk)
	set(&p.Listen, e.Listen)
	set(&p.Host, e.Host)
	set(&p.Relay, e.Relay)
	if e.Port != nil {
		p.Port = *e.Port
	}
	if e.LocalQuota != nil {
		p.LocalQuota = *e.LocalQuota
	}
	if e.RemoteQuota != nil {
		p.RemoteQuota = *e.RemoteQuota
	}
}

func (n *Node) readPeerKey(r io.Reader, p *Peer) ([]byte, *pgpmsg.Key, error) {
	raw, err := io.ReadAll(io.LimitReader(r, 1<<20))
	if err != nil {
		return nil, nil, err
	}
	k, err := pgpmsg.ReadKey(bytes.NewReader(raw))
	if err != nil {
		return nil, nil, fmt.Errorf("--key_file: %w", err)
	}
	if k.Fingerprint() == n.Fingerprint() {
		return nil, nil, fmt.Errorf("--key_file is our own key, not the peer's")
	}
	var armored bytes.Buffer
	if err := k.WriteArmored(&armored); err != nil {
		return nil, nil, err
	}
	return armored.Bytes(), k, nil
}

// lockPeers takes the configuration lock and reads the peer list under it.
func (n *Node) lockPeers() (unlock func(), peers []*Peer, err error) {
	unlock, err = n.lockConfig()
	if err != nil {
		return nil, nil, err
	}
	if peers, err = loadPeers(n.Dir); err != nil {
		unlock()
		return nil, nil, err
	}
	return unlock, peers, nil
}

// AddPeer adds a peer. Required: email, quotas, talk and listen (see Peer.validate).
func (n *Node) AddPeer(name string, e PeerEdit) error {
	unlock, peers, err := n.lockPeers()
	if err != nil {
		return err
	}
	defer unlock()
	for _, p := range peers {
		if p.Name == name {
			return fmt.Errorf("peer %s exists; change it with dibs edit_peer", name)
		}
	}
	p := &Peer{Name: name, Port: 6363}
	e.apply(p)
	if err := p.validate(n.Opts); err != nil {
		return err
	}
	if e.Key != nil {
		armored, k, err := n.readPeerKey(e.Key, p)
		if err != nil {
			return err
		}
		for _, q := range peers {
			if q.Fingerprint == string(k.Fingerprint()) {
				return fmt.Errorf("--key_file is the key of peer %s already", q.Name)
			}
		}
		p.Fingerprint = string(k.Fingerprint())
		if err := queue.WriteFileAtomic(n.peerKeyPath(name), armored, 0o644); err != nil {
			return err
		}
	}
	return n.savePeers(append(peers, p))
}

// EditPeer changes a peer. A quota cannot go below what is in use.
func (n *Node) EditPeer(name string, e PeerEdit) error {
	unlock, peers, err := n.lockPeers()
	if err != nil {
		return err
	}
	defer unlock()
	var p *Peer
	for _, q := range peers {
		if q.Name == name {
			p = q
		}
	}
	if p == nil {
		return fmt.Errorf("no peer %q (dibs show_database --only peers lists them)", name)
	}
	e.apply(p)
	if err := p.validate(n.Opts); err != nil {
		return err
	}
	st, err := n.peerStateOf(name)
	if err != nil {
		return err
	}
	if p.LocalQuota < st.LocalUsed {
		return fmt.Errorf("--local_quota %s is below the %s we hold for %s", FormatSize(p.LocalQuota), FormatSize(st.LocalUsed), name)
	}
	if p.RemoteQuota < st.RemoteUsed {
		return fmt.Errorf("--remote_quota %s is below the %s %s holds for us", FormatSize(p.RemoteQuota), FormatSize(st.RemoteUsed), name)
	}
	if e.Key != nil {
		armored, k, err := n.readPeerKey(e.Key, p)
		if err != nil {
			return err
		}
		for _, q := range peers {
			if q != p && q.Fingerprint == string(k.Fingerprint()) {
				return fmt.Errorf("--key_file is the key of peer %s already", q.Name)
			}
		}
		p.Fingerprint = string(k.Fingerprint())
		if err := queue.WriteFileAtomic(n.peerKeyPath(name), armored, 0o644); err != nil {
			return err
		}
	}
	return n.savePeers(peers)
}

// DeletePeer removes a peer that holds nothing for us and for which we hold nothing.
// Messages still queued for it move to quarantine/.
func (n *Node) DeletePeer(name string) error {
	unlock, peers, err := n.lockPeers()
	if err != nil {
		return err
	}
	defer unlock()
	idx := -1
	for i, q := range peers {
		if q.Name == name {
			idx = i
		}
	}
	if idx < 0 {
		return fmt.Errorf("no peer %q (dibs show_database --only peers lists them)", name)
	}
	st, err := n.peerStateOf(name)
	if err != nil {
		return err
	}
	if st.LocalUsed > 0 || st.RemoteUsed > 0 || st.RemotePending > 0 {
		return fmt.Errorf("peer %s still holds %s for us and we hold %s for it; unstore or forget first", name, FormatSize(st.RemoteUsed+st.RemotePending), FormatSize(st.LocalUsed))
	}
	es, _ := n.Spool.List(queue.Outgoing(name))
	for _, e := range es {
		if c, err := n.Spool.Claim(e.Box, e.Name); err == nil {
			c.Quarantine("peer " + name + " was deleted before this was delivered")
		}
	}
	os.Remove(n.Spool.Dir(queue.Outgoing(name)))
	peers = append(peers[:idx], peers[idx+1:]...)
	if err := n.savePeers(peers); err != nil {
		return err
	}
	os.Remove(n.peerKeyPath(name))
	return n.withDB(func(db *books.DB) error {
		return db.Update(func(tx *books.Tx) error { return tx.DeletePeer(name) })
	})
}

func (n *Node) peerStateOf(name string) (PeerState, error) {
	var ps PeerState
	err := n.withDB(func(db *books.DB) error {
		return db.View(func(tx *books.Tx) error {
			var err error
			ps, err = tx.Peer(name)
			return err
		})
	})
	return ps, err
}
