// Package saslogin is the server side of SASL LOGIN, which go-sasl has only as a client.
// The relay's SMTP door (agent/maildoor) and the in-process test server (mailbox/mailtest)
// both offer it beside PLAIN, because some mail clients send nothing else.
package saslogin

import "github.com/emersion/go-sasl"

// NewServer returns a LOGIN server that asks for the user name (unless the client sent it
// with AUTH) and then the password, and hands both to check: its error is the answer.
func NewServer(check func(user, pass string) error) sasl.Server {
	return &server{check: check}
}

type server struct {
	check func(user, pass string) error
	user  []byte
	step  int
}

func (l *server) Next(resp []byte) ([]byte, bool, error) {
	switch l.step {
	case 0:
		l.step = 1
		if resp == nil {
			return []byte("Username:"), false, nil
		}
		l.user = resp
		l.step = 2
		return []byte("Password:"), false, nil
	case 1:
		l.user = resp
		l.step = 2
		return []byte("Password:"), false, nil
	default:
		return nil, true, l.check(string(l.user), string(resp))
	}
}
