package agent

import (
	"context"
	"fmt"

	"github.com/dibs-backup/dibs/relay"
)

// HelloInfo is what a daemon says of itself.
type HelloInfo = relay.HelloInfo

// Hello asks the daemon at host:port who it is (send_hello --host --port).
func (n *Node) Hello(ctx context.Context, host string, port int) (HelloInfo, error) {
	p := &Peer{Host: host, Port: port}
	c := &relay.Client{ID: n.ID}
	info, err := c.Hello(ctx, p.DaemonURL())
	if err != nil {
		return HelloInfo{}, fmt.Errorf("daemon: %w", err)
	}
	return info, nil
}
