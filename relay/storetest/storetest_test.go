package storetest_test

import (
	"path/filepath"
	"testing"

	"github.com/dibs-backup/dibs/relay"
	"github.com/dibs-backup/dibs/relay/storetest"
)

// TestDirStore runs the suite against relay_server --dir's store. One DirStore serves a
// directory: its quota counts deposits in flight in its own memory, so A and B are one
// instance.
func TestDirStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T, o storetest.Options) storetest.Stores {
		s, err := relay.OpenDirStore(filepath.Join(t.TempDir(), "store"), relay.DirOptions{
			AllowFile: o.AllowFile, Quota: o.Quota, MaxFileSize: o.MaxFileSize, MaxAge: o.MaxAge})
		if err != nil {
			t.Fatal(err)
		}
		return storetest.Stores{A: s, B: s}
	})
}
