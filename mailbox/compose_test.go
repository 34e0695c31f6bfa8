package mailbox

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/dibs-backup/dibs/mailbox/mailtest"
	"github.com/dibs-backup/dibs/queue"
)

func TestCompose_ExactSizeAndLineLengths(t *testing.T) {
	for _, n := range []int{0, 1, 2, 3, 56, 57, 58, 113, 114, 1000, 57 * 1024, 57*1024 + 1, 200_000} {
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(i * 7)
		}
		raw := rawMail(t, bob, bobKey, "size.pgp", data) // fails if mailLen is not exact
		if int64(len(raw)) > MailSize(int64(n)) {
			t.Errorf("%d bytes: mail of %d exceeds MailSize %d", n, len(raw), MailSize(int64(n)))
		}
		for i, line := range strings.Split(string(raw), "\r\n") {
			if len(line) > 998 || (strings.Contains(line, "\n") || strings.Contains(line, "\r")) {
				t.Fatalf("%d bytes: line %d is %d long or has a bare CR/LF", n, i, len(line))
			}
		}
		// The receiving side reads back exactly the data.
		name, r, err := openMail(bytes.NewReader(raw), bobKey, 0, "x")
		if err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		got, err := io.ReadAll(r)
		if err != nil || name != "size.pgp" || !bytes.Equal(got, data) {
			t.Fatalf("%d bytes: read back %q, %d bytes, %v", n, name, len(got), err)
		}
	}
}

func TestMailSize_BoundsTheLongestHeaders(t *testing.T) {
	long := strings.Repeat("a", 64) + "@" + strings.Repeat("b", 180) + ".example"
	name := strings.Repeat("n", 160)
	key := strings.Repeat("F", 128)
	env, err := compose(long, long, name, key, 1<<20, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	own := env.mailLen() - encodedLen(1<<20)
	if own > MailOverhead/2 {
		t.Fatalf("our headers and framing take %d bytes; MailOverhead (%d) promises half of it to servers' trace fields",
			own, MailOverhead)
	}
}

func TestMaxPayload_InvertsMailSize(t *testing.T) {
	for _, lim := range []int64{0, MailOverhead, MailOverhead + 1, MailOverhead + 4, MailOverhead + 100,
		10 << 20, 25_000_000, 10240000, 1 << 40} {
		p := MaxPayload(lim)
		if p > 0 && MailSize(p) > lim {
			t.Errorf("MaxPayload(%d) = %d, but MailSize of it is %d", lim, p, MailSize(p))
		}
		if MailSize(p+1) <= lim {
			t.Errorf("MaxPayload(%d) = %d is not the largest: %d fits too", lim, p, p+1)
		}
	}
	if got := MaxPayload(25_000_000); got < 18_000_000 || got > 18_300_000 {
		t.Errorf("MaxPayload(25 MB) = %d, want about 18.2 MB (base64 with CRLF costs 78/57)", got)
	}
}

func TestSend_FileSizeChanged_NothingDelivered(t *testing.T) {
	f := newFixture(t, mailtest.Options{})
	for _, lie := range []int64{10, 1000} { // announced size; the file holds 100 bytes
		msg := testMsg("liar.pgp", bytes.Repeat([]byte{1}, 100))
		msg.Size = lie
		err := f.sender.Send(t.Context(), queue.Endpoint{Key: bobKey, Addr: bob}, msg)
		wantTemporary(t, err, "file size changed")
		if !errors.Is(err, errSizeChanged) {
			t.Fatalf("size %d: %v", lie, err)
		}
	}
	if f.srv.Delivered() != 0 || len(f.srv.Messages(t, bob, "INBOX")) != 0 {
		t.Fatal("a mail with a wrong size was delivered")
	}
	f.send(t, bobKey, "honest.pgp", []byte("works after"))
}

func TestSend_BadInputsArePermanent(t *testing.T) {
	f := newFixture(t, mailtest.Options{})
	for _, c := range []struct {
		dst  queue.Endpoint
		name string
	}{
		{queue.Endpoint{Addr: "not an address"}, "x.pgp"},
		{queue.Endpoint{Addr: "Bob <bob@dibs.test>"}, "x.pgp"},
		{queue.Endpoint{Addr: bob, Key: "bad key\r\nBcc: x@y"}, "x.pgp"},
		{queue.Endpoint{Addr: bob}, "../escape"},
	} {
		err := f.sender.Send(t.Context(), c.dst, testMsg(c.name, nil))
		wantPermanent(t, err, c.dst.Addr+"/"+c.dst.Key+"/"+c.name)
	}
}
