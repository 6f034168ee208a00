package node

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the node's Prometheus metrics, on a registry of its own (no
// global state), served at /metrics.
type metrics struct {
	registry *prometheus.Registry

	appends      *prometheus.CounterVec
	batchLeaves  prometheus.Histogram
	applySeconds prometheus.Histogram
	treeSize     prometheus.Gauge
	raftState    *prometheus.GaugeVec
	inFlight     prometheus.Gauge
	pushedBack   prometheus.Counter
	refused      *prometheus.CounterVec
	storeFault   prometheus.Gauge

	witnessRounds   *prometheus.CounterVec
	witnessFailures *prometheus.CounterVec
	witnessedSize   prometheus.Gauge
}

func newMetrics() *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		appends: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chipledger_appends_total",
			Help: "Leaves submitted to this node's state machine, by result (appended, duplicate, rejected).",
		}, []string{"result"}),
		batchLeaves: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "chipledger_batch_leaves",
			Help:    "Leaves per applied Raft entry.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 12),
		}),
		applySeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "chipledger_apply_seconds",
			Help:    "Time to admit, append and sign one batch in the state machine.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 14),
		}),
		treeSize: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "chipledger_tree_size",
			Help: "Size of the tree in the node's latest signed checkpoint.",
		}),
		raftState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "chipledger_raft_state",
			Help: "1 for the node's current Raft state (leader, follower, candidate, shutdown), 0 for the others.",
		}, []string{"state"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "chipledger_appends_in_flight",
			Help: "Appends waiting on this node (queued for a batch or being committed).",
		}),
		pushedBack: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chipledger_appends_pushed_back_total",
			Help: "Appends refused with RESOURCE_EXHAUSTED because too many were in flight.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chipledger_appends_refused_total",
			Help: "Appends this node refused before proposing them (a malformed or badly signed entry, an unknown or revoked station, a station over its rate, a store fault), by Connect code.",
		}, []string{"code"}),
		storeFault: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "chipledger_store_fault",
			Help: "1 while the ledger store cannot write (a full or failing disk) and the node refuses appends.",
		}),
		witnessRounds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chipledger_witness_rounds_total",
			Help: "Rounds in which this node, as leader, had a checkpoint cosigned by the witnesses, by result (ok: the quorum cosigned and it was recorded; failed).",
		}, []string{"result"}),
		witnessFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chipledger_witness_failures_total",
			Help: "Checkpoints this node, as leader, sent a witness that it did not cosign (an error, a refusal, or a cosignature that does not verify), by the witness's key name; a round may meet the quorum without it.",
		}, []string{"witness"}),
		witnessedSize: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "chipledger_witnessed_size",
			Help: "Size of the latest checkpoint this node had cosigned by the witness policy's quorum.",
		}),
	}
	m.registry.MustRegister(m.appends, m.batchLeaves, m.applySeconds, m.treeSize, m.raftState, m.inFlight, m.pushedBack, m.refused, m.storeFault,
		m.witnessRounds, m.witnessFailures, m.witnessedSize,
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) observeBatch(results []leafResult, took time.Duration) {
	m.batchLeaves.Observe(float64(len(results)))
	m.applySeconds.Observe(took.Seconds())
	var appended, duplicate, rejected int
	for _, r := range results {
		switch {
		case r.Err != nil:
			rejected++
		case r.Duplicate:
			duplicate++
		default:
			appended++
		}
	}
	m.appends.WithLabelValues("appended").Add(float64(appended))
	m.appends.WithLabelValues("duplicate").Add(float64(duplicate))
	m.appends.WithLabelValues("rejected").Add(float64(rejected))
}

func (m *metrics) setRaftState(state string) {
	for _, s := range []string{"leader", "follower", "candidate", "shutdown"} {
		v := 0.0
		if s == state {
			v = 1
		}
		m.raftState.WithLabelValues(s).Set(v)
	}
}
