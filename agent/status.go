package agent

import (
	"bufio"
	"cmp"
	"crypto/subtle"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dibs-backup/dibs/agent/books"
	"github.com/dibs-backup/dibs/queue"
)

// The status server: start_daemon serves a page a person reads (/), the same data for
// scripts (/status.json) and Prometheus metrics (/metrics, metrics.go) on statusAddress.

//go:embed status.html
var statusHTML string

var statusPage = template.Must(template.New("status").Funcs(template.FuncMap{
	"bytes": func(b int64) string { return humanBytes(b) },
	"age":   func(s int64) string { return (time.Duration(s) * time.Second).String() },
	"pct": func(f *float64) string {
		if f == nil {
			return "—"
		}
		return fmt.Sprintf("%.0f%%", 100**f)
	},
	"nines": func(v any) string {
		switch v := v.(type) {
		case *float64:
			return fmt.Sprintf("%.1f nines", *v)
		case float64:
			return fmt.Sprintf("%.1f nines", v)
		}
		return "—"
	},
	"risk": func(q float64) string { return fmt.Sprintf("%.2g%%", 100*q) },
	"str": func(s *string) string {
		if s == nil {
			return "never"
		}
		return *s
	},
}).Parse(statusHTML))

func humanBytes(b int64) string {
	const unit = 1000
	if b < unit {
		return fmt.Sprintf("%d B", b)
	}
	div, exp := int64(unit), 0
	for n := b / unit; n >= unit; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %cB", float64(b)/float64(div), "kMGTPE"[exp])
}

// StatusReport is what /status.json serves (fields may be added, never renamed).
type StatusReport struct {
	Version       string       `json:"version"`
	Key           string       `json:"key"`
	Started       string       `json:"started"`
	UptimeSeconds int64        `json:"uptime_seconds"`
	Now           string       `json:"now"`
	Peers         []StatusPeer `json:"peers"`
	// FileCounts is how many file versions are in each health state (stored, pending,
	// degraded, lost); Files lists them, the worst first.
	FileCounts map[string]int `json:"file_counts"`
	Files      []FileRow      `json:"files"`
	Durability Durability     `json:"durability"`
	Recoveries []RecoveryRow  `json:"recoveries"`
	Storage    []StorageRow   `json:"storage"`
	Jobs       []JobRun       `json:"jobs"`
	LastRepair *RepairRun     `json:"last_repair"`
	LastProbe  *string        `json:"last_probe"` // the latest probe sent to any peer
	LastStore  *string        `json:"last_store"` // the last store that succeeded (a command or the daemon)
	// LastDrill is the newest restore drill, LastGoodDrill the newest that passed (drill.go).
	LastDrill     *DrillRow `json:"last_drill"`
	LastGoodDrill *DrillRow `json:"last_good_drill"`
	Errors        []string  `json:"errors,omitempty"`
}

// StatusPeer is a peer's show_database row with what the daemon adds.
type StatusPeer struct {
	PeerRow
	OldestQueuedSeconds int64    `json:"oldest_queued_seconds"` // age of the oldest file waiting for it (0: none)
	ProbeGood           int      `json:"probe_good"`
	ProbeFailed         int      `json:"probe_failed"`
	ProbeTimeout        int      `json:"probe_timeout"`
	ProbePassRate       *float64 `json:"probe_pass_rate"` // good / all answered or timed out; null: no probe yet
	PiecesThere         int      `json:"pieces_there"`
	BytesThere          int64    `json:"bytes_there"`
	PiecesHere          int      `json:"pieces_here"`
	BytesHere           int64    `json:"bytes_here"`
	LostPieces          int      `json:"lost_pieces"`
	// LossProbability is the estimated chance that the peer loses our pieces within
	// durabilityHorizon (docs/durability.md).
	LossProbability float64 `json:"loss_probability"`
	// Held says why the peer's files wait on a budget or the send window, and until when
	// ("held: over mail budget until 2026-12-04 00:00"); Budgets are its daily budgets
	// (budget.go).
	Held    string      `json:"held,omitempty"`
	Budgets []BudgetRow `json:"budgets,omitempty"`
	// LANAddress is the peer's daemon URL on the LAN while it is heard there (lan.go):
	// its files are pushed there first.
	LANAddress string `json:"lan_address,omitempty"`
}

// JobRun is one of the daemon's scheduled jobs: when it last ran and runs next.
type JobRun struct {
	Job  string  `json:"job"`
	Last *string `json:"last"`
	Next *string `json:"next"`
}

// RepairRun is what the last repair did.
type RepairRun struct {
	At         string `json:"at"`
	MarkedLost int    `json:"marked_lost"`
	Rebuilt    int    `json:"rebuilt"`
	Fetching   int    `json:"fetching"`
	Short      int    `json:"short"`
	Moved      int    `json:"moved"`
}

// runLog is what the daemon's loops tell the status server: counts and times that no
// table of the database keeps.
type runLog struct {
	mu              sync.Mutex
	started         time.Time
	jobs            map[string][2]time.Time // last, next
	repairAt        time.Time
	repair          RepairResult
	repairs         RepairResult // summed since start
	lastStore       time.Time
	messages        map[string]TypeCount // by message type, summed since start
	transportErrors map[string]int64
}

func (r *runLog) job(name string, last, next time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.jobs == nil {
		r.jobs = map[string][2]time.Time{}
	}
	r.jobs[name] = [2]time.Time{last, next}
}

func (r *runLog) noteRepair(at time.Time, res RepairResult) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.repairAt, r.repair = at, res
	r.repairs.MarkedLost += res.MarkedLost
	r.repairs.Rebuilt += res.Rebuilt
	r.repairs.Fetching += res.Fetching
	r.repairs.Short += res.Short
	r.repairs.Moved += res.Moved
}

func (r *runLog) noteStore(at time.Time) {
	r.mu.Lock()
	r.lastStore = at
	r.mu.Unlock()
}

func (r *runLog) noteProcess(res ProcessResult) {
	r.mu.Lock()
	if r.messages == nil {
		r.messages = map[string]TypeCount{}
	}
	for typ, c := range res.ByType {
		sum := r.messages[typ]
		sum.Processed += c.Processed
		sum.Quarantined += c.Quarantined
		r.messages[typ] = sum
	}
	r.mu.Unlock()
}

func (r *runLog) noteTransportError(method string) {
	r.mu.Lock()
	if r.transportErrors == nil {
		r.transportErrors = map[string]int64{}
	}
	r.transportErrors[method]++
	r.mu.Unlock()
}

// healthRank orders file states worst first.
var healthRank = map[string]int{StatusLost: 0, StatusDegraded: 1, StatusPending: 2, StatusStored: 3}

// Status gathers the report from show_database's rows and the daemon's run log.
func (n *Node) Status() (*StatusReport, error) {
	db, err := n.Database("")
	if err != nil {
		return nil, err
	}
	var stored time.Time // the last store that succeeded, by this process or another
	err = n.withDB(func(db *books.DB) error {
		return db.View(func(tx *books.Tx) error {
			stored, _, err = tx.LastRun(taskStore)
			return err
		})
	})
	if err != nil {
		return nil, err
	}
	now := n.Now()
	r := &n.runs
	r.mu.Lock()
	if r.lastStore.After(stored) {
		stored = r.lastStore
	}
	started := r.started
	rep := &StatusReport{
		Version: SoftwareVersion, Key: string(n.Fingerprint()), Now: now.UTC().Format(time.RFC3339),
		Started: started.UTC().Format(time.RFC3339), UptimeSeconds: int64(now.Sub(started) / time.Second),
		LastStore: timePtr(stored),
	}
	if started.IsZero() {
		rep.Started, rep.UptimeSeconds = "", 0
	}
	if !r.repairAt.IsZero() {
		rp := r.repair
		rep.LastRepair = &RepairRun{At: r.repairAt.UTC().Format(time.RFC3339), MarkedLost: rp.MarkedLost, Rebuilt: rp.Rebuilt, Fetching: rp.Fetching, Short: rp.Short, Moved: rp.Moved}
	}
	for _, name := range sortedKeys(r.jobs) {
		t := r.jobs[name]
		rep.Jobs = append(rep.Jobs, JobRun{Job: name, Last: timePtr(t[0]), Next: timePtr(t[1])})
	}
	r.mu.Unlock()
	if rep.Jobs == nil {
		rep.Jobs = []JobRun{}
	}

	probes := map[string]ProbeRow{}
	var lastProbe string
	for _, p := range db["probe"].([]ProbeRow) {
		probes[p.Peer] = p
		if p.LastProbe != nil && *p.LastProbe > lastProbe {
			lastProbe = *p.LastProbe
		}
	}
	if lastProbe != "" {
		rep.LastProbe = &lastProbe
	}
	stats := map[string]StatsRow{}
	for _, s := range db["stats"].([]StatsRow) {
		stats[s.Peer] = s
	}
	model, err := n.statusLossModel()
	if err != nil {
		return nil, err
	}
	rep.Peers = []StatusPeer{}
	for _, p := range db["peers"].([]PeerRow) {
		sp := StatusPeer{PeerRow: p}
		if es, err := n.Spool.List(queue.Outgoing(p.Peer)); err == nil && len(es) > 0 {
			oldest := es[0].ModTime
			for _, e := range es {
				if e.ModTime.Before(oldest) {
					oldest = e.ModTime
				}
			}
			sp.OldestQueuedSeconds = max(0, int64(now.Sub(oldest)/time.Second))
			if peer, _, err := n.Peer(p.Peer); err == nil {
				sp.Held = n.heldReason(peer, es)
			}
		}
		if peer, _, err := n.Peer(p.Peer); err == nil {
			sp.Budgets = n.budgetRows(peer)
		}
		sp.LANAddress = n.lanURL(p.Peer)
		pr := probes[p.Peer]
		sp.ProbeGood, sp.ProbeFailed, sp.ProbeTimeout = pr.Good, pr.Failed, pr.Timeout
		if all := pr.Good + pr.Failed + pr.Timeout; all > 0 {
			rate := float64(pr.Good) / float64(all)
			sp.ProbePassRate = &rate
		}
		st := stats[p.Peer]
		sp.PiecesThere, sp.BytesThere, sp.PiecesHere, sp.BytesHere, sp.LostPieces = st.PiecesThere, st.BytesThere, st.PiecesHere, st.BytesHere, st.LostPieces
		sp.LossProbability = model.of(p.Peer)
		rep.Peers = append(rep.Peers, sp)
	}
	rep.Files = db["files"].([]FileRow)
	rep.Durability = n.durabilitySummary(rep.Files)
	slices.SortStableFunc(rep.Files, func(a, b FileRow) int {
		return cmp.Or(cmp.Compare(healthRank[a.Status], healthRank[b.Status]), strings.Compare(a.Name, b.Name), cmp.Compare(b.Version, a.Version))
	})
	rep.FileCounts = map[string]int{StatusStored: 0, StatusPending: 0, StatusDegraded: 0, StatusLost: 0}
	for _, f := range rep.Files {
		rep.FileCounts[f.Status]++
	}
	rep.Recoveries = db["recovery"].([]RecoveryRow)
	rep.Storage = db["storage"].([]StorageRow)
	drills := db["drills"].([]DrillRow) // newest first
	if len(drills) > 0 {
		rep.LastDrill = &drills[0]
	}
	for i := range drills {
		if drills[i].State == RecoveryDone {
			rep.LastGoodDrill = &drills[i]
			break
		}
	}
	return rep, nil
}

// statusServer is the HTTP handler of statusAddress; token, if set, must come with each
// request (Authorization: Bearer TOKEN, or ?token=TOKEN for a browser).
func (n *Node) statusServer(token string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		rep, err := n.Status()
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if err := statusPage.Execute(w, rep); err != nil {
			n.Log.Error("status page", "err", err)
		}
	})
	mux.HandleFunc("GET /status.json", func(w http.ResponseWriter, r *http.Request) {
		rep, err := n.Status()
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(rep)
	})
	mux.Handle("GET /metrics", n.metricsHandler())
	if token == "" {
		return mux
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := r.URL.Query().Get("token")
		if h, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
			got = h
		}
		if subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
			http.Error(w, "a token is needed (statusTokenFile): Authorization: Bearer TOKEN, or ?token=TOKEN", http.StatusUnauthorized)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// errStatusPortBusy marks a statusAddress that another program holds.
var errStatusPortBusy = errors.New("in use")

// statusListen checks statusAddress and listens on it. It returns a nil listener when
// statusAddress is empty (no status server), and the token requests must bring
// (statusTokenFile's first line: needed for a non-loopback address, asked for on
// loopback too when statusTokenFile is set).
func (n *Node) statusListen() (net.Listener, string, error) {
	addr := optStatusAddress.Get(n.Opts)
	if addr == "" {
		return nil, "", nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return nil, "", fmt.Errorf("statusAddress %q is not host:port (e.g. 127.0.0.1:6364)", addr)
	}
	loopback := host == "localhost"
	if ip := net.ParseIP(host); ip != nil {
		loopback = ip.IsLoopback()
	}
	token := ""
	if !loopback {
		if !optStatusAllowRemote.Get(n.Opts) {
			return nil, "", fmt.Errorf("statusAddress %q is not a loopback address: set statusAllowRemote = true and statusTokenFile to serve the status there", addr)
		}
		token, err = readToken(optStatusTokenFile.Get(n.Opts))
		if err != nil {
			return nil, "", fmt.Errorf("statusAddress %q is not a loopback address, so it needs a token: %w", addr, err)
		}
	} else if f := optStatusTokenFile.Get(n.Opts); f != "" {
		if token, err = readToken(f); err != nil { // asked for on loopback too
			return nil, "", err
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		var se *os.SyscallError
		if errors.As(err, &se) && strings.Contains(se.Err.Error(), "address already in use") {
			return nil, "", fmt.Errorf("status: %s is %w by another program (another daemon?): set statusAddress to a free port, or empty for none", addr, errStatusPortBusy)
		}
		return nil, "", fmt.Errorf("status: listen %s: %v (is statusAddress one of this machine's addresses?)", addr, err)
	}
	return ln, token, nil
}

// readToken is the first line of path, which must not be empty.
func readToken(path string) (string, error) {
	if path == "" {
		return "", errors.New("statusTokenFile is not set")
	}
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("statusTokenFile: %w", err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	s.Scan()
	tok := strings.TrimSpace(s.Text())
	if tok == "" {
		return "", fmt.Errorf("statusTokenFile %s: its first line is empty", path)
	}
	return tok, nil
}
