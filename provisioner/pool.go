package provisioner

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"iter"
	"math"
	"os"
	"runtime"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
	"golang.org/x/crypto/cryptobyte"

	"github.com/chipledger/chipledger/ledger"
)

// A key pool is the "secure database" of claims 7 and 15: device key pairs
// generated before the devices are assembled, each handed to exactly one
// chip and then removed. It is a bbolt database file; the private keys in it
// are encrypted with a pool key kept in a separate key file (see
// masterkey.go for the format), so a copy of the database alone reveals no
// key.
//
// Every key moves through one state machine, each step one bbolt
// transaction:
//
//	available ──Reserve(chip)──▶ reserved(chip) ──Consume(chip)────▶ consumed
//	                                            └─Destroy(chip, why)─▶ destroyed
//
// A reserved key belongs to its chip for good: it is handed to no other
// chip, and it never goes back to available, even when the provisioning
// fails (DESIGN.md §5). Consumed and destroyed keys are deleted; what
// remains of them is an audit record without key material.
//
// Layout (all integers big-endian):
//
//	meta       "format" → 0x01; "pool_id" → 16 random bytes; "pool_key_id" →
//	           the pool key's ID (poolKeyID); "available", "reserved",
//	           "consumed", "destroyed" → uint64 counts
//	available  uint64 key_id → sealed
//	reserved   chip_id → uint64 key_id ‖ uint64 reserved_at_ms ‖ sealed
//	audit      uint64 seq → auditRecord (encodeAuditRecord)
//	outcomes   chip_id → uint64 seq of the chip's latest audit record
//
//	sealed     = nonce[12] ‖ AES-256-GCM(pool key, nonce, PKCS#8 DER, aad)
//	aad        = "chipledger/pool-record/v1" ‖ 0x00 ‖ pool_id ‖ pool_key_id
//	             ‖ uint64 key_id ‖ u8 len(chip_id) ‖ chip_id
//
// An available record has an empty chip_id in its aad; Reserve opens it and
// seals it again under the chip's ID. So a record moved to another key ID,
// another chip, another state or another pool does not decrypt. Key IDs come
// from the available bucket's sequence: they follow the order keys were
// added, start at 1 and are never reused, and Reserve takes the lowest one
// with a cursor.
//
// Nonces are random; with two seals per key, a pool key may seal about two
// billion keys before GCM's random-nonce bound (2^32 messages) is reached.
//
// bbolt frees the pages of deleted records and reuses them later, but does
// not overwrite them at once, so the file may still hold the ciphertext of
// consumed keys for a while. It is useless without the pool key: destroy the
// pool key file when the pool is retired.
var (
	bucketMeta      = []byte("meta")
	bucketAvailable = []byte("available")
	bucketReserved  = []byte("reserved")
	bucketAudit     = []byte("audit")
	bucketOutcomes  = []byte("outcomes")

	poolBuckets = [][]byte{bucketMeta, bucketAvailable, bucketReserved, bucketAudit, bucketOutcomes}

	metaFormat    = []byte("format")
	metaPoolID    = []byte("pool_id")
	metaPoolKeyID = []byte("pool_key_id")
	metaAvailable = []byte("available")
	metaReserved  = []byte("reserved")
	metaConsumed  = []byte("consumed")
	metaDestroyed = []byte("destroyed")
)

const (
	poolFormat       = 1
	poolRecordLabel  = "chipledger/pool-record/v1"
	poolKeyIDLabel   = "chipledger/pool-key-id/v1"
	poolIDLen        = 16
	poolNonceLen     = 12
	reservationHead  = 16 // key_id ‖ reserved_at_ms
	defaultFillBatch = 1000
	// MaxDestroyReason is the longest reason Destroy records, in bytes.
	MaxDestroyReason = 1024
	// DefaultPoolLockTimeout is how long OpenPool waits for another
	// process to release the pool before it gives up with ErrPoolInUse.
	DefaultPoolLockTimeout = time.Second
)

var (
	// ErrPoolEmpty is returned by Reserve when the pool has no available
	// key left.
	ErrPoolEmpty = errors.New("key pool is empty")
	// ErrNoReservation is returned by Consume and Destroy for a chip with
	// no reserved key.
	ErrNoReservation = errors.New("no key reserved for the chip")
	// ErrNoPool is returned by OpenPool when the pool file does not exist
	// and PoolOptions.Create is not set, and by Station.Provision when a
	// provisioning to resume took its key from a pool and the station has
	// none.
	ErrNoPool = errors.New("no key pool")
	// ErrPoolInUse is returned by OpenPool when another process has the
	// pool open.
	ErrPoolInUse = errors.New("key pool is in use by another process")
	// ErrWrongPoolKey is returned by OpenPool when the pool key file is not
	// the key the pool was created with.
	ErrWrongPoolKey = errors.New("wrong pool key")
	// ErrCorruptRecord is returned when a pool record does not decrypt or
	// parse: it was changed, moved to another record, or copied from
	// another pool.
	ErrCorruptRecord = errors.New("corrupt key pool record")
	// ErrReadOnly is returned by the methods that change a pool opened
	// with PoolOptions.ReadOnly.
	ErrReadOnly = errors.New("key pool is open read-only")
)

// KeyID identifies a key of a pool. IDs follow the order keys were added
// to the pool, start at 1 and are never reused.
type KeyID uint64

// String returns the decimal form of id.
func (id KeyID) String() string { return strconv.FormatUint(uint64(id), 10) }

// Outcome is how a reserved key left the pool.
type Outcome uint8

const (
	// OutcomeConsumed: the chip was provisioned and its receipt verified.
	OutcomeConsumed Outcome = 1
	// OutcomeDestroyed: the chip's provisioning failed for good.
	OutcomeDestroyed Outcome = 2
)

// String returns "consumed" or "destroyed".
func (o Outcome) String() string {
	switch o {
	case OutcomeConsumed:
		return "consumed"
	case OutcomeDestroyed:
		return "destroyed"
	}
	return "outcome(" + strconv.Itoa(int(o)) + ")"
}

// MarshalText returns String, for JSON.
func (o Outcome) MarshalText() ([]byte, error) { return []byte(o.String()), nil }

// An AuditRecord says what became of one reserved key. It holds no key
// material.
type AuditRecord struct {
	Seq        uint64        `json:"seq"` // position in the audit log, from 1
	Chip       ledger.ChipID `json:"chip_id"`
	KeyID      KeyID         `json:"key_id"`
	ReservedAt time.Time     `json:"reserved_at"`
	At         time.Time     `json:"at"` // when it was consumed or destroyed
	Outcome    Outcome       `json:"outcome"`
	Reason     string        `json:"reason,omitempty"` // why it was destroyed
}

// PoolStatus counts the keys of a pool by state.
type PoolStatus struct {
	Available int `json:"available"` // ready for Reserve
	Reserved  int `json:"reserved"`  // held for a chip being provisioned
	Consumed  int `json:"consumed"`  // deleted after the chip's receipt verified
	Destroyed int `json:"destroyed"` // deleted after the chip's provisioning failed
}

// PoolOptions are the options of OpenPool.
type PoolOptions struct {
	// KeyFile is the pool key file; "" means the pool's path with ".key"
	// appended.
	KeyFile string
	// Create makes a new pool if the file does not exist, and a new pool
	// key (mode 0600) if KeyFile does not exist. A pool that exists is
	// opened as usual; a pool key is never created for an existing pool.
	Create bool
	// ReadOnly opens the pool without its key: Status, Reservation,
	// LastAudit and Audit work, the others return ErrReadOnly. Several
	// read-only openers may share a pool, but not with a writer.
	ReadOnly bool
	// LockTimeout is how long to wait for another process to release
	// the pool; 0 means DefaultPoolLockTimeout.
	LockTimeout time.Duration
}

// A Pool is an open key pool. It is safe for concurrent use; bbolt runs one
// writing transaction at a time, so Reserve, Consume and Destroy are
// serialised, and each is durable when it returns.
type Pool struct {
	path      string
	keyFile   string
	db        *bolt.DB
	aead      cipher.AEAD // nil when read-only
	poolID    [poolIDLen]byte
	poolKeyID [poolIDLen]byte
	now       func() time.Time
	fillBatch int
}

// OpenPool opens the key pool at path with its pool key file (see
// PoolOptions), waiting at most LockTimeout for another process to release
// it (then ErrPoolInUse). A missing pool is ErrNoPool unless opts.Create is
// set. A pool key file that is not the pool's key gives ErrWrongPoolKey, one
// that other users can access ErrInsecureKeyFile.
func OpenPool(path string, opts PoolOptions) (*Pool, error) {
	if opts.Create && opts.ReadOnly {
		return nil, errors.New("open key pool: Create and ReadOnly exclude each other")
	}
	if opts.KeyFile == "" {
		opts.KeyFile = path + ".key"
	}
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = DefaultPoolLockTimeout
	}
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) && !opts.Create {
		return nil, fmt.Errorf("%w at %s; create one with chipledger pool fill --pool %s --count N", ErrNoPool, path, path)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("open key pool: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.LockTimeout, ReadOnly: opts.ReadOnly})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s stayed locked for %s (is a station or another chipledger command using it?)", ErrPoolInUse, path, opts.LockTimeout)
	}
	if err != nil {
		// Not a failure to read the file: bbolt did not recognise it.
		if pe := (*fs.PathError)(nil); !errors.As(err, &pe) {
			return nil, fmt.Errorf("%s is not a chipledger key pool: %w", path, err)
		}
		return nil, fmt.Errorf("open key pool %s: %w", path, err)
	}
	p := &Pool{path: path, keyFile: opts.KeyFile, db: db, now: time.Now, fillBatch: defaultFillBatch}
	if err := p.load(opts); err != nil {
		db.Close()
		return nil, err
	}
	return p, nil
}

// errNotAPool is returned by readMeta for a database without pool buckets.
var errNotAPool = errors.New("not a key pool")

// load reads the pool's identity and its key, creating both if the
// database is new and opts.Create is set.
func (p *Pool) load(opts PoolOptions) error {
	err := p.readMeta()
	if errors.Is(err, errNotAPool) && opts.Create && p.isEmpty() {
		return p.create()
	}
	if errors.Is(err, errNotAPool) {
		return fmt.Errorf("%s is not a chipledger key pool", p.path)
	}
	if err != nil {
		return err
	}
	if opts.ReadOnly {
		return nil
	}
	key, err := readKeyFile(p.keyFile)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("key pool %s needs its pool key (ID %x), but %s does not exist; pass the pool key file with --pool-key", p.path, p.poolKeyID, p.keyFile)
	}
	if err != nil {
		return err
	}
	defer clear(key)
	if id := poolKeyID(key); subtle.ConstantTimeCompare(id[:], p.poolKeyID[:]) != 1 {
		return fmt.Errorf("%w: %s holds pool key %x, but pool %s was created with pool key %x", ErrWrongPoolKey, p.keyFile, id, p.path, p.poolKeyID)
	}
	return p.setKey(key)
}

func (p *Pool) readMeta() error {
	return p.db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			return errNotAPool
		}
		for _, name := range poolBuckets {
			if tx.Bucket(name) == nil {
				return fmt.Errorf("%w: key pool %s has no %s bucket", ErrCorruptRecord, p.path, name)
			}
		}
		if f := meta.Get(metaFormat); len(f) != 1 || f[0] != poolFormat {
			return fmt.Errorf("key pool %s has format %x; this chipledger reads format %d", p.path, f, poolFormat)
		}
		id, keyID := meta.Get(metaPoolID), meta.Get(metaPoolKeyID)
		if len(id) != poolIDLen || len(keyID) != poolIDLen {
			return fmt.Errorf("%w: key pool %s has a malformed pool ID or pool key ID", ErrCorruptRecord, p.path)
		}
		copy(p.poolID[:], id)
		copy(p.poolKeyID[:], keyID)
		return nil
	})
}

// isEmpty reports whether the database has no buckets at all, so a pool may
// be created in it without destroying anything.
func (p *Pool) isEmpty() bool {
	empty := true
	p.db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func([]byte, *bolt.Bucket) error {
			empty = false
			return errors.New("stop")
		})
	})
	return empty
}

// create makes the pool's buckets and identity, with the pool key in
// p.keyFile, which it creates if missing.
func (p *Pool) create() error {
	key, err := loadOrCreatePoolKey(p.keyFile)
	if err != nil {
		return err
	}
	defer clear(key)
	p.poolKeyID = poolKeyID(key)
	if _, err := rand.Read(p.poolID[:]); err != nil {
		return err
	}
	if err := p.setKey(key); err != nil {
		return err
	}
	return p.db.Update(func(tx *bolt.Tx) error {
		for _, name := range poolBuckets {
			if _, err := tx.CreateBucket(name); err != nil {
				return fmt.Errorf("create key pool %s: %w", p.path, err)
			}
		}
		meta := tx.Bucket(bucketMeta)
		for _, kv := range [][2][]byte{
			{metaFormat, {poolFormat}},
			{metaPoolID, p.poolID[:]},
			{metaPoolKeyID, p.poolKeyID[:]},
		} {
			if err := meta.Put(kv[0], kv[1]); err != nil {
				return err
			}
		}
		for _, name := range [][]byte{metaAvailable, metaReserved, metaConsumed, metaDestroyed} {
			if err := meta.Put(name, binary.BigEndian.AppendUint64(nil, 0)); err != nil {
				return err
			}
		}
		return nil
	})
}

// loadOrCreatePoolKey reads the key file at path, or creates it with a new
// random key if it does not exist.
func loadOrCreatePoolKey(path string) ([]byte, error) {
	key, err := readKeyFile(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	key = make([]byte, KeyFileLen)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	if err := createKeyFile(path, key); err != nil {
		// Another process may have created it since.
		if existing, rerr := readKeyFile(path); rerr == nil {
			return existing, nil
		}
		return nil, fmt.Errorf("create pool key: %w", err)
	}
	return key, nil
}

// poolKeyID is SHA-256(poolKeyIDLabel ‖ 0x00 ‖ key) truncated to 16 bytes:
// it names a pool key without revealing it.
func poolKeyID(key []byte) [poolIDLen]byte {
	h := sha256.New()
	h.Write([]byte(poolKeyIDLabel))
	h.Write([]byte{0})
	h.Write(key)
	var id [poolIDLen]byte
	copy(id[:], h.Sum(nil))
	return id
}

func (p *Pool) setKey(key []byte) error {
	block, err := aes.NewCipher(key)
	if err != nil {
		return err
	}
	p.aead, err = cipher.NewGCM(block)
	return err
}

// Close closes the pool's database, releasing its lock.
func (p *Pool) Close() error { return p.db.Close() }

// Path returns the path of the pool's database file.
func (p *Pool) Path() string { return p.path }

// KeyFile returns the path of the pool key file.
func (p *Pool) KeyFile() string { return p.keyFile }

// PoolKeyID returns the hexadecimal ID of the pool key: the first 16 bytes
// of SHA-256("chipledger/pool-key-id/v1" ‖ 0x00 ‖ key).
func (p *Pool) PoolKeyID() string { return hex.EncodeToString(p.poolKeyID[:]) }

func (p *Pool) writable() error {
	if p.aead == nil {
		return fmt.Errorf("%w: %s", ErrReadOnly, p.path)
	}
	return nil
}

// Fill adds n new keys to the pool; see FillContext.
func (p *Pool) Fill(n int, progress func(done int)) error {
	return p.FillContext(context.Background(), n, progress)
}

// FillContext adds n new ECDSA P-256 keys from crypto/rand to the pool, in
// batches of 1,000 keys, each generated on all CPUs and added in one
// transaction. After each batch it calls progress (if not nil) with the
// number of keys added so far. If ctx is cancelled it stops after the
// current batch, keeping the batches already added, and returns an error
// saying how many keys were added.
func (p *Pool) FillContext(ctx context.Context, n int, progress func(done int)) error {
	if n <= 0 {
		return fmt.Errorf("fill key pool: want a positive number of keys, got %d", n)
	}
	if err := p.writable(); err != nil {
		return err
	}
	for done := 0; done < n; {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("fill key pool %s: stopped after %d of %d keys: %w", p.path, done, n, err)
		}
		batch, err := generatePoolKeys(min(p.fillBatch, n-done))
		if err != nil {
			return err
		}
		err = p.addKeys(batch)
		for _, der := range batch {
			clear(der)
		}
		if err != nil {
			return fmt.Errorf("fill key pool %s: after %d of %d keys: %w", p.path, done, n, err)
		}
		done += len(batch)
		if progress != nil {
			progress(done)
		}
	}
	return nil
}

// generatePoolKeys returns n new P-256 keys as PKCS#8 DER.
func generatePoolKeys(n int) ([][]byte, error) {
	ders := make([][]byte, n)
	workers := min(runtime.GOMAXPROCS(0), n)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
				if err == nil {
					ders[i], err = x509.MarshalPKCS8PrivateKey(k)
				}
				if err != nil {
					errs[w] = err
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("generate pool keys: %w", err)
	}
	return ders, nil
}

// addKeys stores keys as available, under the next key IDs.
func (p *Pool) addKeys(ders [][]byte) error {
	return p.db.Update(func(tx *bolt.Tx) error {
		avail := tx.Bucket(bucketAvailable)
		avail.FillPercent = 1 // key IDs only grow: pack the pages
		for _, der := range ders {
			seq, err := avail.NextSequence()
			if err != nil {
				return err
			}
			id := KeyID(seq)
			sealed, err := p.seal(der, id, nil)
			if err != nil {
				return err
			}
			if err := avail.Put(keyIDBytes(id), sealed); err != nil {
				return err
			}
		}
		return addCount(tx, metaAvailable, len(ders))
	})
}

// Reserve returns the key reserved for chip, reserving the available key
// with the lowest ID for it if it has none yet. Calling it again for the
// same chip, in this process or after a restart, returns the same key until
// the chip's key is consumed or destroyed; a key reserved for one chip is
// never returned for another. After Consume or Destroy, Reserve gives the
// chip a new key (a re-provisioning). It returns an error wrapping
// ErrPoolEmpty when no key is available, and one wrapping ErrCorruptRecord
// when the record does not decrypt.
func (p *Pool) Reserve(chip ledger.ChipID) (KeyID, *ecdsa.PrivateKey, error) {
	if err := chip.Validate(); err != nil {
		return 0, nil, err
	}
	if err := p.writable(); err != nil {
		return 0, nil, err
	}
	var (
		id  KeyID
		der []byte
	)
	err := p.db.Update(func(tx *bolt.Tx) error {
		var err error
		id, der, err = p.reserve(tx, chip)
		return err
	})
	defer clear(der)
	if err != nil {
		return 0, nil, err
	}
	key, err := parsePoolKey(der)
	if err != nil {
		return 0, nil, fmt.Errorf("%w: key %s of chip %s in %s: %v", ErrCorruptRecord, id, chip, p.path, err)
	}
	return id, key, nil
}

// reserve is Reserve's transaction: it returns the chip's reserved key, or
// moves the first available key to the chip.
func (p *Pool) reserve(tx *bolt.Tx, chip ledger.ChipID) (KeyID, []byte, error) {
	reserved := tx.Bucket(bucketReserved)
	if v := reserved.Get(chip); v != nil {
		r, err := p.parseReservation(chip, v)
		if err != nil {
			return 0, nil, err
		}
		der, err := p.open(r.sealed, r.id, chip)
		return r.id, der, err
	}
	c := tx.Bucket(bucketAvailable).Cursor()
	k, v := c.First()
	if k == nil {
		return 0, nil, fmt.Errorf("%w: no key left in %s to reserve for chip %s; add keys with chipledger pool fill --pool %s --count N",
			ErrPoolEmpty, p.path, chip, p.path)
	}
	if len(k) != 8 {
		return 0, nil, fmt.Errorf("%w: available key ID %x in %s is not 8 bytes", ErrCorruptRecord, k, p.path)
	}
	id := KeyID(binary.BigEndian.Uint64(k))
	der, err := p.open(v, id, nil)
	if err != nil {
		return 0, nil, err
	}
	sealed, err := p.seal(der, id, chip)
	if err != nil {
		return 0, nil, err
	}
	value := binary.BigEndian.AppendUint64(nil, uint64(id))
	value = binary.BigEndian.AppendUint64(value, uint64(p.now().UnixMilli()))
	value = append(value, sealed...)
	if err := c.Delete(); err != nil {
		return 0, nil, err
	}
	if err := reserved.Put(bytes.Clone(chip), value); err != nil {
		return 0, nil, err
	}
	if err := addCount(tx, metaAvailable, -1); err != nil {
		return 0, nil, err
	}
	return id, der, addCount(tx, metaReserved, 1)
}

func parsePoolKey(der []byte) (*ecdsa.PrivateKey, error) {
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, err
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok || key.Curve != elliptic.P256() {
		return nil, errors.New("not an ECDSA P-256 key")
	}
	return key, nil
}

// Consume deletes the key reserved for chip for good, once the chip's
// escrow entry is in the log and its receipt verified, and records it in
// the audit log as consumed. Consuming a chip whose key was already
// consumed does nothing. It returns an error wrapping ErrNoReservation if
// the chip has no reserved key, or its key was destroyed.
func (p *Pool) Consume(chip ledger.ChipID) error {
	return p.finish(chip, OutcomeConsumed, "")
}

// Destroy deletes the key reserved for chip because the chip's provisioning
// failed for good, and records it in the audit log as destroyed with
// reason (1 to MaxDestroyReason bytes of UTF-8). The key never becomes
// available again. Destroying a chip whose key was already destroyed does
// nothing. It returns an error wrapping ErrNoReservation if the chip has no
// reserved key, or its key was consumed.
func (p *Pool) Destroy(chip ledger.ChipID, reason string) error {
	if reason == "" || len(reason) > MaxDestroyReason || !utf8.ValidString(reason) {
		return fmt.Errorf("destroy pool key of chip %s: the reason must be 1 to %d bytes of UTF-8", chip, MaxDestroyReason)
	}
	return p.finish(chip, OutcomeDestroyed, reason)
}

// finish moves the chip's reserved key to outcome: it deletes the
// reservation and appends an audit record.
func (p *Pool) finish(chip ledger.ChipID, outcome Outcome, reason string) error {
	if err := chip.Validate(); err != nil {
		return err
	}
	if err := p.writable(); err != nil {
		return err
	}
	return p.db.Update(func(tx *bolt.Tx) error {
		reserved := tx.Bucket(bucketReserved)
		v := reserved.Get(chip)
		if v == nil {
			return p.finishedAlready(tx, chip, outcome)
		}
		r, err := p.parseReservation(chip, v)
		if err != nil {
			return err
		}
		if err := reserved.Delete(chip); err != nil {
			return err
		}
		audit := tx.Bucket(bucketAudit)
		seq, err := audit.NextSequence()
		if err != nil {
			return err
		}
		rec := AuditRecord{
			Seq: seq, Chip: chip, KeyID: r.id, ReservedAt: r.reservedAt,
			At: p.now(), Outcome: outcome, Reason: reason,
		}
		if err := audit.Put(binary.BigEndian.AppendUint64(nil, seq), encodeAuditRecord(rec)); err != nil {
			return err
		}
		if err := tx.Bucket(bucketOutcomes).Put(bytes.Clone(chip), binary.BigEndian.AppendUint64(nil, seq)); err != nil {
			return err
		}
		if err := addCount(tx, metaReserved, -1); err != nil {
			return err
		}
		if outcome == OutcomeConsumed {
			return addCount(tx, metaConsumed, 1)
		}
		return addCount(tx, metaDestroyed, 1)
	})
}

// finishedAlready decides a Consume or Destroy of a chip without a
// reservation: a repeat of the chip's last outcome succeeds, anything else
// is ErrNoReservation.
func (p *Pool) finishedAlready(tx *bolt.Tx, chip ledger.ChipID, outcome Outcome) error {
	last, ok, err := p.lastAudit(tx, chip)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: chip %s has no key reserved in %s", ErrNoReservation, chip, p.path)
	}
	if last.Outcome == outcome {
		return nil
	}
	return fmt.Errorf("%w: chip %s has no key reserved in %s; its last key, %s, was %s at %s",
		ErrNoReservation, chip, p.path, last.KeyID, last.Outcome, last.At.UTC().Format(time.RFC3339))
}

// Reservation returns the ID of the key reserved for chip, if it has one.
func (p *Pool) Reservation(chip ledger.ChipID) (KeyID, bool, error) {
	var (
		id KeyID
		ok bool
	)
	err := p.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketReserved).Get(chip)
		if v == nil {
			return nil
		}
		r, err := p.parseReservation(chip, v)
		id, ok = r.id, err == nil
		return err
	})
	return id, ok, err
}

// LastAudit returns the audit record of the last key consumed or destroyed
// for chip, if any.
func (p *Pool) LastAudit(chip ledger.ChipID) (AuditRecord, bool, error) {
	var (
		rec AuditRecord
		ok  bool
	)
	err := p.db.View(func(tx *bolt.Tx) error {
		var err error
		rec, ok, err = p.lastAudit(tx, chip)
		return err
	})
	return rec, ok, err
}

func (p *Pool) lastAudit(tx *bolt.Tx, chip ledger.ChipID) (AuditRecord, bool, error) {
	seq := tx.Bucket(bucketOutcomes).Get(chip)
	if seq == nil {
		return AuditRecord{}, false, nil
	}
	v := tx.Bucket(bucketAudit).Get(seq)
	if len(seq) != 8 || v == nil {
		return AuditRecord{}, false, fmt.Errorf("%w: the audit record of chip %s is missing from %s", ErrCorruptRecord, chip, p.path)
	}
	rec, err := parseAuditRecord(binary.BigEndian.Uint64(seq), v)
	if err != nil {
		return AuditRecord{}, false, fmt.Errorf("%s: %w", p.path, err)
	}
	return rec, true, nil
}

// Audit returns the audit log, oldest first. It reads in one read-only
// transaction: the loop body must not change the pool (bbolt may then wait
// for the loop to end). A read error ends the sequence with the error.
func (p *Pool) Audit() iter.Seq2[AuditRecord, error] {
	return func(yield func(AuditRecord, error) bool) {
		stopped := errors.New("stopped")
		err := p.db.View(func(tx *bolt.Tx) error {
			c := tx.Bucket(bucketAudit).Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				if len(k) != 8 {
					return fmt.Errorf("%w: audit key %x in %s", ErrCorruptRecord, k, p.path)
				}
				rec, err := parseAuditRecord(binary.BigEndian.Uint64(k), v)
				if err != nil {
					return fmt.Errorf("%s: %w", p.path, err)
				}
				if !yield(rec, nil) {
					return stopped
				}
			}
			return nil
		})
		if err != nil && err != stopped {
			yield(AuditRecord{}, err)
		}
	}
}

// Status counts the pool's keys by state.
func (p *Pool) Status() (PoolStatus, error) {
	var s PoolStatus
	err := p.db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		for _, c := range []struct {
			name []byte
			dst  *int
		}{
			{metaAvailable, &s.Available},
			{metaReserved, &s.Reserved},
			{metaConsumed, &s.Consumed},
			{metaDestroyed, &s.Destroyed},
		} {
			v := meta.Get(c.name)
			if len(v) != 8 {
				return fmt.Errorf("%w: count %s in %s", ErrCorruptRecord, c.name, p.path)
			}
			*c.dst = int(binary.BigEndian.Uint64(v))
		}
		return nil
	})
	return s, err
}

// addCount adds delta to one of the counts in the meta bucket.
func addCount(tx *bolt.Tx, name []byte, delta int) error {
	meta := tx.Bucket(bucketMeta)
	v := meta.Get(name)
	if len(v) != 8 {
		return fmt.Errorf("%w: count %s", ErrCorruptRecord, name)
	}
	n := int64(binary.BigEndian.Uint64(v)) + int64(delta)
	if n < 0 {
		return fmt.Errorf("%w: count %s would become negative", ErrCorruptRecord, name)
	}
	return meta.Put(name, binary.BigEndian.AppendUint64(nil, uint64(n)))
}

func keyIDBytes(id KeyID) []byte { return binary.BigEndian.AppendUint64(nil, uint64(id)) }

// aad binds a sealed key to this pool, its pool key, its key ID and its
// chip (nil while available).
func (p *Pool) aad(id KeyID, chip ledger.ChipID) []byte {
	b := cryptobyte.NewBuilder(make([]byte, 0, len(poolRecordLabel)+1+2*poolIDLen+8+1+len(chip)))
	b.AddBytes([]byte(poolRecordLabel))
	b.AddUint8(0)
	b.AddBytes(p.poolID[:])
	b.AddBytes(p.poolKeyID[:])
	b.AddUint64(uint64(id))
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(chip) })
	return b.BytesOrPanic()
}

// seal encrypts a key's PKCS#8 DER for storage.
func (p *Pool) seal(der []byte, id KeyID, chip ledger.ChipID) ([]byte, error) {
	nonce := make([]byte, poolNonceLen, poolNonceLen+len(der)+p.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return p.aead.Seal(nonce, nonce, der, p.aad(id, chip)), nil
}

// open decrypts a sealed key, checking that it was sealed for this key ID
// and chip in this pool.
func (p *Pool) open(sealed []byte, id KeyID, chip ledger.ChipID) ([]byte, error) {
	if len(sealed) >= poolNonceLen+p.aead.Overhead() {
		der, err := p.aead.Open(nil, sealed[:poolNonceLen], sealed[poolNonceLen:], p.aad(id, chip))
		if err == nil {
			return der, nil
		}
	}
	where := "available key " + id.String()
	if chip != nil {
		where = "key " + id.String() + " reserved for chip " + chip.String()
	}
	return nil, fmt.Errorf("%w: the %s in %s does not decrypt under pool key %x: the record was changed, moved to another key ID or chip, or copied from another pool",
		ErrCorruptRecord, where, p.path, p.poolKeyID)
}

type reservation struct {
	id         KeyID
	reservedAt time.Time
	sealed     []byte
}

func (p *Pool) parseReservation(chip ledger.ChipID, v []byte) (reservation, error) {
	if len(v) < reservationHead+poolNonceLen {
		return reservation{}, fmt.Errorf("%w: the reservation of chip %s in %s is truncated", ErrCorruptRecord, chip, p.path)
	}
	return reservation{
		id:         KeyID(binary.BigEndian.Uint64(v)),
		reservedAt: time.UnixMilli(int64(binary.BigEndian.Uint64(v[8:]))),
		sealed:     v[reservationHead:],
	}, nil
}

// encodeAuditRecord encodes an audit record without its Seq (the bbolt key):
//
//	u8 version = 1 ‖ u8 outcome ‖ u8-length chip_id ‖ uint64 key_id
//	‖ uint64 reserved_at_ms ‖ uint64 at_ms ‖ u16-length reason
func encodeAuditRecord(r AuditRecord) []byte {
	b := cryptobyte.NewBuilder(nil)
	b.AddUint8(1)
	b.AddUint8(uint8(r.Outcome))
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(r.Chip) })
	b.AddUint64(uint64(r.KeyID))
	b.AddUint64(uint64(r.ReservedAt.UnixMilli()))
	b.AddUint64(uint64(r.At.UnixMilli()))
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(r.Reason)) })
	return b.BytesOrPanic()
}

func parseAuditRecord(seq uint64, v []byte) (AuditRecord, error) {
	s := cryptobyte.String(v)
	var (
		version, outcome   uint8
		chip, reason       cryptobyte.String
		id, reserved, when uint64
	)
	if !s.ReadUint8(&version) || version != 1 || !s.ReadUint8(&outcome) ||
		!s.ReadUint8LengthPrefixed(&chip) || !s.ReadUint64(&id) || !s.ReadUint64(&reserved) ||
		!s.ReadUint64(&when) || !s.ReadUint16LengthPrefixed(&reason) || !s.Empty() ||
		(Outcome(outcome) != OutcomeConsumed && Outcome(outcome) != OutcomeDestroyed) {
		return AuditRecord{}, fmt.Errorf("%w: audit record %d is malformed", ErrCorruptRecord, seq)
	}
	// Values the pool never writes: Consume records no reason, Destroy 1
	// to MaxDestroyReason bytes of UTF-8, and both a valid chip ID.
	if err := ledger.ChipID(chip).Validate(); err != nil {
		return AuditRecord{}, fmt.Errorf("%w: audit record %d: %w", ErrCorruptRecord, seq, err)
	}
	if Outcome(outcome) == OutcomeConsumed && len(reason) != 0 ||
		Outcome(outcome) == OutcomeDestroyed && (len(reason) == 0 || len(reason) > MaxDestroyReason || !utf8.Valid(reason)) {
		return AuditRecord{}, fmt.Errorf("%w: audit record %d: a %s record with a reason of %d bytes the pool cannot have written", ErrCorruptRecord, seq, Outcome(outcome), len(reason))
	}
	if reserved > math.MaxInt64 || when > math.MaxInt64 {
		return AuditRecord{}, fmt.Errorf("%w: audit record %d: time out of range", ErrCorruptRecord, seq)
	}
	return AuditRecord{
		Seq:        seq,
		Chip:       ledger.ChipID(bytes.Clone(chip)),
		KeyID:      KeyID(id),
		ReservedAt: time.UnixMilli(int64(reserved)),
		At:         time.UnixMilli(int64(when)),
		Outcome:    Outcome(outcome),
		Reason:     string(reason),
	}, nil
}
