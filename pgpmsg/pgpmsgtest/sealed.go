package pgpmsgtest

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/dibs-backup/dibs/pgpmsg"
)

var (
	sealedMu    sync.Mutex
	sealedCache = map[string][]byte{}
)

// Sealed returns a real dibs message, a HELLO, from the identity from to the key of to
// (both among Names), with size bytes of payload; the same arguments give the same
// cached bytes, so a test may call it in a loop.
func Sealed(t testing.TB, from, to string, size int) []byte {
	key := fmt.Sprintf("%s>%s:%d", from, to, size)
	sealedMu.Lock()
	defer sealedMu.Unlock()
	if b, ok := sealedCache[key]; ok {
		return b
	}
	var h pgpmsg.Header
	h.Set(pgpmsg.FieldVersion, pgpmsg.Version)
	h.Set(pgpmsg.FieldType, "HELLO")
	h.Set(pgpmsg.FieldMessageID, pgpmsg.NewMessageID())
	h.Set(pgpmsg.FieldDate, time.Now().UTC().Format(time.RFC3339))
	payload := make([]byte, size)
	for i := range payload {
		payload[i] = byte(i*7 + i>>8)
	}
	var buf bytes.Buffer
	if err := pgpmsg.Seal(&buf, h, bytes.NewReader(payload), Identity(t, from), Key(t, to)); err != nil {
		t.Fatal(err)
	}
	sealedCache[key] = buf.Bytes()
	return buf.Bytes()
}
