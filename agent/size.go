package agent

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// ParseSize reads a size in DIBS units: a bare number is kilobytes of 1000 bytes; the
// suffixes k, m, g and t (any case, optionally followed by "b") mean 10^3 to 10^12 bytes.
// "5000" and "5M" are both 5,000,000 bytes. Fractions are allowed ("1.5g").
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(strings.ToLower(s))
	t = strings.TrimSuffix(t, "b")
	mult := 1000.0
	if t != "" {
		switch t[len(t)-1] {
		case 'k':
			mult, t = 1e3, t[:len(t)-1]
		case 'm':
			mult, t = 1e6, t[:len(t)-1]
		case 'g':
			mult, t = 1e9, t[:len(t)-1]
		case 't':
			mult, t = 1e12, t[:len(t)-1]
		}
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(t), 64)
	if err != nil || t == "" || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, fmt.Errorf("%q is not a size (a number of kilobytes, or a number with k, m, g or t)", s)
	}
	if v < 0 {
		return 0, fmt.Errorf("size %q is negative", s)
	}
	b := v * mult
	if b > math.MaxInt64/2 {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return int64(math.Round(b)), nil
}

// FormatSize prints bytes in the largest DIBS unit that keeps it readable ("1.5G", "700K", "12B").
func FormatSize(b int64) string {
	for _, u := range []struct {
		s string
		v float64
	}{{"T", 1e12}, {"G", 1e9}, {"M", 1e6}, {"K", 1e3}} {
		if float64(b) >= u.v {
			f := strconv.FormatFloat(float64(b)/u.v, 'f', 2, 64)
			return strings.TrimSuffix(strings.TrimRight(f, "0"), ".") + u.s
		}
	}
	return strconv.FormatInt(b, 10) + "B"
}

// Count is n with its noun, singular for 1 and plural otherwise: "1 version", "3 versions",
// "0 entries". The plural adds "s", or turns a final consonant+"y" into "ies".
func Count(n int, noun string) string {
	if n != 1 {
		if len(noun) > 1 && strings.HasSuffix(noun, "y") && !strings.ContainsRune("aeiou", rune(noun[len(noun)-2])) {
			noun = noun[:len(noun)-1] + "ie"
		}
		noun += "s"
	}
	return strconv.Itoa(n) + " " + noun
}
