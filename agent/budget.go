package agent

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"golang.org/x/time/rate"

	"github.com/dibs-backup/dibs/agent/books"
	"github.com/dibs-backup/dibs/queue"
)

// Transport budgets and windows. Per peer, over the options of the same names:
//
//   - mailBytesPerDay, relayBytesPerDay: the bytes a local day that may go to the peer by
//     mail, through a relay. What went is counted in the books (PeerState.Sent), in the
//     transaction that records the send, so that a restart keeps it.
//   - sendWindow: the local hours in which files go at all ("22:00-06:00", several
//     comma-separated); outside them files wait.
//   - bandwidthLimit: bytes a second, paced as the transport reads the file.
//
// A file held back stays in outgoing/ in its place: the files of one peer go in spool
// (name, so date) order, and once a file waits for a method's budget no later file of
// its kind overtakes it there. A file bigger than what is left of the day's budget goes
// on a day whose budget is untouched, so that no file waits forever: the day it goes
// may then overrun the budget. Files below budgetFree (ACKs, HELLO, requests, probes and
// their answers) are never held: not by a budget, not by the window, and they do not
// count.
//
// Repair traffic (STORE files named with repairSuffix) has its own share of a budget,
// repairBudgetPercent: while fresh files of the peer wait, repair files may use only that
// share of the day's budget; alone in the spool they may use it all. Fresh files may
// overtake repair files held by their share: repair never starves fresh backups.

// budgetFree is the size below which a file is never held: control messages, not data.
const budgetFree = 64 << 10

// repairSuffix ends the spool names of repair's STORE files (storeFileName): they draw on
// the repair share of a budget.
const repairSuffix = ".repair.pgp"

// isRepairFile reports whether the spool file name is a STORE of repair.
func isRepairFile(name string) bool { return strings.HasSuffix(name, repairSuffix) }

// repairFileName tags the spool name of a STORE file as repair traffic.
func repairFileName(name string) string { return strings.TrimSuffix(name, ".pgp") + repairSuffix }

// peerLimits are the budgets, window and pace that hold one peer's sends.
type peerLimits struct {
	perDay   map[string]int64 // bytes a local day by talk method (absent or 0: no budget)
	share    int64            // repairBudgetPercent
	pace     int64            // bytes a second (0: no limit)
	windows  []sendWindow     // nil: any time
	windowIs string           // the window as configured, for messages
}

// limitsOf resolves the peer's limits: its peers.toml entry over the options.
func (n *Node) limitsOf(p *Peer) peerLimits {
	pick := func(own *int64, opt int64) int64 {
		if own != nil {
			return *own
		}
		return opt
	}
	l := peerLimits{
		perDay: map[string]int64{
			Mail:  pick(p.MailBytesPerDay, optMailBytesPerDay.Get(n.Opts)),
			Relay: pick(p.RelayBytesPerDay, optRelayBytesPerDay.Get(n.Opts)),
		},
		share: optRepairBudgetPercent.Get(n.Opts),
		pace:  pick(p.BandwidthLimit, optBandwidthLimit.Get(n.Opts)),
	}
	w := optSendWindow.Get(n.Opts)
	if p.SendWindow != "" {
		w = p.SendWindow
	}
	if w != "always" {
		l.windows, _ = parseSendWindows(w) // checked when set (checkSendWindow, validateBudgets)
		l.windowIs = w
	}
	return l
}

// validateBudgets checks the peer's own budget fields.
func (p *Peer) validateBudgets() error {
	for _, f := range []struct {
		name string
		v    *int64
	}{{"mail_bytes_per_day", p.MailBytesPerDay}, {"relay_bytes_per_day", p.RelayBytesPerDay}, {"bandwidth_limit", p.BandwidthLimit}} {
		if f.v != nil && *f.v < 0 {
			return fmt.Errorf("%s cannot be negative", f.name)
		}
	}
	if p.SendWindow != "" && p.SendWindow != "always" {
		if _, err := parseSendWindows(p.SendWindow); err != nil {
			return fmt.Errorf("send_window: %w", err)
		}
	}
	return nil
}

// A sendWindow is a span of local time of day, in minutes after midnight: [from, to),
// wrapping midnight when to <= from.
type sendWindow struct{ from, to int }

// parseSendWindows reads "HH:MM-HH:MM[,HH:MM-HH:MM...]"; "" is no window at all.
func parseSendWindows(s string) ([]sendWindow, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []sendWindow
	for _, part := range strings.Split(s, ",") {
		a, b, ok := strings.Cut(strings.TrimSpace(part), "-")
		from, err1 := parseClock(a, false)
		to, err2 := parseClock(b, true)
		if !ok || err1 != nil || err2 != nil || from == to {
			return nil, fmt.Errorf("%q is not a send window: HH:MM-HH:MM in local time, start and end differing, several comma-separated (22:00-06:00,12:00-13:00)", strings.TrimSpace(part))
		}
		out = append(out, sendWindow{from, to % (24 * 60)})
	}
	return out, nil
}

// parseClock reads HH:MM as minutes after midnight; end allows 24:00.
func parseClock(s string, end bool) (int, error) {
	h, m, ok := strings.Cut(strings.TrimSpace(s), ":")
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if !ok || err1 != nil || err2 != nil || len(h) != 2 || len(m) != 2 || mm < 0 || mm > 59 || hh < 0 || hh > 23 && !(end && hh == 24 && mm == 0) {
		return 0, fmt.Errorf("bad time %q", s)
	}
	return hh*60 + mm, nil
}

// checkSendWindow is sendWindow's check.
func checkSendWindow(s string) error {
	_, err := parseSendWindows(s)
	return err
}

// openAt reports whether t is inside one of the windows (always, with none) and, if not,
// when the next one opens.
func openAt(ws []sendWindow, t time.Time) (bool, time.Time) {
	if len(ws) == 0 {
		return true, time.Time{}
	}
	t = t.Local()
	min := t.Hour()*60 + t.Minute()
	var next time.Time
	for _, w := range ws {
		if w.from < w.to && min >= w.from && min < w.to || w.from > w.to && (min >= w.from || min < w.to) {
			return true, time.Time{}
		}
		y, mo, d := t.Date()
		at := time.Date(y, mo, d, w.from/60, w.from%60, 0, 0, time.Local)
		if !at.After(t) {
			at = time.Date(y, mo, d+1, w.from/60, w.from%60, 0, 0, time.Local)
		}
		if next.IsZero() || at.Before(next) {
			next = at
		}
	}
	return false, next
}

// localDay is the budget day of t: its local date.
func localDay(t time.Time) string { return t.Local().Format("2006-01-02") }

// nextDay is the local midnight after t, when a new budget day begins.
func nextDay(t time.Time) time.Time {
	y, m, d := t.Local().Date()
	return time.Date(y, m, d+1, 0, 0, 0, 0, time.Local)
}

// sentToday is what the books count as sent on day: the zero SendDay if they count
// another day.
func sentToday(s books.SendDay, day string) books.SendDay {
	if s.Day != day {
		return books.SendDay{Day: day}
	}
	return s
}

// countSent adds a file of size bytes sent by method on day to s (a PeerState's Sent).
func countSent(s *books.SendDay, day, method string, size int64, repair bool) {
	*s = sentToday(*s, day)
	if s.Bytes == nil {
		s.Bytes = map[string]int64{}
	}
	s.Bytes[method] += size
	if repair {
		if s.Repair == nil {
			s.Repair = map[string]int64{}
		}
		s.Repair[method] += size
	}
}

// A budgetRun decides, file by file in spool order, which of one peer's files may go
// now by which method. sendPeer makes one per run; the status page one per look.
type budgetRun struct {
	lim     peerLimits
	now     time.Time
	day     string
	used    map[string]int64 // bytes sent today, by method
	repair  map[string]int64 // of them, repair's
	fresh   bool             // fresh (not repair) files over budgetFree wait for the peer
	open    bool             // inside the send window
	opens   time.Time        // if not, when it opens
	blocked map[string]string
}

// newBudgetRun starts the run at now of files entries under lim, with what the books
// count as sent.
func newBudgetRun(lim peerLimits, now time.Time, entries []queue.Entry, sent books.SendDay) *budgetRun {
	b := &budgetRun{lim: lim, now: now, day: localDay(now), blocked: map[string]string{}}
	s := sentToday(sent, b.day)
	b.used, b.repair = map[string]int64{}, map[string]int64{}
	for m, v := range s.Bytes {
		b.used[m] = v
	}
	for m, v := range s.Repair {
		b.repair[m] = v
	}
	for _, e := range entries {
		if e.Size >= budgetFree && !isRepairFile(e.Name) {
			b.fresh = true
			break
		}
	}
	b.open, b.opens = openAt(b.lim.windows, now)
	return b
}

// budgetRunFor is newBudgetRun with the peer's count from the books.
func (n *Node) budgetRunFor(p *Peer, entries []queue.Entry) *budgetRun {
	var sent books.SendDay
	n.withDB(func(db *books.DB) error {
		return db.View(func(tx *books.Tx) error {
			ps, err := tx.Peer(p.Name)
			sent = ps.Sent
			return err
		})
	})
	return newBudgetRun(n.limitsOf(p), n.Now(), entries, sent)
}

// hold says why e may not go by method now, or "" if it may. A file held on a method's
// budget holds the later files of its kind (fresh, repair) on that method too.
func (b *budgetRun) hold(method string, e queue.Entry) string {
	if e.Size < budgetFree {
		return ""
	}
	if !b.open {
		return "outside send window " + b.lim.windowIs + " until " + b.until(b.opens)
	}
	limit := b.lim.perDay[method]
	if limit <= 0 {
		return ""
	}
	repair := isRepairFile(e.Name)
	kind := method
	if repair {
		kind += "/repair"
	}
	if why := b.blocked[kind]; why != "" {
		return why
	}
	used, size := b.used[method], e.Size
	ok := used+size <= limit || used == 0
	why := "over " + method + " budget until " + b.until(nextDay(b.now))
	if repair && b.fresh {
		// Fresh backups wait: repair keeps to its share, with no untouched-day rule.
		share := limit * b.lim.share / 100
		ok = used+size <= limit && b.repair[method]+size <= share
		if used+size <= limit {
			why = "over " + method + " repair share until " + b.until(nextDay(b.now))
		}
	}
	if ok {
		return ""
	}
	b.blocked[kind] = why
	if !repair {
		b.blocked[method+"/repair"] = why // what holds fresh files holds repair's too
	}
	return why
}

// holdsAll reports whether e may go by none of methods now.
func (b *budgetRun) holdsAll(methods []string, e queue.Entry) bool {
	for _, m := range methods {
		if b.hold(m, e) == "" {
			return false
		}
	}
	return true
}

// sent counts e as gone by method.
func (b *budgetRun) sent(method string, e queue.Entry) {
	if e.Size < budgetFree || b.lim.perDay[method] <= 0 {
		return
	}
	b.used[method] += e.Size
	if isRepairFile(e.Name) {
		b.repair[method] += e.Size
	}
}

// record is sent's entry in the books, for updatePeerState.
func (b *budgetRun) record(ps *PeerState, method string, e queue.Entry) {
	if e.Size < budgetFree || b.lim.perDay[method] <= 0 {
		return
	}
	countSent(&ps.Sent, b.day, method, e.Size, isRepairFile(e.Name))
}

// until formats a time a file waits for: the clock time alone if it is today.
func (b *budgetRun) until(t time.Time) string {
	t = t.Local()
	if localDay(t) == b.day {
		return t.Format("15:04")
	}
	return t.Format("2006-01-02 15:04")
}

// heldReason says why the peer's first file waiting to be sent is held by a budget or
// the window ("" if it is not): for the status page.
func (n *Node) heldReason(p *Peer, entries []queue.Entry) string {
	var methods []string
	for _, m := range p.TalkMethods() {
		if delivers(m) {
			methods = append(methods, m)
		}
	}
	if len(methods) == 0 {
		return ""
	}
	b := n.budgetRunFor(p, entries)
	for _, e := range entries {
		if e.Size < budgetFree {
			continue
		}
		var whys []string
		for _, m := range methods {
			why := b.hold(m, e)
			if why == "" {
				return ""
			}
			if !oneOf(why, whys) {
				whys = append(whys, why)
			}
		}
		return "held: " + strings.Join(whys, "; ")
	}
	return ""
}

// BudgetRow is one of a peer's daily budgets as the status page shows it.
type BudgetRow struct {
	Method    string `json:"method"`
	PerDay    int64  `json:"per_day"`
	Used      int64  `json:"used"`
	Remaining int64  `json:"remaining"`
}

// budgetRows are the peer's daily budgets (of the methods it talks) and today's use.
func (n *Node) budgetRows(p *Peer) []BudgetRow {
	var out []BudgetRow
	b := n.budgetRunFor(p, nil)
	for _, m := range []string{Mail, Relay} {
		limit := b.lim.perDay[m]
		if limit <= 0 || !p.Talks(m) {
			continue
		}
		out = append(out, BudgetRow{Method: m, PerDay: limit, Used: b.used[m], Remaining: max(0, limit-b.used[m])})
	}
	return out
}

// A pacer holds one peer's sends to its bandwidthLimit.
type pacer struct {
	lim   *rate.Limiter
	now   func() time.Time
	sleep func(context.Context, time.Duration) error
}

// pacerFor is the peer's pacer, or nil if its sends are not limited. One pacer per peer
// lives as long as the node, so that back-to-back files share the allowance.
func (n *Node) pacerFor(p *Peer) *pacer {
	bps := n.limitsOf(p).pace
	if bps <= 0 {
		n.pacers.Delete(p.Name)
		return nil
	}
	if v, ok := n.pacers.Load(p.Name); ok {
		if pc := v.(*pacer); pc.lim.Limit() == rate.Limit(bps) {
			return pc
		}
	}
	pc := newPacer(bps, n.Now, sleepCtx)
	n.pacers.Store(p.Name, pc)
	return pc
}

// newPacer allows bps bytes a second, in bursts of up to a tenth of a second's worth
// (at least 4 KiB, at most 256 KiB), on the clock now, waiting with sleep.
func newPacer(bps int64, now func() time.Time, sleep func(context.Context, time.Duration) error) *pacer {
	burst := min(max(bps/10, 4<<10), 256<<10)
	return &pacer{lim: rate.NewLimiter(rate.Limit(bps), int(burst)), now: now, sleep: sleep}
}

// reader paces r: each read is paid for in tokens, and waited for once they run out.
func (pc *pacer) reader(ctx context.Context, r io.ReadCloser) io.ReadCloser {
	return &pacedReader{ReadCloser: r, pc: pc, ctx: ctx}
}

type pacedReader struct {
	io.ReadCloser
	pc  *pacer
	ctx context.Context
}

func (r *pacedReader) Read(p []byte) (int, error) {
	if b := r.pc.lim.Burst(); len(p) > b {
		p = p[:b]
	}
	k, err := r.ReadCloser.Read(p)
	if k > 0 {
		now := r.pc.now()
		if d := r.pc.lim.ReserveN(now, k).DelayFrom(now); d > 0 {
			if serr := r.pc.sleep(r.ctx, d); serr != nil {
				return k, serr
			}
		}
	}
	return k, err
}

// sleepCtx waits d on the wall clock, or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
