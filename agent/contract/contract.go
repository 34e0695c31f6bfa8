// Package contract is the peer finder: a contract is a signed advertisement of a trade of
// disk space ("give me 10-30 MB, I give back one byte for every 2.3"), posted to a contract
// server, where others find it and from which they answer it (propose_contract). This
// package holds the contract's format and checks, the server (contract_server) and its
// client; the handshake between the two nodes is the agent's (agent/contracts.go).
package contract

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/dibs-backup/dibs/pgpmsg"
)

// Any, as a contract's talk or listen, leaves the method to the proposer.
const Any = "any"

// Methods are the talk and listen values a contract or a proposal may name: the agent's
// methods a stranger can be reached by (carrying files needs no contract server), and Any.
var Methods = []string{"active", "passive", "mail", "relay", Any}

// Limits of a contract's fields.
const (
	MaxQuota     = 1_000_000_000_000_000 // a petabyte
	MaxQuotaMult = 1000.0
	MinLifetime  = 60               // seconds
	MaxLifetime  = 366 * 24 * 3600  // a year and a day
	MaxKeySize   = 32 << 10         // the armored public key
	MaxRequest   = 64 << 10         // a post or unpost request, all of it
	MaxClockSkew = 10 * time.Minute // how far a post's or unpost's date may be from the server's clock
	maxNameLen   = 64
	maxEmailLen  = 254
	maxHostLen   = 253
	statementV1  = "dibs-contract-v1"
	unpostV1     = "dibs-unpost-v1"
)

var (
	nameRE  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]*$`)
	labelRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?$`)
	localRE = regexp.MustCompile(`^[A-Za-z0-9._%+=-]+$`)
)

// Contract is one posted trade, from the poster's point of view: Talk is how the poster
// will reach the peer, Listen how the peer reaches the poster, as in add_peer; the
// quotas bound what the poster gets (remote_quota), and QuotaMult is the least ratio of
// what it gets to what it gives (local_quota).
type Contract struct {
	Name      string  `json:"name"`
	MinQuota  int64   `json:"min_quota"`
	MaxQuota  int64   `json:"max_quota"`
	QuotaMult float64 `json:"quota_mult"`
	Talk      string  `json:"talk"`
	Listen    string  `json:"listen"`
	Host      string  `json:"host,omitempty"` // the poster's daemon, for active listen or passive talk
	Port      int     `json:"port,omitempty"`
	Email     string  `json:"email"`
	Relay     string  `json:"relay,omitempty"` // the poster's relay, for relay listen or talk
	// Posted is when the poster signed it; it expires Lifetime seconds later.
	Posted   time.Time `json:"posted"`
	Lifetime int64     `json:"lifetime"`
	Expires  time.Time `json:"expires"` // Posted + Lifetime, for readers; not signed
	// Fingerprint and Key are the poster's key, armored; Signature (base64) is the key's
	// detached signature over Statement.
	Fingerprint string `json:"fingerprint"`
	Key         string `json:"key"`
	Signature   string `json:"signature"`
}

// Statement is the exact text a contract's signature covers: every field but the key
// itself (its fingerprint stands for it), the expiry (it follows) and the signature.
func (c *Contract) Statement() []byte {
	var b strings.Builder
	b.WriteString(statementV1 + "\n")
	for _, f := range [][2]string{
		{"name", c.Name},
		{"min_quota", strconv.FormatInt(c.MinQuota, 10)},
		{"max_quota", strconv.FormatInt(c.MaxQuota, 10)},
		{"quota_mult", strconv.FormatFloat(c.QuotaMult, 'g', -1, 64)},
		{"talk", c.Talk}, {"listen", c.Listen},
		{"host", c.Host}, {"port", strconv.Itoa(c.Port)},
		{"email", c.Email}, {"relay", c.Relay},
		{"posted", c.Posted.UTC().Format(time.RFC3339Nano)},
		{"lifetime", strconv.FormatInt(c.Lifetime, 10)},
		{"key", c.Fingerprint},
	} {
		b.WriteString(f[0] + ": " + f[1] + "\n")
	}
	return []byte(b.String())
}

// ExpiresAt is when the contract lapses.
func (c *Contract) ExpiresAt() time.Time {
	return c.Posted.Add(time.Duration(c.Lifetime) * time.Second)
}

// Sign fills in the key, the expiry and the signature of c with id.
func (c *Contract) Sign(id *pgpmsg.Identity) error {
	var armored bytes.Buffer
	if err := id.Public().WriteArmored(&armored); err != nil {
		return err
	}
	c.Fingerprint, c.Key = string(id.Fingerprint()), armored.String()
	c.Posted = c.Posted.UTC()
	c.Expires = c.ExpiresAt().UTC()
	sig, err := id.SignDetached(c.Statement())
	if err != nil {
		return err
	}
	c.Signature = base64.StdEncoding.EncodeToString(sig)
	return nil
}

// Validate checks every field of c on its own: what the server holds every post to, and
// a proposer holds a fetched contract to. It does not check the signature (Verify).
func (c *Contract) Validate() error {
	if err := CheckName(c.Name); err != nil {
		return err
	}
	if c.MinQuota <= 0 || c.MaxQuota > MaxQuota || c.MinQuota > c.MaxQuota {
		return fmt.Errorf("contract: quotas %d-%d: need 0 < min_quota <= max_quota <= %d bytes", c.MinQuota, c.MaxQuota, int64(MaxQuota))
	}
	if math.IsNaN(c.QuotaMult) || c.QuotaMult <= 0 || c.QuotaMult > MaxQuotaMult {
		return fmt.Errorf("contract: quota_mult %v: need a number above 0 and at most %v", c.QuotaMult, MaxQuotaMult)
	}
	if !oneOf(c.Talk, Methods) || !oneOf(c.Listen, Methods) {
		return fmt.Errorf("contract: talk %q, listen %q: each must be one of %s", c.Talk, c.Listen, strings.Join(Methods, ", "))
	}
	if err := checkReach(c.Talk, c.Listen, c.Host, c.Port, c.Relay); err != nil {
		return fmt.Errorf("contract: %w", err)
	}
	if err := CheckEmail(c.Email); err != nil {
		return fmt.Errorf("contract: %w", err)
	}
	if c.Lifetime < MinLifetime || c.Lifetime > MaxLifetime {
		return fmt.Errorf("contract: lifetime %d: need %d to %d seconds", c.Lifetime, MinLifetime, MaxLifetime)
	}
	if c.Posted.IsZero() {
		return fmt.Errorf("contract: no posted date")
	}
	if _, err := pgpmsg.ParseFingerprint(c.Fingerprint); err != nil {
		return fmt.Errorf("contract: key fingerprint: %w", err)
	}
	if len(c.Key) > MaxKeySize {
		return fmt.Errorf("contract: the key is %d bytes, at most %d", len(c.Key), MaxKeySize)
	}
	return nil
}

// Verify checks that c is signed by the key it carries, and returns the key.
func (c *Contract) Verify() (*pgpmsg.Key, error) {
	key, err := pgpmsg.ReadKey(strings.NewReader(c.Key))
	if err != nil {
		return nil, fmt.Errorf("contract: key: %w", err)
	}
	if string(key.Fingerprint()) != c.Fingerprint {
		return nil, fmt.Errorf("contract: the key is %s, the contract names %s", key.Fingerprint(), c.Fingerprint)
	}
	sig, err := base64.StdEncoding.DecodeString(c.Signature)
	if err != nil {
		return nil, fmt.Errorf("contract: signature is not base64")
	}
	if _, err := pgpmsg.VerifyDetached(pgpmsg.NewKeyring(key), c.Statement(), sig); err != nil {
		return nil, fmt.Errorf("contract %s: not signed by the key it advertises: %w", c.Name, err)
	}
	return key, nil
}

// Unpost is a signed request to withdraw a contract: only the key that posted it can.
type Unpost struct {
	Name        string    `json:"name"`
	Fingerprint string    `json:"fingerprint"`
	Posted      time.Time `json:"posted"` // the Posted of the contract withdrawn, so that it withdraws that post only
	Date        time.Time `json:"date"`
	Signature   string    `json:"signature"`
}

// Statement is what an unpost's signature covers.
func (u *Unpost) Statement() []byte {
	return []byte(unpostV1 + "\nname: " + u.Name + "\nkey: " + u.Fingerprint +
		"\nposted: " + u.Posted.UTC().Format(time.RFC3339Nano) + "\ndate: " + u.Date.UTC().Format(time.RFC3339Nano) + "\n")
}

// NewUnpost makes the signed withdrawal of c by id, dated now.
func NewUnpost(c *Contract, id *pgpmsg.Identity, now time.Time) (*Unpost, error) {
	u := &Unpost{Name: c.Name, Fingerprint: string(id.Fingerprint()), Posted: c.Posted.UTC(), Date: now.UTC()}
	sig, err := id.SignDetached(u.Statement())
	if err != nil {
		return nil, err
	}
	u.Signature = base64.StdEncoding.EncodeToString(sig)
	return u, nil
}

// CheckName checks a contract name: letters, digits and ._+-, at most 64, starting with a
// letter or digit.
func CheckName(name string) error {
	if len(name) > maxNameLen || !nameRE.MatchString(name) || strings.Contains(name, "..") {
		return fmt.Errorf("contract name %q must be letters, digits and ._+- (at most %d, starting with a letter or digit)", name, maxNameLen)
	}
	return nil
}

// CheckHost checks a host name (labels of letters, digits and inner '-') or an IP address.
func CheckHost(h string) error {
	if net.ParseIP(h) != nil {
		return nil
	}
	if h == "" || len(h) > maxHostLen {
		return fmt.Errorf("host %q is not a host name", h)
	}
	for _, l := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if len(l) > 63 || !labelRE.MatchString(l) {
			return fmt.Errorf("host %q is not a host name (labels of letters, digits and '-')", h)
		}
	}
	return nil
}

// CheckEmail checks an e-mail address: local@host.
func CheckEmail(e string) error {
	local, host, ok := strings.Cut(e, "@")
	if !ok || len(e) > maxEmailLen || !localRE.MatchString(local) || CheckHost(host) != nil || net.ParseIP(host) != nil {
		return fmt.Errorf("email %q is not an e-mail address", e)
	}
	return nil
}

// CheckReach checks that talk and listen (the poster's, or a proposal's from the poster's
// point of view) come with what they need of host, port and relay; talk and listen
// must be methods here, not Any.
func checkReach(talk, listen, host string, port int, relay string) error {
	if host != "" {
		if err := CheckHost(host); err != nil {
			return err
		}
		if port < 1 || port > 65535 {
			return fmt.Errorf("port %d is not a TCP port", port)
		}
	} else if port != 0 {
		return fmt.Errorf("a port without a host")
	}
	if (listen == "active" || talk == "passive") && host == "" {
		return fmt.Errorf("listen active and talk passive need the poster's host and port (its daemon)")
	}
	if relay != "" {
		u, err := url.Parse(relay)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || len(relay) > 1024 {
			return fmt.Errorf("relay %q is not an http:// or https:// URL", relay)
		}
	}
	if (listen == "relay" || talk == "relay") && relay == "" {
		return fmt.Errorf("talk or listen relay needs the poster's relay URL")
	}
	return nil
}

// Match checks a proposal against c: the quotas the poster would grant (local) and get
// (remote), and the talk and listen it would use, all from the poster's point of view.
// The error says what is wrong, in words a proposer can act on; its Reason is one of
// the codes DIBS used (remote_quota_range, bad_quota_mult, bad_talk_type, bad_listen_type).
func (c *Contract) Match(local, remote int64, talk, listen string) error {
	switch {
	case remote < c.MinQuota || remote > c.MaxQuota:
		return &Refusal{Reason: "remote_quota_range", Text: fmt.Sprintf("remote quota %d is outside the contract's %d to %d", remote, c.MinQuota, c.MaxQuota)}
	case local < 0 || float64(remote) < c.QuotaMult*float64(local)*(1-1e-12):
		return &Refusal{Reason: "bad_quota_mult", Text: fmt.Sprintf("remote quota %d is less than %v times the local quota %d", remote, c.QuotaMult, local)}
	case talk == Any || !oneOf(talk, Methods) || c.Talk != Any && talk != c.Talk:
		return &Refusal{Reason: "bad_talk_type", Text: fmt.Sprintf("talk %q does not fit the contract's %q", talk, c.Talk)}
	case listen == Any || !oneOf(listen, Methods) || c.Listen != Any && listen != c.Listen:
		return &Refusal{Reason: "bad_listen_type", Text: fmt.Sprintf("listen %q does not fit the contract's %q", listen, c.Listen)}
	}
	return nil
}

// Refusal is a proposal that does not fit a contract.
type Refusal struct {
	Reason string // a code: unknown_contract, expired, remote_quota_range, bad_quota_mult, ...
	Text   string
}

func (r *Refusal) Error() string { return r.Reason + ": " + r.Text }

// IsRefusal reports whether err is a Refusal, and returns it.
func IsRefusal(err error) (*Refusal, bool) {
	var r *Refusal
	ok := errors.As(err, &r)
	return r, ok
}

func oneOf(s string, set []string) bool {
	for _, x := range set {
		if s == x {
			return true
		}
	}
	return false
}
