package saslogin

import (
	"errors"
	"testing"
)

func TestServer_AsksForWhatTheClientDidNotSend(t *testing.T) {
	bad := errors.New("bad password")
	check := func(user, pass string) error {
		if user == "bob" && pass == "secret" {
			return nil
		}
		return bad
	}
	for _, tc := range []struct {
		name    string
		initial []byte // sent with AUTH LOGIN, or nil
		answers []string
		want    error
	}{
		{"user with AUTH", []byte("bob"), []string{"secret"}, nil},
		{"user asked for", nil, []string{"bob", "secret"}, nil},
		{"wrong password", nil, []string{"bob", "guess"}, bad},
		{"wrong user", []byte("eve"), []string{"secret"}, bad},
	} {
		s := NewServer(check)
		challenge, done, err := s.Next(tc.initial)
		prompts := []string{string(challenge)}
		for _, a := range tc.answers {
			if done || err != nil {
				t.Fatalf("%s: ended early: done %v, err %v", tc.name, done, err)
			}
			challenge, done, err = s.Next([]byte(a))
			prompts = append(prompts, string(challenge))
		}
		if !done || !errors.Is(err, tc.want) {
			t.Errorf("%s: done %v, err %v; want done and %v", tc.name, done, err, tc.want)
		}
		want := []string{"Username:", "Password:", ""}
		if tc.initial != nil {
			want = want[1:]
		}
		if len(prompts) != len(want) || prompts[0] != want[0] {
			t.Errorf("%s: prompts %q, want %q", tc.name, prompts, want)
		}
	}
}
