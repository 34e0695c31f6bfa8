package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/dibs-backup/dibs/agent/contract"
	"github.com/dibs-backup/dibs/queue"
)

// The peer finder, our side: the contracts we posted (post_contract, unpost_contract) and
// those we proposed to others (propose_contract; proposals.go), each a JSON file:
//
//	contracts/posted/<name>.json     PostedContract
//	contracts/proposed/<name>.json   ProposedContract
//
// They are files, not database records, because they are few and the user may read them.
const (
	postedDir   = "contracts/posted"
	proposedDir = "contracts/proposed"
	// NoServer as a contract server URL keeps the contract local (DIBS's --url none).
	NoServer = "none"
)

// Posted contract states.
const (
	ContractPosted = "posted" // waiting for a proposal
	ContractTaken  = "taken"  // a proposal was accepted: the proposer is a peer
)

// PostedContract is a contract we posted, as we keep it.
type PostedContract struct {
	contract.Contract
	URL     string `json:"url"` // the contract server, or NoServer
	State   string `json:"state"`
	TakenBy string `json:"taken_by,omitempty"` // the peer that took it
	// Withdrawn: a taken contract was withdrawn from its server (WithdrawTaken).
	Withdrawn bool `json:"withdrawn,omitempty"`
}

// WithdrawTaken withdraws from their servers the contracts a proposal took, so that
// nobody else answers them (send_message and the daemon call it). It returns how many.
func (n *Node) WithdrawTaken(ctx context.Context) (int, error) {
	pcs, err := n.PostedContracts()
	if err != nil {
		return 0, err
	}
	k := 0
	var errs []error
	for _, pc := range pcs {
		if pc.State != ContractTaken || pc.Withdrawn || pc.URL == NoServer || !n.Now().Before(pc.ExpiresAt()) {
			continue
		}
		u, err := contract.NewUnpost(&pc.Contract, n.ID, n.Now())
		if err == nil {
			err = (&contract.Client{URL: pc.URL}).Unpost(ctx, u)
		}
		if err != nil && !errors.Is(err, contract.ErrNotFound) {
			errs = append(errs, fmt.Errorf("withdrawing taken contract %s: %w", pc.Name, err))
			continue
		}
		pc.Withdrawn = true
		if err := n.savePosted(pc); err != nil {
			errs = append(errs, err)
			continue
		}
		k++
	}
	return k, errors.Join(errs...)
}

// PostSpec is what post_contract asks for. Zero values take defaults: talk and listen
// any, host our hostname option, port our daemonPort, a generated name, and the server
// of defaultContractServerURL.
type PostSpec struct {
	Name                 string
	MinQuota, MaxQuota   int64
	QuotaMult            float64
	Lifetime             int64 // seconds
	Talk, Listen         string
	Host                 string
	Port                 int
	URL                  string
	HostGiven, PortGiven bool
}

// ContractServerURL is the server a command uses: url if given, else our
// defaultContractServerURL.
func (n *Node) ContractServerURL(url string) string {
	if url != "" {
		return url
	}
	return optDefaultContractServer.Get(n.Opts)
}

// PostContract signs a contract and posts it to the contract server (unless the URL is
// NoServer), then keeps it among our posted contracts. A proposal to it is checked
// against what we keep, not against what the server says.
func (n *Node) PostContract(ctx context.Context, s PostSpec) (*PostedContract, error) {
	c := contract.Contract{
		Name: s.Name, MinQuota: s.MinQuota, MaxQuota: s.MaxQuota, QuotaMult: s.QuotaMult,
		Talk: s.Talk, Listen: s.Listen, Host: s.Host, Port: s.Port,
		Email: OptDibsAdmin.Get(n.Opts), Relay: optRelayURL.Get(n.Opts),
		Posted: n.Now().UTC(), Lifetime: s.Lifetime,
	}
	if c.Talk == "" {
		c.Talk = contract.Any
	}
	if c.Listen == "" {
		c.Listen = contract.Any
	}
	if !s.HostGiven {
		c.Host = optHostname.Get(n.Opts)
	}
	if !s.PortGiven {
		c.Port = int(optDaemonPort.Get(n.Opts))
	}
	if c.Host == "" {
		c.Port = 0
	}
	if c.Name == "" {
		var r [4]byte
		rand.Read(r[:])
		c.Name = string(n.Fingerprint())[:8] + "-" + hex.EncodeToString(r[:])
	}
	if err := c.Sign(n.ID); err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		switch {
		case strings.Contains(err.Error(), "email") && contract.CheckEmail(c.Email) != nil:
			err = fmt.Errorf("%w: the contract advertises our dibsAdmin option (dibs set_option --name dibsAdmin --value EMAIL)", err)
		case !s.HostGiven && c.Host != "" && contract.CheckHost(c.Host) != nil:
			err = fmt.Errorf("%w: give --host H, or set our hostname option", err)
		}
		return nil, err
	}
	url := n.ContractServerURL(s.URL)
	if _, err := n.postedContract(c.Name); err == nil {
		return nil, fmt.Errorf("we posted a contract %s already; unpost_contract it first, or choose another --contract_name", c.Name)
	}
	if url != NoServer {
		cl := &contract.Client{URL: url}
		if err := cl.Post(ctx, &c); err != nil {
			return nil, err
		}
	}
	pc := &PostedContract{Contract: c, URL: url, State: ContractPosted}
	return pc, n.savePosted(pc)
}

// UnpostContract withdraws a contract we posted, from its server (or from url, if given;
// NoServer: only from our list), and forgets it. A server that no longer has it is not
// an error: it expired there, or was never posted.
func (n *Node) UnpostContract(ctx context.Context, name, url string) error {
	pc, err := n.postedContract(name)
	if err != nil {
		return err
	}
	if url == "" {
		url = pc.URL
	}
	if url != NoServer && pc.State == ContractPosted && n.Now().Before(pc.ExpiresAt()) {
		u, err := contract.NewUnpost(&pc.Contract, n.ID, n.Now())
		if err != nil {
			return err
		}
		cl := &contract.Client{URL: url}
		if err := cl.Unpost(ctx, u); err != nil && !errors.Is(err, contract.ErrNotFound) {
			return err
		}
	}
	return removeDurable(filepath.Join(n.Dir, postedDir, name+".json"))
}

func (n *Node) postedContract(name string) (*PostedContract, error) {
	if err := contract.CheckName(name); err != nil {
		return nil, err
	}
	var pc PostedContract
	err := loadJSON(filepath.Join(n.Dir, postedDir, name+".json"), &pc)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("we posted no contract %s (dibs show_database --only posted_contracts lists ours)", name)
	}
	return &pc, err
}

// loadJSON reads the JSON file path into v.
func loadJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

func (n *Node) savePosted(pc *PostedContract) error {
	return saveJSON(filepath.Join(n.Dir, postedDir, pc.Name+".json"), pc)
}

// PostedContracts returns the contracts we posted, by name.
func (n *Node) PostedContracts() ([]*PostedContract, error) {
	var out []*PostedContract
	err := eachJSON(filepath.Join(n.Dir, postedDir), func(name string) error {
		pc, err := n.postedContract(name)
		if err == nil {
			out = append(out, pc)
		}
		return err
	})
	return out, err
}

// PostedRow is one of our posted contracts as show_database prints it.
type PostedRow struct {
	Name      string  `json:"name"`
	State     string  `json:"state"` // posted, taken or expired
	MinQuota  int64   `json:"min_quota"`
	MaxQuota  int64   `json:"max_quota"`
	QuotaMult float64 `json:"quota_mult"`
	Talk      string  `json:"talk"`
	Listen    string  `json:"listen"`
	Host      string  `json:"host"`
	Port      int     `json:"port"`
	Posted    string  `json:"posted"`
	Expires   string  `json:"expires"`
	URL       string  `json:"url"`
	TakenBy   string  `json:"taken_by"`
}

func (n *Node) postedRows() ([]PostedRow, error) {
	pcs, err := n.PostedContracts()
	if err != nil {
		return nil, err
	}
	rows := []PostedRow{}
	for _, pc := range pcs {
		st := pc.State
		if st == ContractPosted && !n.Now().Before(pc.ExpiresAt()) {
			st = "expired"
		}
		rows = append(rows, PostedRow{
			Name: pc.Name, State: st, MinQuota: pc.MinQuota, MaxQuota: pc.MaxQuota, QuotaMult: pc.QuotaMult,
			Talk: pc.Talk, Listen: pc.Listen, Host: pc.Host, Port: pc.Port,
			Posted: pc.Posted.UTC().Format(time.RFC3339), Expires: pc.ExpiresAt().UTC().Format(time.RFC3339),
			URL: pc.URL, TakenBy: pc.TakenBy,
		})
	}
	return rows, nil
}

func saveJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return queue.WriteFileAtomic(path, append(b, '\n'), 0o600)
}

// eachJSON calls fn with the name (without .json) of every JSON file in dir, sorted.
func eachJSON(dir string, fn func(name string) error) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var names []string
	for _, e := range ents {
		if name, ok := strings.CutSuffix(e.Name(), ".json"); ok && !e.IsDir() {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	for _, name := range names {
		if err := fn(name); err != nil {
			return err
		}
	}
	return nil
}

// removeDurable removes path and syncs its directory, so that the removal survives a crash.
func removeDurable(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return nil
	}
	defer d.Close()
	return d.Sync()
}

// contractSections fills show_database's posted_contracts and proposed_contracts.
func (n *Node) contractSections(out map[string]any, want func(string) bool) error {
	if want("posted_contracts") {
		rows, err := n.postedRows()
		if err != nil {
			return err
		}
		out["posted_contracts"] = rows
	}
	if want("proposed_contracts") {
		rows, err := n.proposedRows()
		if err != nil {
			return err
		}
		out["proposed_contracts"] = rows
	}
	return nil
}

// checkContractURL checks defaultContractServerURL: an http(s) URL, or NoServer.
func checkContractURL(s string) error {
	if s == NoServer {
		return nil
	}
	return checkURL(s)
}

// DaemonPort is the port our daemon serves (daemonPort).
func (n *Node) DaemonPort() int { return int(optDaemonPort.Get(n.Opts)) }
