package agent_test

import (
	"testing"

	"github.com/dibs-backup/dibs/agent"
)

func TestCount(t *testing.T) {
	for _, c := range []struct {
		n    int
		noun string
		want string
	}{
		{1, "version", "1 version"},
		{0, "version", "0 versions"},
		{2, "version", "2 versions"},
		{1, "entry", "1 entry"},
		{3, "entry", "3 entries"},
		{2, "empty directory", "2 empty directories"},
		{2, "day", "2 days"},
		{-1, "piece", "-1 pieces"},
	} {
		if got := agent.Count(c.n, c.noun); got != c.want {
			t.Errorf("Count(%d, %q) = %q, want %q", c.n, c.noun, got, c.want)
		}
	}
}
