package testenv

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/dibs-backup/dibs/agent"
)

// Rebuild models an owner who lost its whole DIBS_DIR: the node's daemon stops, its
// directory is abandoned, and a new directory is set up from a recovery kit alone
// (import_recovery_kit). The new node serves on the old address, so peers reach it as
// before. It returns the new node, which replaces the old one in e.Nodes.
func (e *Env) Rebuild(name string, kit io.Reader) *Node {
	t := e.T
	old := e.Node(name)
	addr := old.Daemon.Addr().String()
	if old.done != nil {
		old.cancel()
		<-old.done
	} else {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		old.Daemon.Run(ctx) // shuts the server down and frees the address
		old.done = make(chan struct{})
		close(old.done)
	}
	old.Close()
	dir := filepath.Join(filepath.Dir(old.Dir), name+"-rebuilt")
	for i := 2; ; i++ { // a node rebuilt before is rebuilt into a new directory again
		if _, err := os.Stat(dir); err != nil {
			break
		}
		dir = filepath.Join(filepath.Dir(old.Dir), fmt.Sprintf("%s-rebuilt%d", name, i))
	}
	an, err := agent.ImportRecoveryKit(dir, kit)
	if err != nil {
		t.Fatalf("testenv: rebuild %s: %v", name, err)
	}
	n := e.serveNode(an, old.Spec, e.setup, addr)
	for i := range e.Nodes {
		if e.Nodes[i] == old {
			e.Nodes[i] = n
		}
	}
	return n
}
