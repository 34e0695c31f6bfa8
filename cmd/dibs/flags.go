package main

import (
	"flag"

	"github.com/dibs-backup/dibs/agent"
)

// sizeFlag is a size in DIBS units: a bare number is kilobytes (x1000 bytes); k, m, g, t
// suffixes (any case) mean 10^3 to 10^12 bytes.
type sizeFlag struct{ bytes int64 }

func (s *sizeFlag) String() string { return agent.FormatSize(s.bytes) }

func (s *sizeFlag) Set(v string) error {
	b, err := agent.ParseSize(v)
	if err != nil {
		return err
	}
	s.bytes = b
	return nil
}

func sizeVar(fs *flag.FlagSet, name, usage string) *sizeFlag {
	s := &sizeFlag{}
	fs.Var(s, name, usage)
	return s
}

// sizeVarDefault is sizeVar with a default other than 0, which the usage states.
func sizeVarDefault(fs *flag.FlagSet, name, usage string, def int64) *sizeFlag {
	s := &sizeFlag{bytes: def}
	fs.Var(s, name, usage+" (default "+s.String()+")")
	return s
}
