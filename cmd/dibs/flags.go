package main

import (
	"errors"
	"strconv"

	"github.com/dibs-backup/dibs/agent"
)

// sizeFlag is a size in DIBS units: a bare number is kilobytes (x1000 bytes); k, m, g, t
// suffixes (any case) mean 10^3 to 10^12 bytes.
type sizeFlag struct {
	bytes int64
	given bool
}

func (s *sizeFlag) String() string { return agent.FormatSize(s.bytes) }

func (s *sizeFlag) Set(v string) error {
	b, err := agent.ParseSize(v)
	if err != nil {
		return err
	}
	s.bytes, s.given = b, true
	return nil
}

// stringFlag is a string flag that knows whether it was given: edit_peer --comment ""
// clears a comment, leaving --comment out keeps it.
type stringFlag struct {
	value string
	given bool
}

func (s *stringFlag) String() string { return s.value }

func (s *stringFlag) Set(v string) error {
	s.value, s.given = v, true
	return nil
}

// ptr is the value if the flag was given, else nil.
func (s *stringFlag) ptr() *string {
	if !s.given {
		return nil
	}
	v := s.value
	return &v
}

// intFlag is an int flag that knows whether it was given; it parses as flag.Int does.
type intFlag struct {
	value int
	given bool
}

func (i *intFlag) String() string { return strconv.Itoa(i.value) }

func (i *intFlag) Set(v string) error {
	n, err := strconv.ParseInt(v, 0, strconv.IntSize)
	if err != nil {
		// flag.Int's words, so that an error reads the same for every int flag.
		if errors.Is(err, strconv.ErrRange) {
			return errors.New("value out of range")
		}
		return errors.New("parse error")
	}
	i.value, i.given = int(n), true
	return nil
}
