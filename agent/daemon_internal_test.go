package agent

import "testing"

// The daemon's send loop skips exactly the peers sendPeer has no method for.
func TestSendsActively(t *testing.T) {
	for talk, want := range map[string]bool{
		"":                  false,
		"passive":           false,
		" passive , ":       false,
		"passive,passive":   false,
		"passive,\tpassive": false,
		"active":            true,
		"mail":              true,
		"relay":             true,
		"passive,relay":     true,
		" passive , mail ":  true,
		"active,passive":    true,
		"carry":             false,
		"carry,passive":     false,
		"carry,relay":       true,
	} {
		if got := sendsActively(&Peer{Talk: talk}); got != want {
			t.Errorf("talk %q: sendsActively = %v, want %v", talk, got, want)
		}
	}
}
