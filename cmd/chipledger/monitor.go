package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/chipledger/chipledger/client"
	"github.com/chipledger/chipledger/ledger"
)

// monitorCommand is `chipledger monitor`.
func monitorCommand() *cli.Command {
	return &cli.Command{
		Name:  "monitor",
		Usage: "watch the ledger for new entries of given chips (an unexpected re-provisioning, say)",
		UsageText: `chipledger monitor --ledger ADDR --log-key KEY --chip HEX [--chip HEX ...] [--from-size N | --lookup] [--json]
chipledger monitor --ledger ADDR --log-key KEY --chips-file chips.txt`,
		Description: `Prints the watched chips' escrow entries the log holds (those from leaf
--from-size on, by default all of them; or, with --lookup, each chip's entries
from the chip index), then every new one as soon as a node streams a checkpoint
that covers it, until interrupted. Entries are read in ranges proven against
verified checkpoints, so a node cannot hide one.

Each entry is one line (or, with --json, one JSON object, "event": "entry"):
chip, epoch, leaf index, station ID, provisioned_at, device certificate serial,
and whether the log held it when the monitor started.

At the start and at each new checkpoint it also looks every watched chip up in
the log's verifiable chip index (the lookup proof that devices check) and
compares the history the index records with the entries it read from the log.
An entry the index hides, one it records that the log does not hold, or a
lookup that does not verify is an anomaly line ("anomaly KIND ...", or with
--json "event": "anomaly"): the index roots the log signs do not match its
entries, or a node lied. Anomalies are reported once each; a monitor that
reported any exits with status 3 when interrupted.`,
		Flags: append(append(ledgerFlags(), witnessFlags()...),
			&cli.StringSliceFlag{Name: "chip", Usage: "chip `ID` to watch, hex (repeatable)"},
			&cli.StringFlag{Name: "chips-file", Usage: "`FILE` of chip IDs to watch, one hex ID a line (# starts a comment)"},
			&cli.Uint64Flag{Name: "from-size", Usage: "report existing entries from leaf `N` on (0: all of them)"},
			&cli.BoolFlag{Name: "lookup", Usage: "report existing entries from the chip index instead of scanning the log"},
			&cli.BoolFlag{Name: "json", Usage: "print one JSON object a line"},
		),
		Action: runMonitor,
	}
}

func runMonitor(c *cli.Context) error {
	if err := noArgs(c); err != nil {
		return err
	}
	chips, err := watchedChips(c)
	if err != nil {
		return err
	}
	if c.IsSet("from-size") && c.Bool("lookup") {
		return cli.Exit("--from-size and --lookup exclude each other", 2)
	}
	cl, err := newLedgerClient(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	logger(c).Info("monitoring", "chips", len(chips))
	o := client.MonitorOptions{Chips: chips, FromSize: c.Uint64("from-size"), Lookup: c.Bool("lookup")}
	show, warn := printChipEvent, printIndexAnomaly
	if c.Bool("json") {
		show, warn = printChipEventJSON, printIndexAnomalyJSON
	}
	anomalies := 0
	o.Anomaly = func(a client.IndexAnomaly) error {
		anomalies++
		return warn(c.App.Writer, a)
	}
	err = cl.Monitor(c.Context, o, func(e client.ChipEvent) error { return show(c.App.Writer, e) })
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	if err == nil && anomalies > 0 {
		return cli.Exit(fmt.Sprintf("%d chip index anomalies: the log's index and its entries disagree, or a node lied", anomalies), exitFindings)
	}
	return err
}

// watchedChips returns the chips of --chip and --chips-file.
func watchedChips(c *cli.Context) ([]ledger.ChipID, error) {
	var chips []ledger.ChipID
	for _, s := range c.StringSlice("chip") {
		chip, err := ledger.ParseChipID(strings.TrimSpace(s))
		if err != nil {
			return nil, cli.Exit(fmt.Sprintf("--chip %q: %v", s, err), 2)
		}
		chips = append(chips, chip)
	}
	if path := c.String("chips-file"); path != "" {
		more, err := readChipsFile(path)
		if err != nil {
			return nil, cli.Exit(fmt.Sprintf("--chips-file: %v", err), 2)
		}
		chips = append(chips, more...)
	}
	if len(chips) == 0 {
		return nil, cli.Exit("say which chips to watch: --chip ID (repeatable) or --chips-file FILE", 2)
	}
	return chips, nil
}

// readChipsFile reads one hex chip ID a line; blank lines and text after #
// are ignored.
func readChipsFile(path string) ([]ledger.ChipID, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var chips []ledger.ChipID
	s := bufio.NewScanner(f)
	for n := 1; s.Scan(); n++ {
		line, _, _ := strings.Cut(s.Text(), "#")
		if line = strings.TrimSpace(line); line == "" {
			continue
		}
		chip, err := ledger.ParseChipID(line)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %v", path, n, err)
		}
		chips = append(chips, chip)
	}
	return chips, s.Err()
}

func printChipEvent(w io.Writer, e client.ChipEvent) error {
	existing := ""
	if e.Initial {
		existing = " (existing)"
	}
	_, err := fmt.Fprintf(w, "chip %s epoch %d index %d station %x provisioned %s serial %s%s\n",
		e.Chip, e.Epoch, e.Index, e.StationID, e.ProvisionedAt.UTC().Format(time.RFC3339), orNone(e.Serial), existing)
	return err
}

// chipEventJSON is the JSON form of a chip event.
type chipEventJSON struct {
	Event          string `json:"event"` // "entry"
	Chip           string `json:"chip"`
	Epoch          uint32 `json:"epoch"`
	Index          uint64 `json:"index"`
	StationID      string `json:"station_id"`
	ProvisionedAt  string `json:"provisioned_at"`
	Serial         string `json:"serial"`
	Initial        bool   `json:"initial"`
	CheckpointSize uint64 `json:"checkpoint_size"`
}

func printChipEventJSON(w io.Writer, e client.ChipEvent) error {
	return writeJSONLine(w, chipEventJSON{
		Event: "entry", Chip: e.Chip.String(), Epoch: e.Epoch, Index: e.Index, StationID: hex.EncodeToString(e.StationID[:]),
		ProvisionedAt: e.ProvisionedAt.UTC().Format(time.RFC3339Nano), Serial: e.Serial, Initial: e.Initial,
		CheckpointSize: e.Checkpoint.Size,
	})
}

func printIndexAnomaly(w io.Writer, a client.IndexAnomaly) error {
	_, err := fmt.Fprintf(w, "anomaly %s chip %s index %d epoch %d checkpoint %d: %s\n", a.Kind, a.Chip, a.Index, a.Epoch, a.Checkpoint.Size, a.Message)
	return err
}

// indexAnomalyJSON is the JSON form of an index anomaly.
type indexAnomalyJSON struct {
	Event string `json:"event"` // "anomaly"
	Kind  string `json:"kind"`
	Chip  string `json:"chip"`
	// Index, Epoch and LeafHash (hex) are the entry's, for the kinds about
	// an entry.
	Index    uint64 `json:"index,omitempty"`
	Epoch    uint32 `json:"epoch,omitempty"`
	LeafHash string `json:"leaf_hash,omitempty"`
	// CheckpointSize is the size of the lookup's checkpoint; IndexEpoch and
	// IndexLeafIndex the latest entry the index proved there (0: none).
	CheckpointSize uint64 `json:"checkpoint_size,omitempty"`
	IndexEpoch     uint32 `json:"index_epoch,omitempty"`
	IndexLeafIndex uint64 `json:"index_leaf_index,omitempty"`
	Error          string `json:"error,omitempty"`
	Message        string `json:"message"`
}

func printIndexAnomalyJSON(w io.Writer, a client.IndexAnomaly) error {
	j := indexAnomalyJSON{Event: "anomaly", Kind: string(a.Kind), Chip: a.Chip.String(), Index: a.Index, Epoch: a.Epoch,
		CheckpointSize: a.Checkpoint.Size, IndexEpoch: a.Value.Epoch, IndexLeafIndex: a.Value.LeafIndex, Message: a.Message}
	if a.LeafHash != ([32]byte{}) {
		j.LeafHash = hex.EncodeToString(a.LeafHash[:])
	}
	if a.Err != nil {
		j.Error = a.Err.Error()
	}
	return writeJSONLine(w, j)
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
