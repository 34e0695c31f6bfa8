package main

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/dibs-backup/dibs/agent/maildoor"
	"github.com/dibs-backup/dibs/pgpmsg"
	"github.com/dibs-backup/dibs/relay"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// relayMetrics is relay_server's operator view: every deposit, collection and refusal of
// each door is logged and counted, and /metrics shows them with the files waiting per key.
type relayMetrics struct {
	store     relay.Store
	allow     string          // the allow file: whose queues /metrics lists
	users     *maildoor.Users // nil without mail doors
	log       *slog.Logger
	reg       *prometheus.Registry
	deposits  *prometheus.CounterVec
	collected *prometheus.CounterVec
	refusals  *prometheus.CounterVec
}

func newRelayMetrics(store relay.Store, allow string, log *slog.Logger) *relayMetrics {
	m := &relayMetrics{store: store, allow: allow, log: log, reg: prometheus.NewRegistry(),
		deposits: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dibs_relay_deposits_total",
			Help: "Files deposited since the relay started, by door."}, []string{"door"}),
		collected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dibs_relay_collections_total",
			Help: "Files collected (removed by their recipient) since the relay started, by door."}, []string{"door"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dibs_relay_refusals_total",
			Help: "Deposits, logins and mails refused since the relay started, by door and reason."}, []string{"door", "reason"}),
	}
	m.reg.MustRegister(m.deposits, m.collected, m.refusals, queueCollector{m})
	for _, d := range []string{"http", "smtp", "imap"} {
		m.deposits.WithLabelValues(d)
		m.collected.WithLabelValues(d)
	}
	return m
}

// refused counts and logs a refusal.
func (m *relayMetrics) refused(door, reason string, err error) {
	m.refusals.WithLabelValues(door, reason).Inc()
	m.log.Warn("refused", "door", door, "reason", reason, "err", err)
}

// handler serves /metrics, to loopback clients only (it names every key that has files
// waiting), and the relay protocol at every other path.
func (m *relayMetrics) handler(relayHandler http.Handler) http.Handler {
	metrics := promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
	// Not a ServeMux: it would redirect the relay's requests whose paths it finds unclean.
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" || r.Method != http.MethodGet {
			relayHandler.ServeHTTP(w, r)
			return
		}
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
			http.Error(w, "/metrics is served to loopback clients only", http.StatusForbidden)
			return
		}
		metrics.ServeHTTP(w, r)
	})
}

// door wraps store for one door: its deposits and collections are counted and logged,
// and with refusals, so are the store's refusals (the mail doors report theirs, with
// their reasons, through Options.Refused).
func (m *relayMetrics) door(store relay.Store, door string, refusals bool) relay.Store {
	return &observedStore{Store: store, m: m, door: door, refusals: refusals}
}

// observedStore is a relay.Store that tells relayMetrics what passes through it.
type observedStore struct {
	relay.Store
	m        *relayMetrics
	door     string
	refusals bool
}

var _ relay.Expirer = (*observedStore)(nil)

func (s *observedStore) Recipient(from, to pgpmsg.Fingerprint) ([]uint64, error) {
	ids, err := s.Store.Recipient(from, to)
	if err != nil && s.refusals {
		s.m.refused(s.door, storeReason(err), err)
	}
	return ids, err
}

func (s *observedStore) Deposit(from, to pgpmsg.Fingerprint, name string, size int64, r io.Reader) error {
	err := s.Store.Deposit(from, to, name, size, r)
	if err != nil {
		if s.refusals {
			s.m.refused(s.door, storeReason(err), err)
		}
		return err
	}
	s.m.deposits.WithLabelValues(s.door).Inc()
	s.m.log.Info("deposit", "door", s.door, "from", from, "to", to, "file", name, "bytes", size)
	return nil
}

func (s *observedStore) Remove(to pgpmsg.Fingerprint, name string) error {
	err := s.Store.Remove(to, name)
	if err == nil {
		s.m.collected.WithLabelValues(s.door).Inc()
		s.m.log.Info("collected", "door", s.door, "to", to, "file", name)
	}
	return err
}

// Expire passes on to the store, if it expires files.
func (s *observedStore) Expire(now time.Time) (int, error) {
	e, ok := s.Store.(relay.Expirer)
	if !ok {
		return 0, nil
	}
	n, err := e.Expire(now)
	if n > 0 {
		s.m.log.Info("expired", "files", n)
	}
	return n, err
}

// storeReason is the metric reason of a store's refusal.
func storeReason(err error) string {
	switch {
	case errors.Is(err, relay.ErrOverQuota):
		return "over_quota"
	case errors.Is(err, relay.ErrTooLarge):
		return "too_large"
	case errors.Is(err, relay.ErrBusy):
		return "busy"
	case errors.Is(err, relay.ErrForbidden):
		if msg := err.Error(); strings.Contains(msg, "not encrypted to") || strings.Contains(msg, "not a sealed OpenPGP") {
			return "not_encrypted"
		}
		return "forbidden"
	}
	return "error"
}

// queueCollector reports, at each scrape, the files waiting for each key of the allow
// file (read afresh) and each user.
type queueCollector struct{ m *relayMetrics }

var (
	mRelayQueueFiles = prometheus.NewDesc("dibs_relay_queue_files", "Files waiting for the key.", []string{"key", "user"}, nil)
	mRelayQueueBytes = prometheus.NewDesc("dibs_relay_queue_bytes", "Bytes waiting for the key.", []string{"key", "user"}, nil)
)

func (c queueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- mRelayQueueFiles
	ch <- mRelayQueueBytes
}

func (c queueCollector) Collect(ch chan<- prometheus.Metric) {
	keys := map[pgpmsg.Fingerprint]string{}
	if b, err := os.ReadFile(c.m.allow); err == nil && len(bytes.TrimSpace(b)) > 0 {
		if ks, err := pgpmsg.ReadKeys(bytes.NewReader(b)); err == nil {
			for _, k := range ks {
				keys[k.Fingerprint()] = ""
			}
		}
	}
	if c.m.users != nil {
		for _, u := range c.m.users.All() {
			keys[u.Key] = u.Mail
		}
	}
	for fp, user := range keys {
		es, err := c.m.store.List(fp)
		if err != nil {
			continue // not allowed (any more), or the store fails: no number rather than a wrong one
		}
		var size int64
		for _, e := range es {
			size += e.Size
		}
		ch <- prometheus.MustNewConstMetric(mRelayQueueFiles, prometheus.GaugeValue, float64(len(es)), string(fp), user)
		ch <- prometheus.MustNewConstMetric(mRelayQueueBytes, prometheus.GaugeValue, float64(size), string(fp), user)
	}
}
