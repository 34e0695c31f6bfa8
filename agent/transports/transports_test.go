package transports_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dibs-backup/dibs/agent"
	"github.com/dibs-backup/dibs/agent/transports"
	"github.com/dibs-backup/dibs/mailbox"
	"github.com/dibs-backup/dibs/pgpmsg/pgpmsgtest"
	"github.com/dibs-backup/dibs/queue"
	"github.com/dibs-backup/dibs/relay"
)

func newNode(t *testing.T, opts map[string]string) *agent.Node {
	t.Helper()
	n, err := agent.Init(filepath.Join(t.TempDir(), "alice"), agent.InitConfig{
		KeyName: "alice.dibs@example.org", Admin: "alice@dibs.test", Identity: pgpmsgtest.Identity(t, "alice"),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	for k, v := range opts {
		if err := n.SetOption(k, v); err != nil {
			t.Fatal(err)
		}
	}
	return n
}

// A transport whose settings are wrong is still there, and fails every use with the
// setting to blame, marked permanent; store still sizes mail pieces.
func TestDefault_BrokenSettingsFailEveryUse(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		opts    map[string]string
		senders []string
		pollers []string
		want    string
	}{
		{"relayCAFile", map[string]string{"relayCAFile": missing},
			[]string{agent.Active, agent.Relay, agent.Mail}, []string{agent.Passive, agent.Relay}, "relayCAFile: "},
		{"smtp", map[string]string{"smtpPasswordFile": missing, "smtpUser": "alice"},
			[]string{agent.Mail}, nil, "smtp settings: "},
		{"imap", map[string]string{"imapServer": "imap.example.org", "imapUser": "alice", "imapPasswordFile": missing},
			nil, []string{agent.Mail}, "imap settings: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := transports.Default(newNode(t, tc.opts))
			check := func(kind, method string, err error) {
				if err == nil || !queue.IsPermanent(err) || !strings.HasPrefix(err.Error(), tc.want) {
					t.Errorf("%s %s: got %v, want a permanent error starting %q", kind, method, err, tc.want)
				}
			}
			for _, m := range tc.senders {
				check("send", m, tr.Senders[m].Send(ctx, queue.Endpoint{Peer: "bob"}, queue.Message{}))
			}
			for _, m := range tc.pollers {
				_, err := tr.Pollers[m].Poll(ctx, queue.Endpoint{Peer: "bob"}, nil)
				check("poll", m, err)
			}
			if tr.MailPayload == nil || tr.MailPayload(200_000) != mailbox.MaxPayload(200_000) {
				t.Error("mail pieces are not sized by the mail transport")
			}
		})
	}
}

// Good settings give the relay client for active, passive and relay, the mail
// transports for mail, and no mail poller without imapServer.
func TestDefault_BuildsWhatTheOptionsDescribe(t *testing.T) {
	tr := transports.Default(newNode(t, nil))
	for _, m := range []string{agent.Active, agent.Relay} {
		if _, ok := tr.Senders[m].(*relay.Client); !ok {
			t.Errorf("sender %s is %T", m, tr.Senders[m])
		}
	}
	for _, m := range []string{agent.Passive, agent.Relay} {
		if _, ok := tr.Pollers[m].(*relay.Client); !ok {
			t.Errorf("poller %s is %T", m, tr.Pollers[m])
		}
	}
	if _, ok := tr.Senders[agent.Mail].(*mailbox.Sender); !ok {
		t.Errorf("mail sender is %T", tr.Senders[agent.Mail])
	}
	if p, ok := tr.Pollers[agent.Mail]; ok {
		t.Errorf("mail poller %T without imapServer", p)
	}
	tr = transports.Default(newNode(t, map[string]string{"imapServer": "imap.example.org", "imapUser": "alice", "imapPassword": "pw"}))
	if _, ok := tr.Pollers[agent.Mail].(*mailbox.Poller); !ok {
		t.Errorf("mail poller is %T", tr.Pollers[agent.Mail])
	}
}
