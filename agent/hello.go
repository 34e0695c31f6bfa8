package agent

import (
	"context"

	"github.com/dibs-backup/dibs/relay"
)

// HelloInfo is what a daemon says of itself.
type HelloInfo = relay.HelloInfo

// Hello asks the daemon at host:port who it is (send_hello --host --port).
func (n *Node) Hello(ctx context.Context, host string, port int) (HelloInfo, error) {
	p := &Peer{Host: host, Port: port}
	c := &relay.Client{ID: n.ID}
	return c.Hello(ctx, p.DaemonURL())
}
