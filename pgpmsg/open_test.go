package pgpmsg_test

import (
	"bytes"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	pgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/dibs-backup/dibs/pgpmsg"
	"github.com/dibs-backup/dibs/pgpmsg/pgpmsgtest"
)

func TestSealOpen_RoundTrip(t *testing.T) {
	alice, bob := id(t, "alice"), id(t, "bob")
	peers := pgpmsgtest.Keyring(t, "alice", "carol")
	for _, tc := range []struct {
		name    string
		payload []byte
		spills  bool
	}{
		{"nil", nil, false},
		{"empty", []byte{}, false},
		{"small", []byte("hello, bob"), false},
		{"binary", []byte("a\r\nb\nc\rd\x00e\r\n\r\n\x00\xff\xfe"), false},
		{"header-like", []byte("From: mallory\r\n\r\nTo: x\r\n"), false},
		{"exactly-memlimit", patterned(64 << 10), false},
		{"memlimit+1", patterned(64<<10 + 1), true},
		{"multi-MiB", patterned(3<<20 + 12345), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHeader("STORE")
			h.Add("X-Extra", "kept in order")
			msg := seal(t, h, tc.payload, alice, bob.Public())
			dir := t.TempDir()
			o, err := openWith(t, msg, bob, peers, pgpmsg.OpenOptions{MemLimit: 64 << 10, TempDir: dir})
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if o.Signer.Fingerprint() != alice.Fingerprint() {
				t.Errorf("Signer = %s, want alice", o.Signer.Fingerprint())
			}
			if got := o.Header.Get(pgpmsg.FieldFrom); got != string(alice.Fingerprint()) {
				t.Errorf("From = %q", got)
			}
			if got := o.Header.Get(pgpmsg.FieldTo); got != string(bob.Fingerprint()) {
				t.Errorf("To = %q", got)
			}
			want := h.Fields()
			got := o.Header.Fields()
			if len(got) != len(want)+2 {
				t.Fatalf("fields %v, want %v + From, To", got, want)
			}
			for i := range want {
				if got[i] != want[i] {
					t.Errorf("field %d = %v, want %v", i, got[i], want[i])
				}
			}
			if o.PayloadSize() != int64(len(tc.payload)) {
				t.Errorf("PayloadSize = %d, want %d", o.PayloadSize(), len(tc.payload))
			}
			b, err := o.PayloadBytes()
			if err != nil || !bytes.Equal(b, tc.payload) {
				t.Fatalf("PayloadBytes: %v, equal %v", err, bytes.Equal(b, tc.payload))
			}
			// Two independent readers, each from 0.
			r1, r2 := o.Payload(), o.Payload()
			b1, _ := io.ReadAll(r1)
			b2, _ := io.ReadAll(r2)
			if !bytes.Equal(b1, tc.payload) || !bytes.Equal(b2, tc.payload) {
				t.Fatal("Payload() readers differ from the payload")
			}
			if _, err := r1.Seek(0, io.SeekStart); err != nil {
				t.Fatal(err)
			}
			if b1, _ = io.ReadAll(r1); !bytes.Equal(b1, tc.payload) {
				t.Fatal("Payload() after Seek differs")
			}
			ents, _ := os.ReadDir(dir)
			if spilled := len(ents) == 1; spilled != tc.spills {
				t.Errorf("temp files %d, want spill=%v", len(ents), tc.spills)
			}
		})
	}
}

func TestSeal_FromTo(t *testing.T) {
	alice, bob := id(t, "alice"), id(t, "bob")
	var buf bytes.Buffer
	h := fullHeader("HELLO", id(t, "carol").Fingerprint(), bob.Fingerprint())
	wantErr(t, pgpmsg.Seal(&buf, h, nil, alice, bob.Public()), pgpmsg.ErrSignerMismatch)
	h = fullHeader("HELLO", alice.Fingerprint(), id(t, "carol").Fingerprint())
	wantErr(t, pgpmsg.Seal(&buf, h, nil, alice, bob.Public()), pgpmsg.ErrWrongRecipient)
	h = newHeader("HELLO")
	h.Del(pgpmsg.FieldMessageID)
	wantErr(t, pgpmsg.Seal(&buf, h, nil, alice, bob.Public()), pgpmsg.ErrMalformed)
	h = newHeader("HELLO")
	h.Set("X-Bad", "line\r\nInjected: yes")
	wantErr(t, pgpmsg.Seal(&buf, h, nil, alice, bob.Public()), pgpmsg.ErrMalformed)
	// Seal must not modify the caller's header, even though a Header
	// copy shares its fields.
	h = newHeader("HELLO")
	before := h.Fields()
	seal(t, h, nil, alice, bob.Public())
	if len(h.Fields()) != len(before) || h.Get(pgpmsg.FieldFrom) != "" {
		t.Errorf("Seal modified the caller's header: %v", h.Fields())
	}
	// Explicit, matching From and To are fine.
	seal(t, fullHeader("HELLO", alice.Fingerprint(), bob.Fingerprint()), nil, alice, bob.Public())
}

func TestOpen_Armored(t *testing.T) {
	alice, bob := id(t, "alice"), id(t, "bob")
	payload := patterned(100 << 10)
	msg := seal(t, newHeader("STORE"), payload, alice, bob.Public())
	var buf bytes.Buffer
	aw, _ := armor.Encode(&buf, "PGP MESSAGE", nil)
	aw.Write(msg)
	aw.Close()
	buf.WriteString("\n")
	o, err := openWith(t, append([]byte("\r\n"), buf.Bytes()...), bob, pgpmsgtest.Keyring(t, "alice"), pgpmsg.OpenOptions{})
	if err != nil {
		t.Fatalf("Open armored: %v", err)
	}
	if b, _ := o.PayloadBytes(); !bytes.Equal(b, payload) {
		t.Fatal("payload differs")
	}
	// An armored key is not a message.
	var kb bytes.Buffer
	alice.Public().WriteArmored(&kb)
	_, err = openWith(t, kb.Bytes(), bob, pgpmsgtest.Keyring(t, "alice"), pgpmsg.OpenOptions{})
	wantErr(t, err, pgpmsg.ErrMalformed)
}

// TestOpen_Rejects checks each way a message can be unacceptable, and that
// Open names it with the right sentinel and leaves no temp file behind.
func TestOpen_Rejects(t *testing.T) {
	alice, bob, carol, mallory := id(t, "alice"), id(t, "bob"), id(t, "carol"), id(t, "mallory")
	peers := pgpmsgtest.Keyring(t, "alice", "carol")
	big := patterned(200 << 10) // spills at MemLimit 64 KiB
	good := seal(t, newHeader("STORE"), big, alice, bob.Public())
	plain := func(from, to pgpmsg.Fingerprint) []byte {
		return append(marshal(t, fullHeader("STORE", from, to)), big...)
	}
	ents := func(ids ...*pgpmsg.Identity) []*pgp.Entity {
		var el []*pgp.Entity
		for _, i := range ids {
			el = append(el, i.Entity())
		}
		return el
	}
	flip := func(b []byte, at int) []byte {
		c := bytes.Clone(b)
		c[at] ^= 0x40
		return c
	}
	type tc struct {
		name  string
		msg   []byte
		want  error
		opts  pgpmsg.OpenOptions
		peers *pgpmsg.Keyring
	}
	cases := []tc{
		{name: "to someone else", msg: seal(t, newHeader("STORE"), big, alice, carol.Public()), want: pgpmsg.ErrNotForUs},
		{name: "unsigned", msg: rawSeal(t, plain(alice.Fingerprint(), bob.Fingerprint()), ents(bob), nil, false), want: pgpmsg.ErrUnsigned},
		{name: "unknown signer", msg: seal(t, newHeader("STORE"), big, mallory, bob.Public()), want: pgpmsg.ErrUnknownSigner},
		{name: "signed by ourselves, not a peer", msg: seal(t, newHeader("STORE"), big, bob, bob.Public()), want: pgpmsg.ErrUnknownSigner},
		{name: "forged From", msg: rawSeal(t, plain(carol.Fingerprint(), bob.Fingerprint()), ents(bob), ents(alice), false), want: pgpmsg.ErrSignerMismatch},
		{name: "forged From, unknown signer", msg: rawSeal(t, plain(alice.Fingerprint(), bob.Fingerprint()), ents(bob), ents(mallory), false), want: pgpmsg.ErrUnknownSigner},
		{name: "re-addressed To", msg: rawSeal(t, plain(alice.Fingerprint(), carol.Fingerprint()), ents(bob), ents(alice), false), want: pgpmsg.ErrWrongRecipient},
		{name: "two signatures", msg: rawSeal(t, plain(alice.Fingerprint(), bob.Fingerprint()), ents(bob), ents(alice, carol), false), want: pgpmsg.ErrBadSignature},
		{name: "text signature", msg: rawSeal(t, plain(alice.Fingerprint(), bob.Fingerprint()), ents(bob), ents(alice), true), want: pgpmsg.ErrBadSignature},
		{name: "tampered middle", msg: flip(good, len(good)/2), want: pgpmsg.ErrTruncated},
		{name: "tampered near end", msg: flip(good, len(good)-3), want: pgpmsg.ErrTruncated},
		{name: "tampered last byte", msg: flip(good, len(good)-1), want: pgpmsg.ErrTruncated},
		{name: "trailing garbage", msg: append(bytes.Clone(good), 0xca, 3, 'P', 'G', 'P'), want: pgpmsg.ErrMalformed},
		{name: "garbage", msg: []byte("this is not an OpenPGP message\n"), want: pgpmsg.ErrMalformed},
		{name: "empty", msg: nil, want: pgpmsg.ErrMalformed},
		{name: "signed, not encrypted", msg: signOnly(t, alice, plain(alice.Fingerprint(), bob.Fingerprint())), want: pgpmsg.ErrMalformed},
		{name: "header without blank line", msg: rawSeal(t, bytes.TrimSuffix(marshal(t, fullHeader("STORE", alice.Fingerprint(), bob.Fingerprint())), []byte("\r\n")), ents(bob), ents(alice), false), want: pgpmsg.ErrMalformed},
		{name: "header invalid", msg: rawSeal(t, []byte("Dibs-Version: 1\r\nFrom: "+string(alice.Fingerprint())+"\r\nTo: "+string(bob.Fingerprint())+"\r\n\r\npayload"), ents(bob), ents(alice), false), want: pgpmsg.ErrMalformed},
		{name: "header malformed line", msg: rawSeal(t, []byte("Dibs-Version 1\r\n\r\n"), ents(bob), ents(alice), false), want: pgpmsg.ErrMalformed},
		{name: "header oversize", msg: rawSeal(t, append([]byte("X-Big: "+strings.Repeat("x", pgpmsg.MaxHeaderSize)+"\r\n\r\n"), big...), ents(bob), ents(alice), false), want: pgpmsg.ErrTooLarge},
		{name: "payload over MaxSize", msg: good, opts: pgpmsg.OpenOptions{MaxSize: 100 << 10}, want: pgpmsg.ErrTooLarge},
		{name: "header over MaxSize", msg: good, opts: pgpmsg.OpenOptions{MaxSize: 100}, want: pgpmsg.ErrTooLarge},
		{name: "forged signature, malformed header", msg: rawSeal(t, []byte("garbage header\r\n\r\n"), ents(bob), ents(mallory), false), want: pgpmsg.ErrUnknownSigner},
		{name: "empty keyring", msg: good, peers: pgpmsg.NewKeyring(), want: pgpmsg.ErrUnknownSigner},
	}
	for _, cut := range []int{1, 3, 20, 60, 100, 200, len(good) / 3, len(good) / 2, len(good) - 100, len(good) - 30, len(good) - 1} {
		cases = append(cases, tc{name: "truncated at " + strconv.Itoa(cut), msg: good[:cut], want: pgpmsg.ErrTruncated})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.opts.MemLimit == 0 {
				c.opts.MemLimit = 64 << 10
			}
			if c.peers == nil {
				c.peers = peers
			}
			_, err := openWith(t, c.msg, bob, c.peers, c.opts)
			wantErr(t, err, c.want)
			if strings.Contains(err.Error(), "\n") || !strings.HasPrefix(err.Error(), "pgpmsg: open: ") {
				t.Errorf("error not one line with prefix: %q", err)
			}
		})
	}
	// The unmodified message is fine: the cases above fail for their reason.
	if _, err := openWith(t, good, bob, peers, pgpmsg.OpenOptions{MemLimit: 64 << 10}); err != nil {
		t.Fatalf("good message: %v", err)
	}
}

func signOnly(t testing.TB, signer *pgpmsg.Identity, plaintext []byte) []byte {
	var buf bytes.Buffer
	w, err := pgp.Sign(&buf, []*pgp.Entity{signer.Entity()}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(plaintext)
	w.Close()
	return buf.Bytes()
}

func TestRecipients(t *testing.T) {
	alice, bob := id(t, "alice"), id(t, "bob")
	msg := seal(t, newHeader("STORE"), patterned(1000), alice, bob.Public())
	ids, err := pgpmsg.Recipients(bytes.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	want := bob.EncryptionKeyIDs()
	if len(ids) != 1 || len(want) != 1 || ids[0] != want[0] {
		t.Fatalf("Recipients = %x, want %x", ids, want)
	}
	// It reads only the front of the message: a truncated file still answers.
	if ids, err := pgpmsg.Recipients(bytes.NewReader(msg[:len(msg)/2])); err != nil || len(ids) != 1 {
		t.Errorf("truncated: %x, %v", ids, err)
	}
	_, err = pgpmsg.Recipients(strings.NewReader("garbage"))
	wantErr(t, err, pgpmsg.ErrMalformed)
	_, err = pgpmsg.Recipients(bytes.NewReader(nil))
	wantErr(t, err, pgpmsg.ErrMalformed)
	_, err = pgpmsg.Recipients(bytes.NewReader(signOnly(t, alice, []byte("x"))))
	wantErr(t, err, pgpmsg.ErrMalformed)
	_, err = pgpmsg.Recipients(bytes.NewReader(msg[:10]))
	wantErr(t, err, pgpmsg.ErrTruncated)
}
