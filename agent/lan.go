package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dibs-backup/dibs/pgpmsg"
	"github.com/dibs-backup/dibs/queue"
)

// LAN discovery (lanDiscovery): the daemon announces itself on the local network every
// lanAnnounceInterval, in a UDP datagram to lanDiscoveryAddress signed with its key, and
// listens there for its peers' announcements. A peer heard on the LAN is pushed to
// directly, at the packet's source address and the announced daemon port, before its
// configured talk methods (routing.go): a laptop that comes home sends its pieces over
// the LAN instead of through a relay or a mailbox. An announcement that is not signed
// by the key of a peer, names another key than its signer's, is stale, from the future,
// or not newer than the last one accepted from that peer, is ignored.

// LAN is the method recorded (last_method) for a file pushed to a peer found on the LAN.
const LAN = "lan"

const (
	lanMagic = "DIBS-LAN/1"
	// lanSkew is how far the clocks of two machines on one LAN may disagree: an
	// announcement dated more than this in the future, or older than two intervals and
	// this, is ignored.
	lanSkew = time.Minute
	// lanMaxPacket is the largest announcement read: a few lines and one signature.
	lanMaxPacket = 8 << 10
)

// A lanAnnouncement is what a node says of itself on the LAN.
type lanAnnouncement struct {
	From  pgpmsg.Fingerprint
	Port  int
	Time  time.Time // to the millisecond
	Nonce string    // 32 hex digits
}

// statement is the signed text of a: the announcement's datagram is the statement and,
// after it, the detached signature of it.
func (a lanAnnouncement) statement() []byte {
	return fmt.Appendf(nil, "%s\nfrom %s\nport %d\ntime %d\nnonce %s\n\n", lanMagic, a.From, a.Port, a.Time.UnixMilli(), a.Nonce)
}

// sealAnnouncement is the datagram of a, signed by id.
func sealAnnouncement(id *pgpmsg.Identity, a lanAnnouncement) ([]byte, error) {
	st := a.statement()
	sig, err := id.SignDetached(st)
	if err != nil {
		return nil, err
	}
	return append(st, sig...), nil
}

// parseAnnouncement splits a datagram into its announcement, the signed statement and
// the signature. The statement must be exactly as statement writes it.
func parseAnnouncement(pkt []byte) (lanAnnouncement, []byte, []byte, error) {
	var a lanAnnouncement
	i := bytes.Index(pkt, []byte("\n\n"))
	if i < 0 || !bytes.HasPrefix(pkt, []byte(lanMagic+"\n")) {
		return a, nil, nil, errors.New("not a dibs LAN announcement")
	}
	st, sig := pkt[:i+2], pkt[i+2:]
	lines := strings.Split(string(pkt[:i]), "\n")
	if len(lines) != 5 {
		return a, nil, nil, errors.New("announcement: want 4 fields")
	}
	field := func(l, name string) (string, error) {
		v, ok := strings.CutPrefix(l, name+" ")
		if !ok || v == "" {
			return "", fmt.Errorf("announcement: no %s", name)
		}
		return v, nil
	}
	var errs []error
	from, err := field(lines[1], "from")
	errs = append(errs, err)
	port, err := field(lines[2], "port")
	errs = append(errs, err)
	ms, err := field(lines[3], "time")
	errs = append(errs, err)
	nonce, err := field(lines[4], "nonce")
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return a, nil, nil, err
	}
	fp, err := pgpmsg.ParseFingerprint(from)
	if err != nil {
		return a, nil, nil, fmt.Errorf("announcement: %w", err)
	}
	pn, err := strconv.Atoi(port)
	if err != nil || pn < 1 || pn > 65535 {
		return a, nil, nil, fmt.Errorf("announcement: bad port %q", port)
	}
	t, err := strconv.ParseInt(ms, 10, 64)
	if err != nil {
		return a, nil, nil, fmt.Errorf("announcement: bad time %q", ms)
	}
	if b, err := hex.DecodeString(nonce); err != nil || len(b) != 16 {
		return a, nil, nil, fmt.Errorf("announcement: bad nonce %q", nonce)
	}
	a = lanAnnouncement{From: fp, Port: pn, Time: time.UnixMilli(t), Nonce: nonce}
	if !bytes.Equal(a.statement(), st) {
		return a, nil, nil, errors.New("announcement: not in canonical form")
	}
	return a, st, sig, nil
}

// lanAnnouncement is n's announcement now, for a daemon listening on port.
func (n *Node) lanAnnouncement(port int) ([]byte, error) {
	var nonce [16]byte
	rand.Read(nonce[:])
	return sealAnnouncement(n.ID, lanAnnouncement{
		From: n.Fingerprint(), Port: port, Time: n.Now().Truncate(time.Millisecond), Nonce: hex.EncodeToString(nonce[:]),
	})
}

// The results of hearing an announcement (hearLAN), as /metrics counts them.
const (
	lanAccepted  = "accepted"
	lanSelf      = "self"
	lanMalformed = "malformed"
	lanUnknown   = "unknown"
	lanForged    = "bad_signature"
	lanStale     = "stale"
	lanReplayed  = "replayed"
)

// lanPeers are the peers heard on the LAN, by name.
type lanPeers struct {
	mu sync.Mutex
	m  map[string]*lanPeer
	// counts are the announcements heard, by result.
	counts map[string]int64
}

// lanPeer is one peer heard on the LAN. It is kept when it expires: last still guards
// against a replay of its announcements.
type lanPeer struct {
	url    string    // http://IP:port of its daemon
	since  time.Time // first heard at url without a gap
	seen   time.Time // its last announcement accepted
	last   time.Time // that announcement's time
	failed bool      // a push to url failed since: not tried again until it announces
}

func (l *lanPeers) count(result string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.counts == nil {
		l.counts = map[string]int64{}
	}
	l.counts[result]++
}

// hearLAN takes an announcement datagram from the address src. It returns the result
// (lanAccepted, or why it was ignored), the peer it came from, and whether that peer is
// newly on the LAN (or at a new address, or back after a failed push).
func (n *Node) hearLAN(pkt []byte, src netip.Addr) (result, peer string, fresh bool) {
	result, peer, fresh = n.judgeLAN(pkt, src)
	n.lan.count(result)
	if result != lanAccepted && result != lanSelf {
		n.Log.Debug("LAN announcement ignored", "from", src.String(), "why", result, "peer", peer)
	} else if fresh {
		n.Log.Info("peer found on the LAN", "peer", peer, "url", n.lanURL(peer))
	}
	return result, peer, fresh
}

func (n *Node) judgeLAN(pkt []byte, src netip.Addr) (result, peer string, fresh bool) {
	a, st, sig, err := parseAnnouncement(pkt)
	if err != nil || !src.IsValid() {
		return lanMalformed, "", false
	}
	if a.From == n.Fingerprint() {
		return lanSelf, "", false
	}
	p, key, ok := n.PeerByFingerprint(a.From)
	if !ok || key == nil {
		return lanUnknown, "", false
	}
	signer, err := pgpmsg.VerifyDetached(pgpmsg.NewKeyring(key), st, sig)
	if err != nil || signer.Fingerprint() != a.From {
		return lanForged, p.Name, false
	}
	now := n.Now()
	interval := optLANAnnounceInterval.Get(n.Opts)
	if a.Time.After(now.Add(lanSkew)) || a.Time.Before(now.Add(-2*interval-lanSkew)) {
		return lanStale, p.Name, false
	}
	// A link-local IPv6 source keeps its zone, escaped as URLs write it (%25).
	url := "http://" + strings.Replace(netip.AddrPortFrom(src.Unmap(), uint16(a.Port)).String(), "%", "%25", 1)
	l := &n.lan
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[string]*lanPeer{}
	}
	lp := l.m[p.Name]
	if lp != nil && !a.Time.After(lp.last) {
		return lanReplayed, p.Name, false
	}
	if lp == nil {
		lp = &lanPeer{}
		l.m[p.Name] = lp
	}
	fresh = lp.url != url || lp.failed || !lp.onLAN(now, interval)
	if fresh {
		lp.since = now
	}
	lp.url, lp.seen, lp.last, lp.failed = url, now, a.Time, false
	return lanAccepted, p.Name, fresh
}

// onLAN reports whether lp announced itself within the last three intervals.
func (lp *lanPeer) onLAN(now time.Time, interval time.Duration) bool {
	return lp.url != "" && !lp.seen.IsZero() && now.Sub(lp.seen) <= 3*interval
}

// lanURL is the daemon URL of peer on the LAN, "" if it was not heard there lately or a
// push to it failed since.
func (n *Node) lanURL(peer string) string {
	if !optLANDiscovery.Get(n.Opts) {
		return ""
	}
	interval := optLANAnnounceInterval.Get(n.Opts)
	l := &n.lan
	l.mu.Lock()
	defer l.mu.Unlock()
	lp := l.m[peer]
	if lp == nil || lp.failed || !lp.onLAN(n.Now(), interval) {
		return ""
	}
	return lp.url
}

// lanFailed marks peer's LAN address as failing: its files go by their talk methods
// until it announces itself again.
func (n *Node) lanFailed(peer string) {
	l := &n.lan
	l.mu.Lock()
	defer l.mu.Unlock()
	if lp := l.m[peer]; lp != nil {
		lp.failed = true
	}
}

// LANPeers maps the peers found on the LAN to their daemon URLs.
func (n *Node) LANPeers() map[string]string {
	out := map[string]string{}
	n.lan.mu.Lock()
	names := make([]string, 0, len(n.lan.m))
	for name := range n.lan.m {
		names = append(names, name)
	}
	n.lan.mu.Unlock()
	for _, name := range names {
		if u := n.lanURL(name); u != "" {
			out[name] = u
		}
	}
	return out
}

// lanCounts is how many announcements were heard, by result.
func (n *Node) lanCounts() map[string]int64 {
	n.lan.mu.Lock()
	defer n.lan.mu.Unlock()
	return maps.Clone(n.lan.counts)
}

// sendLAN pushes the claimed file to p's daemon at url, found on the LAN, as the active
// transport pushes to its configured address.
func (n *Node) sendLAN(ctx context.Context, p *Peer, url string, c *queue.Claim) error {
	s, ok := n.Transports.Senders[Active]
	if !ok {
		return queue.Permanent(errors.New("no active transport is configured"))
	}
	ep, err := n.endpoint(p, Active)
	if err != nil {
		return queue.Permanent(err)
	}
	ep.Addr = url
	return n.sendTo(ctx, p, s, ep, c)
}

// lanSocket is the daemon's LAN discovery: where it hears announcements (nil conn: the
// address could not be bound, the daemon only announces) and where it sends its own.
type lanSocket struct {
	conn *net.UDPConn // listening on lanDiscoveryAddress; nil if that failed
	out  *net.UDPConn // connected to lanDiscoveryAddress
}

// openLAN opens the LAN discovery socket of addr (host:port): a multicast group is
// joined on the system's multicast interface, another address is listened on as it is. A listener that
// cannot be opened is logged, and the daemon only announces.
func (n *Node) openLAN(addr string) (*lanSocket, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("lanDiscoveryAddress %q: %w", addr, err)
	}
	out, err := net.DialUDP("udp", nil, ua)
	if err != nil {
		return nil, fmt.Errorf("lanDiscoveryAddress %q: %w", addr, err)
	}
	s := &lanSocket{out: out}
	if ua.IP.IsMulticast() {
		s.conn, err = net.ListenMulticastUDP("udp", nil, ua)
	} else {
		s.conn, err = net.ListenUDP("udp", ua)
	}
	if err != nil {
		s.conn = nil
		n.Log.Error("LAN discovery: not listening, only announcing", "addr", addr, "err", err)
	}
	return s, nil
}

// listen hands every datagram heard to hear until the socket is closed.
func (s *lanSocket) listen(hear func(pkt []byte, src netip.Addr)) {
	if s.conn == nil {
		return
	}
	buf := make([]byte, lanMaxPacket)
	for {
		k, src, err := s.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) || errors.Is(err, os.ErrClosed) {
				return
			}
			continue
		}
		hear(append([]byte(nil), buf[:k]...), src.Addr())
	}
}

func (s *lanSocket) close() {
	if s.conn != nil {
		s.conn.Close()
	}
	s.out.Close()
}

// AnnounceLAN sends the daemon's LAN announcement now (the lan job does, every
// lanAnnounceInterval). Without lanDiscovery it does nothing.
func (d *Daemon) AnnounceLAN() error {
	if d.lan == nil {
		return nil
	}
	_, port, err := net.SplitHostPort(d.ln.Addr().String())
	if err != nil {
		return err
	}
	pn, err := strconv.Atoi(port)
	if err != nil {
		return err
	}
	pkt, err := d.n.lanAnnouncement(pn)
	if err != nil {
		return err
	}
	_, err = d.lan.out.Write(pkt)
	return err
}

// hearLAN takes an announcement heard by the daemon: a peer newly found on the LAN is
// sent to at once, whatever its backoff.
func (d *Daemon) hearLAN(pkt []byte, src netip.Addr) {
	if _, peer, fresh := d.n.hearLAN(pkt, src); fresh {
		d.sendBackoff.reset(peer)
		poke(d.send.wake)
	}
}
