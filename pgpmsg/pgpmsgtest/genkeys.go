//go:build ignore

// genkeys writes the fixture identities in keys/. Run it once, from this
// directory, with `go run genkeys.go`; the output is committed so that
// tests use the same keys on every run.
package main

import (
	"bytes"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/dibs-backup/dibs/pgpmsg"
)

func main() {
	created := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, name := range []string{"alice", "bob", "carol", "dave", "erin", "mallory"} {
		id, err := pgpmsg.Generate(name+".dibs@example.org", created)
		if err != nil {
			log.Fatal(err)
		}
		var buf bytes.Buffer
		if err := id.WriteSecret(&buf); err != nil {
			log.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join("keys", name+".sec.asc"), buf.Bytes(), 0o644); err != nil {
			log.Fatal(err)
		}
		log.Printf("%s %s", name, id.Fingerprint())
	}
}
