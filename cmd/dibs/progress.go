package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/dibs-backup/dibs/agent"
)

// terminal reports whether w is a terminal: only there is a progress bar drawn.
func terminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// withProgress sets a progress bar labelled label on n when stderr is a terminal, and
// leaves n without one otherwise (a pipe, a file, cron: nothing extra is printed).
func (a *App) withProgress(n *agent.Node, label string) {
	if terminal(a.Stderr) {
		b := &bar{w: a.Stderr, label: label}
		a.bar.Store(b)
		n.Progress = b
	}
}

// stderrLog is where log records for stderr go: around the bar while one is drawn, so
// that a warning during a store is a line of its own and the bar is drawn again below it.
type stderrLog struct{ a *App }

func (l stderrLog) Write(p []byte) (int, error) {
	if b := l.a.bar.Load(); b != nil {
		return b.interrupt(p)
	}
	return l.a.Stderr.Write(p)
}

// bar draws an agent.Progress on a terminal: bytes with their rate and the time left
// where the bytes are known, and files done of the files announced.
type bar struct {
	w     io.Writer
	label string

	mu         sync.Mutex
	pb         *progressbar.ProgressBar
	bytes      bool // the bar counts bytes (else files)
	max        int64
	done       int64
	files      int
	totalFiles int
}

var _ agent.Progress = (*bar)(nil)

func (b *bar) Start(bytes int64, files int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.totalFiles = files
	b.bytes = bytes > 0 || files == 0
	b.max = bytes
	if !b.bytes {
		b.max = int64(files)
	}
	if b.max == 0 {
		b.max = -1 // not known: a spinner with the bytes and their rate
	}
	b.pb = progressbar.NewOptions64(b.max,
		progressbar.OptionSetWriter(b.w),
		progressbar.OptionSetDescription(b.describe()),
		progressbar.OptionShowBytes(b.bytes),
		progressbar.OptionShowCount(),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
		progressbar.OptionFullWidth(),
	)
}

func (b *bar) describe() string {
	if b.totalFiles > 0 {
		return fmt.Sprintf("%s %d/%d files", b.label, b.files, b.totalFiles)
	}
	return fmt.Sprintf("%s %d files", b.label, b.files)
}

func (b *bar) Add(bytes int64, files int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pb == nil {
		return
	}
	step := int64(files)
	if b.bytes {
		step = bytes
	}
	if b.max > 0 && b.done+step > b.max { // more than announced (a file grew): the bar grows
		b.max = b.done + step
		b.pb.ChangeMax64(b.max)
	}
	b.done += step
	if files > 0 {
		b.files += files
		b.pb.Describe(b.describe())
	}
	b.pb.Add64(step)
}

// interrupt writes p (whole lines) on the bar's terminal: the bar is cleared, p written,
// and the bar drawn again under it.
func (b *bar) interrupt(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pb == nil {
		return b.w.Write(p)
	}
	b.pb.Clear()
	n, err := b.w.Write(p)
	io.WriteString(b.w, "\r"+b.pb.String()) // as last drawn: a render now may be throttled
	return n, err
}

func (b *bar) Done() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pb != nil {
		b.pb.Finish() // and cleared: the command's own output follows on a clean line
		b.pb = nil
	}
}
