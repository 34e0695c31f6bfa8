package maildoor

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/dibs-backup/dibs/relay"
	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-message/textproto"
)

func bytesReader(b []byte) io.Reader     { return bytes.NewReader(b) }
func bufioReader(b []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(b)) }

// Fetch answers FETCH. The whole mail (BODY[], what a dibs poller asks for) is streamed:
// the file is read from the store as it is sent. What needs only the header or the MIME
// structure is taken from the mail's skeleton, without opening the file. Other sections
// of the attachment (BODY[TEXT], BODY[2], partial fetches) are built in memory.
//
// A file the store no longer has is left out of the answer (its EXPUNGE follows); a file
// another worker holds answers NO [INUSE].
func (x *imapSession) Fetch(w *imapserver.FetchWriter, numSet imap.NumSet, options *imap.FetchOptions) error {
	if x.view == nil {
		return errNoMailbox
	}
	markSeen := false
	for _, bs := range options.BodySection {
		markSeen = markSeen || !bs.Peek
	}
	b := x.box
	type item struct {
		seq   uint32 // as the client numbers it
		m     *message
		flags []imap.Flag
	}
	var items []item
	b.mu.Lock()
	for _, n := range x.selectLocked(numSet) {
		if markSeen && !n.m.flags[lower(imap.FlagSeen)] {
			n.m.flags[lower(imap.FlagSeen)] = true
			b.tracker.QueueMessageFlags(n.seq, n.m.uid, n.m.flagList(), x.view)
		}
		if _, err := b.mailOf(n.m); err != nil {
			b.mu.Unlock()
			return err
		}
		items = append(items, item{x.view.EncodeSeqNum(n.seq), n.m, n.m.flagList()})
	}
	b.mu.Unlock()

	for _, it := range items {
		if it.seq == 0 {
			continue
		}
		if err := x.fetchOne(w, it.seq, it.m, it.flags, options); err != nil {
			return err
		}
	}
	return nil
}

// errGone means the file of a message is not in the store any more.
var errGone = errors.New("file gone")

func (x *imapSession) fetchOne(w *imapserver.FetchWriter, seq uint32, m *message, flags []imap.Flag, options *imap.FetchOptions) error {
	mail := m.mail
	// Open the file before the answer starts, if any section needs it: a file that is
	// gone is left out rather than answered half.
	var first io.ReadCloser
	if needsFile(options) {
		rc, err := x.open(m)
		if errors.Is(err, errGone) {
			return nil
		}
		if err != nil {
			return err
		}
		first = rc
	}
	defer func() {
		if first != nil {
			first.Close()
		}
	}()
	// file returns a reader of the file: the one opened above the first time.
	file := func() (io.ReadCloser, error) {
		if first != nil {
			rc := first
			first = nil
			return rc, nil
		}
		return x.open(m)
	}
	full := func() (io.ReadCloser, error) { // the whole mail, through a pipe
		rc, err := file()
		if err != nil {
			return nil, err
		}
		pr, pw := io.Pipe()
		go func() {
			err := mail.Write(pw, io.LimitReader(rc, m.size))
			rc.Close()
			pw.CloseWithError(err)
		}()
		return pr, nil
	}

	rw := w.CreateMessage(seq)
	rw.WriteUID(m.uid)
	if options.Flags {
		rw.WriteFlags(flags)
	}
	if options.InternalDate {
		rw.WriteInternalDate(m.date)
	}
	if options.RFC822Size {
		rw.WriteRFC822Size(mail.Len())
	}
	skel := mail.Skeleton()
	if options.Envelope {
		h, err := textproto.ReadHeader(bufioReader(skel))
		if err != nil {
			return err
		}
		rw.WriteEnvelope(imapserver.ExtractEnvelope(h))
	}
	if options.BodyStructure != nil {
		bs := imapserver.ExtractBodyStructure(bytes.NewReader(skel))
		if mp, ok := bs.(*imap.BodyStructureMultiPart); ok && len(mp.Children) == 2 {
			if att, ok := mp.Children[1].(*imap.BodyStructureSinglePart); ok {
				att.Size = uint32(mail.AttachmentLen())
			}
		}
		rw.WriteBodyStructure(bs)
	}
	for _, bs := range options.BodySection {
		if err := x.writeSection(rw, bs, mail, skel, file, full); err != nil {
			return err
		}
	}
	for _, bs := range options.BinarySection {
		r, err := full()
		if err != nil {
			return err
		}
		buf := imapserver.ExtractBinarySection(r, bs)
		r.Close()
		if err := writeAll(rw.WriteBinarySection(bs, int64(len(buf))), buf); err != nil {
			return err
		}
	}
	for _, bss := range options.BinarySectionSize {
		if len(bss.Part) == 1 && bss.Part[0] == 2 {
			rw.WriteBinarySectionSize(bss, uint32(m.size))
			continue
		}
		n := imapserver.ExtractBinarySectionSize(bytes.NewReader(skel), bss)
		rw.WriteBinarySectionSize(bss, n)
	}
	return rw.Close()
}

func (x *imapSession) writeSection(rw *imapserver.FetchResponseWriter, bs *imap.FetchItemBodySection, mail interface {
	Len() int64
	Write(io.Writer, io.Reader) error
}, skel []byte, file, full func() (io.ReadCloser, error)) error {
	if !sectionNeedsFile(bs) {
		buf := imapserver.ExtractBodySection(bytes.NewReader(skel), bs)
		return writeAll(rw.WriteBodySection(bs, int64(len(buf))), buf)
	}
	whole := len(bs.Part) == 0 && bs.Specifier == imap.PartSpecifierNone && bs.Partial == nil &&
		len(bs.HeaderFields) == 0 && len(bs.HeaderFieldsNot) == 0
	if whole {
		rc, err := file()
		if err != nil {
			return err
		}
		defer rc.Close()
		wc := rw.WriteBodySection(bs, mail.Len())
		// A failure midway cannot be told the client any more: the literal is short and
		// the connection is cut, so the client keeps nothing.
		if err := mail.Write(wc, rc); err != nil {
			wc.Close()
			return err
		}
		return wc.Close()
	}
	r, err := full()
	if err != nil {
		return err
	}
	buf := imapserver.ExtractBodySection(r, bs)
	r.Close()
	return writeAll(rw.WriteBodySection(bs, int64(len(buf))), buf)
}

func writeAll(wc io.WriteCloser, b []byte) error {
	_, err := wc.Write(b)
	if cerr := wc.Close(); err == nil {
		err = cerr
	}
	return err
}

// open opens m's file in the store.
func (x *imapSession) open(m *message) (io.ReadCloser, error) {
	rc, size, err := x.d.opts.Store.Open(x.box.user.Key, m.name)
	if errors.Is(err, relay.ErrNotFound) {
		return nil, errGone
	}
	if err != nil {
		return nil, storeError(err)
	}
	if size != m.size {
		rc.Close()
		return nil, storeError(fmt.Errorf("%s changed size from %d to %d", m.name, m.size, size))
	}
	return rc, nil
}

func needsFile(options *imap.FetchOptions) bool {
	if len(options.BinarySection) > 0 {
		return true
	}
	for _, bs := range options.BodySection {
		if sectionNeedsFile(bs) {
			return true
		}
	}
	return false
}

// sectionNeedsFile reports whether bs has any of the attachment's bytes: else the
// skeleton has all of it.
func sectionNeedsFile(bs *imap.FetchItemBodySection) bool {
	if len(bs.Part) == 0 {
		return bs.Specifier == imap.PartSpecifierNone || bs.Specifier == imap.PartSpecifierText
	}
	return bs.Part[0] == 2 && bs.Specifier != imap.PartSpecifierMIME &&
		!(len(bs.Part) == 1 && bs.Specifier == imap.PartSpecifierHeader)
}
