package mailbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/dibs-backup/dibs/queue"
)

// ImportMaildir hands the file of every dibs mail in the Maildir dir (its new/ and cur/) to
// sink and removes a mail file only after sink returned nil for it. With key set, only
// mails whose X-Dibs-Key is that key are taken. Other files are never modified; marked
// mails that cannot be used are left as they are, skipped, and reported at the end with an
// error wrapping ErrBadMail. It returns the number of files committed and the first error
// that stopped it (a sink failure stops the import; the mail stays).
func ImportMaildir(dir string, key string, sink queue.Sink) (int, error) {
	var bads badMails
	n := 0
	found := false
	for _, sub := range []string{"new", "cur"} {
		ents, err := os.ReadDir(filepath.Join(dir, sub))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return n, fmt.Errorf("mailbox: import %s: %w", dir, err)
		}
		found = true
		// Maildir names start with the delivery time: sorting keeps arrival order.
		sort.Slice(ents, func(i, j int) bool { return ents[i].Name() < ents[j].Name() })
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), ".") || !e.Type().IsRegular() {
				continue
			}
			path := filepath.Join(dir, sub, e.Name())
			ok, err := importFile(path, key, sink)
			if ok {
				n++
			}
			var bm *badMail
			switch {
			case errors.As(err, &bm) && bm.header:
				// Not a mail we can read: not ours to judge.
			case errors.As(err, &bm):
				bads.add(filepath.Join(sub, e.Name()), err)
			case err != nil:
				return n, fmt.Errorf("mailbox: import %s: %w", path, err)
			}
		}
	}
	if !found {
		return 0, fmt.Errorf("mailbox: import %s: no new/ or cur/: not a Maildir", dir)
	}
	if err := bads.err("left in place"); err != nil {
		return n, fmt.Errorf("mailbox: import %s: %w", dir, err)
	}
	return n, nil
}

// importFile hands one mail file's attachment to sink and removes the file once it is
// committed. ok is false for a file that is not a dibs mail for key.
func importFile(path, key string, sink queue.Sink) (ok bool, err error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil // a mail reader took it meanwhile
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	raw := &rawReader{r: f}
	name, att, err := openMail(raw, key, 0, filepath.Base(path))
	if errors.Is(err, errNotOurs) {
		return false, nil
	}
	if raw.err != nil {
		return false, raw.err
	}
	if err != nil {
		return false, err
	}
	if err := sink(name, att); err != nil {
		if raw.err != nil {
			return false, raw.err
		}
		if cr := att.(*checkedReader); cr.err != nil {
			// The file was read to its end, so any failure to decode it is the mail's own.
			return false, &badMail{reason: cr.err.Error()}
		}
		return false, fmt.Errorf("deliver %s: %w", name, err)
	}
	if err := os.Remove(path); err != nil {
		return true, fmt.Errorf("remove after commit: %w", err)
	}
	return true, nil
}
