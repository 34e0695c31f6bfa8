package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDemo_KeepsDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "grid")
	var out, errb bytes.Buffer
	a := &App{Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }, Ctx: context.Background()}
	if code := a.Main([]string{"demo", "--dir", dir}); code != exitOK {
		t.Fatalf("dibs demo: exit %d: %s\n%s", code, errb.String(), out.String())
	}
	if !strings.Contains(out.String(), "every byte came back") {
		t.Errorf("report lacks the verdict:\n%s", out.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "alice-new", "recovery", "sample", "big.bin")); err != nil {
		t.Errorf("--dir was not kept: %v", err)
	}
}

func TestDemo_NonEmptyDir(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "precious"), []byte("x"), 0o600)
	var out, errb bytes.Buffer
	a := &App{Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }, Ctx: context.Background()}
	if code := a.Main([]string{"demo", "--dir", dir}); code != exitUsage {
		t.Fatalf("exit %d, want %d", code, exitUsage)
	}
	if got := errb.String(); !strings.HasPrefix(got, "dibs: demo: ") || strings.Count(got, "\n") != 1 {
		t.Errorf("stderr %q, want one dibs: demo: line", got)
	}
}

func TestDemo_InterruptedFailsInOneLine(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var out, errb bytes.Buffer
	a := &App{Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }, Ctx: ctx}
	if code := a.Main([]string{"demo", "--dir", t.TempDir()}); code != exitError {
		t.Fatalf("exit %d, want %d\n%s", code, exitError, out.String())
	}
	if got := errb.String(); !strings.HasPrefix(got, "dibs: demo: ") || strings.Count(got, "\n") != 1 {
		t.Errorf("stderr %q, want one dibs: demo: line", got)
	}
}
