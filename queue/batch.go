package queue

import (
	"fmt"
	"os"
	"path/filepath"
)

// Item is one small file for PutBatch.
type Item struct {
	Name string
	Data []byte
}

// PutBatch commits several small files into box with one group commit: every file is
// written to a temp file, one syncfs makes them all durable (instead of one fsync each,
// which the filesystem journal serializes), then each is renamed into place and the
// directory is fsynced once. The guarantees are Put's: a reader never sees half a file,
// and when PutBatch returns nil every file is durable. On error, some files may have
// been committed and others not: each is whole or absent.
func (s *Spool) PutBatch(box Box, items []Item) error {
	if len(items) == 0 {
		return nil
	}
	if err := s.checkBox(box); err != nil {
		return err
	}
	for _, it := range items {
		if !ValidName(it.Name) {
			return fmt.Errorf("%w: file %q", ErrBadName, it.Name)
		}
	}
	dir := s.Dir(box)
	if box.Peer() != "" {
		if err := mkdirDurable(dir); err != nil {
			return fmt.Errorf("queue: put %s: %w", box, err)
		}
	}
	tmp := filepath.Join(s.root, tmpDir)
	temps := make([]string, 0, len(items))
	defer func() {
		for _, t := range temps {
			os.Remove(t) // those not renamed: a failure midway
		}
	}()
	for _, it := range items {
		f, err := os.CreateTemp(tmp, "put-*.tmp")
		if err != nil {
			return fmt.Errorf("queue: put %s/%s: %w", box, it.Name, err)
		}
		temps = append(temps, f.Name())
		_, werr := f.Write(it.Data)
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return fmt.Errorf("queue: put %s/%s: %w", box, it.Name, werr)
		}
	}
	if err := syncFS(tmp, temps); err != nil {
		return fmt.Errorf("queue: put %s: %w", box, err)
	}
	for i, it := range items {
		if err := os.Rename(temps[i], filepath.Join(dir, it.Name)); err != nil {
			return fmt.Errorf("queue: put %s/%s: %w", box, it.Name, err)
		}
		temps[i] = ""
	}
	temps = nil
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("queue: put %s: %w", box, err)
	}
	return nil
}

// syncFS makes the files durable: one syncfs(2) of their filesystem where the kernel
// has it (see syncfs), or else an fsync of each.
func syncFS(dir string, files []string) error {
	if done, err := syncfs(dir); done || err != nil {
		return err
	}
	for _, p := range files {
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		err = f.Sync()
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}
