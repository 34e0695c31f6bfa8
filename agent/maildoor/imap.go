package maildoor

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/dibs-backup/dibs/mailbox"
	"github.com/dibs-backup/dibs/pgpmsg"
	"github.com/dibs-backup/dibs/relay"
	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-message/textproto"
)

// IMAP is the IMAP door: each user logs in with its users-file credentials and finds the
// files waiting for its key as mails in INBOX, framed as mailbox.Sender frames them, so
// that a dibs node's mail poller (or any IMAP client) fetches them unchanged. EXPUNGE of a
// mail flagged \Deleted removes its file from the store: that is the collection.
//
// Nothing is copied: a mail is framed around its file when it is fetched, the file
// streamed from the store. UIDs and flags are kept in memory: a restart of the relay
// starts a new UIDVALIDITY, and flags (\Seen, $DibsBad) are forgotten.
type IMAP struct {
	opts        *Options
	srv         *imapserver.Server
	uidValidity uint32

	mu    sync.Mutex
	boxes map[pgpmsg.Fingerprint]*box
}

// refreshEvery is how often an IDLE client's mailbox is looked at again.
const refreshEvery = 2 * time.Second

// NewIMAP returns the IMAP door; serve it with Serve on a listener (a TLS listener, or
// plain for loopback clients: only they may log in without TLS).
func NewIMAP(opts Options) *IMAP {
	d := &IMAP{opts: &opts, uidValidity: uint32(time.Now().Unix()), boxes: map[pgpmsg.Fingerprint]*box{}}
	d.srv = imapserver.New(&imapserver.Options{
		NewSession: func(c *imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return &imapSession{d: d, conn: c}, nil, nil
		},
		// UIDPLUS: a poller expunges exactly the mails it committed (UID EXPUNGE).
		Caps: imap.CapSet{imap.CapIMAP4rev1: {}, imap.CapUIDPlus: {}},
		// Login is allowed over TLS or from loopback (imapSession.Login); the server's
		// own rule knows only TLS.
		InsecureAuth: true,
		Logger:       nopLogger{},
	})
	return d
}

// Serve serves the door on ln until Close.
func (d *IMAP) Serve(ln net.Listener) error { return d.srv.Serve(ln) }

// Close stops the door and closes its connections.
func (d *IMAP) Close() error { return d.srv.Close() }

// box is a user's INBOX, shared by its sessions: the store's files for the user's key,
// with the UIDs and flags given to them here.
type box struct {
	d       *IMAP
	user    User
	tracker *imapserver.MailboxTracker

	mu      sync.Mutex
	msgs    []*message // in sequence order, oldest first
	byName  map[string]*message
	nextUID imap.UID
}

type message struct {
	uid   imap.UID
	name  string
	size  int64
	date  time.Time
	flags map[imap.Flag]bool // lower case
	mail  *mailbox.Mail
}

func (d *IMAP) box(u *User) *box {
	d.mu.Lock()
	defer d.mu.Unlock()
	b := d.boxes[u.Key]
	if b == nil {
		b = &box{d: d, user: *u, tracker: imapserver.NewMailboxTracker(0), byName: map[string]*message{}, nextUID: 1}
		d.boxes[u.Key] = b
	}
	b.mu.Lock()
	b.user = *u // the address may have changed in the users file
	b.mu.Unlock()
	return b
}

// refreshLocked brings the box in line with the store: files collected elsewhere (HTTP,
// another session, expiry) are expunged, new files appended with new UIDs.
func (b *box) refreshLocked() error {
	es, err := b.d.opts.Store.List(b.user.Key)
	if err != nil {
		return err
	}
	present := make(map[string]bool, len(es))
	for _, e := range es {
		present[e.Name] = true
	}
	gone := map[*message]bool{}
	for _, m := range b.msgs {
		if !present[m.name] {
			gone[m] = true
		}
	}
	b.expungeLocked(gone)
	for _, e := range es {
		if b.byName[e.Name] != nil {
			continue
		}
		m := &message{uid: b.nextUID, name: e.Name, size: e.Size, date: e.ModTime, flags: map[imap.Flag]bool{}}
		b.nextUID++
		b.msgs = append(b.msgs, m)
		b.byName[m.name] = m
		// One at a time: the tracker maps sequence numbers right only for steps of one.
		b.tracker.QueueNumMessages(uint32(len(b.msgs)))
	}
	return nil
}

func (b *box) refresh() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.refreshLocked()
}

func (b *box) expungeLocked(gone map[*message]bool) {
	if len(gone) == 0 {
		return
	}
	kept := b.msgs[:0:0]
	for i := len(b.msgs) - 1; i >= 0; i-- { // from the end: the numbers below stay right
		if m := b.msgs[i]; gone[m] {
			b.tracker.QueueExpunge(uint32(i) + 1)
			delete(b.byName, m.name)
		}
	}
	for _, m := range b.msgs {
		if !gone[m] {
			kept = append(kept, m)
		}
	}
	b.msgs = kept
}

// mailOf is the mail m is served as.
func (b *box) mailOf(m *message) (*mailbox.Mail, error) {
	if m.mail != nil {
		return m.mail, nil
	}
	_, domain, _ := strings.Cut(b.user.Mail, "@")
	mail, err := mailbox.FrameFile("dibs-relay@"+domain, b.user.Mail, m.name, string(b.user.Key), m.size, m.date)
	if err != nil {
		return nil, err
	}
	m.mail = mail
	return mail, nil
}

func (m *message) flagList() []imap.Flag {
	out := make([]imap.Flag, 0, len(m.flags))
	for f := range m.flags {
		out = append(out, canonical(f))
	}
	return out
}

// canonical spells the system flags as RFC 9051 does; keywords stay as they are.
func canonical(f imap.Flag) imap.Flag {
	for _, s := range []imap.Flag{imap.FlagSeen, imap.FlagAnswered, imap.FlagFlagged, imap.FlagDeleted, imap.FlagDraft} {
		if strings.EqualFold(string(f), string(s)) {
			return s
		}
	}
	return f
}

func lower(f imap.Flag) imap.Flag { return imap.Flag(strings.ToLower(string(f))) }

// imapSession is one connection.
type imapSession struct {
	d    *IMAP
	conn *imapserver.Conn
	user *User
	box  *box
	view *imapserver.SessionTracker // nil unless INBOX is selected

	searchRes imap.UIDSet
}

var _ imapserver.Session = (*imapSession)(nil)

var (
	errNoMailbox = &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeNonExistent,
		Text: "this relay keeps one mailbox, INBOX"}
	errCannot = &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeCannot,
		Text: "this relay keeps one mailbox, INBOX, of the files waiting for you; deposit over SMTP or HTTP"}
)

func isInbox(name string) bool { return strings.EqualFold(name, "INBOX") }

func (x *imapSession) Close() error {
	if x.view != nil {
		x.view.Close()
		x.view = nil
	}
	return nil
}

func (x *imapSession) Login(username, password string) error {
	if !secure(x.conn.NetConn(), false) {
		x.d.opts.refuse("imap", "cleartext_login", fmt.Errorf("LOGIN as %q without TLS from %s", username, x.conn.NetConn().RemoteAddr()))
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodePrivacyRequired,
			Text: "TLS is required to log in from beyond this host"}
	}
	u, ok := x.d.opts.Users.Login(username, password)
	if !ok {
		x.d.opts.refuse("imap", "auth_failed", fmt.Errorf("LOGIN as %q refused", username))
		return imapserver.ErrAuthFailed
	}
	if _, ok := x.d.opts.Store.Key(u.Key); !ok {
		x.d.opts.refuse("imap", "auth_failed", fmt.Errorf("LOGIN as %q: key %s is not in the allow file", username, u.Key))
		return imapserver.ErrAuthFailed
	}
	x.user = u
	x.box = x.d.box(u)
	return nil
}

func storeError(err error) error {
	if errors.Is(err, relay.ErrBusy) {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeInUse, Text: "file busy, try again later"}
	}
	return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeServerBug, Text: "relay store: " + err.Error()}
}

func (x *imapSession) Select(name string, options *imap.SelectOptions) (*imap.SelectData, error) {
	if !isInbox(name) {
		return nil, errNoMailbox
	}
	if x.view != nil {
		x.view.Close()
		x.view = nil
	}
	b := x.box
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.refreshLocked(); err != nil {
		return nil, storeError(err)
	}
	x.view = b.tracker.NewSession()
	flags := []imap.Flag{imap.FlagSeen, imap.FlagDeleted, mailbox.FlagBad}
	data := &imap.SelectData{
		Flags:          flags,
		PermanentFlags: append(append([]imap.Flag{}, flags...), imap.FlagWildcard),
		NumMessages:    uint32(len(b.msgs)),
		UIDNext:        b.nextUID,
		UIDValidity:    x.d.uidValidity,
	}
	for i, m := range b.msgs {
		if !m.flags[lower(imap.FlagSeen)] {
			data.FirstUnseenSeqNum = uint32(i) + 1
			break
		}
	}
	return data, nil
}

func (x *imapSession) Create(string, *imap.CreateOptions) error         { return errCannot }
func (x *imapSession) Delete(string) error                              { return errCannot }
func (x *imapSession) Rename(string, string, *imap.RenameOptions) error { return errCannot }
func (x *imapSession) Subscribe(name string) error                      { return inboxOnly(name) }
func (x *imapSession) Unsubscribe(name string) error                    { return inboxOnly(name) }
func (x *imapSession) Copy(imap.NumSet, string) (*imap.CopyData, error) { return nil, errCannot }
func (x *imapSession) Append(string, imap.LiteralReader, *imap.AppendOptions) (*imap.AppendData, error) {
	return nil, errCannot
}

func inboxOnly(name string) error {
	if !isInbox(name) {
		return errNoMailbox
	}
	return nil
}

func (x *imapSession) List(w *imapserver.ListWriter, ref string, patterns []string, options *imap.ListOptions) error {
	if len(patterns) == 0 {
		return w.WriteList(&imap.ListData{Attrs: []imap.MailboxAttr{imap.MailboxAttrNoSelect}, Delim: '/'})
	}
	for _, p := range patterns {
		if imapserver.MatchList("INBOX", '/', ref, p) {
			data := &imap.ListData{Mailbox: "INBOX", Delim: '/'}
			if options != nil && options.ReturnStatus != nil {
				st, err := x.Status("INBOX", options.ReturnStatus)
				if err != nil {
					return err
				}
				data.Status = st
			}
			return w.WriteList(data)
		}
	}
	return nil
}

func (x *imapSession) Status(name string, options *imap.StatusOptions) (*imap.StatusData, error) {
	if !isInbox(name) {
		return nil, errNoMailbox
	}
	b := x.box
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.refreshLocked(); err != nil {
		return nil, storeError(err)
	}
	data := &imap.StatusData{Mailbox: "INBOX"}
	n := uint32(len(b.msgs))
	count := func(f imap.Flag) uint32 {
		k := uint32(0)
		for _, m := range b.msgs {
			if m.flags[lower(f)] {
				k++
			}
		}
		return k
	}
	if options.NumMessages {
		data.NumMessages = &n
	}
	if options.UIDNext {
		data.UIDNext = b.nextUID
	}
	if options.UIDValidity {
		data.UIDValidity = x.d.uidValidity
	}
	if options.NumUnseen {
		u := n - count(imap.FlagSeen)
		data.NumUnseen = &u
	}
	if options.NumDeleted {
		del := count(imap.FlagDeleted)
		data.NumDeleted = &del
	}
	if options.Size {
		var size int64
		for _, m := range b.msgs {
			if mail, err := b.mailOf(m); err == nil {
				size += mail.Len()
			}
		}
		data.Size = &size
	}
	return data, nil
}

func (x *imapSession) Poll(w *imapserver.UpdateWriter, allowExpunge bool) error {
	if x.view == nil {
		return nil
	}
	x.box.refresh() // a store that fails now is asked again at the next command
	return x.view.Poll(w, allowExpunge)
}

func (x *imapSession) Idle(w *imapserver.UpdateWriter, stop <-chan struct{}) error {
	if x.view == nil {
		<-stop
		return nil
	}
	done := make(chan struct{})
	defer close(done)
	go func() {
		t := time.NewTicker(refreshEvery)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-stop:
				return
			case <-t.C:
				x.box.refresh()
			}
		}
	}()
	return x.view.Idle(w, stop)
}

func (x *imapSession) Unselect() error {
	if x.view != nil {
		x.view.Close()
		x.view = nil
	}
	return nil
}

// Expunge removes from the store the files of the mails flagged \Deleted (of those in
// uids, if set). A file the store cannot remove now stays, flagged, and the command
// answers NO; the others are gone.
func (x *imapSession) Expunge(w *imapserver.ExpungeWriter, uids *imap.UIDSet) error {
	b := x.box
	b.mu.Lock()
	defer b.mu.Unlock()
	gone := map[*message]bool{}
	var first error
	for _, m := range b.msgs {
		if !m.flags[lower(imap.FlagDeleted)] || (uids != nil && !uids.Contains(m.uid)) {
			continue
		}
		if err := x.d.opts.Store.Remove(b.user.Key, m.name); err != nil {
			if first == nil {
				first = err
			}
			continue
		}
		gone[m] = true
	}
	b.expungeLocked(gone)
	if first != nil {
		return storeError(first)
	}
	return nil
}

// numbered is a message of the box with its sequence number in the server's view.
type numbered struct {
	seq uint32
	m   *message
}

// selectLocked returns the messages numSet names, as this session numbers them.
func (x *imapSession) selectLocked(numSet imap.NumSet) []numbered {
	b := x.box
	numSet = x.staticNumSet(numSet)
	var out []numbered
	for i, m := range b.msgs {
		seq := uint32(i) + 1
		var in bool
		switch set := numSet.(type) {
		case imap.SeqSet:
			cs := x.view.EncodeSeqNum(seq)
			in = cs != 0 && set.Contains(cs)
		case imap.UIDSet:
			in = set.Contains(m.uid)
		}
		if in {
			out = append(out, numbered{seq, m})
		}
	}
	return out
}

// staticNumSet turns "*" into the highest number and "$" into the saved search result.
func (x *imapSession) staticNumSet(numSet imap.NumSet) imap.NumSet {
	if imap.IsSearchRes(numSet) {
		return x.searchRes
	}
	b := x.box
	switch set := numSet.(type) {
	case imap.SeqSet:
		max := uint32(len(b.msgs))
		out := make(imap.SeqSet, len(set))
		copy(out, set)
		for i := range out {
			staticRange(&out[i].Start, &out[i].Stop, max)
		}
		return out
	case imap.UIDSet:
		max := uint32(b.nextUID) - 1
		out := make(imap.UIDSet, len(set))
		copy(out, set)
		for i := range out {
			staticRange((*uint32)(&out[i].Start), (*uint32)(&out[i].Stop), max)
		}
		return out
	}
	return numSet
}

func staticRange(start, stop *uint32, max uint32) {
	dyn := false
	if *start == 0 {
		*start, dyn = max, true
	}
	if *stop == 0 {
		*stop, dyn = max, true
	}
	if dyn && *start > *stop {
		*start, *stop = *stop, *start
	}
}

func (x *imapSession) Store(w *imapserver.FetchWriter, numSet imap.NumSet, flags *imap.StoreFlags, options *imap.StoreOptions) error {
	if x.view == nil {
		return errNoMailbox
	}
	b := x.box
	b.mu.Lock()
	for _, n := range x.selectLocked(numSet) {
		switch flags.Op {
		case imap.StoreFlagsSet:
			n.m.flags = map[imap.Flag]bool{}
			fallthrough
		case imap.StoreFlagsAdd:
			for _, f := range flags.Flags {
				n.m.flags[lower(f)] = true
			}
		case imap.StoreFlagsDel:
			for _, f := range flags.Flags {
				delete(n.m.flags, lower(f))
			}
		}
		b.tracker.QueueMessageFlags(n.seq, n.m.uid, n.m.flagList(), x.view)
	}
	b.mu.Unlock()
	if !flags.Silent {
		return x.Fetch(w, numSet, &imap.FetchOptions{Flags: true})
	}
	return nil
}

func (x *imapSession) Search(kind imapserver.NumKind, criteria *imap.SearchCriteria, options *imap.SearchOptions) (*imap.SearchData, error) {
	if x.view == nil {
		return nil, errNoMailbox
	}
	b := x.box
	b.mu.Lock()
	defer b.mu.Unlock()
	x.staticCriteria(criteria)
	var data imap.SearchData
	var seqs imap.SeqSet
	var uids imap.UIDSet
	for i, m := range b.msgs {
		seq := x.view.EncodeSeqNum(uint32(i) + 1)
		if !x.match(seq, m, criteria) {
			continue
		}
		uids.AddNum(m.uid)
		num := uint32(m.uid)
		if kind == imapserver.NumKindSeq {
			if seq == 0 {
				continue
			}
			seqs.AddNum(seq)
			num = seq
		}
		if data.Min == 0 || num < data.Min {
			data.Min = num
		}
		if num > data.Max {
			data.Max = num
		}
		data.Count++
	}
	if kind == imapserver.NumKindSeq {
		data.All = seqs
	} else {
		data.All = uids
	}
	if options != nil && options.ReturnSave {
		x.searchRes = uids
	}
	return &data, nil
}

func (x *imapSession) staticCriteria(c *imap.SearchCriteria) {
	seqs := c.SeqNum[:0:0]
	for _, s := range c.SeqNum {
		switch set := x.staticNumSet(s).(type) {
		case imap.SeqSet:
			seqs = append(seqs, set)
		case imap.UIDSet:
			c.UID = append(c.UID, set)
		}
	}
	c.SeqNum = seqs
	for i, u := range c.UID {
		c.UID[i] = x.staticNumSet(u).(imap.UIDSet)
	}
	for i := range c.Not {
		x.staticCriteria(&c.Not[i])
	}
	for i := range c.Or {
		x.staticCriteria(&c.Or[i][0])
		x.staticCriteria(&c.Or[i][1])
	}
}

// match reports whether m, numbered seq for this session, meets c. TEXT and BODY look
// at the header and the text part only: the attachment is base64 of a sealed file.
func (x *imapSession) match(seq uint32, m *message, c *imap.SearchCriteria) bool {
	for _, s := range c.SeqNum {
		if seq == 0 || !s.Contains(seq) {
			return false
		}
	}
	for _, s := range c.UID {
		if !s.Contains(m.uid) {
			return false
		}
	}
	if !matchDate(m.date, c.Since, c.Before) || !matchDate(m.date, c.SentSince, c.SentBefore) {
		return false
	}
	for _, f := range c.Flag {
		if !m.flags[lower(f)] {
			return false
		}
	}
	for _, f := range c.NotFlag {
		if m.flags[lower(f)] {
			return false
		}
	}
	if c.Larger != 0 || c.Smaller != 0 || len(c.Header) > 0 || len(c.Body) > 0 || len(c.Text) > 0 {
		mail, err := x.box.mailOf(m)
		if err != nil {
			return false
		}
		if c.Larger != 0 && mail.Len() <= c.Larger || c.Smaller != 0 && mail.Len() >= c.Smaller {
			return false
		}
		skel := mail.Skeleton()
		h, err := textproto.ReadHeader(bufioReader(skel))
		if err != nil {
			return false
		}
		for _, hf := range c.Header {
			if !matchField(h, hf.Key, hf.Value) {
				return false
			}
		}
		for _, t := range c.Text {
			if !bytes.Contains(bytes.ToLower(skel), bytes.ToLower([]byte(t))) {
				return false
			}
		}
		for _, t := range c.Body {
			_, body, _ := bytes.Cut(skel, []byte("\r\n\r\n"))
			if !bytes.Contains(bytes.ToLower(body), bytes.ToLower([]byte(t))) {
				return false
			}
		}
	}
	for _, n := range c.Not {
		if x.match(seq, m, &n) {
			return false
		}
	}
	for _, o := range c.Or {
		if !x.match(seq, m, &o[0]) && !x.match(seq, m, &o[1]) {
			return false
		}
	}
	return true
}

func matchField(h textproto.Header, key, value string) bool {
	fields := h.FieldsByKey(key)
	if value == "" {
		return fields.Len() > 0
	}
	value = strings.ToLower(value)
	for fields.Next() {
		if strings.Contains(strings.ToLower(fields.Value()), value) {
			return true
		}
	}
	return false
}

func matchDate(t, since, before time.Time) bool {
	t = time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
	if !since.IsZero() && t.Before(since) {
		return false
	}
	if !before.IsZero() && !t.Before(before) {
		return false
	}
	return true
}
