package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/dibs-backup/dibs/pgpmsg"
	"github.com/dibs-backup/dibs/queue"
)

// Talk and listen methods.
const (
	Active  = "active"  // talk: push to the peer's daemon; listen: the peer pushes to ours
	Passive = "passive" // talk: wait in outgoing/ until the peer pulls; listen: we pull from the peer's daemon
	Mail    = "mail"    // talk: SMTP to the peer's e-mail; listen: our IMAP mailbox
	Relay   = "relay"   // talk: deposit at the peer's relay; listen: poll our relay
	Carry   = "carry"   // talk: wait in outgoing/ for export_messages; listen: files come by import_messages
)

var methods = []string{Active, Passive, Mail, Relay, Carry}

// delivers reports whether talk method m moves files itself. Files for passive and carry
// methods wait in outgoing/: the peer pulls them, or export_messages carries them.
func delivers(m string) bool { return m != Passive && m != Carry }

// Peer is one entry of the peer list (peers.toml): who the peer is and how to reach it.
// Usage and liveness are in the database, not here: this file changes only when the
// user changes it, so it can be kept safe with the key.
type Peer struct {
	Name        string `toml:"peer"`
	Email       string `toml:"email"`
	Comment     string `toml:"comment,omitempty"`
	Fingerprint string `toml:"fingerprint,omitempty"`
	// Talk lists how our messages reach the peer, in order of preference ("active,relay").
	Talk   string `toml:"talk"`
	Listen string `toml:"listen"`
	Host   string `toml:"host,omitempty"`
	Port   int    `toml:"port,omitempty"`
	// Relay is where files for this peer are deposited when talk includes relay
	// (default: our own relayURL).
	Relay       string `toml:"relay,omitempty"`
	LocalQuota  int64  `toml:"local_quota"`
	RemoteQuota int64  `toml:"remote_quota"`
	// The peer's own budgets and send window (budget.go), over the options
	// mailBytesPerDay, relayBytesPerDay, bandwidthLimit and sendWindow; unset: the
	// option's. send_window "always" lifts a sendWindow for this peer.
	MailBytesPerDay  *int64 `toml:"mail_bytes_per_day,omitempty"`
	RelayBytesPerDay *int64 `toml:"relay_bytes_per_day,omitempty"`
	BandwidthLimit   *int64 `toml:"bandwidth_limit,omitempty"`
	SendWindow       string `toml:"send_window,omitempty"`
}

// TalkMethods returns the peer's talk methods in order.
func (p *Peer) TalkMethods() []string {
	var out []string
	for _, m := range strings.Split(p.Talk, ",") {
		if m = strings.TrimSpace(m); m != "" {
			out = append(out, m)
		}
	}
	return out
}

// Talks reports whether method is one of the peer's talk methods.
func (p *Peer) Talks(method string) bool {
	for _, m := range p.TalkMethods() {
		if m == method {
			return true
		}
	}
	return false
}

// DaemonURL is the base URL of the peer's daemon.
func (p *Peer) DaemonURL() string {
	h := p.Host
	if strings.HasPrefix(h, "http://") || strings.HasPrefix(h, "https://") {
		return strings.TrimRight(h, "/")
	}
	port := p.Port
	if port == 0 {
		port = 6363
	}
	if strings.Contains(h, ":") && !strings.HasPrefix(h, "[") {
		h = "[" + h + "]"
	}
	return fmt.Sprintf("http://%s:%d", h, port)
}

// validate checks a peer record as add_peer and edit_peer take it: on its own, and
// against the options it relies on.
func (p *Peer) validate(opts *Options) error {
	if err := p.validateRecord(); err != nil {
		return err
	}
	if p.Talks(Relay) && p.Relay == "" && optRelayURL.Get(opts) == "" {
		return fmt.Errorf("talk relay needs --relay URL (or our relayURL option)")
	}
	if p.Listen == Relay && optRelayURL.Get(opts) == "" {
		return fmt.Errorf("listen relay needs our relayURL option: dibs set_option --name relayURL --value URL")
	}
	if p.Listen == Mail && OptIMAPServer.Get(opts) == "" {
		return fmt.Errorf("listen mail needs our imapServer option: dibs set_option --name imapServer --value host:port")
	}
	return nil
}

// validateRecord checks what a peer record says on its own. peers.toml is held to it
// on every load; the options' part is left to add_peer and to the transports, so that a
// node whose relayURL was unset can still be opened to set it again.
func (p *Peer) validateRecord() error {
	if !queue.ValidPeer(p.Name) {
		return fmt.Errorf("--peer %q must be letters, digits and ._+@- (at most 128)", p.Name)
	}
	if p.Email == "" || !strings.Contains(p.Email, "@") || strings.ContainsAny(p.Email, " \r\n<>") {
		return fmt.Errorf("--email %q is not an e-mail address", p.Email)
	}
	talk := p.TalkMethods()
	if len(talk) == 0 {
		return fmt.Errorf("--talk must be one of %s (or several, comma-separated)", strings.Join(methods, ", "))
	}
	for _, m := range talk {
		if !oneOf(m, methods) {
			return fmt.Errorf("--talk must be one of %s (or several, comma-separated)", strings.Join(methods, ", "))
		}
	}
	if !oneOf(p.Listen, methods) {
		return fmt.Errorf("--listen must be one of %s", strings.Join(methods, ", "))
	}
	if (p.Talks(Active) || p.Listen == Passive) && p.Host == "" {
		return fmt.Errorf("--host is needed when talk is active or listen is passive (we connect to the peer's daemon)")
	}
	if p.Port < 0 || p.Port > 65535 {
		return fmt.Errorf("--port %d is not a TCP port", p.Port)
	}
	if p.Relay != "" {
		if err := checkURL(p.Relay); err != nil {
			return fmt.Errorf("--relay: %w", err)
		}
	}
	if p.LocalQuota < 0 || p.RemoteQuota < 0 {
		return fmt.Errorf("quotas cannot be negative")
	}
	if err := p.validateBudgets(); err != nil {
		return err
	}
	if p.Fingerprint != "" {
		fp, err := pgpmsg.ParseFingerprint(p.Fingerprint)
		if err != nil || string(fp) != p.Fingerprint {
			return fmt.Errorf("fingerprint %q is not 40 upper-case hex digits", p.Fingerprint)
		}
	}
	return nil
}

func oneOf(s string, set []string) bool {
	for _, x := range set {
		if s == x {
			return true
		}
	}
	return false
}

type peerFile struct {
	Peers []*Peer `toml:"peer"`
}

// loadPeers reads peers.toml and holds every entry to the rules add_peer applies
// (validateRecord). An error names the file and the line of the entry at fault.
func loadPeers(dir string) ([]*Peer, error) {
	b, err := os.ReadFile(filepath.Join(dir, peersFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var pf peerFile
	md, err := toml.Decode(string(b), &pf)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", peersFile, err)
	}
	text := string(b)
	if und := md.Undecoded(); len(und) > 0 {
		k := und[0]
		return nil, fmt.Errorf("%s:%d: unknown field %q (add_peer's flags name the fields)", peersFile, keyLine(text, k[len(k)-1]), k.String())
	}
	starts := peerLines(text)
	seen := map[string]bool{}
	fps := map[string]string{} // fingerprint -> peer
	for i, p := range pf.Peers {
		line := 0
		if i < len(starts) {
			line = starts[i]
		}
		at := fmt.Sprintf("%s:%d: peer %q", peersFile, line, p.Name)
		if seen[p.Name] {
			return nil, fmt.Errorf("%s: the name is repeated", at)
		}
		seen[p.Name] = true
		if err := p.validateRecord(); err != nil {
			return nil, fmt.Errorf("%s: %s", at, strings.TrimPrefix(err.Error(), "--"))
		}
		if other, ok := fps[p.Fingerprint]; ok && p.Fingerprint != "" {
			return nil, fmt.Errorf("%s: fingerprint %s is peer %s's already", at, p.Fingerprint, other)
		}
		fps[p.Fingerprint] = p.Name
	}
	return pf.Peers, nil
}

// peerLines returns the line numbers of peers.toml's [[peer]] headers, in order.
func peerLines(text string) []int {
	var out []int
	for i, l := range strings.Split(text, "\n") {
		if strings.ReplaceAll(strings.TrimSpace(l), " ", "") == "[[peer]]" {
			out = append(out, i+1)
		}
	}
	return out
}

// keyLine is the first line of text that assigns key, or 0.
func keyLine(text, key string) int {
	for i, l := range strings.Split(text, "\n") {
		if k, _, ok := strings.Cut(strings.TrimSpace(l), "="); ok && strings.Trim(strings.TrimSpace(k), `"'`) == key {
			return i + 1
		}
	}
	return 0
}

func encodePeers(peers []*Peer) ([]byte, error) {
	sorted := append([]*Peer(nil), peers...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	var b bytes.Buffer
	b.WriteString("# dibs peer list. Keep it safe with your secret key (dibs export_recovery_kit).\n")
	b.WriteString("# Peers' public keys are in keys/peers/<peer>.asc. Quotas are in bytes.\n\n")
	if err := toml.NewEncoder(&b).Encode(peerFile{Peers: sorted}); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
