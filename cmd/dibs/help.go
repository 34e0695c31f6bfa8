package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
)

// helpCmd is listed with the others; Main runs helpCommand instead, as help takes a
// plain argument.
var helpCmd = &command{
	name:     "help",
	synopsis: "[COMMAND]",
	help:     "List the commands, or show one command's flags and what it does.",
	flags:    noFlags(func(*App) error { return nil }),
}

// helpCommand is `dibs help [COMMAND]`: the one command that takes a plain argument.
func (a *App) helpCommand(args []string) int {
	switch len(args) {
	case 0:
		printCommands(a.Stdout)
		return exitOK
	case 1:
		c, ok := findCommand(strings.TrimLeft(args[0], "-"))
		if !ok {
			fmt.Fprintf(a.Stderr, "dibs: help: unknown command %q; dibs help lists them\n", args[0])
			return exitUsage
		}
		printHelp(a.Stdout, c)
		return exitOK
	}
	fmt.Fprintln(a.Stderr, "dibs: help: give at most one command")
	return exitUsage
}

func printHelp(w io.Writer, c *command) {
	fmt.Fprintf(w, "usage: dibs %s %s\n\n%s\n", c.name, c.synopsis, c.help)
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	c.flags(fs)
	var b strings.Builder
	fs.VisitAll(func(f *flag.Flag) {
		fmt.Fprintf(&b, "  --%s\t%s\n", f.Name, f.Usage)
	})
	if b.Len() > 0 {
		fmt.Fprintf(w, "\nflags:\n%s", b.String())
	}
}

func printCommands(w io.Writer) {
	fmt.Fprintln(w, "usage: dibs COMMAND [--flag value | --flag=value] ...")
	fmt.Fprintln(w, "DIBS_DIR selects the node directory (default ~/.dibs). dibs help COMMAND tells more.")
	fmt.Fprintln(w)
	for _, c := range sortedCommands() {
		fmt.Fprintf(w, "  %-20s %s\n", c.name, wrap(summary(c.help), 100-23, strings.Repeat(" ", 23)))
	}
}

// summary is the first sentence of a command's help, whole: the help's first line can
// stop mid-sentence.
func summary(help string) string {
	text := strings.Join(strings.Fields(help), " ")
	for i := 0; i < len(text); i++ {
		if text[i] == '.' && (i+1 == len(text) || text[i+1] == ' ') && !strings.HasSuffix(text[:i+1], "e.g.") {
			return text[:i+1]
		}
	}
	return text
}

// wrap breaks text into lines of at most width bytes where it can, the lines after the
// first starting with indent.
func wrap(text string, width int, indent string) string {
	var b strings.Builder
	line := 0
	for i, word := range strings.Fields(text) {
		switch {
		case i == 0:
		case line+1+len(word) > width:
			b.WriteString("\n" + indent)
			line = 0
		default:
			b.WriteByte(' ')
			line++
		}
		b.WriteString(word)
		line += len(word)
	}
	return b.String()
}
