package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
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
	kindBool            // 0/1, true/false
	kindEnum            // one of choices
	kindPath            // a file or directory; relative to DIBS_DIR
)

type optDef struct {
	name    string
	kind    optKind
	def     func(dir string) any // default, computed for a node directory
	min     int64
	max     int64
	choices []string
	check   func(string) error // extra check on the string form
	doc     string
}

func constDef(v any) func(string) any { return func(string) any { return v } }

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

// optionDefs lists every option: DIBS 0.93's names and defaults (the code's, where the
// manual differs), then what dibs added. The order is the order of dibsrc.toml.
var optionDefs = []optDef{
	{name: "dibsPublicKey", kind: kindString, def: func(string) any { u, h := userHost(); return u + ".dibs@" + h }, doc: "name (user id) of our key: signs every message"},
	{name: "dibsPrivateKey", kind: kindString, def: func(string) any { u, h := userHost(); return u + ".dibs@" + h }, doc: "name of the key pieces are encrypted to (our own)"},
	{name: "dibsAdmin", kind: kindString, def: func(string) any { u, h := userHost(); return u + "@" + h }, doc: "the owner's real e-mail address"},
	{name: "mailUserOnRecovery", kind: kindBool, def: constDef(true), doc: "mail dibsAdmin when a recovery finishes"},
	{name: "kbPerFile", kind: kindInt, def: constDef(int64(10240)), min: 1, max: 1 << 30, doc: "piece size in kilobytes (1000 bytes)"},
	{name: "redundantPieces", kind: kindInt, def: constDef(int64(2)), min: 1, max: 200, doc: "parity pieces per segment: how many peers may be lost"},
	{name: "maxVersions", kind: kindInt, def: constDef(int64(3)), min: 1, max: 1000, doc: "versions kept of each stored file"},
	{name: "keepDeleted", kind: kindSeconds, def: constDef(int64(0)), min: 0, doc: "seconds a file deleted locally stays recoverable (0: forever); cleanup drops older ones"},
	{name: "repairAfter", kind: kindSeconds, def: constDef(int64(7 * 86400)), min: 60, doc: "a peer silent this long, or a piece unacknowledged this long, counts as lost and is repaired"},
	{name: "resendAfter", kind: kindSeconds, def: constDef(int64(86400)), min: 60, doc: "a request delivered and unanswered this long is sent again"},
	{name: "repairSpare", kind: kindInt, def: constDef(int64(1)), min: 0, max: 200, doc: "repair a segment that lost pieces once it has this many spare pieces (beyond k) or fewer"},
	{name: "logFile", kind: kindPath, def: constDef("logfile"), doc: "log of commands"},
	{name: "logLevel", kind: kindInt, def: constDef(int64(0)), min: -20, max: 20, doc: "DEBUG -20, INFO -10, WARNING 0, ERROR 10, CRITICAL 20"},
	{name: "printLogLevel", kind: kindInt, def: constDef(int64(-10)), min: -20, max: 20, doc: "log level echoed on stderr"},
	{name: "maxLogSize", kind: kindSize, def: constDef(int64(1000000)), min: 1000, doc: "a log is rotated past this size"},
	{name: "sleepTime", kind: kindSeconds, def: constDef(int64(10)), min: 0, max: 3600, doc: "pause between unstoring and re-storing a changed file"},
	{name: "errWarnCount", kind: kindInt, def: constDef(int64(30)), min: 0, doc: "error files in errorDir before a warning"},
	{name: "errMaxCount", kind: kindInt, def: constDef(int64(60)), min: 0, doc: "error files in errorDir before error mails stop"},
	{name: "errorDir", kind: kindPath, def: constDef("errorDir"), doc: "where error reports are kept"},
	{name: "daemonLogFile", kind: kindPath, def: constDef("daemonLog"), doc: "the daemon's log"},
	{name: "daemonTimeout", kind: kindSeconds, def: constDef(int64(900)), min: 1, doc: "network timeout of the daemon, seconds"},
	{name: "pollInterval", kind: kindSeconds, def: constDef(int64(3600)), min: 1, doc: "seconds between the daemon's periodic batches (poll, auto_check, ...)"},
	{name: "daemonPort", kind: kindInt, def: constDef(int64(6363)), min: 0, max: 65535, doc: "TCP port the daemon serves peers on"},
	{name: "daemonHost", kind: kindString, def: constDef(""), doc: "address the daemon listens on (empty: all)"},
	{name: "probeTimeout", kind: kindSeconds, def: constDef(int64(86400)), min: 1, doc: "a probe unanswered this long counts as a timeout"},
	{name: "probePeriod", kind: kindSeconds, def: constDef(int64(43200)), min: 1, doc: "seconds between automatic probes"},
	{name: "sendMsgThreshold", kind: kindInt, def: constDef(int64(30)), min: 1, doc: "during a tree store, send the queue every this many files"},
	{name: "maxMsgAge", kind: kindSeconds, def: constDef(int64(864000)), min: 60, doc: "older messages are refused (replay window), seconds"},
	{name: "clockSkew", kind: kindSeconds, def: constDef(int64(600)), min: 0, max: 86400, doc: "how far in the future a message's Date may be, seconds"},
	{name: "maxMsgSize", kind: kindSize, def: constDef(int64(relay.DefaultMaxFileSize)), min: 10000, doc: "largest message file accepted or sent"},
	{name: "hostname", kind: kindString, def: func(string) any { _, h := userHost(); return h }, doc: "our host name, as peers reach it"},
	{name: "autoBackupDir", kind: kindPath, def: constDef("autoBackup"), doc: "auto_check stores what is linked here"},
	{name: "rootDir", kind: kindString, def: constDef("/"), doc: "prefix of auto-backup stored names"},
	{name: "defaultContractServerURL", kind: kindString, def: constDef("http://127.0.0.1:8000/peer_finder"), check: checkURL, doc: "the peer finder"},
	{name: "statusAddress", kind: kindString, def: constDef("127.0.0.1:6364"), check: checkHostPort, doc: "where the daemon reports its status (loopback)"},
	{name: "smtpServer", kind: kindString, def: constDef("localhost"), check: checkHostPort, doc: "SMTP submission server, host or host:port"},
	{name: "smtpUser", kind: kindString, def: constDef(""), doc: "SMTP user"},
	{name: "smtpPassword", kind: kindString, def: constDef(""), doc: "SMTP password (or smtpPasswordFile)"},
	{name: "smtpPasswordFile", kind: kindPath, def: constDef(""), doc: "file whose first line is the SMTP password"},
	{name: "smtpTLS", kind: kindEnum, def: constDef("starttls"), choices: []string{"none", "starttls", "tls"}, doc: "none (loopback only), starttls or tls"},
	{name: "imapServer", kind: kindString, def: constDef(""), check: checkHostPort, doc: "IMAP server host:port where peers' mail reaches us"},
	{name: "imapUser", kind: kindString, def: constDef(""), doc: "IMAP user"},
	{name: "imapPassword", kind: kindString, def: constDef(""), doc: "IMAP password (or imapPasswordFile)"},
	{name: "imapPasswordFile", kind: kindPath, def: constDef(""), doc: "file whose first line is the IMAP password"},
	{name: "imapMailbox", kind: kindString, def: constDef("INBOX"), doc: "mailbox dibs mail arrives in"},
	{name: "imapTLS", kind: kindEnum, def: constDef("tls"), choices: []string{"none", "starttls", "tls"}, doc: "none (loopback only), starttls or tls"},
	{name: "mailCAFile", kind: kindPath, def: constDef(""), doc: "extra CA certificates to trust for mail servers"},
	{name: "mailMaxSize", kind: kindSize, def: constDef(int64(25000000)), min: 10000, doc: "largest mail the mail servers take"},
	{name: "relayURL", kind: kindString, def: constDef(""), check: checkURL, doc: "our relay: where poll_passives collects our files"},
	{name: "relayCAFile", kind: kindPath, def: constDef(""), doc: "extra CA certificates to trust for https relays and daemons (a relay's self-signed certificate)"},
	{name: "talkRetryDelay", kind: kindSeconds, def: constDef(int64(600)), min: 0, doc: "how long a file waits before the next talk method is tried"},
}

func findDef(name string) (*optDef, bool) {
	for i := range optionDefs {
		if optionDefs[i].name == name {
			return &optionDefs[i], true
		}
	}
	return nil, false
}

// Options are a node's settings from dibsrc.toml, over the defaults.
type Options struct {
	dir string
	set map[string]any // values present in dibsrc.toml
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
	o := &Options{dir: dir, set: map[string]any{}}
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
	for k, v := range raw {
		d, ok := findDef(k)
		if !ok {
			return nil, fmt.Errorf("%s: unknown option %q", optionsFile, k)
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
		o.set[k] = val
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
		return nil, fmt.Errorf("%q is not 0 or 1", s)
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

func (o *Options) get(name string) any {
	if v, ok := o.set[name]; ok {
		return v
	}
	d, ok := findDef(name)
	if !ok {
		panic("agent: no option " + name)
	}
	return d.def(o.dir)
}

// String returns a string option.
func (o *Options) String(name string) string { return o.get(name).(string) }

// Int returns a whole-number or size option.
func (o *Options) Int(name string) int64 { return o.get(name).(int64) }

// Bool returns a 0/1 option.
func (o *Options) Bool(name string) bool { return o.get(name).(bool) }

// Duration returns a seconds option.
func (o *Options) Duration(name string) time.Duration {
	return time.Duration(o.Int(name)) * time.Second
}

// Path returns a path option made absolute against the node directory ("" stays "").
func (o *Options) Path(name string) string {
	p := o.String(name)
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(o.dir, p)
}

// Show returns name's value as text, and whether it was set in dibsrc.toml.
func (o *Options) Show(name string) (string, bool, error) {
	d, ok := findDef(name)
	if !ok {
		return "", false, fmt.Errorf("unknown option %q (dibs show_option lists them)", name)
	}
	_, set := o.set[name]
	if b, ok := o.get(d.name).(bool); ok {
		if b {
			return "1", set, nil
		}
		return "0", set, nil
	}
	return fmt.Sprint(o.get(name)), set, nil
}

// Doc is the one-line description of an option.
func OptionDoc(name string) string {
	if d, ok := findDef(name); ok {
		return d.doc
	}
	return ""
}

// Set checks value and sets option name; Save writes it.
func (o *Options) Set(name, value string) error {
	d, ok := findDef(name)
	if !ok {
		return fmt.Errorf("unknown option %q (dibs show_option lists them)", name)
	}
	v, err := d.parse(value)
	if err != nil {
		return fmt.Errorf("option %s: %w", name, err)
	}
	o.set[name] = v
	return nil
}

// encode renders dibsrc.toml: set options as assignments, the rest as commented defaults.
func (o *Options) encode() []byte {
	var b bytes.Buffer
	b.WriteString("# dibs options (DIBS 0.93 names). Change them with: dibs set_option --name N --value V\n")
	b.WriteString("# Lines starting with # show defaults. Sizes are in bytes here.\n\n")
	names := OptionNames()
	keys := make([]string, 0, len(o.set))
	for k := range o.set {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, n := range names {
		d, _ := findDef(n)
		v, set := o.set[n]
		prefix := ""
		if !set {
			prefix = "# "
			v = d.def(o.dir)
		}
		var line bytes.Buffer
		toml.NewEncoder(&line).Encode(map[string]any{n: v})
		fmt.Fprintf(&b, "%s%s", prefix, strings.TrimRight(line.String(), "\n"))
		fmt.Fprintf(&b, "  # %s\n", d.doc)
	}
	return b.Bytes()
}
