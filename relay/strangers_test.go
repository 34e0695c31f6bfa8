package relay

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// A stranger (no session, no known key) can leave a small file sealed to the node and
// fetch an answer by its name; nothing more.
func TestStranger_DepositAndAnswer(t *testing.T) {
	d := newDaemon(t, "bob") // alice is no peer of bob's
	c := &Client{ID: id(t, "alice")}
	ctx := context.Background()
	msg := sealed(t, "alice", "bob", 100)

	if err := c.SendStranger(ctx, d.url, "p1.pgp", msg); !errors.Is(err, ErrForbidden) {
		t.Errorf("a node without a Strangers hook: %v, want ErrForbidden", err)
	}
	var got map[string][]byte
	d.store.Strangers = func(name string, size int64, r io.Reader) error {
		b, err := io.ReadAll(r)
		if err != nil {
			return err
		}
		if got == nil {
			got = map[string][]byte{}
		}
		got[name] = b
		return nil
	}
	answers := t.TempDir()
	d.store.Answers = func(name string) (io.ReadCloser, int64, error) {
		f, err := os.Open(filepath.Join(answers, name))
		if err != nil {
			return nil, 0, ErrNotFound
		}
		st, _ := f.Stat()
		return f, st.Size(), nil
	}
	if err := c.SendStranger(ctx, d.url, "p1.pgp", msg); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got["p1.pgp"], msg) {
		t.Errorf("the stranger's file arrived as %d bytes, want %d", len(got["p1.pgp"]), len(msg))
	}
	if err := c.SendStranger(ctx, d.url, "p2.pgp", sealed(t, "alice", "carol", 100)); !errors.Is(err, ErrForbidden) {
		t.Errorf("a file not sealed to the node: %v, want ErrForbidden", err)
	}
	if err := c.SendStranger(ctx, d.url, "p3.pgp", make([]byte, MaxStrangerFile+1)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("an oversized stranger's file: %v, want ErrTooLarge", err)
	}
	if err := c.SendStranger(ctx, d.url, "../x", msg); err == nil {
		t.Errorf("a bad name was taken")
	}
	if len(got) != 1 {
		t.Errorf("refused files reached the store: %d", len(got))
	}

	if _, err := c.FetchAnswer(ctx, d.url, "p1.pgp"); !errors.Is(err, ErrNotFound) {
		t.Errorf("no answer yet: %v, want ErrNotFound", err)
	}
	os.WriteFile(filepath.Join(answers, "p1.pgp"), []byte("sealed answer"), 0o600)
	b, err := c.FetchAnswer(ctx, d.url, "p1.pgp")
	if err != nil || string(b) != "sealed answer" {
		t.Errorf("FetchAnswer = %q, %v", b, err)
	}
	// A stranger still cannot open a session, list or take anything else.
	ep := d.endpoint(t)
	ep.Key = string(fp(t, "alice"))
	if _, err := c.Poll(ctx, ep, (&memSink{}).sink); !errors.Is(err, ErrForbidden) {
		t.Errorf("a stranger polling: %v, want ErrForbidden", err)
	}
}
