package demo

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dibs-backup/dibs/agent"
)

func TestRun_EveryByteComesBack(t *testing.T) {
	dir := t.TempDir()
	var out bytes.Buffer
	if err := Run(context.Background(), dir, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	// The sample stays in dir: the report must name its exact size as recovered.
	var size int64
	filepath.WalkDir(filepath.Join(dir, "sample"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			fi, _ := d.Info()
			size += fi.Size()
		}
		return err
	})
	if size < 1_000_000 {
		t.Fatalf("sample is only %d bytes", size)
	}
	for _, want := range []string{
		fmt.Sprintf("%d bytes (%s) recovered from bob and dave", size, agent.FormatSize(size)),
		"entries identical",
		"good",
		"every byte came back",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
}

func TestRun_Cancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var out bytes.Buffer
	if err := Run(ctx, t.TempDir(), &out); err == nil {
		t.Fatalf("a cancelled demo succeeded:\n%s", out.String())
	}
}
