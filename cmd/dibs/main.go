// Command dibs is the peer-to-peer backup agent: `dibs COMMAND [--flag value] ...`.
// `dibs help` lists the commands; docs/cli.md is the reference for each, with its flags and the options.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/dibs-backup/dibs/agent"
	"github.com/dibs-backup/dibs/agent/transports"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1 // the command failed
	exitUsage = 2 // the command line is wrong
)

// App is one invocation's world: where output goes and the environment it reads.
// Tests build their own.
type App struct {
	Stdout, Stderr io.Writer
	Stdin          io.Reader
	Getenv         func(string) string
	Ctx            context.Context

	opened   *agent.Node         // the node the command opened (a.node), for its error report
	closeLog func() error        // closes the log the node writes to
	fileLog  *slog.Logger        // the same log without stderr
	bar      atomic.Pointer[bar] // the progress bar on stderr, if one is drawn
}

// command is one CLI command: its name, its flags and help, and what it does.
type command struct {
	name     string
	synopsis string   // flags, as in CLI.md
	help     string   // what it does, a few lines
	required []string // flags that must be given, checked in this order
	// reports: a failure of this command also goes to errorDir and dibsAdmin (the
	// commands whose top-level failures DIBS mailed).
	reports bool
	// flags declares the command's flags on fs, into a new value of the command's
	// options, and returns the command run with those options once fs is parsed.
	flags func(fs *flag.FlagSet) (run func(a *App) error)
}

// commands is every command. A command is a name, its help, the struct its flags are
// parsed into (storeOptions: the flags are typed fields, not looked up by name) and a
// function runStore(a, opts) error. dibs help lists them sorted.
var commands = []*command{
	helpCmd,
	// identity and peers
	initCmd, exportKeyCmd, addPeerCmd, editPeerCmd, deletePeerCmd, showDatabaseCmd,
	setOptionCmd, showOptionCmd, exportRecoveryKitCmd, importRecoveryKitCmd,
	// backup and recovery
	storeCmd, autoCheckCmd, unstoreFileCmd, recoverFileCmd, recoverAllCmd, probeCmd, drillCmd,
	clearCmd, forgetCmd, cleanupCmd, mergeStatsCmd,
	// moving messages
	sendMessageCmd, pollPassivesCmd, processMessageCmd, exportMessagesCmd,
	importMessagesCmd, sendHelloCmd,
	// daemons and servers
	startDaemonCmd, stopDaemonCmd, relayServerCmd, demoCmd,
	// the peer finder
	contractServerCmd, postContractCmd, unpostContractCmd, proposeContractCmd,
}

// withOptions is the flags of a command whose flags fill a struct O: declare puts
// them on the flag set, run is the command.
func withOptions[O any](declare func(*O, *flag.FlagSet), run func(*App, O) error) func(*flag.FlagSet) func(*App) error {
	return func(fs *flag.FlagSet) func(*App) error {
		o := new(O)
		declare(o, fs)
		return func(a *App) error { return run(a, *o) }
	}
}

// noFlags is the flags of a command that takes none.
func noFlags(run func(*App) error) func(*flag.FlagSet) func(*App) error {
	return func(*flag.FlagSet) func(*App) error { return run }
}

func findCommand(name string) (*command, bool) {
	for _, c := range commands {
		if c.name == name {
			return c, true
		}
	}
	return nil, false
}

// usageError is a wrong command line: exit code 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// memoryLimit is the soft heap limit dibs runs under unless GOMEMLIMIT says otherwise:
// a store keeps two segments in memory whatever the file size, and a limit makes the
// garbage collector return the sealing layers' temporaries before the heap doubles.
const memoryLimit = 96 << 20

func main() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(memoryLimit)
	}
	if os.Getenv("GOMAXPROCS") == "" {
		// Twice as many Ps as cores: a goroutine blocked in a disk write or an fsync
		// keeps its P for the whole call when the call ends before the runtime's monitor
		// hands the P over (up to 10 ms), so with one P per core a core idles while there
		// is sealing to do. store of a 1 GiB tree: 181-255 -> 285-288 MB/s on 2 cores.
		runtime.GOMAXPROCS(2 * runtime.GOMAXPROCS(0))
	}
	if path := os.Getenv("DIBS_CPUPROFILE"); path != "" {
		stopProfile := startCPUProfile(path)
		defer stopProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	a := &App{Stdout: os.Stdout, Stderr: os.Stderr, Stdin: os.Stdin, Getenv: os.Getenv, Ctx: ctx}
	code := a.Main(os.Args[1:])
	stop()
	if code != 0 {
		os.Exit(code)
	}
}

// startCPUProfile writes a CPU profile of this run to path (DIBS_CPUPROFILE, for
// finding where a slow command spends its time; see bench/store.sh).
func startCPUProfile(path string) (stop func()) {
	f, err := os.Create(path)
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "dibs: DIBS_CPUPROFILE: %v\n", err)
		return func() {}
	}
	return func() { pprof.StopCPUProfile(); f.Close() }
}

// Main runs one command line and returns the exit code. Every failure is one line on
// stderr: "dibs: COMMAND: what is wrong".
func (a *App) Main(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(a.Stderr, "dibs: no command given; dibs help lists them")
		return exitUsage
	}
	name := args[0]
	if name == "-h" || name == "--help" || name == "-help" {
		name = "help"
	}
	if name == "help" {
		return a.helpCommand(args[1:])
	}
	c, ok := findCommand(name)
	if !ok {
		fmt.Fprintf(a.Stderr, "dibs: unknown command %q; dibs help lists them\n", name)
		return exitUsage
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	run := c.flags(fs)
	err := fs.Parse(args[1:])
	if errors.Is(err, flag.ErrHelp) {
		printHelp(a.Stdout, c)
		return exitOK
	}
	if err != nil {
		err = usagef("%s (dibs help %s)", strings.Replace(err.Error(), " -", " --", 1), name)
	} else if fs.NArg() > 0 {
		err = usagef("unexpected argument %q: every value goes with a --flag (dibs help %s)", fs.Arg(0), name)
	} else if err = c.checkRequired(fs); err == nil {
		err = run(a)
	}
	defer a.closeNodeLog()
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(a.Stderr, "dibs: %s: %s\n", name, oneLine(err.Error()))
	var ue *usageError
	if errors.As(err, &ue) {
		return exitUsage
	}
	if a.fileLog != nil {
		a.fileLog.Error(name, "err", err) // stderr has it already
	}
	if c.reports && a.opened != nil && !errors.Is(err, context.Canceled) {
		if a.fileLog != nil {
			a.opened.Log = a.fileLog // stderr says one line: the error
		}
		a.opened.ReportError(context.WithoutCancel(a.Ctx), name, err)
	}
	return exitError
}

// closeNodeLog closes the log a.node opened.
func (a *App) closeNodeLog() {
	if a.closeLog != nil {
		a.closeLog()
		a.closeLog = nil
	}
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ")), " ")
}

// dibsDir is DIBS_DIR, default ~/.dibs.
func (a *App) dibsDir() (string, error) {
	if d := a.Getenv("DIBS_DIR"); d != "" {
		return filepath.Abs(d)
	}
	home := a.Getenv("HOME")
	if home == "" {
		h, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("set DIBS_DIR or HOME")
		}
		home = h
	}
	return filepath.Join(home, ".dibs"), nil
}

// node opens the node in DIBS_DIR with the transports its options describe.
func (a *App) node() (*agent.Node, error) {
	dir, err := a.dibsDir()
	if err != nil {
		return nil, err
	}
	n, err := agent.Open(dir)
	if err != nil {
		return nil, err
	}
	a.printWarnings(n)
	n.Transports = transports.Default(n)
	a.logTo(n, agent.OptLogFile.Get(n.Opts))
	a.opened = n
	return n, nil
}

// printWarnings prints what opening the node found to tell the user (an obsolete
// option in dibsrc.toml), on stderr: the command goes on.
func (a *App) printWarnings(n *agent.Node) {
	for _, w := range n.Warnings {
		fmt.Fprintf(a.Stderr, "dibs: warning: %s\n", w)
	}
}

// withNode runs fn on the node and closes it.
func (a *App) withNode(fn func(n *agent.Node) error) error {
	n, err := a.node()
	if err != nil {
		return err
	}
	defer n.Close()
	return fn(n)
}

// checkRequired checks that every required flag was given.
func (c *command) checkRequired(fs *flag.FlagSet) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for _, n := range c.required {
		if !given[n] {
			return usagef("--%s is required (dibs help %s)", n, c.name)
		}
	}
	return nil
}

func sortedCommands() []*command {
	out := slices.Clone(commands)
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}
