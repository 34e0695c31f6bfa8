package agent

import (
	"fmt"
	"strings"
	"time"

	"github.com/dibs-backup/dibs/queue"
)

// Sections of show_database, in output order.
var Sections = []string{"peers", "files", "storage", "recovery", "probe", "stats", "posted_contracts", "proposed_contracts"}

// PeerRow is one peer as show_database prints it (the JSON field names are a contract).
type PeerRow struct {
	Peer        string  `json:"peer"`
	Email       string  `json:"email"`
	Comment     string  `json:"comment"`
	Fingerprint string  `json:"fingerprint"`
	Talk        string  `json:"talk"`
	Listen      string  `json:"listen"`
	Host        string  `json:"host"`
	Port        int     `json:"port"`
	Relay       string  `json:"relay"`
	LocalQuota  int64   `json:"local_quota"`
	LocalUsed   int64   `json:"local_used"`
	RemoteQuota int64   `json:"remote_quota"`
	RemoteUsed  int64   `json:"remote_used"`
	LastHeard   *string `json:"last_heard"`
	LastMethod  string  `json:"last_method"`
	LastError   string  `json:"last_error"`
	QueueDepth  int     `json:"queue_depth"`
	// LastRefusal is the last request the peer refused (NACK), "OP: reason": last_error
	// is about sending, this is the peer's answer.
	LastRefusal string `json:"last_refusal"`
}

// FileRow is one stored file.
type FileRow struct {
	Name    string  `json:"name"`
	Version int     `json:"version"`
	Size    int64   `json:"size"`
	Pieces  int     `json:"pieces"`
	Status  string  `json:"status"`
	Kind    string  `json:"kind"`    // file, dir or symlink
	Deleted *string `json:"deleted"` // when it was found gone locally (null: present)
	// Spares is how many of its pieces can be lost before it is (the fewest healthy
	// pieces beyond k over its segments); 0: losing one peer that holds a piece loses the
	// file. Null for versions that are in no object.
	Spares *int `json:"spares"`
	// LastRefusal is the last refusal (NACK) of one of its pieces, "PEER refused OP: reason".
	LastRefusal string `json:"last_refusal"`
	// Durability is the estimated chance of keeping the version over durabilityHorizon,
	// in nines (docs/durability.md); for a directory, that of the tree under it (its
	// entries' newest versions). Null where there is nothing to lose (an empty file, a
	// link, an empty directory).
	Durability *float64 `json:"durability"`
}

// StorageRow is what we hold for one peer.
type StorageRow struct {
	Peer   string `json:"peer"`
	Pieces int    `json:"pieces"`
	Bytes  int64  `json:"bytes"`
}

// RecoveryRow is one recovery in progress or done.
type RecoveryRow struct {
	Name      string  `json:"name"`
	State     string  `json:"state"`
	Kind      string  `json:"kind"`
	Objects   int     `json:"objects"`   // objects the recovery needs
	Assembled int     `json:"assembled"` // of them, rebuilt from enough pieces
	Written   int     `json:"written"`   // entries written under recovery/
	Error     string  `json:"error,omitempty"`
	Ended     *string `json:"ended,omitempty"` // when it finished
}

// Database gathers the sections of show_database.
func (n *Node) Database(only string) (map[string]any, error) {
	if only != "" && !oneOf(only, Sections) {
		return nil, fmt.Errorf("--only must be one of %s", strings.Join(Sections, ", "))
	}
	out := map[string]any{}
	want := func(s string) bool { return only == "" || only == s }
	if want("peers") {
		rows, err := n.peerRows()
		if err != nil {
			return nil, err
		}
		out["peers"] = rows
	}
	if err := n.contractSections(out, want); err != nil {
		return nil, err
	}
	if err := n.engineSections(out, want); err != nil {
		return nil, err
	}
	return out, nil
}

func (n *Node) peerRows() ([]PeerRow, error) {
	peers, err := n.Peers()
	if err != nil {
		return nil, err
	}
	states, err := n.PeerStates()
	if err != nil {
		return nil, err
	}
	rows := []PeerRow{}
	for _, p := range peers {
		st := states[p.Name]
		r := PeerRow{
			Peer: p.Name, Email: p.Email, Comment: p.Comment, Fingerprint: p.Fingerprint,
			Talk: p.Talk, Listen: p.Listen, Host: p.Host, Port: p.Port, Relay: p.Relay,
			LocalQuota: p.LocalQuota, LocalUsed: st.LocalUsed, RemoteQuota: p.RemoteQuota, RemoteUsed: st.RemoteUsed,
			LastMethod: st.LastMethod, LastError: st.LastError, LastRefusal: st.LastRefusal,
		}
		if !st.LastHeard.IsZero() {
			s := st.LastHeard.UTC().Format(time.RFC3339)
			r.LastHeard = &s
		}
		if es, err := n.Spool.List(queue.Outgoing(p.Name)); err == nil {
			r.QueueDepth = len(es)
		}
		rows = append(rows, r)
	}
	return rows, nil
}
