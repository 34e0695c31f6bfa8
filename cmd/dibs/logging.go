package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"gopkg.in/natefinch/lumberjack.v2"

	"github.com/dibs-backup/dibs/agent"
)

// logBackups is how many rotated logs are kept beside a log (DIBS kept .1 to .9).
const logBackups = 9

// logTo makes file the node's log (closing the log it had).
func (a *App) logTo(n *agent.Node, file string) {
	a.closeNodeLog()
	a.closeLog, a.fileLog = a.openLog(n, file)
}

// openLog points n.Log at file (logFile for commands, daemonLogFile for the daemon) for
// records at logLevel and up, and at stderr for records at printLogLevel and up, both
// levels on DIBS's scale. The file is rotated past maxLogSize; close flushes nothing
// (every record is written at once) but closes the file. fileOnly logs to the file alone.
func (a *App) openLog(n *agent.Node, file string) (close func() error, fileOnly *slog.Logger) {
	lj := &lumberjack.Logger{
		Filename:   file,
		MaxSize:    megabytesAbove(agent.OptMaxLogSize.Get(n.Opts)),
		MaxBackups: logBackups,
	}
	w := &rotating{l: lj, max: agent.OptMaxLogSize.Get(n.Opts)}
	if fi, err := os.Stat(file); err == nil {
		w.size = fi.Size()
	}
	toFile := slog.NewTextHandler(w, handlerOptions(agent.OptLogLevel.Get(n.Opts)))
	n.Log = slog.New(fanout{toFile, slog.NewTextHandler(stderrLog{a}, handlerOptions(agent.OptPrintLogLevel.Get(n.Opts)))})
	return lj.Close, slog.New(toFile)
}

// slogLevel is the slog threshold of a DIBS level: DEBUG -20, INFO -10, WARNING 0,
// ERROR 10, CRITICAL 20 become slog's Debug -4, Info 0, Warn 4, Error 8 and 12, and a
// level between two names falls between them too (-15 lets INFO through, not DEBUG).
func slogLevel(dibs int64) slog.Level { return slog.Level(dibs*2/5 + 4) }

func handlerOptions(dibs int64) *slog.HandlerOptions {
	return &slog.HandlerOptions{Level: slogLevel(dibs), ReplaceAttr: dibsLevelNames}
}

// dibsLevelNames writes levels by DIBS's names: WARNING, not WARN.
func dibsLevelNames(groups []string, a slog.Attr) slog.Attr {
	if a.Key == slog.LevelKey && len(groups) == 0 {
		switch l := a.Value.Any().(slog.Level); {
		case l >= slog.LevelError+4:
			a.Value = slog.StringValue("CRITICAL")
		case l >= slog.LevelError:
			a.Value = slog.StringValue("ERROR")
		case l >= slog.LevelWarn:
			a.Value = slog.StringValue("WARNING")
		}
	}
	return a
}

// megabytesAbove is maxLogSize in lumberjack's unit, MiB, rounded up (at least 1):
// lumberjack rotates only past that, so it never cuts earlier than rotating does, and
// stops a single record larger than the limit only when it exceeds whole MiBs.
func megabytesAbove(bytes int64) int {
	return int(max(1, (bytes+(1<<20)-1)>>20))
}

// rotating rotates its lumberjack log once a write would take it past max bytes, so
// that maxLogSize is kept in bytes as DIBS meant (lumberjack alone counts in MiB). A
// record is never split: the write that crosses max goes whole into a fresh file.
// Processes that share one logFile each count their own writes: a log written by
// several commands at once may grow past max by what the others wrote.
type rotating struct {
	mu      sync.Mutex
	l       *lumberjack.Logger
	size    int64 // bytes in the current file, as far as this process knows
	max     int64
	rotated time.Time
}

func (r *rotating) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.size > 0 && r.size+int64(len(p)) > r.max {
		// lumberjack names a backup by the millisecond: a second rotation within the
		// same one would rename over the first backup.
		if wait := time.Until(r.rotated.Add(2 * time.Millisecond)); wait > 0 {
			time.Sleep(wait)
		}
		if err := r.l.Rotate(); err == nil {
			r.size, r.rotated = 0, time.Now()
		}
	}
	k, err := r.l.Write(p)
	r.size += int64(k)
	return k, err
}

// fanout hands each record to every handler that takes its level.
type fanout []slog.Handler

func (f fanout) Enabled(ctx context.Context, l slog.Level) bool {
	for _, h := range f {
		if h.Enabled(ctx, l) {
			return true
		}
	}
	return false
}

func (f fanout) Handle(ctx context.Context, r slog.Record) error {
	var errs []error
	for _, h := range f {
		if h.Enabled(ctx, r.Level) {
			errs = append(errs, h.Handle(ctx, r.Clone()))
		}
	}
	return errors.Join(errs...)
}

func (f fanout) WithAttrs(as []slog.Attr) slog.Handler {
	out := make(fanout, len(f))
	for i, h := range f {
		out[i] = h.WithAttrs(as)
	}
	return out
}

func (f fanout) WithGroup(name string) slog.Handler {
	out := make(fanout, len(f))
	for i, h := range f {
		out[i] = h.WithGroup(name)
	}
	return out
}

var _ io.Writer = (*rotating)(nil)
