package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"testing"
	"time"

	"github.com/chipledger/chipledger/client"
	"github.com/chipledger/chipledger/internal/testpki"
	"github.com/chipledger/chipledger/ledger"
)

// monitorEvents runs c.Monitor until the test's end and sends its events on
// the returned channel; its result arrives on the other.
func monitorEvents(t *testing.T, c *client.Client, o client.MonitorOptions) (<-chan client.ChipEvent, <-chan error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	events := make(chan client.ChipEvent, 100)
	done := make(chan error, 1)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		done <- c.Monitor(ctx, o, func(e client.ChipEvent) error {
			events <- e
			return nil
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

// An owner watches their device's chip: the monitor reports the entry the
// log holds, then a re-provisioning as soon as it is appended (here by the
// same client, from the callback).
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
	// chip 84244a834f411fe4dec36b9347846685 epoch 1 at leaf 1 (held at start: true)
	// chip 84244a834f411fe4dec36b9347846685 epoch 2 at leaf 2 (held at start: false)
	// seen the re-provisioning
}
