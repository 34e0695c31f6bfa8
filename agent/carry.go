package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/dibs-backup/dibs/pgpmsg"
	"github.com/dibs-backup/dibs/queue"
)

// Carrying messages by hand (sneakernet): export_messages moves outgoing files into
// D/<recipient fingerprint>/, and the recipient's import_messages takes from D only the
// files addressed to it. D can hold mail for many nodes at once.

// ExportResult counts what export_messages did.
type ExportResult struct{ Exported int }

// ExportMessages moves the outgoing files (only peer's, if peer is not "") into
// dir/<recipient fingerprint>/. A file leaves the spool only after its copy is durable;
// with keep, it stays in the spool too. The outbox is flushed first, so that replies a
// killed command committed but did not seal travel too.
func (n *Node) ExportMessages(dir, peer string, keep bool) (ExportResult, error) {
	var res ExportResult
	if peer != "" {
		if _, _, err := n.Peer(peer); err != nil {
			return res, err
		}
	}
	flushErr := n.FlushOutbox() // reported once the files are out
	names, err := n.Spool.Peers()
	if err != nil {
		return res, err
	}
	prog := n.progress()
	prog.Start(n.outgoingSize(names, peer))
	defer prog.Done()
	for _, name := range names {
		if peer != "" && name != peer {
			continue
		}
		_, key, err := n.Peer(name)
		if err != nil || key == nil {
			continue
		}
		es, err := n.Spool.List(queue.Outgoing(name))
		if err != nil {
			return res, err
		}
		for _, e := range es {
			prog.Add(e.Size, 1)
			c, err := n.Spool.Claim(e.Box, e.Name)
			if err != nil {
				continue
			}
			dst := filepath.Join(dir, string(key.Fingerprint()), e.Name)
			if _, err := queue.WriteAtomic(dst, c.Reader(), 0o600); err != nil {
				c.Release()
				return res, fmt.Errorf("export %s: %w", e.Name, err)
			}
			if keep {
				c.Release()
			} else if err := c.Ack(); err != nil {
				return res, err
			}
			res.Exported++
		}
	}
	return res, flushErr
}

// ImportResult counts what import_messages did.
type ImportResult struct {
	Imported int
	Left     int // files in our directory that are not sealed to our key
}

// ImportMessages takes from dir/<our fingerprint>/ the files sealed to our key into
// incoming/, removing each from dir only after it is durable in the spool. Everything
// else in dir is left alone. A file waiting in incoming/ under the same name is never
// replaced (see Spool.Receive).
func (n *Node) ImportMessages(dir string) (ImportResult, error) {
	var res ImportResult
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return res, fmt.Errorf("--dir %s is not a directory", dir)
	}
	mine := filepath.Join(dir, string(n.Fingerprint()))
	des, err := os.ReadDir(mine)
	if errors.Is(err, fs.ErrNotExist) {
		return res, nil
	}
	if err != nil {
		return res, err
	}
	ours := map[uint64]bool{}
	for _, id := range n.ID.EncryptionKeyIDs() {
		ours[id] = true
	}
	for _, de := range des {
		if !de.Type().IsRegular() || !queue.ValidName(de.Name()) {
			continue
		}
		path := filepath.Join(mine, de.Name())
		if !sealedTo(path, ours) {
			res.Left++
			continue
		}
		f, err := os.Open(path)
		if err != nil {
			return res, err
		}
		as, _, err := n.Spool.Receive(de.Name(), f, OptMaxMsgSize.Get(n.Opts))
		f.Close()
		if err == nil && as != de.Name() {
			n.Log.Warn("a different file of that name is waiting: both kept", "msg", de.Name(), "as", as)
		}
		if errors.Is(err, queue.ErrTooLarge) {
			res.Left++
			continue
		}
		if err != nil {
			return res, err
		}
		if err := os.Remove(path); err != nil {
			return res, err
		}
		res.Imported++
	}
	return res, nil
}

// sealedTo reports whether the file at path is an OpenPGP message encrypted to one of ids.
func sealedTo(path string, ids map[uint64]bool) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	rs, err := pgpmsg.Recipients(f)
	if err != nil {
		return false
	}
	for _, r := range rs {
		if ids[r] {
			return true
		}
	}
	return false
}
