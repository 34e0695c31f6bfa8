package agent

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dibs-backup/dibs/agent/books"
	"github.com/dibs-backup/dibs/queue"
)

func TestParseSendWindows(t *testing.T) {
	ws, err := parseSendWindows("22:00-06:00, 12:30-13:00,18:00-24:00")
	if err != nil {
		t.Fatal(err)
	}
	want := []sendWindow{{22 * 60, 6 * 60}, {12*60 + 30, 13 * 60}, {18 * 60, 0}}
	if len(ws) != len(want) {
		t.Fatalf("%v", ws)
	}
	for i := range ws {
		if ws[i] != want[i] {
			t.Errorf("window %d: %v, want %v", i, ws[i], want[i])
		}
	}
	for _, bad := range []string{"22-06", "22:00", "22:00-06:60", "24:00-06:00", "10:00-10:00", "22:00-06:00,", "2:00-06:00", "x"} {
		_, err := parseSendWindows(bad)
		if err == nil {
			t.Errorf("%q: taken", bad)
			continue
		}
		if msg := err.Error(); strings.Contains(msg, "\n") || !strings.Contains(msg, "HH:MM-HH:MM") {
			t.Errorf("%q: %q is not one line naming the form", bad, msg)
		}
	}
	if ws, err := parseSendWindows(""); err != nil || ws != nil {
		t.Errorf("empty: %v, %v", ws, err)
	}
}

func at(day, hh, mm int) time.Time { return time.Date(2026, 12, day, hh, mm, 0, 0, time.Local) }

func TestOpenAt(t *testing.T) {
	ws, _ := parseSendWindows("22:00-06:00,12:00-13:00")
	for _, c := range []struct {
		now  time.Time
		open bool
		next time.Time
	}{
		{at(3, 23, 0), true, time.Time{}},
		{at(3, 2, 0), true, time.Time{}},
		{at(3, 5, 59), true, time.Time{}},
		{at(3, 6, 0), false, at(3, 12, 0)},
		{at(3, 12, 59), true, time.Time{}},
		{at(3, 13, 0), false, at(3, 22, 0)},
		{at(3, 21, 59), false, at(3, 22, 0)},
	} {
		open, next := openAt(ws, c.now)
		if open != c.open || !next.Equal(c.next) {
			t.Errorf("%s: open %v until %s, want %v until %s", c.now, open, next, c.open, c.next)
		}
	}
	ws, _ = parseSendWindows("01:00-02:00")
	if open, next := openAt(ws, at(3, 3, 0)); open || !next.Equal(at(4, 1, 0)) {
		t.Errorf("after the only window: open %v until %s", open, next)
	}
	if open, _ := openAt(nil, at(3, 3, 0)); !open {
		t.Error("no window is closed")
	}
}

// entry is a spool entry of the tests: the name sorts by i.
func entry(i int, size int64, repair bool) queue.Entry {
	name := at(3, 0, 0).UTC().Add(time.Duration(i)*time.Second).Format("20060102T150405.000000000Z") + "-p-m.pgp"
	if repair {
		name = repairFileName(name)
	}
	return queue.Entry{Name: name, Size: size}
}

func budgetFor(lim peerLimits, now time.Time, sent books.SendDay, es []queue.Entry) *budgetRun {
	return newBudgetRun(lim, now, es, sent)
}

// goes runs the files through b as sendPeer does on one method, and returns the indexes
// of those that went.
func goes(b *budgetRun, method string, es []queue.Entry) []int {
	var out []int
	for i, e := range es {
		if b.hold(method, e) == "" {
			b.sent(method, e)
			out = append(out, i)
		}
	}
	return out
}

func TestBudgetRun(t *testing.T) {
	const k = 1000
	lim := peerLimits{perDay: map[string]int64{Mail: 1000 * k}, share: 50}
	now := at(3, 10, 0)
	for _, c := range []struct {
		name string
		sent int64
		es   []queue.Entry
		want []int
	}{
		{"fits in order; no later file overtakes one held", 0,
			[]queue.Entry{entry(0, 400*k, false), entry(1, 400*k, false), entry(2, 300*k, false), entry(3, 100*k, false)}, []int{0, 1}},
		{"small files are never held", 0,
			[]queue.Entry{entry(0, 900*k, false), entry(1, 200*k, false), entry(2, 1*k, false), entry(3, budgetFree-1, false)}, []int{0, 2, 3}},
		{"a file bigger than the budget goes on an untouched day", 0,
			[]queue.Entry{entry(0, 1500*k, false), entry(1, 100*k, false)}, []int{0}},
		{"but not on a day already used", 1,
			[]queue.Entry{entry(0, 1500*k, false)}, nil},
		{"repair keeps to its share while fresh files wait; fresh files pass it", 0,
			[]queue.Entry{entry(0, 300*k, true), entry(1, 300*k, true), entry(2, 100*k, true), entry(3, 300*k, false), entry(4, 300*k, false)}, []int{0, 3, 4}},
		{"alone, repair may use the whole budget", 0,
			[]queue.Entry{entry(0, 300*k, true), entry(1, 300*k, true), entry(2, 300*k, true), entry(3, 300*k, true)}, []int{0, 1, 2}},
	} {
		sent := books.SendDay{Day: localDay(now), Bytes: map[string]int64{Mail: c.sent}}
		got := goes(budgetFor(lim, now, sent, c.es), Mail, c.es)
		if !equalInts(got, c.want) {
			t.Errorf("%s: %v went, want %v", c.name, got, c.want)
		}
	}

	// Yesterday's count does not hold today's files; other methods have no budget.
	es := []queue.Entry{entry(0, 900*k, false), entry(1, 900*k, false)}
	old := books.SendDay{Day: localDay(now.Add(-24 * time.Hour)), Bytes: map[string]int64{Mail: 5000 * k}}
	if got := goes(budgetFor(lim, now, old, es), Mail, es); !equalInts(got, []int{0}) {
		t.Errorf("yesterday's count: %v went", got)
	}
	if got := goes(budgetFor(lim, now, old, es), Active, es); !equalInts(got, []int{0, 1}) {
		t.Errorf("active has no budget: %v went", got)
	}
	b := budgetFor(lim, now, books.SendDay{}, es)
	goes(b, Mail, es)
	if why := b.hold(Mail, es[1]); why != "over mail budget until 2026-12-04 00:00" {
		t.Errorf("held: %q", why)
	}

	// The window holds every file but the small ones, on every method.
	wl := lim
	wl.windows, _ = parseSendWindows("22:00-06:00")
	wl.windowIs = "22:00-06:00"
	b = budgetFor(wl, now, books.SendDay{}, nil)
	if why := b.hold(Active, entry(0, budgetFree, false)); why != "outside send window 22:00-06:00 until 22:00" {
		t.Errorf("window: %q", why)
	}
	if why := b.hold(Mail, entry(1, budgetFree-1, false)); why != "" {
		t.Errorf("a small file held: %q", why)
	}
	if got := goes(budgetFor(wl, at(3, 23, 0), books.SendDay{}, es), Active, es); !equalInts(got, []int{0, 1}) {
		t.Errorf("inside the window: %v went", got)
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestCountSent(t *testing.T) {
	var s books.SendDay
	countSent(&s, "2026-12-03", Mail, 100, false)
	countSent(&s, "2026-12-03", Mail, 50, true)
	if s.Bytes[Mail] != 150 || s.Repair[Mail] != 50 {
		t.Fatalf("%+v", s)
	}
	countSent(&s, "2026-12-04", Relay, 7, false)
	if s.Day != "2026-12-04" || s.Bytes[Mail] != 0 || s.Bytes[Relay] != 7 || s.Repair[Mail] != 0 {
		t.Fatalf("a new day: %+v", s)
	}
}

// The pacer's token accounting, on a fake clock that its waits move: 1 MB read at
// 100 kB/s takes 10 s less the first burst, whatever the reads' sizes.
func TestPacer(t *testing.T) {
	now := at(3, 10, 0)
	var slept time.Duration
	pc := newPacer(100_000, func() time.Time { return now }, func(_ context.Context, d time.Duration) error {
		slept += d
		now = now.Add(d)
		return nil
	})
	if pc.lim.Burst() != 10_000 {
		t.Fatalf("burst %d", pc.lim.Burst())
	}
	data := bytes.Repeat([]byte{7}, 1_000_000)
	r := pc.reader(context.Background(), io.NopCloser(bytes.NewReader(data)))
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes, %v", len(got), err)
	}
	want := 9900 * time.Millisecond // (1,000,000 - 10,000 burst) / 100,000 per second
	if slept < want-10*time.Millisecond || slept > want+10*time.Millisecond {
		t.Errorf("waited %s for 1 MB at 100 kB/s, want %s", slept, want)
	}
	// The next file shares the allowance: no new burst for free.
	slept = 0
	io.ReadAll(pc.reader(context.Background(), io.NopCloser(bytes.NewReader(data[:100_000]))))
	if slept < 990*time.Millisecond {
		t.Errorf("a second file waited %s for 100 kB", slept)
	}
	// A stop ends the wait.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	pc2 := newPacer(10_000, func() time.Time { return now }, sleepCtx)
	if _, err := io.ReadAll(pc2.reader(ctx, io.NopCloser(bytes.NewReader(data[:100_000])))); err == nil {
		t.Error("a cancelled read went on")
	}
}

// A peer's entry overrides the options; send_window "always" lifts the option's window.
func TestLimitsOf(t *testing.T) {
	_, n := newTestNode(t, "mailBytesPerDay = 2000000\nbandwidthLimit = 50000\nsendWindow = \"22:00-06:00\"\n")
	l := n.limitsOf(&Peer{})
	if l.perDay[Mail] != 2_000_000 || l.perDay[Relay] != 0 || l.pace != 50_000 || len(l.windows) != 1 || l.share != 50 {
		t.Errorf("from the options: %+v", l)
	}
	zero, one := int64(0), int64(1_000_000)
	l = n.limitsOf(&Peer{MailBytesPerDay: &zero, RelayBytesPerDay: &one, BandwidthLimit: &zero, SendWindow: "always"})
	if l.perDay[Mail] != 0 || l.perDay[Relay] != one || l.pace != 0 || l.windows != nil {
		t.Errorf("the peer's own: %+v", l)
	}
	if n.pacerFor(&Peer{Name: "p", BandwidthLimit: &zero}) != nil {
		t.Error("a pacer with no limit")
	}
	if pc := n.pacerFor(&Peer{Name: "p"}); pc == nil || pc.lim.Limit() != 50_000 || n.pacerFor(&Peer{Name: "p"}) != pc {
		t.Error("the peer's pacer is not kept")
	}
	for _, p := range []Peer{{SendWindow: "22-06"}, {MailBytesPerDay: new(int64(-1))}} {
		if err := p.validateBudgets(); err == nil {
			t.Errorf("%+v: taken", p)
		}
	}
	if err := n.SetOption("sendWindow", "25:00-06:00"); err == nil || !strings.Contains(err.Error(), "HH:MM-HH:MM") {
		t.Errorf("set_option sendWindow 25:00-06:00: %v", err)
	}
}

// peers.toml carries a peer's own budgets; a bad window is refused with the entry's line.
func TestLoadPeers_Budgets(t *testing.T) {
	dir := t.TempDir()
	entry := "[[peer]]\npeer = \"bob\"\nemail = \"bob@example.org\"\ntalk = \"mail\"\nlisten = \"mail\"\nlocal_quota = 1\nremote_quota = 1\n"
	write := func(extra string) {
		if err := os.WriteFile(filepath.Join(dir, peersFile), []byte(entry+extra), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("mail_bytes_per_day = 1000000\nbandwidth_limit = 0\nsend_window = \"22:00-06:00\"\n")
	peers, err := loadPeers(dir)
	if err != nil {
		t.Fatal(err)
	}
	p := peers[0]
	if p.MailBytesPerDay == nil || *p.MailBytesPerDay != 1_000_000 || p.BandwidthLimit == nil || *p.BandwidthLimit != 0 || p.RelayBytesPerDay != nil || p.SendWindow != "22:00-06:00" {
		t.Fatalf("%+v", p)
	}
	out, err := encodePeers(peers)
	if err != nil || !strings.Contains(string(out), "mail_bytes_per_day = 1000000") || strings.Contains(string(out), "relay_bytes_per_day") {
		t.Fatalf("encoded:\n%s%v", out, err)
	}
	write("send_window = \"22:00-6\"\n")
	if _, err := loadPeers(dir); err == nil || !strings.Contains(err.Error(), "peers.toml:1: peer \"bob\": send_window") {
		t.Fatalf("a bad send_window: %v", err)
	}
}
