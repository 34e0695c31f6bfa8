package pgpmsg_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dibs-backup/dibs/pgpmsg"
	"github.com/dibs-backup/dibs/pgpmsg/pgpmsgtest"
)

// gpgHome is a throw-away GnuPG home with the real gpg binary.
type gpgHome struct {
	t    *testing.T
	bin  string
	home string
}

// newGPG returns a fresh GnuPG home, or skips the test if gpg is missing,
// unless CI=true or DIBS_REQUIRE_GPG=1 make interop mandatory.
func newGPG(t *testing.T) *gpgHome {
	t.Helper()
	bin, err := exec.LookPath("gpg")
	if err != nil {
		if os.Getenv("CI") == "true" || os.Getenv("DIBS_REQUIRE_GPG") == "1" {
			t.Fatalf("gpg is required (CI=true or DIBS_REQUIRE_GPG=1): %v", err)
		}
		t.Skipf("gpg not found: %v", err)
	}
	// A short path: the agent's socket lives in the home directory.
	home, err := os.MkdirTemp("", "dibsgpg")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd := exec.Command("gpgconf", "--kill", "gpg-agent")
		cmd.Env = append(os.Environ(), "GNUPGHOME="+home)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Logf("gpgconf --kill gpg-agent: %v: %s", err, out)
		}
		os.RemoveAll(home)
	})
	if err := os.Chmod(home, 0o700); err != nil {
		t.Fatal(err)
	}
	return &gpgHome{t: t, bin: bin, home: home}
}

// run runs gpg with stdin, returning stdout and the status lines; it fails
// the test if gpg fails.
func (g *gpgHome) run(stdin []byte, args ...string) (stdout []byte, status string) {
	g.t.Helper()
	stdout, status, err := g.try(stdin, args...)
	if err != nil {
		g.t.Fatalf("gpg %s: %v\n%s", strings.Join(args, " "), err, status)
	}
	return stdout, status
}

func (g *gpgHome) try(stdin []byte, args ...string) ([]byte, string, error) {
	base := []string{"--batch", "--no-tty", "--trust-model", "always", "--pinentry-mode", "loopback", "--passphrase", "", "--status-fd", "2"}
	cmd := exec.Command(g.bin, append(base, args...)...)
	cmd.Env = append(os.Environ(), "GNUPGHOME="+g.home, "LC_ALL=C")
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.Bytes(), errb.String(), err
}

func (g *gpgHome) importKey(key []byte) {
	g.t.Helper()
	g.run(key, "--import")
}

// genKey makes an ed25519 [SC] key with a cv25519 [E] subkey, the way
// LIBRARIES.md §7 does, and returns its fingerprint.
func (g *gpgHome) genKey(uid string) string {
	g.t.Helper()
	g.run(nil, "--quick-gen-key", uid, "ed25519", "sign,cert", "never")
	out, _ := g.run(nil, "--with-colons", "--list-keys", uid)
	var fpr string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Split(line, ":"); len(f) > 9 && f[0] == "fpr" {
			fpr = f[9]
			break
		}
	}
	if len(fpr) != 40 {
		g.t.Fatalf("no fingerprint for %s in %s", uid, out)
	}
	g.run(nil, "--quick-add-key", fpr, "cv25519", "encr", "never")
	return fpr
}

func wantStatus(t *testing.T, status string, words ...string) {
	t.Helper()
	for _, w := range words {
		if !strings.Contains(status, "[GNUPG:] "+w) {
			t.Errorf("gpg status lacks %s:\n%s", w, status)
		}
	}
	for _, bad := range []string{"BADSIG", "ERRSIG", "BADMDC", "DECRYPTION_FAILED"} {
		if strings.Contains(status, "[GNUPG:] "+bad) {
			t.Errorf("gpg status has %s:\n%s", bad, status)
		}
	}
}

func TestGPG_Interop(t *testing.T) {
	g := newGPG(t)
	alice, bob := id(t, "alice"), id(t, "bob")
	var alicePub bytes.Buffer
	alice.Public().WriteArmored(&alicePub)
	g.importKey(alicePub.Bytes())
	g.importKey(pgpmsgtest.SecretKey(t, "bob")) // our secret key, imported by gpg

	// A key made by gpg, moved to us both ways.
	ginaFPR := g.genKey("Gina <gina.dibs@example.org>")
	ginaPubArmored, _ := g.run(nil, "--armor", "--export", ginaFPR)
	ginaSecArmored, _ := g.run(nil, "--armor", "--export-secret-keys", ginaFPR)
	gina, err := pgpmsg.ReadKey(bytes.NewReader(ginaPubArmored))
	if err != nil {
		t.Fatalf("ReadKey(gpg --export --armor): %v", err)
	}
	ginaID, err := pgpmsg.ReadIdentity(bytes.NewReader(ginaSecArmored))
	if err != nil {
		t.Fatalf("ReadIdentity(gpg --export-secret-keys --armor): %v", err)
	}
	if string(gina.Fingerprint()) != ginaFPR || string(ginaID.Fingerprint()) != ginaFPR {
		t.Fatalf("fingerprints %s / %s, gpg says %s", gina.Fingerprint(), ginaID.Fingerprint(), ginaFPR)
	}
	if gina.Name() != "gina.dibs@example.org" || ginaID.Name() != "gina.dibs@example.org" {
		t.Errorf("Name() = %q / %q", gina.Name(), ginaID.Name())
	}
	ginaBin, _ := g.run(nil, "--export", ginaFPR)
	if k, err := pgpmsg.ReadKey(bytes.NewReader(ginaBin)); err != nil || k.Fingerprint() != gina.Fingerprint() {
		t.Fatalf("ReadKey(gpg --export): %v", err)
	}

	payload := patterned(1<<20 + 333) // binary, with CR, LF and NUL

	t.Run("gpg decrypts and verifies ours", func(t *testing.T) {
		h := newHeader("STORE")
		msg := seal(t, h, payload, alice, bob.Public())
		out, status := g.run(msg, "--decrypt")
		wantStatus(t, status, "GOODSIG", "VALIDSIG "+string(alice.Fingerprint()), "DECRYPTION_OKAY", "GOODMDC")
		full := h.Clone()
		full.Set(pgpmsg.FieldFrom, string(alice.Fingerprint()))
		full.Set(pgpmsg.FieldTo, string(bob.Fingerprint()))
		if want := append(marshal(t, full), payload...); !bytes.Equal(out, want) {
			t.Fatalf("gpg plaintext (%d bytes) differs from header+payload (%d bytes)", len(out), len(want))
		}
	})

	t.Run("we seal to a gpg key, gpg decrypts", func(t *testing.T) {
		msg := seal(t, newHeader("STORE"), payload, alice, gina)
		out, status := g.run(msg, "--decrypt")
		wantStatus(t, status, "GOODSIG", "VALIDSIG "+string(alice.Fingerprint()), "DECRYPTION_OKAY", "GOODMDC")
		if !bytes.HasSuffix(out, payload) {
			t.Fatal("payload differs")
		}
	})

	for _, armored := range []bool{false, true} {
		name := "gpg signs and encrypts, we open"
		if armored {
			name += " (armored)"
		}
		t.Run(name, func(t *testing.T) {
			h := fullHeader("STORE", gina.Fingerprint(), bob.Fingerprint())
			plain := append(marshal(t, h), payload...)
			in := filepath.Join(t.TempDir(), "plain")
			os.WriteFile(in, plain, 0o600)
			args := []string{"--sign", "--encrypt", "-u", ginaFPR, "-r", string(bob.Fingerprint()), "-o", "-", in}
			if armored {
				args = append([]string{"--armor"}, args...)
			}
			msg, _ := g.run(nil, args...)
			o, err := openWith(t, msg, bob, pgpmsg.NewKeyring(gina), pgpmsg.OpenOptions{})
			if err != nil {
				t.Fatalf("Open gpg message: %v", err)
			}
			if o.Signer.Fingerprint() != gina.Fingerprint() || o.Header.Get(pgpmsg.FieldMessageID) != h.Get(pgpmsg.FieldMessageID) {
				t.Error("wrong signer or header")
			}
			if b, _ := o.PayloadBytes(); !bytes.Equal(b, payload) {
				t.Fatal("payload differs")
			}
			// Signed by gina, but gina is not a peer of ours.
			_, err = openWith(t, msg, bob, pgpmsgtest.Keyring(t, "alice"), pgpmsg.OpenOptions{})
			wantErr(t, err, pgpmsg.ErrUnknownSigner)
		})
	}

	t.Run("gpg encrypts to its own key, we open with it", func(t *testing.T) {
		// gpg holds alice's public key only; sign with gina, encrypt to gina.
		h := fullHeader("HELLO", gina.Fingerprint(), gina.Fingerprint())
		msg, _ := g.run(marshal(t, h), "--sign", "--encrypt", "-u", ginaFPR, "-r", ginaFPR, "-o", "-")
		if _, err := openWith(t, msg, ginaID, pgpmsg.NewKeyring(gina), pgpmsg.OpenOptions{}); err != nil {
			t.Fatalf("Open with ReadIdentity(gpg secret): %v", err)
		}
	})

	t.Run("gpg key seals with our code, we open", func(t *testing.T) {
		msg := seal(t, newHeader("STORE"), payload, ginaID, bob.Public())
		o, err := openWith(t, msg, bob, pgpmsg.NewKeyring(gina), pgpmsg.OpenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if b, _ := o.PayloadBytes(); !bytes.Equal(b, payload) {
			t.Fatal("payload differs")
		}
		_, status := g.run(msg, "--decrypt", "-o", os.DevNull)
		wantStatus(t, status, "GOODSIG", "VALIDSIG "+ginaFPR, "GOODMDC")
	})

	t.Run("gpg refuses a tampered message of ours", func(t *testing.T) {
		msg := seal(t, newHeader("STORE"), payload, alice, bob.Public())
		msg[len(msg)/2] ^= 1
		if _, status, err := g.try(msg, "--decrypt", "-o", os.DevNull); err == nil {
			t.Fatalf("gpg accepted a tampered message:\n%s", status)
		}
	})

	t.Run("detached signatures", func(t *testing.T) {
		challenge := []byte("dibs challenge 0123456789abcdef\r\n")
		dir := t.TempDir()
		data := filepath.Join(dir, "data")
		os.WriteFile(data, challenge, 0o600)
		// ours -> gpg
		sig, err := alice.SignDetached(challenge)
		if err != nil {
			t.Fatal(err)
		}
		sigFile := filepath.Join(dir, "sig")
		os.WriteFile(sigFile, sig, 0o600)
		_, status := g.run(nil, "--verify", sigFile, data)
		wantStatus(t, status, "GOODSIG", "VALIDSIG "+string(alice.Fingerprint()))
		// gpg -> ours
		for _, armor := range [][]string{nil, {"--armor"}} {
			gsig, _ := g.run(challenge, append(armor, "--detach-sign", "-u", ginaFPR, "-o", "-")...)
			k, err := pgpmsg.VerifyDetached(pgpmsg.NewKeyring(gina), challenge, gsig)
			if err != nil || k.Fingerprint() != gina.Fingerprint() {
				t.Fatalf("VerifyDetached(gpg %v): %v", armor, err)
			}
			_, err = pgpmsg.VerifyDetached(pgpmsg.NewKeyring(gina), append(challenge, 'x'), gsig)
			wantErr(t, err, pgpmsg.ErrBadSignature)
		}
	})

	t.Run("gpg SHA-1 signature refused", func(t *testing.T) {
		h := fullHeader("STORE", gina.Fingerprint(), bob.Fingerprint())
		msg, _ := g.run(marshal(t, h), "--sign", "--encrypt", "--digest-algo", "SHA1", "-u", ginaFPR, "-r", string(bob.Fingerprint()), "-o", "-")
		_, err := openWith(t, msg, bob, pgpmsg.NewKeyring(gina), pgpmsg.OpenOptions{})
		wantErr(t, err, pgpmsg.ErrBadSignature)
	})

	t.Run("gpg encrypt only is unsigned", func(t *testing.T) {
		h := fullHeader("STORE", gina.Fingerprint(), bob.Fingerprint())
		msg, _ := g.run(marshal(t, h), "--encrypt", "-r", string(bob.Fingerprint()), "-o", "-")
		_, err := openWith(t, msg, bob, pgpmsg.NewKeyring(gina), pgpmsg.OpenOptions{})
		wantErr(t, err, pgpmsg.ErrUnsigned)
	})
}
