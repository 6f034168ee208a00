package provisioner

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/chipledger/chipledger/device"
	"github.com/chipledger/chipledger/internal/strictjson"
	"github.com/chipledger/chipledger/ledger"
)

// Step is how far the provisioning of one device got. The station journals
// the steps that matter after a crash: above all, the signed escrow leaf is
// recorded before it is appended, so a resumed run appends the same bytes
// (which the ledger answers as a duplicate) and never a second entry. The
// steps before it publish nothing and are redone from scratch after a crash
// (the pool hands the chip the key it had reserved), so they are not
// journaled.
type Step string

// The steps of DESIGN.md §5, in order.
const (
	StepStarted   Step = "started"   // chip read, epoch chosen, key pair chosen
	StepPackaged  Step = "packaged"  // package stored, backup received and round-trip checked
	StepCertified Step = "certified" // certificate issued and stored in the device
	StepSigned    Step = "signed"    // escrow entry signed: from here on it is appended, never replaced
	StepAppended  Step = "appended"  // in the ledger, receipt verified, pool key consumed
	StepDone      Step = "done"      // receipt stored in the device
	StepFailed    Step = "failed"    // given up; nothing was appended
)

// JournalRecord is the journal's record of one chip's latest provisioning.
type JournalRecord struct {
	ChipID     ledger.ChipID `json:"chip_id"`
	Identities []string      `json:"identities"`
	Epoch      uint32        `json:"epoch"`
	Step       Step          `json:"step"`
	KeyOrigin  uint8         `json:"key_origin"`
	Leaf       []byte        `json:"leaf,omitempty"`    // from StepSigned on
	Index      uint64        `json:"index,omitempty"`   // from StepAppended on
	Receipt    []byte        `json:"receipt,omitempty"` // from StepAppended on
	Error      string        `json:"error,omitempty"`   // StepFailed
	Updated    time.Time     `json:"updated"`
}

// A Journal is the station's durable record of each device's progress, a
// bbolt database keyed by chip ID. Every Put is one synced transaction.
type Journal struct {
	db *bolt.DB
	// putFault, if set (by tests), fails Put before it writes.
	putFault func(*JournalRecord) error
}

var bucketDevices = []byte("devices")

// ErrJournalInUse is returned when another station process has the journal
// open.
var ErrJournalInUse = errors.New("journal is in use by another process")

// OpenJournal opens (creating it if needed) the journal at path.
func OpenJournal(path string) (*Journal, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("open journal %s: %w", path, ErrJournalInUse)
	}
	if err != nil {
		return nil, fmt.Errorf("open journal %s: %w", path, err)
	}
	// Concurrent provisionings' records share one commit (and one fsync):
	// a station with 64 devices in flight would otherwise be bound by the
	// disk's sync rate.
	db.MaxBatchDelay = 500 * time.Microsecond
	err = db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketDevices)
		return err
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("initialise journal %s: %w", path, err)
	}
	return &Journal{db: db}, nil
}

// Close closes the journal.
func (j *Journal) Close() error { return j.db.Close() }

// Get returns the record of a chip, or nil if the journal has none.
func (j *Journal) Get(chip ledger.ChipID) (*JournalRecord, error) {
	var rec *JournalRecord
	err := j.db.View(func(tx *bolt.Tx) (err error) {
		v := tx.Bucket(bucketDevices).Get(chip)
		if v == nil {
			return nil
		}
		rec, err = decodeRecord(chip, v)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("journal record of chip %s: %w", chip, err)
	}
	return rec, nil
}

// Put records a chip's progress durably; concurrent Puts are committed
// together.
func (j *Journal) Put(rec *JournalRecord) error {
	if j.putFault != nil {
		if err := j.putFault(rec); err != nil {
			return fmt.Errorf("journal chip %s at step %s: %w", rec.ChipID, rec.Step, err)
		}
	}
	rec.Updated = time.Now().UTC()
	v, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	err = j.db.Batch(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketDevices).Put(rec.ChipID, v)
	})
	if err != nil {
		return fmt.Errorf("journal chip %s at step %s: %w", rec.ChipID, rec.Step, err)
	}
	return nil
}

// Counts returns how many chips the journal holds at each step.
func (j *Journal) Counts() (map[Step]int, error) {
	out := make(map[Step]int)
	err := j.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketDevices).ForEach(func(k, v []byte) error {
			rec, err := decodeRecord(k, v)
			if err != nil {
				return fmt.Errorf("chip %x: %w", k, err)
			}
			out[rec.Step]++
			return nil
		})
	})
	return out, err
}

// decodeRecord decodes the journal record stored under key, strictly: the
// station acts on it (a signed leaf is appended again), so a record it
// could not have written is an error, not a record.
func decodeRecord(key, v []byte) (*JournalRecord, error) {
	rec := new(JournalRecord)
	if err := strictjson.Decode(v, rec); err != nil {
		return nil, fmt.Errorf("malformed journal record: %w", err)
	}
	if !bytes.Equal(rec.ChipID, key) {
		return nil, fmt.Errorf("journal record filed under chip %x names chip %s", key, rec.ChipID)
	}
	signed := false
	switch rec.Step {
	case StepStarted, StepPackaged, StepCertified, StepFailed:
	case StepSigned, StepAppended, StepDone:
		signed = true
	default:
		return nil, fmt.Errorf("journal record of chip %s: unknown step %q", rec.ChipID, rec.Step)
	}
	switch {
	case rec.Epoch == 0:
		return nil, fmt.Errorf("journal record of chip %s: epoch 0 (epochs start at 1)", rec.ChipID)
	case device.KeyOrigin(rec.KeyOrigin) != device.KeyGenerated && device.KeyOrigin(rec.KeyOrigin) != device.KeyFromPool:
		return nil, fmt.Errorf("journal record of chip %s: unknown key origin %d", rec.ChipID, rec.KeyOrigin)
	case signed && len(rec.Leaf) == 0:
		return nil, fmt.Errorf("journal record of chip %s at step %s has no signed leaf", rec.ChipID, rec.Step)
	case (rec.Step == StepAppended || rec.Step == StepDone) && len(rec.Receipt) == 0:
		return nil, fmt.Errorf("journal record of chip %s at step %s has no receipt", rec.ChipID, rec.Step)
	}
	for _, id := range rec.Identities {
		if _, err := ledger.ParseIdentity(id); err != nil {
			return nil, fmt.Errorf("journal record of chip %s: %w", rec.ChipID, err)
		}
	}
	return rec, nil
}
