package mailbox

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/dibs-backup/dibs/mailbox/mailtest"
	"github.com/dibs-backup/dibs/queue"
)

// The mail benchmarks move batches of 10 files of 4 MiB (5.6 MB of mail each) through the
// in-process servers: SMTP submission with STARTTLS+AUTH into imapmemserver, then IMAP
// STARTTLS UID FETCH BODY.PEEK[] and expunge. Bytes are file bytes. Run them with
//
//	go test -run '^$' -bench . -benchtime 5x ./mailbox/
const (
	benchFiles = 10
	benchSize  = 4 << 20
)

func benchData(b *testing.B) [][]byte {
	files := make([][]byte, benchFiles)
	for i := range files {
		files[i] = make([]byte, benchSize)
		rand.Read(files[i])
	}
	return files
}

func benchSend(b *testing.B, f *fixture, files [][]byte) {
	for i, data := range files {
		err := f.sender.Send(b.Context(), queue.Endpoint{Key: bobKey, Addr: bob}, testMsg(fmt.Sprintf("bench-%d.pgp", i), data))
		if err != nil {
			b.Fatal(err)
		}
	}
}

func benchPoll(b *testing.B, f *fixture) {
	n, err := f.poller.Poll(b.Context(), queue.Endpoint{Key: bobKey}, func(_ string, r io.Reader) error {
		_, err := io.Copy(io.Discard, r)
		return err
	})
	if err != nil || n != benchFiles {
		b.Fatalf("Poll = %d, %v", n, err)
	}
}

func benchFixture(b *testing.B) *fixture {
	f := newFixture(b, mailtest.Options{})
	f.sender.cfg.Timeout, f.poller.cfg.Timeout = time.Minute, time.Minute
	return f
}

// BenchmarkSend: SMTP submission only (the mailbox is emptied outside the timer).
func BenchmarkSend(b *testing.B) {
	f, files := benchFixture(b), benchData(b)
	b.SetBytes(benchFiles * benchSize)
	for b.Loop() {
		benchSend(b, f, files)
		b.StopTimer()
		benchPoll(b, f)
		b.StartTimer()
	}
}

// BenchmarkPoll: IMAP fetch, parse, base64 decode and expunge only.
func BenchmarkPoll(b *testing.B) {
	f, files := benchFixture(b), benchData(b)
	b.SetBytes(benchFiles * benchSize)
	for b.Loop() {
		b.StopTimer()
		benchSend(b, f, files)
		b.StartTimer()
		benchPoll(b, f)
	}
}

// BenchmarkRoundTrip: send the batch, then poll it.
func BenchmarkRoundTrip(b *testing.B) {
	f, files := benchFixture(b), benchData(b)
	b.SetBytes(benchFiles * benchSize)
	for b.Loop() {
		benchSend(b, f, files)
		benchPoll(b, f)
	}
}

// BenchmarkCompose and BenchmarkParse are the CPU ceilings: base64 framing of one 4 MiB file
// and reading it back, with no network.
func BenchmarkCompose(b *testing.B) {
	data := benchData(b)[0]
	b.SetBytes(benchSize)
	for b.Loop() {
		env, err := compose(alice, bob, "c.pgp", bobKey, benchSize, time.Now())
		if err != nil {
			b.Fatal(err)
		}
		if err := env.writeMail(io.Discard, bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParse(b *testing.B) {
	raw := rawMail(b, bob, bobKey, "p.pgp", benchData(b)[0])
	b.SetBytes(benchSize)
	for b.Loop() {
		_, r, err := openMail(bytes.NewReader(raw), bobKey, 0, "p")
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, r); err != nil {
			b.Fatal(err)
		}
	}
}
