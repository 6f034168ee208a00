package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/merkle/testonly"
	"google.golang.org/protobuf/proto"

	"github.com/chipledger/chipledger/client"
	"github.com/chipledger/chipledger/internal/testpki"
	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/proofs"
	v1 "github.com/chipledger/chipledger/proto/chipledger/v1"
)

// monitorEvents runs c.Monitor until the test's end and sends its events on
// the returned channel; its result arrives on the other.
func monitorEvents(t *testing.T, c *client.Client, o client.MonitorOptions) (<-chan client.ChipEvent, <-chan error) {
	return startMonitor(t, c, o, nil)
}

// startMonitor runs c.Monitor like monitorEvents and, if anomalies is not
// nil, sends the anomalies it reports there. Sends give up when the test
// ends, so that unread events cannot keep the monitor from returning.
func startMonitor(t *testing.T, c *client.Client, o client.MonitorOptions, anomalies chan<- client.IndexAnomaly) (<-chan client.ChipEvent, <-chan error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	events := make(chan client.ChipEvent, 100)
	if anomalies != nil {
		o.Anomaly = func(a client.IndexAnomaly) error {
			select {
			case anomalies <- a:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	done := make(chan error, 1)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		done <- c.Monitor(ctx, o, func(e client.ChipEvent) error {
			select {
			case events <- e:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	t.Cleanup(func() { cancel(); <-finished })
	return events, done
}

// nextEvent returns the next event, failing the test if none comes soon.
func nextEvent(t *testing.T, events <-chan client.ChipEvent) client.ChipEvent {
	t.Helper()
	select {
	case e := <-events:
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("no event")
		return client.ChipEvent{}
	}
}

// appendEpoch appends chip n's entry at epoch and returns its index.
func (l *testLog) appendEpoch(c *client.Client, n uint64, epoch uint32) uint64 {
	l.t.Helper()
	res, err := c.Append(context.Background(), l.escrowLeaf(n, epoch))
	if err != nil {
		l.t.Fatalf("append chip %d epoch %d: %v", n, epoch, err)
	}
	return res.Receipt.Index
}

func TestMonitorReportsAWatchedChipsReprovisioning(t *testing.T) {
	for _, lookup := range []bool{false, true} {
		name := map[bool]string{false: "scan", true: "lookup"}[lookup]
		t.Run(name, func(t *testing.T) {
			l := startLog(t, 1, nil)
			writer := l.client()
			l.registerStation(writer)
			first := l.appendEpoch(writer, 1, 1)
			l.appendEpoch(writer, 2, 1)
			watched := testpki.ChipID(1)

			events, done := monitorEvents(t, l.client(), client.MonitorOptions{Chips: []ledger.ChipID{watched}, Lookup: lookup})
			e := nextEvent(t, events)
			if !e.Chip.Equal(watched) || e.Epoch != 1 || e.Index != first || !e.Initial {
				t.Fatalf("first event: chip %s epoch %d index %d initial %v", e.Chip, e.Epoch, e.Index, e.Initial)
			}

			// Re-provisioned while the monitor runs: the watched chip is
			// reported, the other is not.
			l.appendEpoch(writer, 2, 2)
			again := l.appendEpoch(writer, 1, 2)
			e = nextEvent(t, events)
			if !e.Chip.Equal(watched) || e.Epoch != 2 || e.Index != again || e.Initial {
				t.Fatalf("re-provisioning: chip %s epoch %d index %d initial %v", e.Chip, e.Epoch, e.Index, e.Initial)
			}
			if e.StationID != l.pki.StationID() || e.Serial == "" || e.ProvisionedAt.IsZero() || e.Checkpoint.Size <= e.Index {
				t.Errorf("event details: station %x serial %q at %s in checkpoint %d", e.StationID, e.Serial, e.ProvisionedAt, e.Checkpoint.Size)
			}
			select {
			case e := <-events:
				t.Errorf("unexpected event: chip %s epoch %d", e.Chip, e.Epoch)
			case err := <-done:
				t.Fatalf("monitor ended: %v", err)
			case <-time.After(200 * time.Millisecond):
			}
		})
	}
}

func TestMonitorScansFromAGivenSize(t *testing.T) {
	l := startLog(t, 1, nil)
	writer := l.client()
	l.registerStation(writer)
	l.appendEpoch(writer, 1, 1)
	second := l.appendEpoch(writer, 1, 2)
	events, _ := monitorEvents(t, l.client(), client.MonitorOptions{Chips: []ledger.ChipID{testpki.ChipID(1)}, FromSize: second})
	if e := nextEvent(t, events); e.Epoch != 2 || e.Index != second || !e.Initial {
		t.Fatalf("first event: epoch %d at %d, want epoch 2 at %d", e.Epoch, e.Index, second)
	}
}

func TestMonitorEndsWithTheCallbacksError(t *testing.T) {
	l := startLog(t, 1, nil)
	writer := l.client()
	l.registerStation(writer)
	l.appendEpoch(writer, 1, 1)
	stop := errors.New("enough")
	err := l.client().Monitor(context.Background(), client.MonitorOptions{Chips: []ledger.ChipID{testpki.ChipID(1)}},
		func(client.ChipEvent) error { return stop })
	if err != stop {
		t.Fatalf("got %v, want the callback's error", err)
	}
	if err := l.client().Monitor(context.Background(), client.MonitorOptions{}, nil); err == nil {
		t.Error("a monitor of no chips started")
	}
}

// An indexedFakeLog serves the log of an indexModel, index roots included,
// as its operator made it: besides the reads of a fakeLog, it answers chip
// lookups with lookup proofs under its last index root, and streams its
// checkpoint as it grows. Its index may lie about its entries (see
// indexModel.add): the proofs still verify.
type indexedFakeLog struct {
	*fakeLog
	model *indexModel
}

func startIndexedFakeLog(t *testing.T, model *indexModel) (*indexedFakeLog, string) {
	f := &indexedFakeLog{fakeLog: &fakeLog{signer: newSigner(t), tree: testonly.New(rfc6962.DefaultHasher)}, model: model}
	f.add(model.leaves...)
	return f, serve(t, f)
}

// grow appends leaves to the model in one batch, and to the log.
func (f *indexedFakeLog) grow(leaves ...[]byte) {
	f.mu.Lock()
	added := f.model.add(0, leaves)
	f.mu.Unlock()
	f.add(added...)
}

func (f *indexedFakeLog) inclusion(index, size uint64) ([][]byte, [][32]byte) {
	p, err := f.tree.InclusionProof(index, size)
	if err != nil {
		panic(err)
	}
	out := make([][32]byte, len(p))
	for i := range p {
		out[i] = [32]byte(p[i])
	}
	return p, out
}

func (f *indexedFakeLog) LookupChip(ctx context.Context, req *connect.Request[v1.LookupChipRequest]) (*connect.Response[v1.LookupChipResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	chip := ledger.ChipID(req.Msg.ChipId)
	size := f.tree.Size()
	signed, err := f.signer.Sign(size, ledger.Hash(f.tree.Hash()))
	if err != nil {
		return nil, err
	}
	lp := &proofs.LookupProof{Checkpoint: signed, IndexLeaf: f.leaves[size-1]}
	_, lp.IndexProof = f.inclusion(size-1, size)
	value := f.model.value(chip)
	if lp.Map, _, err = f.model.cmap.Prove(proofs.MapKey(chip), value); err != nil {
		return nil, err
	}
	resp := &v1.LookupChipResponse{Checkpoint: signed}
	if value != nil {
		lp.History = f.model.chips[string(chip)]
		lp.Entry = f.leaves[value.LeafIndex]
		_, lp.EntryProof = f.inclusion(value.LeafIndex, size)
		for k, e := range lp.History {
			proof, _ := f.inclusion(e.Index, size)
			resp.Entries = append(resp.Entries, &v1.ChipEntry{Epoch: uint32(k + 1),
				Receipt: &v1.Receipt{Index: e.Index, Leaf: f.leaves[e.Index], InclusionProof: proof, Checkpoint: signed}})
		}
	}
	if resp.LookupProof, err = lp.MarshalBinary(); err != nil {
		return nil, err
	}
	return connect.NewResponse(resp), nil
}

func (f *indexedFakeLog) WatchCheckpoints(ctx context.Context, req *connect.Request[v1.WatchCheckpointsRequest], stream *connect.ServerStream[v1.WatchCheckpointsResponse]) error {
	after := req.Msg.AfterSize
	for {
		f.mu.Lock()
		size := f.tree.Size()
		signed, err := f.signer.Sign(size, ledger.Hash(f.tree.Hash()))
		f.mu.Unlock()
		if err != nil {
			return err
		}
		if size > after {
			if err := stream.Send(&v1.WatchCheckpointsResponse{Checkpoint: signed}); err != nil {
				return err
			}
			after = size
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// monitorWithAnomalies runs c.Monitor like monitorEvents, and sends the
// anomalies it reports on a third channel.
func monitorWithAnomalies(t *testing.T, c *client.Client, o client.MonitorOptions) (<-chan client.ChipEvent, <-chan client.IndexAnomaly, <-chan error) {
	anomalies := make(chan client.IndexAnomaly, 100)
	events, done := startMonitor(t, c, o, anomalies)
	return events, anomalies, done
}

func TestMonitorReportsAnEntryTheChipIndexHides(t *testing.T) {
	m := newLeafMaker(t)
	watched := testpki.ChipID(1)
	// Chip 1 is re-provisioned at leaf hidden, but the index roots after
	// it leave the entry out: a lookup proves epoch 1 the latest.
	raw := [][]byte{m.pki.StationLeaf(), m.leaf(t, 1, 1), m.leaf(t, 2, 1), m.leaf(t, 1, 2), m.leaf(t, 3, 1)}
	model := indexed(t, 2, raw, 3)
	hidden := model.at[3]
	f, addr := startIndexedFakeLog(t, model)
	// The proxy tells when the monitor, done with its start-up checks,
	// watches for checkpoints.
	p, addr := startProxy(t, addr)
	c, err := client.New(client.Options{Addrs: []string{addr}, LogKey: f.signer.VerifierKey(), Logger: testLogger(), Retry: fastRetry})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })

	// The lookup alone verifies, and hides the entry.
	h, err := c.LookupChip(context.Background(), watched)
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Entries) != 1 || h.Index == nil || h.Index.Value.Epoch != 1 {
		t.Fatalf("the lying index's lookup: %d entries, %+v", len(h.Entries), h.Index)
	}

	// Chip 4 is not in the log yet: it only serves to prove, below, that
	// the monitor checked the index after the log grew.
	other := testpki.ChipID(4)
	events, anomalies, done := monitorWithAnomalies(t, c, client.MonitorOptions{Chips: []ledger.ChipID{watched, other}})
	for epoch := uint32(1); epoch <= 2; epoch++ {
		if e := nextEvent(t, events); e.Epoch != epoch || !e.Initial {
			t.Fatalf("event: epoch %d at %d, want epoch %d", e.Epoch, e.Index, epoch)
		}
	}
	var a client.IndexAnomaly
	select {
	case a = <-anomalies:
	case err := <-done:
		t.Fatalf("monitor ended: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no anomaly")
	}
	if a.Kind != client.AnomalyNotInIndex || !a.Chip.Equal(watched) || a.Index != hidden || a.Epoch != 2 ||
		a.LeafHash != proofs.LeafHash(model.leaves[hidden]) || a.Value.Epoch != 1 || a.Checkpoint.Size != model.size() || a.Message == "" {
		t.Fatalf("anomaly %+v, want the entry at %d not in the index", a, hidden)
	}
	if !errors.Is(&a, client.ErrIndexAnomaly) {
		t.Error("the anomaly is not an ErrIndexAnomaly")
	}

	// The log grows, the index still hides the entry: reported once. The
	// growth comes once the monitor watches, its start-up check of the
	// index over, so that it must check the index again at the grown log.
	// The growth is an entry of chip 4 that the index leaves out too (its
	// epoch 2 follows no epoch 1). The monitor checks the index for its
	// chips in the order given, so a repeat of chip 1's anomaly would come
	// before chip 4's: the next anomaly must be chip 4's.
	for deadline := time.Now().Add(10 * time.Second); p.count("WatchCheckpoints") == 0; {
		if time.Now().After(deadline) {
			t.Fatal("the monitor did not start watching")
		}
		select {
		case err := <-done:
			t.Fatalf("monitor ended: %v", err)
		case <-time.After(5 * time.Millisecond):
		}
	}
	f.grow(m.leaf(t, 4, 2))
	select {
	case a := <-anomalies:
		if !a.Chip.Equal(other) {
			t.Fatalf("anomaly reported again: %+v", a)
		}
		if a.Kind != client.AnomalyNotInIndex || a.Epoch != 2 || a.Index != model.size()-2 {
			t.Errorf("anomaly %+v, want chip 4's entry at %d not in the index", a, model.size()-2)
		}
	case err := <-done:
		t.Fatalf("monitor ended: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no anomaly for chip 4: the monitor did not check the grown log")
	}

	// Without an Anomaly callback, the anomaly ends the monitor.
	err = c.Monitor(context.Background(), client.MonitorOptions{Chips: []ledger.ChipID{watched}}, func(client.ChipEvent) error { return nil })
	var got *client.IndexAnomaly
	if !errors.As(err, &got) || got.Kind != client.AnomalyNotInIndex || got.Index != hidden {
		t.Errorf("monitor without an anomaly callback: %v", err)
	}
}

func TestMonitorReportsALookupThatDoesNotVerify(t *testing.T) {
	l := startLog(t, 1, nil)
	writer := l.client()
	l.registerStation(writer)
	l.appendEpoch(writer, 1, 1)
	l.appendEpoch(writer, 1, 2)
	p, proxy := startProxy(t, l.cluster.Addrs()[0])
	// The proxy drops the newest entry of every lookup.
	p.setTamper(func(_ context.Context, _ string, _, resp proto.Message) error {
		if r, ok := resp.(*v1.LookupChipResponse); ok && len(r.Entries) > 0 {
			r.Entries = r.Entries[:len(r.Entries)-1]
		}
		return nil
	})
	events, anomalies, done := monitorWithAnomalies(t, l.client(proxy), client.MonitorOptions{Chips: []ledger.ChipID{testpki.ChipID(1)}})
	for epoch := uint32(1); epoch <= 2; epoch++ {
		if e := nextEvent(t, events); e.Epoch != epoch {
			t.Fatalf("event: epoch %d, want %d", e.Epoch, epoch)
		}
	}
	select {
	case a := <-anomalies:
		if a.Kind != client.AnomalyBadLookup || !(errors.Is(a.Err, client.ErrMismatch) || errors.Is(a.Err, client.ErrBadProof)) || !a.Chip.Equal(testpki.ChipID(1)) {
			t.Fatalf("anomaly %+v, want a lookup that does not verify", a)
		}
	case err := <-done:
		t.Fatalf("monitor ended: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no anomaly")
	}
	// The monitor goes on: a re-provisioning is still reported.
	again := l.appendEpoch(writer, 1, 3)
	if e := nextEvent(t, events); e.Epoch != 3 || e.Index != again {
		t.Fatalf("event: epoch %d at %d, want 3 at %d", e.Epoch, e.Index, again)
	}
}

// An owner watches their device's chip: the monitor reports the entry the
// log holds, then a re-provisioning as soon as it is appended (here by the
// same client, from the callback). It also checks the chip's lookup proof
// against the entries it read at each checkpoint: had the log's chip index
// hidden an entry, Monitor would have ended with an *IndexAnomaly (or
// passed it to MonitorOptions.Anomaly).
func ExampleClient_Monitor() {
	addrs, logKey, pki, stop := startExampleLedger()
	defer stop()
	ctx := context.Background()
	c, err := client.New(client.Options{Addrs: addrs, LogKey: logKey})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	chip := testpki.ChipID(42)
	appendEntry := func(epoch uint32) {
		leaf, err := pki.EscrowLeaf(chip, epoch, 0)
		if err == nil {
			_, err = c.Append(ctx, leaf)
		}
		if err != nil {
			log.Fatal(err)
		}
	}
	if _, err := c.Append(ctx, pki.StationLeaf()); err != nil {
		log.Fatal(err)
	}
	appendEntry(1)

	errSeen := errors.New("seen the re-provisioning")
	err = c.Monitor(ctx, client.MonitorOptions{Chips: []ledger.ChipID{chip}}, func(e client.ChipEvent) error {
		fmt.Printf("chip %s epoch %d at leaf %d (held at start: %v)\n", e.Chip, e.Epoch, e.Index, e.Initial)
		if e.Epoch == 2 {
			return errSeen
		}
		appendEntry(2) // the device is re-provisioned
		return nil
	})
	fmt.Println(err)
	// Output:
	// chip 84244a834f411fe4dec36b9347846685 epoch 1 at leaf 3 (held at start: true)
	// chip 84244a834f411fe4dec36b9347846685 epoch 2 at leaf 5 (held at start: false)
	// seen the re-provisioning
}
