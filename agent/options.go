package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/dibs-backup/dibs/relay"
)

// optKind says how an option's value is read and checked.
type optKind int

const (
	kindString  optKind = iota
	kindInt             // a whole number
	kindSeconds         // a whole number of seconds
	kindSize            // DIBS size units, stored as bytes
	kindBool            // true/false, or 1/0 as DIBS 0.93 had them
	kindEnum            // one of choices
	kindPath            // a file or directory; relative to DIBS_DIR
)

// An optDef is one row of the option table: a name, how its value is read and checked,
// its default and its one-line doc.
type optDef struct {
	name     string
	kind     optKind
	def      any        // the default, in stored form (int64 for numbers, seconds, sizes)
	computed func() any // or this computes the default (from the user's and host's names)
	min      int64
	max      int64 // 0: no maximum
	choices  []string
	check    func(string) error // extra check on the string form
	doc      string
	// notYet marks an option that no code reads yet: it is in the table for the work
	// that will build it (notYet says which), and the user is told so.
	notYet string
}

// An Option is a typed handle on one row of the option table. Code reads an option as
// OptMaxMsgSize.Get(n.Opts), so that a misspelt name or a wrong type does not compile;
// looking options up by name is left to the names users give (set_option, show_option).
type Option[T any] struct{ d *optDef }

// Get is the option's value in o: from dibsrc.toml, else the default. Seconds come as a
// time.Duration, a path made absolute against the node directory ("" stays "").
func (h Option[T]) Get(o *Options) T { return o.value(h.d).(T) }

// Name is the option's name in dibsrc.toml.
func (h Option[T]) Name() string { return h.d.name }

func (h Option[T]) row() *optDef { return h.d }

// withCheck adds an extra check on the value's string form.
func (h Option[T]) withCheck(check func(string) error) Option[T] {
	h.d.check = check
	return h
}

// withComputed makes the default computed when it is needed (for string options).
func (h Option[T]) withComputed(def func() string) Option[T] {
	h.d.computed = func() any { return def() }
	return h
}

// notUsedYet marks an option that nothing reads yet; by says what will build it.
// show_option and dibsrc.toml say "(not used yet)" after its doc. TestOptionReads
// fails once code reads it: then the mark comes off.
func (h Option[T]) notUsedYet(by string) Option[T] {
	h.d.notYet = by
	return h
}

func newOption[T any](d optDef) Option[T] { return Option[T]{&d} }

// intOpt is a whole number in [min, max] (max 0: no maximum).
func intOpt(name string, def, min, max int64, doc string) Option[int64] {
	return newOption[int64](optDef{name: name, kind: kindInt, def: def, min: min, max: max, doc: doc})
}

// sizeOpt is a size in DIBS units, stored as bytes.
func sizeOpt(name string, def, min int64, doc string) Option[int64] {
	return newOption[int64](optDef{name: name, kind: kindSize, def: def, min: min, doc: doc})
}

// secondsOpt is a whole number of seconds, read as a time.Duration.
func secondsOpt(name string, def, min, max time.Duration, doc string) Option[time.Duration] {
	s := func(d time.Duration) int64 { return int64(d / time.Second) }
	return newOption[time.Duration](optDef{name: name, kind: kindSeconds, def: s(def), min: s(min), max: s(max), doc: doc})
}

func boolOpt(name string, def bool, doc string) Option[bool] {
	return newOption[bool](optDef{name: name, kind: kindBool, def: def, doc: doc})
}

func stringOpt(name, def, doc string) Option[string] {
	return newOption[string](optDef{name: name, kind: kindString, def: def, doc: doc})
}

// enumOpt is one of choices.
func enumOpt(name, def string, choices []string, doc string) Option[string] {
	return newOption[string](optDef{name: name, kind: kindEnum, def: def, choices: choices, doc: doc})
}

// pathOpt is a file or directory, relative to DIBS_DIR unless absolute.
func pathOpt(name, def, doc string) Option[string] {
	return newOption[string](optDef{name: name, kind: kindPath, def: def, doc: doc})
}

const day = 24 * time.Hour

var tlsModes = []string{"none", "starttls", "tls"}

// The options: DIBS 0.93's names and defaults (the code's, where the manual differs),
// then what dibs added. optionDefs below lists them in the order of dibsrc.toml. The
// handles that code outside package agent reads (agent/transports, cmd/dibs) are
// exported.
var (
	optDibsPublicKey         = stringOpt("dibsPublicKey", "", "name (user id) of our key: signs every message").withComputed(keyName)
	optDibsPrivateKey        = stringOpt("dibsPrivateKey", "", "name of the key pieces are encrypted to (our own)").withComputed(keyName)
	OptDibsAdmin             = stringOpt("dibsAdmin", "", "the owner's real e-mail address").withComputed(func() string { u, h := userHost(); return u + "@" + h })
	optMailUserOnRecovery    = boolOpt("mailUserOnRecovery", true, "mail dibsAdmin when a recovery finishes")
	optKbPerFile             = intOpt("kbPerFile", 10240, 1, 1<<30, "piece size in kilobytes (1000 bytes)")
	optRedundantPieces       = intOpt("redundantPieces", 2, 1, 200, "parity pieces per segment: how many peers may be lost")
	optMaxVersions           = intOpt("maxVersions", 3, 1, 1000, "versions kept of each stored file")
	optKeepDeleted           = secondsOpt("keepDeleted", 0, 0, 0, "seconds a file deleted locally stays recoverable (0: forever); cleanup drops older ones")
	optRepairAfter           = secondsOpt("repairAfter", 7*day, time.Minute, 0, "a peer silent this long, or a piece unacknowledged this long, counts as lost and is repaired")
	optResendAfter           = secondsOpt("resendAfter", day, time.Minute, 0, "a request delivered and unanswered this long is sent again")
	optRepairSpare           = intOpt("repairSpare", 1, 0, 200, "repair a segment that lost pieces once it has this many spare pieces (beyond k) or fewer")
	optDurabilityHorizon     = secondsOpt("durabilityHorizon", 30*day, time.Hour, 0, "the time over which a peer's chance of losing our pieces is estimated (docs/durability.md)")
	optDurabilityTarget      = intOpt("durabilityTarget", 6, 1, 30, "nines a segment should keep over durabilityHorizon: repair moves pieces off unreliable peers, and rebuilds lost ones, one nine before it falls below")
	optPackPrunePercent      = intOpt("packPrunePercent", 50, 1, 100, "a pack of small files is rewritten once this percentage of its bytes is unstored, so that they leave the peers")
	OptLogFile               = pathOpt("logFile", "logfile", "log of commands")
	OptLogLevel              = intOpt("logLevel", 0, -20, 20, "DEBUG -20, INFO -10, WARNING 0, ERROR 10, CRITICAL 20")
	OptPrintLogLevel         = intOpt("printLogLevel", 0, -20, 20, "log level echoed on stderr (WARNING and up by default, so cron mails only what needs a look)")
	OptMaxLogSize            = sizeOpt("maxLogSize", 1000000, 1000, "a log is rotated past this size")
	optErrWarnCount          = intOpt("errWarnCount", 30, 0, 0, "error files in errorDir before a warning")
	optErrMaxCount           = intOpt("errMaxCount", 60, 0, 0, "error files in errorDir before error mails stop")
	optErrorDir              = pathOpt("errorDir", "errorDir", "where error reports are kept")
	OptDaemonLogFile         = pathOpt("daemonLogFile", "daemonLog", "the daemon's log")
	OptDaemonStopFile        = pathOpt("daemonStopFile", "stop_daemon", "the daemon stops when this file appears (stop_daemon writes it); a number of seconds in it delays the stop")
	OptDaemonTimeout         = secondsOpt("daemonTimeout", 15*time.Minute, time.Second, 0, "network timeout of the daemon, seconds")
	optPollInterval          = secondsOpt("pollInterval", time.Hour, time.Second, 0, "seconds between the daemon's periodic batches (poll, auto_check, ...)")
	optDaemonPort            = intOpt("daemonPort", 6363, 0, 65535, "TCP port the daemon serves peers on")
	optDaemonAddress         = stringOpt("daemonAddress", "", "the address (interface) daemonPort is served on; empty: every interface").withCheck(checkBindAddress)
	optProbeTimeout          = secondsOpt("probeTimeout", day, time.Second, 0, "a probe unanswered this long counts as a timeout")
	optProbePeriod           = secondsOpt("probePeriod", day/2, time.Second, 0, "seconds between automatic probes")
	optMaxMsgAge             = secondsOpt("maxMsgAge", 10*day, time.Minute, 0, "older messages are refused (replay window), seconds")
	optClockSkew             = secondsOpt("clockSkew", 10*time.Minute, 0, day, "how far in the future a message's Date may be, seconds")
	OptMaxMsgSize            = sizeOpt("maxMsgSize", relay.DefaultMaxFileSize, 10000, "largest message file accepted or sent")
	optQuarantineMaxBytes    = sizeOpt("quarantineMaxBytes", 100_000_000, 0, "quarantined files beyond this total are dropped, oldest first (their reasons stay)")
	optHostname              = stringOpt("hostname", "", "our host name, as peers reach it").withComputed(func() string { _, h := userHost(); return h })
	optAutoBackupDir         = pathOpt("autoBackupDir", "autoBackup", "auto_check stores what is linked here")
	optDefaultContractServer = stringOpt("defaultContractServerURL", "http://127.0.0.1:8000/peer_finder", "the peer finder: where post_contract posts and propose_contract looks").withCheck(checkContractURL)
	optStatusAddress         = stringOpt("statusAddress", "127.0.0.1:6364", "host:port where start_daemon serves its status page, /status.json and /metrics; empty: none").withCheck(checkStatusAddress)
	optStatusAllowRemote     = boolOpt("statusAllowRemote", false, "let statusAddress be other than loopback (then statusTokenFile is needed)")
	optStatusTokenFile       = pathOpt("statusTokenFile", "", "file whose first line is the token the status server asks for (needed beyond loopback)")
	OptSMTPServer            = stringOpt("smtpServer", "localhost", "SMTP submission server, host or host:port").withCheck(checkHostPort)
	OptSMTPUser              = stringOpt("smtpUser", "", "SMTP user")
	OptSMTPPassword          = stringOpt("smtpPassword", "", "SMTP password (or smtpPasswordFile)")
	OptSMTPPasswordFile      = pathOpt("smtpPasswordFile", "", "file whose first line is the SMTP password")
	OptSMTPTLS               = enumOpt("smtpTLS", "starttls", tlsModes, "none (loopback only), starttls or tls")
	OptIMAPServer            = stringOpt("imapServer", "", "IMAP server host:port where peers' mail reaches us").withCheck(checkHostPort)
	OptIMAPUser              = stringOpt("imapUser", "", "IMAP user")
	OptIMAPPassword          = stringOpt("imapPassword", "", "IMAP password (or imapPasswordFile)")
	OptIMAPPasswordFile      = pathOpt("imapPasswordFile", "", "file whose first line is the IMAP password")
	OptIMAPMailbox           = stringOpt("imapMailbox", "INBOX", "mailbox dibs mail arrives in")
	OptIMAPTLS               = enumOpt("imapTLS", "tls", tlsModes, "none (loopback only), starttls or tls")
	OptMailCAFile            = pathOpt("mailCAFile", "", "extra CA certificates to trust for mail servers")
	OptMailMaxSize           = sizeOpt("mailMaxSize", 25000000, 10000, "largest mail the mail servers take")
	optRelayURL              = stringOpt("relayURL", "", "our relay: where poll_passives collects our files").withCheck(checkURL)
	OptRelayCAFile           = pathOpt("relayCAFile", "", "extra CA certificates to trust for https relays and daemons (a relay's self-signed certificate)")
	optTalkRetryDelay        = secondsOpt("talkRetryDelay", 10*time.Minute, 0, 0, "how long a file waits before the next talk method is tried")
	// Transport budgets and windows (budget.go); a peer's entry in peers.toml overrides them.
	optMailBytesPerDay     = sizeOpt("mailBytesPerDay", 0, 0, "bytes a day each peer may be sent by mail (0: no limit); files below 64 KiB do not count")
	optRelayBytesPerDay    = sizeOpt("relayBytesPerDay", 0, 0, "bytes a day each peer may be sent through a relay (0: no limit); files below 64 KiB do not count")
	optRepairBudgetPercent = intOpt("repairBudgetPercent", 50, 1, 100, "share of a daily budget, percent, that repair traffic may use while fresh backups wait")
	optBandwidthLimit      = sizeOpt("bandwidthLimit", 0, 0, "bytes a second sent to each peer, by any talk method (0: no limit)")
	optSendWindow          = stringOpt("sendWindow", "", "local hours files of 64 KiB and more are sent in, HH:MM-HH:MM, several comma-separated (22:00-06:00); empty: any time").withCheck(checkSendWindow)
	// Restore drills (drill.go).
	optDrillPeriod  = secondsOpt("drillPeriod", 7*day, 0, 0, "seconds between the daemon's restore drills (0: none); dibs drill runs one now")
	optDrillBudget  = sizeOpt("drillBudget", 64_000_000, 1, "bytes of pieces a restore drill may fetch: its random sample of stored files fits in this")
	optDrillTimeout = secondsOpt("drillTimeout", 2*day, time.Minute, 0, "a drill with pieces still unanswered this long ends, and fails on them")
	// LAN discovery (lan.go).
	optLANDiscovery        = boolOpt("lanDiscovery", false, "the daemon announces itself on the LAN and pushes directly to the peers it hears there, before their talk methods")
	optLANDiscoveryAddress = stringOpt("lanDiscoveryAddress", "239.255.63.63:6365", "UDP host:port of LAN discovery: a multicast group is joined, another address listened on; announcements go there").withCheck(checkLANAddress)
	optLANAnnounceInterval = secondsOpt("lanAnnounceInterval", 30*time.Second, time.Second, day, "seconds between the daemon's LAN announcements; a peer not heard for three is off the LAN")
)

// optionDefs is the option table in dibsrc.toml order. TestOptionTable checks that it
// lists every option declared above.
var optionDefs = rows(
	optDibsPublicKey, optDibsPrivateKey, OptDibsAdmin, optMailUserOnRecovery,
	optKbPerFile, optRedundantPieces, optMaxVersions, optKeepDeleted, optRepairAfter,
	optResendAfter, optRepairSpare, optDurabilityHorizon, optDurabilityTarget, optPackPrunePercent, OptLogFile, OptLogLevel, OptPrintLogLevel, OptMaxLogSize,
	optErrWarnCount, optErrMaxCount, optErrorDir, OptDaemonLogFile, OptDaemonStopFile,
	OptDaemonTimeout, optPollInterval, optDaemonPort, optDaemonAddress, optProbeTimeout,
	optProbePeriod, optMaxMsgAge, optClockSkew, OptMaxMsgSize, optQuarantineMaxBytes,
	optHostname, optAutoBackupDir, optDefaultContractServer, optStatusAddress, optStatusAllowRemote, optStatusTokenFile,
	OptSMTPServer, OptSMTPUser, OptSMTPPassword, OptSMTPPasswordFile, OptSMTPTLS,
	OptIMAPServer, OptIMAPUser, OptIMAPPassword, OptIMAPPasswordFile, OptIMAPMailbox,
	OptIMAPTLS, OptMailCAFile, OptMailMaxSize, optRelayURL, OptRelayCAFile, optTalkRetryDelay,
	optMailBytesPerDay, optRelayBytesPerDay, optRepairBudgetPercent, optBandwidthLimit, optSendWindow,
	optDrillPeriod, optDrillBudget, optDrillTimeout,
	optLANDiscovery, optLANDiscoveryAddress, optLANAnnounceInterval,
)

func rows(opts ...interface{ row() *optDef }) []*optDef {
	out := make([]*optDef, len(opts))
	for i, o := range opts {
		out[i] = o.row()
	}
	return out
}

// obsoleteOptions are DIBS 0.93 options that dibs does not have, with why. An old
// dibsrc.toml that sets one still loads: the node reports it once (Node.Warnings), and
// set_option refuses it.
var obsoleteOptions = map[string]string{
	"sleepTime":        "it was DIBS's pause between unstoring a changed file and storing it again; dibs stores the change as a new version and unstores nothing",
	"sendMsgThreshold": "store only seals pieces into outgoing/; send_message delivers them, and the daemon sends pieces as soon as they are sealed",
	"rootDir":          "auto_check's stored names are always /autoBackup/<entry>",
}

// optionAliases are old names of options, kept working for the new name: dibsrc.toml,
// set_option and show_option take them; dibsrc.toml is rewritten with the new name.
var optionAliases = map[string]string{
	"daemonHost": "daemonAddress", // the name dibs gave it first
}

// obsolete is the error for an option dibs no longer has, or nil.
func obsolete(name string) error {
	if why, ok := obsoleteOptions[name]; ok {
		return fmt.Errorf("option %s is obsolete (%s)", name, why)
	}
	return nil
}

func keyName() string { u, h := userHost(); return u + ".dibs@" + h }

// lookupDef is the option a user names: unknown and obsolete names are errors that say so.
func lookupDef(name string) (*optDef, error) {
	if d, ok := findDef(name); ok {
		return d, nil
	}
	if err := obsolete(name); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("unknown option %q (dibs show_option lists them)", name)
}

// findDef is the option name, or the option name is an old name of.
func findDef(name string) (*optDef, bool) {
	if to, ok := optionAliases[name]; ok {
		name = to
	}
	for _, d := range optionDefs {
		if d.name == name {
			return d, true
		}
	}
	return nil, false
}

func userHost() (string, string) {
	u := "user"
	if cu, err := user.Current(); err == nil && cu.Username != "" {
		u = cu.Username
	}
	if e := os.Getenv("USER"); e != "" {
		u = e
	}
	h, err := os.Hostname()
	if err != nil || h == "" {
		h = "localhost"
	}
	return u, h
}

func checkHostPort(s string) error {
	if s == "" {
		return nil
	}
	if _, _, err := net.SplitHostPort(s); err != nil {
		if strings.Contains(s, ":") {
			return fmt.Errorf("%q is not host or host:port", s)
		}
	}
	return nil
}

// checkLANAddress accepts host:port with a port number.
func checkLANAddress(s string) error {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not host:port", s)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("%q: the port must be a number from 1 to 65535", s)
	}
	return nil
}

// checkStatusAddress accepts host:port (or empty).
func checkStatusAddress(s string) error {
	if s == "" {
		return nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" || strings.ContainsAny(host, " /\t") {
		return fmt.Errorf("%q is not host:port (e.g. 127.0.0.1:6364)", s)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("%q: the port must be a number from 0 to 65535", s)
	}
	return nil
}

// checkBindAddress accepts what a server can listen on: an IP address or a host name
// (one of this machine's), without a port.
func checkBindAddress(s string) error {
	if s == "" {
		return nil
	}
	if _, _, err := net.SplitHostPort(s); err == nil {
		return fmt.Errorf("%q has a port: give the address alone (daemonPort is the port)", s)
	}
	if strings.ContainsAny(s, " /\t") {
		return fmt.Errorf("%q is not an IP address or host name", s)
	}
	return nil
}

func checkURL(s string) error {
	if s == "" {
		return nil
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q is not an http:// or https:// URL", s)
	}
	return nil
}

// Options are a node's settings from dibsrc.toml, over the defaults.
type Options struct {
	mu       sync.RWMutex // a running daemon reloads dibsrc.toml into its Options (replace)
	dir      string
	set      map[string]any // values present in dibsrc.toml
	old      map[string]any // obsolete options present in dibsrc.toml, kept as they are
	warnings []string       // what loading dibsrc.toml found to tell the user
}

// OptionNames lists every option in dibsrc.toml order.
func OptionNames() []string {
	out := make([]string, len(optionDefs))
	for i, d := range optionDefs {
		out[i] = d.name
	}
	return out
}

func loadOptions(dir string) (*Options, error) {
	o := &Options{dir: dir, set: map[string]any{}, old: map[string]any{}}
	b, err := os.ReadFile(filepath.Join(dir, optionsFile))
	if errors.Is(err, fs.ErrNotExist) {
		return o, nil
	}
	if err != nil {
		return nil, err
	}
	raw := map[string]any{}
	if _, err := toml.Decode(string(b), &raw); err != nil {
		return nil, fmt.Errorf("%s: %w", optionsFile, err)
	}
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys) // the warnings come in the same order each time
	for _, k := range keys {
		v := raw[k]
		d, ok := findDef(k)
		if err := obsolete(k); !ok && err != nil {
			o.warnings = append(o.warnings, err.Error()+"; remove it from "+optionsFile)
			o.old[k] = v
			continue
		}
		if !ok {
			return nil, fmt.Errorf("%s: unknown option %q", optionsFile, k)
		}
		if _, both := raw[d.name]; both && k != d.name {
			o.warnings = append(o.warnings, fmt.Sprintf("%s sets %s and its old name %s: %s is read; remove %s", optionsFile, d.name, k, d.name, k))
			continue
		}
		var val any
		if n, isInt := v.(int64); isInt && d.kind == kindSize {
			// Sizes are written as bytes; a string ("5M") is read in DIBS units.
			val, err = n, d.bounds(n)
		} else {
			val, err = d.parse(fmt.Sprint(v))
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", optionsFile, k, err)
		}
		o.set[d.name] = val
	}
	return o, nil
}

// parse checks a value given as text and returns it in its stored form.
func (d *optDef) parse(s string) (any, error) {
	switch d.kind {
	case kindInt, kindSeconds:
		v, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%q is not a whole number", s)
		}
		if err := d.bounds(v); err != nil {
			return nil, err
		}
		return v, nil
	case kindSize:
		v, err := ParseSize(s)
		if err != nil {
			return nil, err
		}
		if err := d.bounds(v); err != nil {
			return nil, err
		}
		return v, nil
	case kindBool:
		switch strings.ToLower(strings.TrimSpace(s)) {
		case "1", "true", "yes", "on":
			return true, nil
		case "0", "false", "no", "off":
			return false, nil
		}
		return nil, fmt.Errorf("%q is not true or false (or 1 or 0)", s)
	case kindEnum:
		for _, c := range d.choices {
			if s == c {
				return s, nil
			}
		}
		return nil, fmt.Errorf("%q must be one of %s", s, strings.Join(d.choices, ", "))
	default:
		if strings.ContainsAny(s, "\x00\r\n") {
			return nil, fmt.Errorf("value must be one line")
		}
		if d.check != nil {
			if err := d.check(s); err != nil {
				return nil, err
			}
		}
		return s, nil
	}
}

func (d *optDef) bounds(v int64) error {
	if v < d.min {
		return fmt.Errorf("%d is below the minimum %d", v, d.min)
	}
	if d.max != 0 && v > d.max {
		return fmt.Errorf("%d is above the maximum %d", v, d.max)
	}
	return nil
}

// stored is d's value in its stored form: from dibsrc.toml, else the default.
func (o *Options) stored(d *optDef) any {
	o.mu.RLock()
	v, ok := o.set[d.name]
	o.mu.RUnlock()
	if ok {
		return v
	}
	return d.defaultValue()
}

func (d *optDef) defaultValue() any {
	if d.computed != nil {
		return d.computed()
	}
	return d.def
}

// value is d's value as its Option hands it out: seconds as a time.Duration, a path
// made absolute against the node directory ("" stays "").
func (o *Options) value(d *optDef) any {
	v := o.stored(d)
	switch d.kind {
	case kindSeconds:
		return time.Duration(v.(int64)) * time.Second
	case kindPath:
		if p := v.(string); p != "" && !filepath.IsAbs(p) {
			return filepath.Join(o.dir, p)
		}
	}
	return v
}

// isSet reports whether dibsrc.toml sets the option name.
func (o *Options) isSet(name string) bool {
	o.mu.RLock()
	defer o.mu.RUnlock()
	_, ok := o.set[name]
	return ok
}

// Show returns name's value as text, and whether it was set in dibsrc.toml.
func (o *Options) Show(name string) (string, bool, error) {
	d, err := lookupDef(name)
	if err != nil {
		return "", false, err
	}
	o.mu.RLock()
	_, set := o.set[d.name]
	o.mu.RUnlock()
	return fmt.Sprint(o.stored(d)), set, nil // a bool as true or false, as dibsrc.toml has it
}

// OptionDoc is the one-line description of an option, as show_option prints it.
func OptionDoc(name string) string {
	if d, ok := findDef(name); ok {
		return d.shownDoc()
	}
	return ""
}

// shownDoc is the doc users see: it says when nothing reads the option yet.
func (d *optDef) shownDoc() string {
	if d.notYet != "" {
		return d.doc + " (not used yet)"
	}
	return d.doc
}

// Set checks value and sets option name; Save writes it.
func (o *Options) Set(name, value string) error {
	d, err := lookupDef(name)
	if err != nil {
		return err
	}
	v, err := d.parse(value)
	if err != nil {
		return fmt.Errorf("option %s: %w", name, err)
	}
	o.mu.Lock()
	o.set[d.name] = v
	o.mu.Unlock()
	return nil
}

// replace takes from's values, for a daemon that reloads dibsrc.toml: code that holds
// o reads the new values from then on. It returns the names of the options whose
// values changed.
func (o *Options) replace(from *Options) []string {
	from.mu.RLock()
	set, old := maps.Clone(from.set), maps.Clone(from.old)
	from.mu.RUnlock()
	o.mu.Lock()
	defer o.mu.Unlock()
	var changed []string
	for _, d := range optionDefs {
		a, inA := o.set[d.name]
		b, inB := set[d.name]
		if inA != inB || a != b {
			changed = append(changed, d.name)
		}
	}
	o.set, o.old = set, old
	return changed
}

// encode renders dibsrc.toml: set options as assignments, the rest as commented defaults.
func (o *Options) encode() []byte {
	o.mu.RLock()
	defer o.mu.RUnlock()
	var b bytes.Buffer
	b.WriteString("# dibs options (DIBS 0.93 names). Change them with: dibs set_option --name N --value V\n")
	b.WriteString("# Lines starting with # show defaults. Sizes are in bytes here.\n\n")
	for _, n := range OptionNames() {
		d, _ := findDef(n)
		v, set := o.set[n]
		prefix := ""
		if !set {
			prefix = "# "
			v = d.defaultValue()
		}
		var line bytes.Buffer
		toml.NewEncoder(&line).Encode(map[string]any{n: v})
		fmt.Fprintf(&b, "%s%s", prefix, strings.TrimRight(line.String(), "\n"))
		fmt.Fprintf(&b, "  # %s\n", d.shownDoc())
	}
	// Obsolete options stay until the user removes them: rewriting the file for
	// set_option does not drop a line silently.
	old := make([]string, 0, len(o.old))
	for k := range o.old {
		old = append(old, k)
	}
	sort.Strings(old)
	for _, k := range old {
		var line bytes.Buffer
		toml.NewEncoder(&line).Encode(map[string]any{k: o.old[k]})
		fmt.Fprintf(&b, "%s  # obsolete, not read: remove this line\n", strings.TrimRight(line.String(), "\n"))
	}
	return b.Bytes()
}
